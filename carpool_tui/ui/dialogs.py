"""Modal dialogs: job confirm and run, detail views, and the three admin writes.

Each dialog fetches through the app's repository in its own worker and posts
the typed result back to itself; nothing here awaits the database on the UI
thread. Every dialog writes its confirm and cancel keys on itself.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from uuid import UUID

from rich.cells import cell_len
from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, HorizontalScroll, Vertical
from textual.content import Content
from textual.css.scalar import Scalar
from textual.geometry import Size
from textual.message import Message
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Checkbox, DataTable, Input, Static

from carpool_tui.checks import CHECKS_BY_NAME, EXPIRE_CHECKS, SEAT_CHECKS
from carpool_tui.db.errors import ConnectionLost, OpsError
from carpool_tui.models import (
    Booking,
    ExpireApplied,
    ExpirePreview,
    JobLogEntry,
    JobResult,
    JobSpec,
    Refusal,
    ResolveApplied,
    ResolvePreview,
    SeatFixApplied,
    SeatFixPreview,
    Violation,
    counted,
)
from carpool_tui.runbooks.procedures import UNKNOWN, diagnose
from carpool_tui.ui import fmt
from carpool_tui.ui.actions import ACTIONS, blocked_reason, incomplete_why
from carpool_tui.ui.text import (
    packed,
    parse_uuid,
    printable,
    safe_block,
    safe_markup,
    safe_text,
)
from carpool_tui.ui.widgets import (
    DialogScroll,
    FormScroll,
    RowTable,
    copy_for_operator,
    status_word,
)

if TYPE_CHECKING:
    from carpool_tui.ui.app import DashboardApp

R = TypeVar("R")

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
NOTE_REQUIRED = "A note is required: say why you are making this change."
BLANK_GLYPHS = frozenset("\u115f\u1160\u2800\u3164\uffa0")
"""Letters that draw nothing: a note of only these reads as empty."""


def shows_nothing(text: str) -> bool:
    """Whether `text` would look empty in the audit log: only spaces, control,
    format or blank-drawing characters."""
    return all(
        char in BLANK_GLYPHS or unicodedata.category(char)[0] in "ZCM" for char in text
    )


DIRECTION_CONTROLS = frozenset(
    "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
"""Marks and overrides that reorder text without drawing anything."""


def clean_note(text: str) -> str:
    """A note as it is written to admin_audit_log and the action log.

    A tab, newline or other spacing control character becomes a space; any
    other control character (an escape sequence's ESC, a bell) and a direction
    override is dropped. A note read later in psql or a log must neither drive
    the reader's terminal nor say something other than what was typed.
    """
    kept = []
    for char in text:
        if unicodedata.category(char) in {"Cc", "Zl", "Zp"}:
            kept.append(" " if char.isspace() else "")
        elif char not in DIRECTION_CONTROLS:
            kept.append(char)
    return "".join(kept).strip()


DRAFT_BACK = (
    "What you typed when this dialog was last closed is back; it is kept until "
    "it is written."
)

NOT_SENT = "Not sent, so nothing was written: press Enter again once connected."

LINE_BREAK = re.compile(r"\r\n|\r|\n")

KEY_BURST_S = 0.005
"""Keys closer together than this came in one read from the terminal: pasted,
not typed (nobody presses two keys 5 ms apart)."""
BREAK_HINT_AFTER_S = 0.3
BREAK_HINT = (
    "That Enter arrived together with the text before it, as a pasted line"
    " break does, so nothing was written. Press Enter again to write it."
)


class NoteInput(Input):
    """The note field: a pasted note keeps all its lines, and only an Enter
    pressed on its own writes it.

    A plain Input keeps only the first line of a paste, so a note copied from
    an incident channel would lose the rest without a word. Here the lines are
    joined with " / ", as the field holds one line.

    A paste can also arrive as keys, from a terminal that does not bracket
    pastes. Its line breaks are then Enter keys in the same burst as the text
    before them; taken as Enter, the first would write the note half pasted.
    Such an Enter is a line break instead, joined as a paste's are once more
    text follows. (A bracketed paste holding escape codes arrives whole: see
    carpool_tui.ui.paste.)
    """

    _last_key_at = float("-inf")
    _break_pending = False
    """A pasted line break, written as " / " before the text that follows it."""
    _hint: Timer | None = None

    async def _on_key(self, event: events.Key) -> None:
        burst = event.time - self._last_key_at < KEY_BURST_S
        self._last_key_at = event.time
        if self._hint is not None:
            self._hint.stop()
            self._hint = None
        if event.key == "enter" and burst:
            event.prevent_default()
            event.stop()
            self._break_pending = bool(self.value)
            # Typed keys sent in one packet (a laggy link, a script) look the
            # same: if nothing follows, say why the Enter did not write.
            self._hint = self.set_timer(BREAK_HINT_AFTER_S, self._explain_break)
            return
        if event.is_printable and self._break_pending:
            self.insert_text_at_cursor(" / ")
        self._break_pending = False
        await super()._on_key(event)

    class BreakTaken(Message):
        """An Enter was kept as a pasted line break and nothing followed it:
        the screen says why on its message line, where the result of the
        next Enter replaces it (a notice would lie over that result)."""

    def _explain_break(self) -> None:
        self._hint = None
        self.post_message(self.BreakTaken())

    def on_paste(self, event: events.Paste) -> None:
        event.prevent_default()
        event.stop()
        # Control characters go as in the note written (a tab becomes a space,
        # a bell goes); lines that would show nothing are dropped rather than
        # joined into a visible " / ".
        # An Enter read with the paste is one of its line breaks, as it is
        # after typed text that came in one read.
        self._last_key_at = event.time
        # Only CR and LF break lines: splitlines() would also break at a form
        # feed or a separator control, which a note drops instead.
        lines = [clean_note(line) for line in LINE_BREAK.split(event.text)]
        text = " / ".join(line for line in lines if not shows_nothing(line))
        if not text:
            return
        if self._break_pending:
            self._break_pending = False
            text = " / " + text
        if self.selection.is_empty:
            self.insert_text_at_cursor(text)
        else:
            self.replace(text, *self.selection)


NOTE_IS_AN_ID = "The note is only an id; nothing was written. Say why instead."
NOTE_IS_AN_ID_RIDE = (
    " For another ride, type its id in the ride field above and press Enter"
    " there to preview it first."
)


def _is_an_id(text: str) -> bool:
    """A whole UUID in any spelling, or the 8-character start the tables show.

    Digits alone are a number (a ticket, a date) rather than an id's start:
    a note of "40012345" says where the reason is written.
    """
    try:
        parse_uuid(text)
    except ValueError:
        start = text.strip().lower()
        if start.replace("-", "").isdigit():
            return False
        return _ID_START.fullmatch(start) is not None
    return True


_ID_START = re.compile(r"[0-9a-f]{8}[0-9a-f-]*")


def keys_line(*pairs: tuple[str, str], width: int | None = None) -> str:
    """Keys and what they do, as markup: '[Enter] run   [Esc] cancel'.

    With `width` the pairs are packed into lines of that many cells, so a key
    is never parted from its label where the line wraps.
    """
    return packed(
        (
            (f"[b reverse] {key} [/] {what}", cell_len(key) + 3 + cell_len(what))
            for key, what in pairs
        ),
        width,
        gap=3,
    )


class KeysLine(Static):
    """Keys and what they do, wrapped only between whole "key label" pairs.

    Text wraps at any space, which can leave a key at the end of one line and
    its label at the start of the next; here the pairs are packed into lines
    of the width the widget is given, as it is laid out and drawn.
    """

    def __init__(self, *pairs: tuple[str, str], **kwargs: Any) -> None:
        super().__init__(keys_line(*pairs), **kwargs)
        self.pairs = pairs

    def show(self, *pairs: tuple[str, str]) -> None:
        """Show these pairs instead."""
        if pairs != self.pairs:
            self.pairs = pairs
            self.update(keys_line(*pairs))

    def packed(self, width: int) -> Content:
        """The pairs in lines of `width` cells (0: one line)."""
        return Content.from_markup(keys_line(*self.pairs, width=width or None))

    def render(self) -> Content:
        return self.packed(self.content_size.width)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        if width < 1:
            # Laid out with no room at all (a terminal shrunk to a few cells):
            # no line of text can be wrapped to that; one line is asked for.
            return 1
        return self.packed(width).get_height(self.styles.get_render_rules(), width)


class Outcome(Message):
    """A worker's result (a model, a refusal or an OpsError) for its dialog."""

    def __init__(self, tag: str, value: Any) -> None:
        super().__init__()
        self.tag = tag
        self.value = value


class Dialog(ModalScreen[R]):
    """A centred modal box that closes with Escape.

    ``q`` closes it too: the dashboard's footer, still visible beneath, offers
    ``q``, and a dialog in the way of quitting should go first. Typed into a
    note field, ``q`` is just a letter.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close", show=False)
    ]

    @property
    def dash(self) -> DashboardApp:
        return self.app  # type: ignore[return-value]

    def action_close(self) -> None:
        self.dismiss(None)

    def error_markup(self, err: OpsError) -> str:
        hint = f"\n{safe_markup(err.hint, 400)}" if err.hint else ""
        return f"[b $error]{safe_markup(err.message, 400)}[/]{hint}"


CONFIRM_ARMS_AFTER_S = 0.5
"""A job runs only on a confirm key this long after the dialog opened and after
any other key: nobody reads the dialog that fast, so a quicker Enter belongs to
typing meant for somewhere else (an id typed with the dashboard in focus)."""
CONFIRM_KEYS = frozenset({"enter", "y", "escape", "n", "q"})
CONFIRM_STRAY = (
    "Typed keys do nothing here: this dialog asks whether to run the job. "
    "Enter runs it, Esc cancels."
)
CONFIRM_TOO_SOON = (
    "Not run: that key came too soon after other keys to be an answer to this "
    "dialog (was the typing meant for somewhere else?). Read the above, then "
    "press Enter to run the job, or Esc to cancel."
)


class ConfirmJobDialog(Dialog[bool]):
    """Names the job and what it does before it runs."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter,y", "confirm", "Run", show=False),
        Binding("escape,n", "close", "Cancel", show=False),
    ]

    def __init__(self, job: JobSpec, operator: str) -> None:
        super().__init__()
        self.job = job
        self.operator = operator
        self.quiet_since = time.monotonic()
        """When the last key that is not this dialog's own came (or it opened)."""

    def compose(self) -> ComposeResult:
        job = self.job
        steps = "\n".join(f"  {n}. {s}" for n, s in enumerate(job.steps, start=1))
        with Vertical(classes="dialog", id="confirm-job"):
            yield Static(f"Run {job.title}: {job.name}()", classes="title")
            yield Static(job.summary)
            yield Static(steps)
            yield Static(
                f"Recommended {job.frequency_text}. It runs on its own connection "
                f"as [b]{safe_markup(self.operator, 60)}[/]; the panels keep "
                "updating and you can cancel it.",
                classes="muted",
            )
            message = Static("", id="message")
            message.display = False  # until a key needs an answer
            yield message
            yield KeysLine(("Enter", "run the job"), ("Esc", "cancel"), classes="keys")

    def on_key(self, event: events.Key) -> None:
        if event.key not in CONFIRM_KEYS:
            self.quiet_since = time.monotonic()
            if event.is_printable:
                self._say(CONFIRM_STRAY)

    def _say(self, text: str) -> None:
        message = self.query_one("#message", Static)
        message.update(f"[b $warning]{text}[/]")
        message.display = True

    def action_confirm(self) -> None:
        if time.monotonic() - self.quiet_since < CONFIRM_ARMS_AFTER_S:
            self.quiet_since = time.monotonic()
            self._say(CONFIRM_TOO_SOON)
            return
        self.dismiss(True)

    def action_close(self) -> None:
        self.dismiss(False)


