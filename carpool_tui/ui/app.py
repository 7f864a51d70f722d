"""The Textual application: settings, clock and repository around one live screen."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar
from uuid import UUID

from textual import events
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from carpool_tui.config import CheckThresholds, Settings
from carpool_tui.db.repo import Repository, utc_now
from carpool_tui.models import Capabilities
from carpool_tui.runbooks.engine import Entry, Timeline
from carpool_tui.ui import fmt, paste
from carpool_tui.ui.actions import ACTIONS_BY_ID, blocked_reason
from carpool_tui.ui.commands import ActionCommands
from carpool_tui.ui.dashboard import DashboardScreen
from carpool_tui.ui.procedures import ProcedureScreen
from carpool_tui.ui.text import parse_uuid
from carpool_tui.ui.tools import WarRoomActions, theme_name
from carpool_tui.ui.wallboard import WallboardScreen
from carpool_tui.ui.widgets import show_text

MIN_COLUMNS, MIN_LINES = 60, 18
"""The smallest terminal whose dialogs show their fields, note and keys."""


class TooSmallScreen(ModalScreen[None]):
    """Says the terminal is too small, and how small, instead of the dashboard.

    It takes no key of its own: a q meant for a note beneath must not quit.
    """

    # Never a scrollbar: on a tiny terminal the text's wrapping would turn one
    # on, which narrows the text, which may turn it off again, and so on.
    DEFAULT_CSS = """
    TooSmallScreen {
        align: center middle; background: $background; overflow: hidden hidden;
    }
    TooSmallScreen Static { width: auto; max-width: 100%; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        yield Static(self._text(self.app.size))

    def on_resize(self, event: events.Resize) -> None:
        show_text(self.query_one(Static), self._text(event.size))

    @staticmethod
    def _text(size: Size) -> str:
        return (
            f"The terminal is {size.width}x{size.height}: too small to show "
            f"the dashboard's fields. Make it at least {MIN_COLUMNS}x{MIN_LINES}. "
            "Ctrl+Q quits (a dialog open beneath, and its note, are then lost)."
        )


HANDLING_ACTIONS = frozenset({"seat_fix", "expire_ride"})
"""The writes on one ride that settle a violation's sample."""


class DashboardApp(WarRoomActions, App[int]):
    """carpool-tui's dashboard; `clock` is injectable so tests can freeze time.

    With `wallboard` the keyless WallboardScreen covers the dashboard screen,
    whose poll loop feeds it; it judges with `thresholds`, those `check` uses
    for the same target (None: the defaults).
    """

    CSS_PATH = "dashboard.tcss"
    TITLE = "carpool-tui"
    COMMANDS: ClassVar = App.COMMANDS | {ActionCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
    ]

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Textual's own palette entries, less the two the registry has already:
        its Theme offers themes outside dark, light and ansi (the `v` key's),
        and a second Quit would sit beside the registry's."""
        for command in super().get_system_commands(screen):
            if command.title not in {"Theme", "Quit"}:
                yield command

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utc_now,
        label: str | None = None,
        target: str | None = None,
        wallboard: bool = False,
        theme: str | None = None,
        thresholds: CheckThresholds | None = None,
    ) -> None:
        super().__init__()
        if theme is not None:
            self.theme = theme_name(theme)
        self.wallboard = wallboard
        self.thresholds = thresholds or CheckThresholds()
        if wallboard:
            self.use_command_palette = False
        self.last_export: Path | None = None
        """The file the last export wrote, also said on screen."""
        self.settings = settings
        self.label = label or fmt.short_target(settings.dsn)
        """How the database is named on screen: 'dbname@host:port' or 'dbname'."""
        self.target = target or settings.target
        """The whole DSN without its password, shown where there is room."""
        self.clock = clock
        self.interval = settings.refresh_seconds
        self.repo = Repository(settings, clock=clock)
        self.dashboard = DashboardScreen()
        self.timeline = Timeline()
        """What was done this session, for the incident review."""
        self.handled: set[UUID] = set()
        """Rides fixed or expired in this session."""
        self.drafts: dict[tuple[str, str], dict[str, str]] = {}
        """What was typed into a write dialog closed without writing, by the
        dialog and the ride or violation it was opened on."""
        self.repo.on_action = self._action_done
        self.stop_signal: str | None = None
        """The name of the signal that ended the session, if one did."""
        self._previous_handlers: dict[int, Any] = {}
        self._watchdog: threading.Timer | None = None

    def handled_ride(self, ride: str | None) -> bool:
        """Whether this session fixed or expired ``ride``: the check's samples
        predate it."""
        try:
            return parse_uuid(ride or "") in self.handled
        except ValueError:
            return False

    def _action_done(self, entry: dict[str, Any]) -> None:
        """A write or job run from the dashboard goes into the timeline too; one
        made inside a procedure is there already, as that procedure's step.
        A ride fixed or expired is remembered wherever it was done."""
        if entry["action"] in HANDLING_ACTIONS and entry["outcome"] == "ok":
            with contextlib.suppress(ValueError):
                self.handled.add(parse_uuid(str(entry["target"])))
        if any(isinstance(s, ProcedureScreen) for s in self.screen_stack):
            return
        note = entry.get("note")
        self.timeline.add(
            Entry(
                at=self.clock(),
                operator=self.settings.operator,
                procedure="dashboard",
                step="",
                action=f"{entry['action']} {entry['target']}",
                result=str(entry["outcome"]) + (f"; note: {note}" if note else ""),
            )
        )

    def on_mount(self) -> None:
        self._handle_stop_signals()
        self.push_screen(self.dashboard)
        if self.wallboard:
            self.push_screen(WallboardScreen())
        self._guard_size(self.size)

    def on_resize(self, event: events.Resize) -> None:
        self._guard_size(event.size)

    def _guard_size(self, size: Size) -> None:
        """Cover everything while the terminal is too small for a dialog's fields.

        At 40x12 a seat fix could be previewed and applied with neither the ride
        id nor the note ever on screen. Whatever was open stays underneath, as
        it was, and comes back once the terminal is large enough.
        """
        small = size.width < MIN_COLUMNS or size.height < MIN_LINES
        covered = isinstance(self.screen, TooSmallScreen)
        if small and not covered:
            self.push_screen(TooSmallScreen())
        elif covered and not small:
            self.pop_screen()

    def _handle_stop_signals(self) -> None:
        """Quit cleanly on SIGTERM and SIGHUP (a closed SSH session).

        The handler asks the loop to exit, so the app leaves through its normal
        path: workers cancelled, connections closed, terminal reset. It is a
        plain signal handler, not the loop's: when the terminal stops taking
        output (a stalled SSH link), the loop blocks on the full output queue
        and would never run its own handler. A watchdog then ends the process
        if the clean exit has not finished within STOP_GRACE_S.
        """
        loop = asyncio.get_running_loop()

        def on_signal(signum: int, _frame: object) -> None:
            if self.stop_signal is None:
                self.stop_signal = signal.Signals(signum).name
                self._watchdog = threading.Timer(STOP_GRACE_S, _give_up)
                self._watchdog.daemon = True
                self._watchdog.start()
            # A closed loop means the app is already on its way out.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.exit, 0)

        try:
            for signum in (signal.SIGTERM, signal.SIGHUP):
                self._previous_handlers[signum] = signal.signal(signum, on_signal)
        except ValueError:
            return  # not the main thread (tests)

    def restore_signal_handlers(self) -> None:
        """Put back the handlers from before the app ran; stop the watchdog."""
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()

    @property
    def capabilities(self) -> Capabilities | None:
        return self.dashboard.caps

    def blocked(self, action_id: str, selected: set[str] | None = None) -> str | None:
        """Why a registry action cannot run now, for dialogs acting on a selection."""
        return blocked_reason(
            ACTIONS_BY_ID[action_id],
            self.dashboard.caps,
            selected=selected or set(),
            job_running=self.repo.job_running,
        )

    async def on_unmount(self) -> None:
        await self.repo.close()


STOP_GRACE_S = 10.0
"""How long a stop signal waits for the clean exit before the process ends."""
STOPPED_UNCLEANLY = 3
"""The exit code when the watchdog, not the clean exit, ended the process."""


def _give_up() -> None:
    """End the process now: the clean exit after a stop signal is stuck."""
    os._exit(STOPPED_UNCLEANLY)


def run_dashboard(
    settings: Settings,
    *,
    wallboard: bool = False,
    theme: str | None = None,
    thresholds: CheckThresholds | None = None,
) -> int:
    """Run the dashboard until the operator quits; the process exit code."""
    paste.install()
    app = DashboardApp(
        settings, wallboard=wallboard, theme=theme, thresholds=thresholds
    )
    try:
        app.run()
    finally:
        app.restore_signal_handlers()
    if app.stop_signal:
        print(f"Stopping on {app.stop_signal}.", file=sys.stderr, flush=True)
    return int(app.return_code or 0)
