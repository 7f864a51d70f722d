"""The Textual application: settings, clock and repository around one live screen."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from textual.app import App
from textual.binding import Binding, BindingType

from carpool_tui.config import Settings
from carpool_tui.db.repo import Repository, utc_now
from carpool_tui.models import Capabilities
from carpool_tui.runbooks.engine import Timeline
from carpool_tui.ui import fmt
from carpool_tui.ui.actions import ACTIONS_BY_ID, blocked_reason
from carpool_tui.ui.commands import ActionCommands
from carpool_tui.ui.dashboard import DashboardScreen
from carpool_tui.ui.tools import WarRoomActions, theme_name
from carpool_tui.ui.wallboard import WallboardScreen


class DashboardApp(WarRoomActions, App[int]):
    """carpool-tui's dashboard; `clock` is injectable so tests can freeze time.

    With `wallboard` the keyless WallboardScreen covers the dashboard screen,
    whose poll loop feeds it.
    """

    CSS_PATH = "dashboard.tcss"
    TITLE = "carpool-tui"
    COMMANDS: ClassVar = App.COMMANDS | {ActionCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utc_now,
        label: str | None = None,
        wallboard: bool = False,
        theme: str | None = None,
    ) -> None:
        super().__init__()
        if theme is not None:
            self.theme = theme_name(theme)
        self.wallboard = wallboard
        if wallboard:
            self.use_command_palette = False
        self.last_export: Path | None = None
        """The file the last export wrote, also said on screen."""
        self.settings = settings
        self.label = label or fmt.short_target(settings.dsn)
        """How the database is named on screen: 'dbname@host:port' or 'dbname'."""
        self.clock = clock
        self.interval = settings.refresh_seconds
        self.repo = Repository(settings, clock=clock)
        self.dashboard = DashboardScreen()
        self.timeline = Timeline()
        """What was done in procedures this session, for the incident review."""
        self.stop_signal: str | None = None
        """The name of the signal that ended the session, if one did."""

    def on_mount(self) -> None:
        self._handle_stop_signals()
        self.push_screen(self.dashboard)
        if self.wallboard:
            self.push_screen(WallboardScreen())

    def _handle_stop_signals(self) -> None:
        """Quit cleanly on SIGTERM and SIGHUP (a closed SSH session).

        The loop runs the handler between callbacks, so the app exits through
        its normal path: workers cancelled, connections closed, terminal reset.
        """
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGHUP):
            try:
                loop.add_signal_handler(signum, self._stop_on, signum)
            except (NotImplementedError, RuntimeError, ValueError):
                return  # not the main thread (tests) or no signal support

    def _stop_on(self, signum: int) -> None:
        self.stop_signal = signal.Signals(signum).name
        self.exit(0)

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


def run_dashboard(
    settings: Settings, *, wallboard: bool = False, theme: str | None = None
) -> int:
    """Run the dashboard until the operator quits; the process exit code."""
    app = DashboardApp(settings, wallboard=wallboard, theme=theme)
    app.run()
    if app.stop_signal:
        print(f"Stopping on {app.stop_signal}.", file=sys.stderr, flush=True)
    return int(app.return_code or 0)