CANCEL_GRACE_S = 10.0
"""How long a cancel may go unanswered before Esc may stop waiting for the job."""


class JobRunDialog(Dialog[JobResult | None]):
    """Runs one job with a spinner and elapsed time; c cancels it on the server."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "cancel_job", "Cancel job", show=False),
        Binding("escape,enter", "close", "Close", show=False),
    ]

    def __init__(self, job: JobSpec) -> None:
        super().__init__()
        self.job = job
        self.result: JobResult | None = None
        self.cancel_asked: datetime | None = None
        """When c was pressed: Esc may stop waiting CANCEL_GRACE_S after it."""

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="job-run"):
            yield Static(f"{self.job.title}: {self.job.name}()", classes="title")
            yield Static("", id="progress")
            yield Static("", id="outcome")
            yield KeysLine(id="job-keys", classes="keys")

    def on_mount(self) -> None:
        self.started = self.dash.clock()
        self._tick()
        self.set_interval(0.1, self._tick)
        self._run()

    @property
    def running(self) -> bool:
        return self.result is None

    def _tick(self) -> None:
        if not self.running:
            return
        elapsed = (self.dash.clock() - self.started).total_seconds()
        frame = SPINNER[int(elapsed * 10) % len(SPINNER)]
        state = "Cancelling" if self.cancelling else "Running"
        self.query_one("#progress", Static).update(
            f"[b $accent]{frame}[/] {state}… {fmt.duration(elapsed)} elapsed"
        )
        keys = [("c", "cancel the job on the server")]
        if self.may_abandon:
            keys = [("Esc", "stop waiting: the server has not answered the cancel")]
        elif self.cancelling:
            # Sent: c again would do nothing; say when Esc will work.
            later = f"stop waiting, from {CANCEL_GRACE_S:g} s after the cancel"
            keys = [("Esc", later)]
        self.query_one("#job-keys", KeysLine).show(*keys)

    @property
    def cancelling(self) -> bool:
        return self.cancel_asked is not None

    @property
    def may_abandon(self) -> bool:
        """Whether the cancel has gone unanswered long enough to stop waiting."""
        if self.cancel_asked is None:
            return False
        waited = (self.dash.clock() - self.cancel_asked).total_seconds()
        return waited >= CANCEL_GRACE_S

    @work(exclusive=True, group="job")
    async def _run(self) -> None:
        result = await self.dash.repo.run_job(self.job.name)
        self.post_message(Outcome("result", result))

    @work(group="cancel")
    async def _cancel(self) -> None:
        try:
            sent = await self.dash.repo.cancel_job()
        except OpsError as err:
            self.post_message(Outcome("cancel", err))
            return
        self.post_message(Outcome("cancel", sent))

    def on_outcome(self, message: Outcome) -> None:
        if message.tag == "cancel":
            if isinstance(message.value, OpsError):
                self.notify(str(message.value), severity="error")
            return
        result: JobResult = message.value
        self.result = result
        elapsed = (self.dash.clock() - self.started).total_seconds()
        took = _took(elapsed, result.server_seconds)
        if result.outcome_unknown:
            self.query_one("#progress", Static).update(
                f"[b $warning]No answer[/] after {took}."
            )
            text = (
                f"[b $warning]{safe_markup(result.describe(self.job.name), 600)}[/]"
                f"\n{safe_markup(result.hint or '', 300)}"
            )
        elif result.success:
            self.query_one("#progress", Static).update(
                f"[b $success]Done[/] in {took}."
            )
            text = safe_markup(result.describe(self.job.name), 600)
        else:
            self.query_one("#progress", Static).update(
                f"[b $error]Failed[/] after {took}."
            )
            text = f"[b $error]{safe_markup(result.describe(self.job.name), 600)}[/]"
            if result.hint:
                text += f"\n{safe_markup(result.hint, 300)}"
            # What to do next, as procedure 4.1 (g on the run) would say it.
            cause = diagnose(result.sqlstate, result.error)
            if cause is not UNKNOWN:
                text += f"\n[b]{cause.name}:[/] {safe_markup(cause.advice, 400)}"
        self.query_one("#outcome", Static).update(text)
        self.query_one("#job-keys", KeysLine).show(("Enter/Esc", "close"))

    def action_cancel_job(self) -> None:
        if self.running and not self.cancelling:
            self.cancel_asked = self.dash.clock()
            self._tick()
            self._cancel()

    def action_close(self) -> None:
        if self.running and self.may_abandon:
            # A server that answers neither the job nor the cancel (stopped,
            # or a network that drops everything) must not hold the screen.
            self.workers.cancel_group(self, "job")
            self.notify(
                f"Stopped waiting for {self.job.name}: the server answered neither "
                "the job nor the cancel, which may not have reached it. The job may "
                "still complete; the job log shows how it ended once the server "
                "answers.",
                title="Outcome unknown",
                severity="warning",
                timeout=30,
            )
            self.dismiss(None)
            return
        if self.running and self.cancelling:
            self.notify(
                "The cancel is on its way; if the server does not answer it, Esc "
                f"stops waiting after {CANCEL_GRACE_S:g} s."
            )
            return
        if self.running:
            self.notify("The job is still running; press c to cancel it.")
            return
        self.dismiss(self.result)


def _took(elapsed: float, server_seconds: float | None) -> str:
    """The wait the operator saw, and the server's own time for the run if known.

    The two differ by connecting and queueing; showing both stops the dialog
    and the job log from seeming to disagree.
    """
    shown = fmt.duration(elapsed)
    if server_seconds is None:
        return shown
    return f"{shown}; the job itself took {fmt.duration(server_seconds)}"


def _field_lines(rows: list[tuple[str, Any]]) -> str:
    """Label/value lines with the labels in one column; values are escaped."""
    width = max(len(label) for label, _ in rows)
    lines = [
        f"[b]{label:<{width}}  [/]{safe_markup(value, 300)}" for label, value in rows
    ]
    return "\n".join(lines)


ERROR_LINES = 40  # of a job run's error message, in its detail


class LogEntryDialog(Dialog[None]):
    """One job run in full: timings, error message, SQLSTATE and details."""

    def __init__(self, entry: JobLogEntry) -> None:
        super().__init__()
        self.entry = entry

    def compose(self) -> ComposeResult:
        e = self.entry
        status = status_word(e.status)
        with DialogScroll(classes="dialog", id="log-entry"):
            yield Static(f"Job run: {safe_markup(e.job_name, 60)}", classes="title")
            yield Static(
                _field_lines(
                    [
                        ("Status", status),
                        ("Started", fmt.full_stamp(e.started_at)),
                        ("Completed", fmt.full_stamp(e.completed_at)),
                        ("Took", fmt.duration(e.duration)),
                        ("Records", fmt.count(e.records_processed)),
                        ("Errors", fmt.count(e.errors_encountered)),
                        ("Triggered by", e.triggered_by or "—"),
                        ("SQLSTATE", e.error_sqlstate or "—"),
                    ]
                )
            )
            if e.error_message:
                yield Static("Error message", classes="subtitle")
                # A server error's lines (message, DETAIL, CONTEXT) as lines.
                lines = e.error_message.splitlines()[:ERROR_LINES]
                text = "\n".join(safe_markup(line, 2000) for line in lines)
                yield Static(f"[$error]{text}[/]", classes="wrap")
            yield Static("Details", classes="subtitle")
            details = json.dumps(e.details, indent=2, sort_keys=True, default=str)
            yield Static(Text(safe_block(details, 100, 60)), classes="code")
            yield KeysLine(("Esc", "close"), classes="keys")


SAMPLES_MAX_LINES = 10  # the samples table's header and rows, at most
SAMPLES_MIN_LINES = 3  # the header and two rows, however short the terminal


def violation_keys(violation: Violation) -> list[tuple[str, str]]:
    """The keys a violation's detail offers: a seat fix for the seat checks,
    an expiry for the expiry checks (manual 4.2), both for a row naming no
    check this version knows; the other checks are fixed by hand."""
    known = [name for name in violation.checks if name in CHECKS_BY_NAME]
    pairs = []
    if not known or any(name in SEAT_CHECKS for name in known):
        pairs.append(("s", "fix seats of sample's ride"))
    if not known or any(name in EXPIRE_CHECKS for name in known):
        pairs.append(("e", "expire sample's ride"))
    return [*pairs, ("x", "resolve"), ("y", "copy ride id"), ("Esc", "close")]


class ViolationDialog(Dialog[None]):
    """One violation row with its samples; acts on the selected sample."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", show=False),
        Binding("s", "seat_fix", "Fix seats", show=False),
        Binding("e", "expire_ride", "Expire ride", show=False),
        Binding("x", "resolve", "Resolve", show=False),
        Binding("y", "copy_ride", "Copy ride id", show=False),
    ]

    def __init__(self, violation: Violation) -> None:
        super().__init__()
        self.violation = violation

    def action_copy_ride(self) -> None:
        """Copy the selected sample's ride id with OSC 52, as y copies a row's
        id on the dashboard: the table shows it, but not always whole."""
        table = self.query_one("#samples", DataTable)
        samples = self.violation.sample_data
        row = table.cursor_row
        ride = samples[row].ride_id if 0 <= row < len(samples) else None
        if not ride:
            self.notify(
                "This sample names no ride. Nothing was copied.", severity="warning"
            )
            return
        try:
            text = str(parse_uuid(ride))
        except ValueError:
            self.notify(
                "The sample's ride id is not a valid id. Nothing was copied.",
                severity="warning",
            )
            return
        copy_for_operator(self.app, text, f"ride_id {text}")

    def compose(self) -> ComposeResult:
        v = self.violation
        kind = "legacy row (all checks in one)" if v.legacy else "one check"
        with Vertical(classes="dialog", id="violation"):
            yield Static(
                f"Violation: {safe_markup(v.check_name, 60)} ({v.severity})",
                classes="title",
            )
            yield Static(
                _field_lines(
                    [
                        ("Checks", ", ".join(v.checks) or "—"),
                        ("Row", kind),
                        ("Count", fmt.count(v.violation_count)),
                        ("Detected", fmt.full_stamp(v.detected_at)),
                        ("Last seen", fmt.full_stamp(v.last_seen_at)),
                        ("Notes", v.notes or "—"),
                        *([("Unreadable", v.unreadable)] if v.unreadable else []),
                    ]
                )
            )
            read = len(v.sample_data)
            total = v.sample_total or read
            shown = f"first {read} of {total:,}" if total > read else str(read)
            yield Static(f"Samples ({shown})", classes="subtitle")
            handled = Static("", id="handled")
            handled.display = False
            yield handled
            table: DataTable[Text] = RowTable(cursor_type="row", id="samples")
            yield table
            yield KeysLine(*violation_keys(v), classes="keys")

    def on_mount(self) -> None:
        table = self.query_one("#samples", DataTable)
        table.add_column("#", key="n")
        table.add_columns("Check", "Ride", "Other fields")
        for n, sample in enumerate(self.violation.sample_data, start=1):
            fields = sample.fields()
            rest = " ".join(
                f"{k}={v}"
                for k, v in fields.items()
                if k not in ("check", "name", "severity", "ride_id")
            )
            table.add_row(
                Text(str(n)),
                safe_text(sample.name or sample.check or "", 30),
                safe_text(sample.ride_id or "—", 36),
                safe_text(rest, 80),
                key=str(n - 1),
            )
        self._mark_handled()
        table.focus()
        self.call_after_refresh(self._fit_samples)

    def on_screen_resume(self) -> None:
        """Back from a fix or an expiry opened here: its sample is marked, and
        the cursor moves on from it to the next sample not yet handled."""
        table = self.query_one("#samples", DataTable)
        if table.row_count != len(self.violation.sample_data):
            return  # not filled yet: on_mount marks them
        before = self._before
        if self._mark_handled() and table.cursor_row in self._before - before:
            # The next one not done yet, below it or else from the top.
            after = range(table.cursor_row + 1, table.row_count)
            order = [*after, *range(table.cursor_row)]
            left = next((n for n in order if n not in self._before), None)
            if left is not None:
                table.move_cursor(row=left)
        self.call_after_refresh(self.call_after_refresh, self._fit_samples)

    _before: frozenset[int] = frozenset()
    """The rows marked handled when the dialog last showed them."""

    def _handled_rows(self) -> frozenset[int]:
        return frozenset(
            n
            for n, sample in enumerate(self.violation.sample_data)
            if self.dash.handled_ride(sample.ride_id)
        )

    def _mark_handled(self) -> bool:
        """Put ✓ beside the samples whose ride this session fixed or expired
        (the samples are the check's findings, older than that); whether any
        was marked since the dialog last showed them."""
        table = self.query_one("#samples", DataTable)
        rows = self._handled_rows()
        for n in rows - self._before:
            table.update_cell(str(n), "n", Text(f"{n + 1} ✓"), update_width=True)
        line = self.query_one("#handled", Static)
        line.display = bool(rows)
        line.update("✓ fixed or expired this session; samples are from the last check")
        fresh = rows != self._before
        self._before = rows
        return fresh

    def on_resize(self, event: events.Resize) -> None:
        self.call_after_refresh(self._fit_samples)

    def _fit_samples(self) -> None:
        """Give the samples only the lines the dialog has left for them.

        The dialog stops at its max-height; a table taller than the room left
        below the fields was cut off there, so on a short terminal the cursor
        went down onto rows out of sight (which s and e then acted on) and the
        keys vanished. Held to that room, the table scrolls to its cursor.
        """
        box = self.query_one("#violation", Vertical)
        table = self.query_one("#samples", DataTable)
        most = box.styles.max_height
        if most is None:
            return
        room = int(most.resolve(self.size, self.size)) - box.styles.gutter.height
        # What the box holds besides the table, margins included.
        room -= box.virtual_size.height - table.outer_size.height
        fitted = max(SAMPLES_MIN_LINES, min(SAMPLES_MAX_LINES, room))
        if table.styles.max_height != Scalar.from_number(fitted):
            table.styles.max_height = fitted
            # A shorter table may have left its cursor's row out of view.
            self.call_after_refresh(table.move_cursor, row=table.cursor_row)

    def _sample_ride(self) -> str | None:
        table = self.query_one("#samples", DataTable)
        samples = self.violation.sample_data
        if not samples or table.cursor_row < 0 or table.cursor_row >= len(samples):
            return None
        return samples[table.cursor_row].ride_id

    def _allowed(self, action_id: str) -> bool:
        reason = self.dash.blocked(action_id, {"violation", "row"})
        if reason:
            self.notify(reason, severity="warning", title="Not available")
        return reason is None

    def _offered(self, key: str) -> bool:
        """Whether the keys line offers `key` for this violation's check; one
        it does not offer says why instead of opening a fix that cannot help."""
        if any(k == key for k, _ in violation_keys(self.violation)):
            return True
        self.notify(
            "This check is not fixed that way (manual 4.2): investigate and fix "
            "it by hand, or press Esc and use the key on the dashboard.",
            severity="warning",
            title="Not offered here",
        )
        return False

    def action_seat_fix(self) -> None:
        if self._offered("s") and self._allowed("seat-fix"):
            self.app.push_screen(SeatFixDialog(self._sample_ride()))

    def action_expire_ride(self) -> None:
        if self._offered("e") and self._allowed("expire-ride"):
            self.app.push_screen(ExpireRideDialog(self._sample_ride()))

    def action_resolve(self) -> None:
        if self._allowed("resolve"):
            self.app.push_screen(ResolveDialog(self.violation), self._resolved)

    def _resolved(self, done: bool | None) -> None:
        """Resolved: this violation is closed, so its detail closes too, and
        the dashboard beneath reads the violations again."""
        if done:
            self.dismiss(None)
            self.dash.dashboard.start_round()


class BookingsTable(DataTable[Text]):
    """A preview's bookings: read, not chosen from, so Tab passes it by.

    Focused, it showed no sign of it, and the text typed next went nowhere.
    """

    can_focus = False

    def __init__(self) -> None:
        super().__init__(id="bookings", cursor_type="none")
        self.display = False  # until a preview has bookings

    def show(self, bookings: list[Booking]) -> None:
        """These bookings, or nothing at all when there are none."""
        self.clear(columns=True)
        # What holds seats first: on 80 columns the passenger is what is cut.
        self.add_columns("Status", "Seats", "Booking", "Created (UTC)", "Passenger")
        for b in bookings:
            self.add_row(
                safe_text(b.status or "—", 12),
                Text(fmt.count(b.seats_requested)),
                safe_text(b.booking_id, 36),
                Text(fmt.stamp(b.created_at)),
                safe_text(b.passenger_id or "—", 36),
            )
        self.display = bool(bookings)


WRITE_UNSURE = (
    "[b $warning]The write's answer never came (the connection dropped or the "
    "server stopped answering): it may or may not have been made.[/] Enter "
    "retries safely: a write already made is refused as out of date, never "
    "made twice."
)
"""What a dropped connection means for a write whose answer never came back."""
MAYBE_YOURS = (
    " Your earlier attempt, whose answer was lost, may be that change:"
    " admin_audit_log holds it with your note if so."
)
"""Said of a refusal after a lost answer: the change found may be one's own."""


class WriteDialog(Dialog[bool]):
    """Shared shape of the admin writes: target input, preview, note, apply."""

    done = False

    message_markup = ""
    """What the message line says now."""

    note_refused = False
    """The message line holds a refusal of the note as it was."""

    def set_message(self, markup: str) -> None:
        self.message_markup = markup
        self.gist_shown = False
        self.note_refused = False
        message = self.query_one("#message", Static)
        message.update(markup)
        if markup:
            self.call_after_refresh(message.scroll_visible, animate=False)

    @on(NoteInput.BreakTaken)
    def _break_taken(self) -> None:
        if self.done or self.applying:
            return  # an Enter bounced after the one that wrote: the result stays
        self.set_message(f"[b $warning]{BREAK_HINT}[/]")

    def note_text(self) -> str | None:
        """The note without control characters (clean_note), or None after
        telling the operator what is wrong with it.

        A note that is only an id was almost always typed into the wrong field
        (the ride id meant for the field above), and applying it would write
        to the ride in the preview instead: it is refused, with the way out.
        """
        field = self.query_one("#note", Input)
        note = clean_note(field.value)
        problem = NOTE_REQUIRED if shows_nothing(note) else None
        if note and _is_an_id(note):
            has_ride_field = bool(self.query("#ride"))
            problem = NOTE_IS_AN_ID + (NOTE_IS_AN_ID_RIDE if has_ride_field else "")
        if problem is not None:
            self.set_message(f"[b $error]{problem}[/]")
            self.note_refused = True
            field.focus()
            return None
        return note

    @on(Input.Changed, "#note")
    def _note_edited(self) -> None:
        """Once the note changes, its refusal no longer speaks of it."""
        if self.note_refused:
            self.set_message("")
            self.message_cleared()

    def message_cleared(self) -> None:
        """What the message line shows when nothing else is to be said."""

    def finish(self, markup: str) -> None:
        """The write is done: one dialog, one write; the inputs are closed."""
        self.done = True
        self.set_message(markup)
        self.query_one("#note", Input).disabled = True
        for target in self.query("#ride").results(Input):
            target.disabled = True
        self.query_one(".keys", KeysLine).show(("Esc", "close"))
        self.focus_next()

    applying = False
    """A write was sent and its answer has not come back."""
    sent_at: datetime | None = None
    """When the write was sent: the time it was made, for the timeline."""
    _keys_before: tuple[tuple[str, str], ...] = ()
    """The keys line as it was before the write was sent."""
    lost_answer = False
    """An earlier write's connection dropped before its answer came."""

    def maybe_yours(self) -> str:
        """After a lost answer, a refusal's cause may be that very write."""
        return MAYBE_YOURS if self.lost_answer else ""

    draft_back = False
    """A draft was put back: said until the write is made."""

    def draft_key(self) -> tuple[str, str]:
        """Which draft this dialog opens with: its kind and what it was opened
        on."""
        return (type(self).__name__, "")

    def kept_key(self) -> tuple[str, str]:
        """Which draft this dialog's text is kept as: what it names now."""
        return self.draft_key()

    def typed(self) -> dict[str, str]:
        """The text fields the operator filled in, by selector."""
        return {
            f"#{field.id}": field.value
            for field in self.query("#ride, #note").results(Input)
            if field.value.strip()
        }

    def keep_draft(self) -> None:
        """Keep what was typed for the next time this dialog opens on the same
        thing: Esc closes, and a note typed at 3 AM must not be lost to it."""
        fields = self.typed()
        # A write whose answer was not waited for keeps its note too: if it
        # was not made, the next attempt needs it.
        if fields and not self.done:
            self.dash.drafts[self.kept_key()] = fields
        else:
            self.dash.drafts.pop(self.kept_key(), None)

    def restore_draft(self) -> None:
        """Put back what was typed when this dialog last closed unwritten.

        A draft kept under the ride a dialog opened on holds only its note
        (kept_key, typed): the ride comes with the dialog."""
        draft = self.dash.drafts.pop(self.draft_key(), None)
        if not draft:
            return
        for selector, value in draft.items():
            for field in self.query(selector).results(Input):
                field.value = value
                field.cursor_position = len(value)
        self.draft_back = True
        self.set_message(DRAFT_BACK)

    def action_close(self) -> None:
        self.keep_draft()
        if self.applying:
            # Closing stops the wait, not the write: say so, as the log does.
            self.notify(
                "Stopped waiting for the write's answer: it may or may not have been "
                "made, and the action log records it as unknown. Open it again to "
                "see how things are now; a write already made is refused as out of "
                "date, never made twice.",
                title="Outcome unknown",
                severity="warning",
                timeout=30,
            )
        self.dismiss(self.done)

    def call_db(self, tag: str, call: Callable[[], Awaitable[Any]]) -> None:
        """Run one repository call in a worker; its result comes back as Outcome."""
        if tag == "apply":
            self.applying = True
            self.sent_at = self.dash.clock()
            self._hold_inputs(True)
        self._call_db(tag, call)

    def _hold_inputs(self, held: bool) -> None:
        """Close the inputs while a write is out: a second Enter (or a pasted
        note's line breaks) would send it again, and the refusal of the copy
        would then replace the message that the first one was made."""
        note = self.query_one("#note", Input)
        note.disabled = held
        for target in self.query("#ride").results(Input):
            target.disabled = held
        # Enter does nothing meanwhile, and Esc stops the wait, not the write.
        keys = self.query_one(".keys", KeysLine)
        if held:
            self._keys_before = keys.pairs
            keys.show(("Esc", "stop waiting (the write may still be made)"))
        else:
            keys.show(*self._keys_before)
            note.focus()

    @work(group="db")
    async def _call_db(self, tag: str, call: Callable[[], Awaitable[Any]]) -> None:
        try:
            value: Any = await call()
        except OpsError as err:
            value = err
        self.post_message(Outcome(tag, value))

    def on_outcome(self, message: Outcome) -> None:
        value = message.value
        if message.tag == "apply":
            self.applying = False
            if not self.done:
                self._hold_inputs(False)
        if isinstance(value, OpsError) and self.done and message.tag == "preview":
            # A read after the write failed: the write's message stays.
            self.query_one("#preview", Static).update(self.error_markup(value))
        elif (
            isinstance(value, OpsError)
            and message.tag == "apply"
            and isinstance(value, ConnectionLost)
            and value.sent
        ):
            # What it means for the write comes first, where 80x24 shows it; the
            # DSN advice is left out: the connection worked until it dropped.
            self.set_message(
                f"{WRITE_UNSURE}\n[$error]{safe_markup(value.message, 200)}[/]"
            )
            self.lost_answer = True
        elif isinstance(value, OpsError) and message.tag == "apply" and not value.sent:
            self.set_message(f"[b]{NOT_SENT}[/]\n{self.error_markup(value)}")
        elif isinstance(value, OpsError):
            self.set_message(self.error_markup(value))
        elif isinstance(value, Refusal) and not self.refused(value):
            self.set_message(
                f"[b $error]Refused ({safe_markup(value.code, 30)}):[/] "
                f"{safe_markup(value.error, 300)}{self.maybe_yours()}"
            )
        elif not isinstance(value, Refusal):
            self.arrived(value)

    def refused(self, refusal: Refusal) -> bool:
        """Handle a refusal specially; False shows its sentence."""
        return False

    def arrived(self, value: Any) -> None:
        """A preview or an applied result came back."""


class RideDialog(WriteDialog):
    """A write on one ride: type or receive its id, preview, then apply.

    PageUp and PageDown scroll the preview from the note field, for a preview
    taller than a small terminal.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("pageup", "scroll_preview(-1)", "Scroll up", show=False),
        Binding("pagedown", "scroll_preview(1)", "Scroll down", show=False),
        Binding("tab", "next_field", "Next field", show=False),
    ]

    preview: Any = None
    """The preview on screen (None: none, and the note is disabled)."""

    def __init__(self, ride_id: str | None = None) -> None:
        super().__init__()
        self.initial = ""
        """The ride id to preview at once: only ever a valid UUID."""
        self.rejected: str | None = None
        """A given ride id that is not a UUID: database text, kept out of the input."""
        if ride_id and ride_id.strip():
            try:
                self.initial = str(parse_uuid(ride_id))
            except ValueError:
                self.rejected = ride_id

    def draft_key(self) -> tuple[str, str]:
        return (type(self).__name__, self.initial)

    def kept_key(self) -> tuple[str, str]:
        # A note typed for another ride than the one the dialog opened on is
        # kept as a typed ride's draft, with that ride: put back on the ride
        # it opened on, one Enter would write it to the wrong ride.
        if self.initial and self._names_initial():
            return self.draft_key()
        return (type(self).__name__, "")

    def _names_initial(self) -> bool:
        try:
            return str(parse_uuid(self.query_one("#ride", Input).value)) == self.initial
        except ValueError:
            return False

    def typed(self) -> dict[str, str]:
        fields = super().typed()
        if self.initial and self._names_initial():
            fields.pop("#ride", None)  # given with the dialog, not typed
        return fields

    def on_mount(self) -> None:
        page = self.query_one(".dialog", DialogScroll)
        self.watch(page, "scroll_y", self._fold_moved, init=False)
        self.restore_draft()
        if self.initial:
            self._start_preview(self.initial)
            return
        if self.rejected is not None:
            self.set_message(
                "[b $warning]The sample's ride id is not a valid id[/] "
                f"('{safe_markup(self.rejected, 40)}'); type the ride id above."
            )
        self.query_one("#ride", Input).focus()

    def action_scroll_preview(self, direction: int) -> None:
        self.query_one(".dialog", DialogScroll).page(direction)

    def action_next_field(self) -> None:
        """Tab from the ride id before its preview previews it, as Enter does.

        The note opens with the preview, so until then Tab had nowhere to go:
        a note typed after it landed in the id field.
        """
        ride = self.query_one("#ride", Input)
        if self.focused is ride and self.query_one("#note", Input).disabled:
            if not self.done:
                self._start_preview(ride.value)
            return
        self.focus_next()

    def _start_preview(self, text: str) -> None:
        self.forget_preview()
        try:
            ride = parse_uuid(text)
        except ValueError as exc:
            self.set_message(f"[b $error]{safe_markup(str(exc), 300)}[/]")
            self.query_one("#ride", Input).focus()
            return
        self.set_message("Reading the ride…")
        self.call_db("preview", partial(self.preview_call, ride))

    def forget_preview(self) -> None:
        """Drop the preview on screen, so no write can go to a ride not in view.

        The note is disabled until a new preview arrives: a write only ever
        applies to the ride the id field names and the preview shows.
        """
        self.preview = None
        self.query_one("#preview", Static).update("")
        self.query_one("#bookings", DataTable).display = False
        self.query_one("#note", Input).disabled = True

    def read_again(self, ride: UUID) -> None:
        """After the write, show the ride as it is now: the preview is out of date."""
        self.query_one("#preview", Static).update("Reading the ride again…")
        self.query_one("#bookings", DataTable).display = False
        self.call_db("preview", partial(self.preview_call, ride))

    def previewed(self) -> UUID | None:
        """The ride of the preview on screen, if the id field still names it."""
        if self.preview is None:
            return None
        try:
            typed = parse_uuid(self.query_one("#ride", Input).value)
        except ValueError:
            return None
        shown = UUID(str(self.preview.ride_id))
        return shown if typed == shown else None

    @on(Input.Changed, "#ride")
    def _ride_edited(self) -> None:
        if self.done or self.preview is None or self.previewed() is not None:
            return
        self.forget_preview()
        self.set_message("The ride id changed: press Enter on it to preview that ride.")

    def foot(self, verb: str, *controls: Widget) -> ComposeResult:
        """The note, the message and the keys, docked so they stay in view.

        ``controls`` (a confirmation box) go above the note, in view with it.
        """
        with Vertical(classes="foot"):
            yield from controls
            yield NoteInput(
                placeholder="note: why (required)", id="note", disabled=True
            )
            yield Static("", id="message")
            yield KeysLine(
                ("Enter", f"on ride id: preview · on note: {verb}"),
                ("Esc", "cancel"),
                classes="keys",
            )

    async def preview_call(self, ride: UUID) -> Any:
        """The repository preview for this dialog's write."""
        raise NotImplementedError

    refusal_text = ""
    """A refusal's sentence, kept on screen once the ride it re-read arrives."""

    def refused(self, refusal: Refusal) -> bool:
        """A refusal about the ride's state: say it and show the ride as it is.

        The ride changed since the preview (someone finished, deleted or fixed
        it), so the preview on screen is out of date; the note waits for the
        fresh one.
        """
        if refusal.code not in RIDE_STATE_REFUSALS or self.preview is None:
            return False
        ride = UUID(str(self.preview.ride_id))
        said = (
            f"[b $error]Refused ({safe_markup(refusal.code, 30)}):[/] "
            f"{safe_markup(refusal.error, 300)} Nothing was written."
            f"{self.maybe_yours()}"
        )
        if refusal.code == "not_found":
            self.forget_preview()
            self.set_message(said)
            self.query_one("#ride", Input).focus()
            return True
        # Kept for when the ride read again arrives.
        self.refusal_text = said
        self.query_one("#note", Input).disabled = True
        self.set_message(said + " Reading the ride again…")
        self.read_again(ride)
        return True

    def message_after_preview(self) -> str:
        """What the message line says once a preview arrives: a refusal's
        sentence if one is waiting, else what the write would do."""
        text, self.refusal_text = self.refusal_text, ""
        if not text:
            self.call_after_refresh(self._say_what_it_does)
        return text

    gist_shown = False
    """The message line holds the preview's gist (kept in step with the fold)."""

    def message_cleared(self) -> None:
        self._say_what_it_does()

    @on(DialogScroll.Resized)
    def _fold_moved(self) -> None:
        if self.gist_shown:
            self._say_what_it_does(again=True)

    def _say_what_it_does(self, again: bool = False) -> None:
        """The preview's gist beside the note, where a small terminal shows
        it, and which key shows the part of the preview out of view, if any."""
        # Only into an empty line: a message said since (a refused note) stays.
        if self.done or self.preview is None or (self.message_markup and not again):
            return
        gist = self.gist()
        above, below = self.query_one(".dialog", DialogScroll).hidden()
        if gist and below:
            gist += " PgDn shows the rest of the preview."
        elif gist and above:
            gist += " PgUp shows the top of the preview."
        if self.draft_back:
            # The preview's words would replace the notice: it goes first.
            gist = f"{DRAFT_BACK} {gist}".strip()
        if again and gist == self.message_markup:
            return  # unchanged: the message line is not redrawn
        self.set_message(gist)
        self.gist_shown = bool(gist)

    def gist(self) -> str:
        """What applying would do, in one sentence."""
        return ""

    @on(Input.Submitted, "#ride")
    def _ride_submitted(self, event: Input.Submitted) -> None:
        self._start_preview(event.value)


RIDE_STATE_REFUSALS = frozenset(
    {"not_found", "already_terminal", "not_due", "nothing_to_fix", "overbooked"}
)
"""Refusals that mean the ride is not as the preview showed it."""


class SeatFixDialog(RideDialog):
    """Manual 4.4: preview a ride's computed seats, then apply with a note."""

    preview: SeatFixPreview | None = None

    def compose(self) -> ComposeResult:
        with FormScroll(classes="dialog", id="seat-fix"):
            yield Static("Fix a ride's available seats (manual 4.4)", classes="title")
            yield Input(self.initial, placeholder="ride id (UUID)", id="ride")
            yield Static("", id="preview")
            yield BookingsTable()
            yield from self.foot("apply")

    async def preview_call(self, ride: UUID) -> Any:
        return await self.dash.repo.preview_seat_fix(ride)

    @on(Input.Submitted, "#note")
    def _note_submitted(self) -> None:
        if self.done or self.applying:
            return
        preview = self.preview
        if preview is None or self.previewed() is None:
            self.set_message("[b $error]Preview the ride first (Enter on its id).[/]")
            return
        note = self.note_text()
        if note is None:
            return
        if preview.overbooked:
            self.set_message(
                "[b $error]This ride is overbooked; a seat fix cannot help.[/]"
            )
            return
        if not preview.needs_fix:
            self.set_message("Nothing to fix: the stored value is already right.")
            return
        self.set_message("Applying…")
        self.call_db("apply", partial(self.dash.repo.apply_seat_fix, preview, note))

    def show_preview(self, preview: SeatFixPreview) -> None:
        self.preview = preview
        total = preview.total_seats
        held = preview.counted_seats
        if held is None:  # a preview that does not say: what the value implies
            held = total - preview.computed
        sum_text = (
            f"{total} total - {held} seats held by {len(preview.bookings)} "
            "pending/confirmed booking(s)"
        )
        computed = f"{preview.computed} = {sum_text}"
        if total - held != preview.computed:
            # The server holds the value to the integer range (absurd totals).
            computed = (
                f"{preview.computed} ({sum_text} is {total - held}, held to the "
                "range a seat count can store)"
            )
        lines = [
            _field_lines(
                [
                    ("Ride", f"{preview.ride_id} ({preview.status or '?'})"),
                    ("Total seats", total),
                    ("Available now", preview.current),
                    ("Computed", computed),
                ]
            )
        ]
        if preview.overbooked and total < 0:
            lines.append(
                "[b $error]Its total_seats is below 0: no stored value is right; "
                "correct the ride's total by hand.[/]"
            )
        elif preview.overbooked:
            lines.append(
                "[b $error]Overbooked: bookings hold more seats than exist.[/]"
            )
        elif preview.needs_fix:
            lines.append(
                f"[b $warning]Apply sets available_seats {preview.current} → "
                f"{preview.computed}.[/]"
            )
        else:
            lines.append("[b $success]Nothing to fix: the stored value is right.[/]")
        self.query_one("#preview", Static).update("\n".join(lines))
        self.query_one(BookingsTable).show(preview.bookings)
        if self.done:
            return  # the ride as it is after the fix: nothing more to apply here
        note = self.query_one("#note", Input)
        note.disabled = False
        note.focus()

    def gist(self) -> str:
        preview = self.preview
        if preview is None or not preview.needs_fix or preview.overbooked:
            return ""
        holding = counted(len(preview.bookings), "{} booking holds", "{} bookings hold")
        return (
            f"Apply sets available_seats {preview.current} → {preview.computed} "
            f"({holding} seats)."
        )

    def arrived(self, value: Any) -> None:
        if isinstance(value, SeatFixPreview):
            self.show_preview(value)
            if not self.done:
                self.set_message(self.message_after_preview())
        elif isinstance(value, SeatFixApplied):
            self.finish(
                f"[b $success]Fixed.[/] Ride {safe_markup(value.ride_id, 40)}: "
                f"available seats {_seats(value.before)} → {_seats(value.after)}. "
                "Recorded in admin_audit_log with your note."
            )
            self.read_again(UUID(value.ride_id))

    def refused(self, refusal: Refusal) -> bool:
        if refusal.code != "stale_preview":
            return super().refused(refusal)
        fresh = refusal.preview
        if not isinstance(fresh, SeatFixPreview):
            fresh = None
        if fresh is not None:
            self.show_preview(fresh)
        if fresh is not None and not fresh.needs_fix:
            then = "nothing was applied, and nothing is left to fix."
        elif fresh is not None and fresh.overbooked:
            then = "the ride is overbooked, which a seat fix cannot help."
        else:
            then = "check them and press Enter on the note to apply."
        self.set_message(
            "[b $warning]The ride changed since the preview.[/] The values "
            f"above are fresh; {then}{self.maybe_yours()}"
        )
        return True


def _seats(value: Any) -> str:
    if isinstance(value, dict):
        for key in ("available_seats", "available", "current"):
            if key in value:
                return printable(value[key], 10)
    return printable(value, 20)


NOT_DUE = "This ride is not due yet."


class TickBox(Checkbox):
    """A checkbox that draws its X only when ticked: unticked, the box is empty.

    Textual's checkbox draws the X either way and tells the two apart by
    colour alone, which a terminal with few colours (or none) shows the same.
    Space and Enter toggle it, as any checkbox.
    """

    def __init__(self, label: str, value: bool = False, **kwargs: Any) -> None:
        super().__init__(label, value, **kwargs)
        self._mark()

    def watch_value(self) -> None:
        self._mark()
        super().watch_value()

    def _mark(self) -> None:
        self.BUTTON_INNER = "X" if self.value else " "


def _allow_label(ticked: bool) -> str:
    """The box's label, with how to tick it from the note while it is not."""
    state = "TICKED" if ticked else "not ticked; Shift+Tab, Space"
    # Short enough to show whole in the dialog at 80 columns.
    return f"Expire before it is due ({state})"


def _expiring(bookings: int, where: str = "") -> str:
    """What expiring a ride with ``bookings`` open bookings does (``where``:
    where the preview lists them)."""
    if not bookings:
        return "Expiring completes the ride; it has no pending or confirmed booking."
    listed = counted(
        bookings, "{} pending/confirmed booking", "{} pending/confirmed bookings"
    )
    return (
        f"Expiring completes the ride and {listed}{where}, and notifies their "
        "passengers."
    )


class ExpireRideDialog(RideDialog):
    """Manual 4.3: expire one ride by hand after a preview of what changes."""

    preview: ExpirePreview | None = None

    def compose(self) -> ComposeResult:
        with FormScroll(classes="dialog", id="expire-ride"):
            yield Static("Expire one ride (manual 4.3)", classes="title")
            yield Input(self.initial, placeholder="ride id (UUID)", id="ride")
            yield Static("", id="preview")
            yield BookingsTable()
            allow = TickBox(_allow_label(False), id="allow")
            allow.display = False
            yield from self.foot("expire", allow)

    async def preview_call(self, ride: UUID) -> Any:
        return await self.dash.repo.preview_expire_ride(ride)

    def forget_preview(self) -> None:
        super().forget_preview()
        allow = self.query_one("#allow", Checkbox)
        allow.value = False  # a confirmation given for another ride
        allow.display = False

    @on(Checkbox.Changed, "#allow")
    def _allow_changed(self, event: Checkbox.Changed) -> None:
        # The words say it too, beside the box's mark.
        event.checkbox.label = _allow_label(event.value)
        if event.value and NOT_DUE in self.message_markup:
            # The message asked for this tick: what is left is the Enter.
            self.set_message("Ticked: Enter on the note expires the ride now.")

    @on(Input.Submitted, "#note")
    def _note_submitted(self) -> None:
        if self.done or self.applying:
            return
        preview = self.preview
        if preview is None or self.previewed() is None:
            self.set_message("[b $error]Preview the ride first (Enter on its id).[/]")
            return
        note = self.note_text()
        if note is None:
            return
        if preview.terminal:
            self.set_message("Nothing to do: the ride is already finished.")
            return
        allow = self.query_one("#allow", Checkbox).value
        if not preview.due and not allow:
            self.set_message(
                f"[b $warning]{NOT_DUE}[/] To expire it anyway, "
                "tick the box above the note (Shift+Tab, Space), then Enter on "
                "the note."
            )
            return
        self.set_message("Expiring…")
        self.call_db(
            "apply",
            partial(
                self.dash.repo.expire_ride,
                UUID(preview.ride_id),
                note,
                allow_not_due=allow,
                seen_bookings=[b.booking_id for b in preview.bookings],
            ),
        )

    def refused(self, refusal: Refusal) -> bool:
        if refusal.code != "stale_preview" or not isinstance(
            refusal.preview, ExpirePreview
        ):
            return super().refused(refusal)
        self.show_preview(refusal.preview)
        self.set_message(
            f"[b $warning]{safe_markup(refusal.error, 300)}[/] Nothing was "
            "written; check the bookings above and press Enter on the note again."
            f"{self.maybe_yours()}"
        )
        return True

    def show_preview(self, preview: ExpirePreview) -> None:
        self.preview = preview
        if self.done:
            # The ride after the expiry: shown, but there is nothing left to do.
            self._show_expire_fields(preview)
            self.query_one("#allow", Checkbox).display = False
            return
        self._show_expire_fields(preview)
        self.query_one(BookingsTable).show(preview.bookings)
        self.query_one("#allow", Checkbox).display = not (
            preview.due or preview.terminal
        )
        note = self.query_one("#note", Input)
        note.disabled = preview.terminal
        # Nothing to expire: the keys go to the ride id, for another ride.
        (self.query_one("#ride", Input) if preview.terminal else note).focus()

    def _show_expire_fields(self, preview: ExpirePreview) -> None:
        if preview.terminal:
            due = "no (finished)"
        else:
            due = "[b $warning]yes[/]" if preview.due else "no"
        fields = _field_lines(
            [
                ("Ride", f"{preview.ride_id} ({preview.status or '?'})"),
                ("Departure", fmt.full_stamp(preview.departure_time)),
                ("Available until", fmt.full_stamp(preview.available_until)),
                ("Expires at", fmt.full_stamp(preview.expires_at)),
            ]
        )
        lines = [fields, f"[b]{'Due':<15}  [/]{due}"]
        if preview.terminal and preview.bookings:
            # INV-STATE-001: the ride ended with bookings left open.
            lines.append(
                f"[b $warning]Already finished, with {len(preview.bookings)} "
                "booking(s) below still open:[/] expiring a ride cannot close "
                "them. The expire_rides job does, the way the ride ended: 1 on "
                "the dashboard, or g on the violation for procedure 4.2."
            )
        elif preview.terminal:
            lines.append("[b $success]Already finished: nothing to expire.[/]")
        else:
            lines.append(_expiring(len(preview.bookings), " below"))
        self.query_one("#preview", Static).update("\n".join(lines))

    def gist(self) -> str:
        preview = self.preview
        if preview is not None and preview.terminal and preview.bookings:
            return (
                f"[b $warning]Finished, with {len(preview.bookings)} booking(s) "
                "still open:[/] the expire_rides job (1) closes them."
            )
        if preview is None or preview.terminal:
            return ""
        due = "Due now." if preview.due else "[b $warning]Not due yet.[/]"
        return f"{due} {_expiring(len(preview.bookings))}"

    def arrived(self, value: Any) -> None:
        if isinstance(value, ExpirePreview):
            self.show_preview(value)
            if not self.done:
                self.set_message(self.message_after_preview())
        elif isinstance(value, ExpireApplied):
            self.finish(
                f"[b $success]Expired.[/] Completed {value.bookings_completed} "
                f"booking(s), created {value.notifications_created} "
                "notification(s). Recorded in admin_audit_log with your note."
            )
            if self.preview is not None:
                self.read_again(UUID(self.preview.ride_id))


class ResolveDialog(WriteDialog):
    """Resolve a violation with a note, showing whether its check fails now."""

    def __init__(self, violation: Violation) -> None:
        super().__init__()
        self.violation = violation
        self.preview: ResolvePreview | None = None

    def compose(self) -> ComposeResult:
        v = self.violation
        with FormScroll(classes="dialog", id="resolve"):
            yield Static("Resolve a violation", classes="title")
            yield Static(
                _field_lines(
                    [
                        ("Check", ", ".join(v.checks) or v.check_name),
                        ("Severity", v.severity),
                        ("Count", fmt.count(v.violation_count)),
                        ("Detected", fmt.full_stamp(v.detected_at)),
                    ]
                )
            )
            yield Static("Checking whether it still fails…", id="preview")
            with Vertical(classes="foot"):
                yield NoteInput(placeholder="note: what was done (required)", id="note")
                yield Static("", id="message")
                yield KeysLine(
                    ("Enter", "on note: resolve"), ("Esc", "cancel"), classes="keys"
                )

    def draft_key(self) -> tuple[str, str]:
        return (type(self).__name__, str(self.violation.id))

    def on_mount(self) -> None:
        self.restore_draft()
        self.query_one("#note", Input).focus()
        self.call_db(
            "preview", partial(self.dash.repo.preview_resolve, str(self.violation.id))
        )

    @on(Input.Submitted, "#note")
    def _note_submitted(self) -> None:
        if self.done or self.applying:
            return
        note = self.note_text()
        if note is None:
            return
        self.set_message("Resolving…")
        self.call_db(
            "apply",
            partial(self.dash.repo.resolve_violation, str(self.violation.id), note),
        )

    def refused(self, refusal: Refusal) -> bool:
        if refusal.code != "already_resolved" or not refusal.violation:
            return super().refused(refusal)
        self._already_resolved(refusal.violation)
        self.finish(
            "[b $warning]Refused:[/] it was resolved first, as above. Nothing was "
            f"written.{self.maybe_yours()}"
        )
        return True

    def _already_resolved(self, row: dict[str, Any]) -> None:
        """Someone resolved it first: say who, when and why in place of the
        check's state (the list drops the row once the dialog closes)."""
        earlier = Violation.from_row({"check_name": "", "severity": "", **row})
        by = earlier.resolved_by or "an unknown operator"
        note = f": {safe_markup(earlier.notes, 300)}" if earlier.notes else "."
        self.query_one("#preview", Static).update(
            f"[b $warning]Already resolved[/] at {fmt.full_stamp(earlier.resolved_at)}"
            f" by {safe_markup(by, 60)}{note}"
        )

    def on_outcome(self, message: Outcome) -> None:
        if (
            message.tag == "preview"
            and isinstance(message.value, OpsError)
            and self.preview is None
        ):
            # Not "Checking…" for ever: the check could not be asked.
            self.query_one("#preview", Static).update(
                "[b $warning]Could not check whether it still fails[/] (see"
                " below); resolving does not need it."
            )
        super().on_outcome(message)

    def arrived(self, value: Any) -> None:
        if isinstance(value, ResolvePreview):
            self.preview = value
            if value.violation.get("resolved_at"):
                self._already_resolved(value.violation)
                self.finish("Nothing to resolve.")
            else:
                self.query_one("#preview", Static).update(_still_failing(value))
        elif isinstance(value, ResolveApplied):
            after = (
                " Its check still fails, so the next check run will report it again."
                if value.still_failing
                else ""
            )
            self.finish(
                "[b $success]Resolved.[/] Recorded in admin_audit_log with your "
                f"note.{after}"
            )


def _still_failing(preview: ResolvePreview) -> str:
    if preview.still_failing:
        count = (
            f" ({preview.current_count} now)"
            if preview.current_count is not None
            else ""
        )
        return (
            f"[b $error]Its check still fails right now{count}.[/] Resolving only "
            "closes this row; fix the cause first if you can."
        )
    if preview.still_failing is None:
        return (
            "[b $warning]Its check cannot be run:[/] the row names no check this "
            "version knows. Resolve only if you have verified the cause is fixed."
        )
    return "[b $success]Its check passes right now:[/] safe to resolve."


class DsnLine(HorizontalScroll):
    """The database's DSN on a line of its own, scrolled sideways rather than
    wrapped where it is wider than the dialog.

    Copied from the terminal, a DSN broken over two lines comes out as two
    pieces with a line break between them; on one line, a selection from its
    first character to its last (or a double click) takes the DSN whole.
    """

    class Resized(Message):
        """The line changed size: whether the DSN is cut may have changed."""

    def __init__(self, dsn: str, **kwargs: Any) -> None:
        # The help screen's left and right keys scroll it: it takes no focus.
        super().__init__(
            Static(Text(printable(dsn, None), no_wrap=True, end=""), id="dsn"),
            can_focus=False,
            **kwargs,
        )

    @property
    def cut(self) -> bool:
        """Whether part of the DSN is out of view."""
        return self.max_scroll_x > 0

    def on_resize(self) -> None:
        self.post_message(self.Resized())


class HelpScreen(Dialog[None]):
    """Every action from the registry, its key, and why it is unavailable now."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "close", "Close", show=False),
        Binding("y", "copy_dsn", "Copy the DSN", show=False),
        Binding("left", "scroll_dsn(-1)", "Scroll the DSN left", show=False),
        Binding("right", "scroll_dsn(1)", "Scroll the DSN right", show=False),
    ]

    def compose(self) -> ComposeResult:
        dash = self.dash
        caps = dash.capabilities
        if caps is None:
            error = dash.dashboard.error
            state = (
                "Not connected yet."
                if error is None
                else f"Not connected: {safe_markup(error.message, 300)}"
            )
        elif caps.ops_layer_incomplete:
            version = caps.ops_layer_version
            state = (
                f"Ops layer{'' if version is None else ' ' + safe_markup(version, 20)}"
                f", [b $warning]incomplete[/]: "
                f"{safe_markup(incomplete_why(caps), 400)}"
            )
        elif caps.ops_layer:
            state = f"Ops layer {safe_markup(caps.ops_layer_version, 20)}."
        else:
            state = (
                "Legacy database: the ops actions need `carpool-tui migrate "
                "--dsn ...` first."
            )
        if dash.settings.read_only:
            state += " Read-only session: writes are disabled."
        rows: list[Horizontal] = []
        for spec in ACTIONS:
            reason = blocked_reason(spec, caps, selected={"violation", "row"})
            extra = (
                f"\n[$warning]unavailable: {safe_markup(reason)}[/]" if reason else ""
            )
            # Two columns, so that a description that wraps stays clear of the
            # keys, which the eye runs down.
            key = Static(f"[b]{safe_markup(f'{spec.key_label:>7}')}[/]", classes="key")
            what = Static(
                f"[b]{spec.title}[/] — {safe_markup(spec.description, 300)}{extra}",
                classes="what",
            )
            rows.append(Horizontal(key, what, classes="help-key"))
        # The whole DSN (no password), to reach the same database from another
        # terminal with --dsn: the status line only has room for its name.
        with DialogScroll(classes="dialog", id="help"):
            yield Static("Keys", classes="title")
            yield Static(
                "Database, without its password (y copies it):"
                if self.has_dsn
                else "Database (from the PG* variables):",
                classes="muted",
            )
            yield DsnLine(dash.target, id="dsn-line")
            yield Static(state, classes="muted", id="help-state")
            with Vertical(id="help-keys"):
                yield from rows
            yield Static(
                "In a table, ↑ ↓ move, ← → scroll a row wider than the screen, "
                "PgUp PgDn page, Home End go to the first and last row, and Tab "
                "goes to the next table. Ctrl+P opens the "
                "command palette with the same actions. Times are UTC.",
                classes="muted",
            )
            yield KeysLine(*self.keys(cut=False), classes="keys")

    @property
    def has_dsn(self) -> bool:
        """Whether the session has a DSN to show and copy (not the PG* variables)."""
        return self.dash.settings.dsn is not None

    def keys(self, *, cut: bool) -> list[tuple[str, str]]:
        """The dialog's keys: the DSN's arrows only while part of it is hidden."""
        return [
            *([("y", "copy the DSN")] if self.has_dsn else []),
            *([("←→", "scroll the DSN")] if cut else []),
            ("Esc", "close"),
        ]

    @on(DsnLine.Resized)
    def _dsn_resized(self) -> None:
        line = self.query_one(DsnLine)
        self.query_one(".keys", KeysLine).show(*self.keys(cut=line.cut))

    def action_scroll_dsn(self, direction: int) -> None:
        """Half the line's width left (-1) or right (1)."""
        line = self.query_one(DsnLine)
        step = max(1, line.scrollable_content_region.width // 2)
        line.scroll_to(x=line.scroll_x + direction * step, animate=False)

    def action_copy_dsn(self) -> None:
        """The DSN to the clipboard by OSC 52, which reaches the local terminal
        over SSH: the whole of it, where the screen may show only a part."""
        dash = self.dash
        if not self.has_dsn:
            self.notify(
                "No DSN to copy: this session connects with the PG* variables.",
                severity="warning",
            )
            return
        # Not the DSN itself in the notice: wrapped there, it would invite a
        # copy of the very kind that breaks it.
        copy_for_operator(dash, dash.target, "the DSN")
