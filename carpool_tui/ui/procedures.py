"""The guided emergency procedures: a list of them, and one procedure step by step.

The screens only render what the runbooks engine says and read live rows
through the repository in workers; every write opens one of the existing
admin dialogs (preview, note, confirm), so nothing here writes on its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from rich.cells import cell_len, set_cell_size
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.events import Resize
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static

from carpool_tui.db.errors import OpsError
from carpool_tui.models import (
    JOBS_BY_NAME,
    ExpirePreview,
    JobLogEntry,
    JobResult,
    RowSet,
    Violation,
)
from carpool_tui.runbooks.engine import Procedure, Run, latest_start
from carpool_tui.runbooks.procedures import (
    JOBS_FAILING,
    PROCEDURES,
    PROCEDURES_BY_ID,
    diagnose,
    for_violation,
)
from carpool_tui.ui import fmt
from carpool_tui.ui.dialogs import (
    BREAK_HINT,
    ConfirmJobDialog,
    ExpireRideDialog,
    JobRunDialog,
    KeysLine,
    NoteInput,
    RideDialog,
    SeatFixDialog,
    clean_note,
    shows_nothing,
)
from carpool_tui.ui.text import ELLIPSIS, safe_markup, safe_text
from carpool_tui.ui.widgets import RowTable, copy_for_operator, show_text

if TYPE_CHECKING:
    from carpool_tui.ui.app import DashboardApp


def export_timeline(app: DashboardApp) -> str:
    """Write the session's timeline as Markdown; the sentence saying where."""
    folder = app.settings.action_log.parent
    try:
        path = app.timeline.export(folder, app.clock(), database=app.label)
    except OSError as exc:
        return f"Could not write the timeline to {folder}: {exc}"
    # One line: the procedure's message line shows no line breaks.
    return f"Timeline written to {path.name} in {path.parent}"


def _cut(text: str, width: int | None) -> Text:
    """`text`, or as much of it as fits in `width` cells with an ellipsis."""
    if width is not None and cell_len(text) > width:
        text = set_cell_size(text, max(0, width - 1)).rstrip() + ELLIPSIS
    return Text(text, no_wrap=True, end="")


def _widest(label: str, values: Iterable[str]) -> int:
    """The cells a column of these values under this label takes, unpadded."""
    return max(cell_len(label), *(cell_len(value) for value in values))


class ProcedureList(RowTable):
    """The procedures, one a row: section, title and what the procedure does.

    The description column takes the room the other two leave, and a
    description longer than that ends with an ellipsis: cut at the
    terminal's edge, it would read as if it were whole. The highlighted
    procedure's description is shown whole below the list.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", **kwargs)
        self._summary_width: int | None = None

    def on_mount(self) -> None:
        self._fill()

    def on_resize(self) -> None:
        # Measured from the procedures: the table sizes its columns only later.
        fixed = _widest("§", (p.section for p in PROCEDURES)) + _widest(
            "Procedure", (p.title for p in PROCEDURES)
        )
        padding = 2 * self.cell_padding
        room = self.scrollable_content_region.width - fixed - 3 * padding
        widest = max(cell_len(proc.summary) for proc in PROCEDURES)
        width = None if room >= widest else max(1, room)
        if width != self._summary_width:
            self._summary_width = width
            self._fill()

    def _fill(self) -> None:
        """Lay out the rows for the description width; the cursor stays put."""
        row = self.cursor_row
        self.clear(columns=True)
        self.add_column("§", key="section")
        self.add_column("Procedure", key="title")
        width = self._summary_width
        self.add_column(_cut("What it does", width), width=width, key="summary")
        for proc in PROCEDURES:
            self.add_row(
                Text(proc.section),
                Text(proc.title),
                _cut(proc.summary, width),
                key=proc.id,
            )
        self.move_cursor(row=row, animate=False)


class ProceduresScreen(Screen[None]):
    """Every procedure of manual section 4; Enter opens one."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Back", show=False),
        Binding("m", "export", "Export timeline", show=False),
    ]

    @property
    def dash(self) -> DashboardApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        with Vertical(id="procedures"):
            yield Static("Emergency procedures (manual section 4)", classes="title")
            yield ProcedureList(id="procedure-list")
            # The highlighted procedure's summary, whole: the column cuts it.
            yield Static("", id="proc-summary")
            yield Static("", id="proc-message")
            yield KeysLine(
                ("Enter", "open"),
                ("m", "export timeline"),
                ("Esc", "back"),
                classes="keys",
            )

    def on_mount(self) -> None:
        self.query_one(ProcedureList).focus()

    @on(DataTable.RowHighlighted, "#procedure-list")
    def _summarise(self, event: DataTable.RowHighlighted) -> None:
        proc = PROCEDURES_BY_ID[str(event.row_key.value)]
        self.query_one("#proc-summary", Static).update(
            f"[b]{safe_markup(proc.section)} {safe_markup(proc.title)}:[/] "
            f"{safe_markup(proc.summary, 400)}"
        )

    @on(DataTable.RowSelected, "#procedure-list")
    def _open(self, event: DataTable.RowSelected) -> None:
        proc = PROCEDURES_BY_ID[str(event.row_key.value)]
        self.app.push_screen(ProcedureScreen(proc))

    def action_close(self) -> None:
        self.dismiss(None)

    def action_export(self) -> None:
        text = export_timeline(self.dash)
        self.query_one("#proc-message", Static).update(safe_markup(text, 300))
        self.notify(text, title="Incident timeline")


class RowsLoaded(Message):
    """A step's live rows (or the error reading them)."""

    def __init__(self, index: int, value: RowSet | OpsError, verify: bool) -> None:
        super().__init__()
        self.index = index
        self.value = value
        self.verify = verify


@dataclass(frozen=True)
class Opening:
    """A procedure and the item it starts with, picked from the dashboard."""

    procedure: Procedure
    target: str | None
    row: dict[str, Any]


def _failed_run(
    run_id: str, job: Any, started: Any, sqlstate: Any, message: Any
) -> Opening:
    """4.1 with this failed run chosen."""
    row = {
        "id": run_id,
        "job_name": job,
        "started_at": started,
        "sqlstate": sqlstate,
        "error_message": message,
    }
    return Opening(JOBS_FAILING, run_id, row)


def _violation_path(checks: list[str], **row: Any) -> Opening | None:
    """The 4.2 path of the first known check, with that check chosen."""
    proc = for_violation(checks)
    if proc is None:
        return None
    kind = proc.id.split(":", 1)[1]
    return Opening(proc, kind, {"check": kind, **row})


def opening_for(item: Any) -> Opening | None:
    """The matching procedure for a failed run or a violation, with it chosen."""
    if isinstance(item, JobLogEntry) and item.failed:
        return _failed_run(
            str(item.id),
            item.job_name,
            item.started_at,
            item.error_sqlstate,
            item.error_message,
        )
    if isinstance(item, Violation):
        return _violation_path(item.checks, violation_id=str(item.id))
    return None


def follow_up(view: str, row: dict[str, Any]) -> Opening | None:
    """The procedure a row of a step leads to, with that row chosen.

    A failed latest run leads to 4.1 and a check with open violations to its
    4.2 path, so the start-of-shift check hands over to the procedure that
    deals with what it found.
    """
    if view == "latest_runs" and row.get("status") == "failed" and row.get("id"):
        return _failed_run(
            str(row["id"]),
            row.get("job_name"),
            row.get("started_at"),
            row.get("sqlstate"),
            row.get("error_message"),
        )
    if view == "open_checks" and row.get("open_count"):
        return _violation_path([str(row.get("check"))])
    return None


SHORT_HEIGHT = 32  # lines; below this a step shows fewer of its rows


STOP_AGAIN_S = 3.0
"""How soon a second Esc must follow the first to stop a procedure under way."""
ACTION_RECHECK_S = 1.0
"""How often a step looks again at whether its write is allowed now."""
ROW_CELL_LIMIT = 160
"""Room for four ids in one cell: a step may ask which of the listed bookings
stays, and a cut list hides the ones to act on."""


NONE_MEANS: dict[str, str] = {
    "sessions": "no other session is in a transaction now, so none holds a lock",
}
"""What an empty table of these views tells the operator."""

PROCEDURE_KEYS = (
    ("a", "act (preview, confirm)"),
    ("c", "check"),
    ("n", "next step"),
    ("b", "back a step"),
    ("k", "skip, with a reason"),
    ("r", "reload"),
    ("Enter", "choose the row"),
    ("f", "follow into its procedure"),
    ("y", "copy the row's id"),
    ("m", "export the timeline"),
    ("PgUp PgDn", "scroll the step"),
    ("Esc", "stop (twice once under way)"),
)
"""Every key of a procedure, for ? (the keys line shows the step's own). Short
enough for three lines at 80 columns, where the step's foot has little room."""

COPIED_FIRST = ("booking_id", "booking_ids", "id", "ride_id")
"""The id columns y prefers, most particular first: the bookings a step acts
on before their ride, a row's own id before the ride it belongs to."""


def row_id(row: dict[str, Any]) -> tuple[str, str] | None:
    """The id column of ``row`` that y copies, with its value."""
    ids = [
        (column, value)
        for column, value in row.items()
        if value is not None and (column == "id" or column.endswith(("_id", "_ids")))
    ]
    last = len(COPIED_FIRST)  # any other id column, in the query's order
    ids.sort(key=lambda c: COPIED_FIRST.index(c[0]) if c[0] in COPIED_FIRST else last)
    return None if not ids else (ids[0][0], str(ids[0][1]))


def row_cell(value: Any) -> Text:
    """A step's value as its table shows it: a time to the second, in UTC."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return Text(fmt.full_stamp(value))
    return safe_text(value, ROW_CELL_LIMIT)


class ProcedureScreen(Screen[None]):
    """One procedure, one step at a time, checked against the live database."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "act", "Act", show=False),
        Binding("c", "check", "Check", show=False),
        Binding("n", "next", "Next", show=False),
        Binding("b", "back", "Back", show=False),
        Binding("k", "skip", "Skip", show=False),
        Binding("r", "reload", "Reload", show=False),
        Binding("f", "follow", "Follow", show=False),
        Binding("y", "copy_id", "Copy ID", show=False),
        Binding("question_mark", "keys", "Keys", show=False),
        Binding("m", "export", "Export timeline", show=False),
        Binding("escape", "stop", "Stop", show=False),
        # The rows table keeps the focus for choosing a row; paging moves the
        # step itself, whose purpose and advice a short terminal scrolls away
        # once an action's result is shown.
        Binding("pageup", "page(-1)", "Page up", show=False, priority=True),
        Binding("pagedown", "page(1)", "Page down", show=False, priority=True),
    ]

    def __init__(
        self,
        procedure: Procedure,
        target: str | None = None,
        row: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.procedure = procedure
        self.initial = (target, row or {})
        self.rowset: RowSet | None = None
        self.before: RowSet | None = None
        self.error: OpsError | None = None
        self._resume_row: int | None = None
        self._skip_step: int | None = None
        """The step whose skip reason the box holds."""
        self._runs_before: datetime | None = None
        self._sent_at: datetime | None = None
        """When the step's job was sent: its timeline entry's time."""
        self._rows_of: int | None = None
        """The step whose rows the table shows."""
        self._pages = False
        """Whether the step is taller than its room (PgUp PgDn offered)."""
        self._stop_asked: float | None = None
        """When a first Esc asked for a second to stop (monotonic seconds)."""

    @property
    def dash(self) -> DashboardApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        # The head (procedure, "Step N of M", step title) stays in view while the
        # step below it scrolls to its result on a short terminal.
        yield Static("", id="proc-head", classes="title")
        with VerticalScroll(id="procedure"):
            yield Static("", id="proc-purpose")
            # The rows before the query that read them: on a short terminal
            # the rows are what the step is about, the query is for checking.
            rows: DataTable[Text] = RowTable(cursor_type="row", id="proc-rows")
            yield rows
            # A chosen run's cause, or the final check's counts, before the
            # query: it is what the step's result is about.
            yield Static("", id="proc-detail")
            yield Static("", id="proc-query", classes="code")
        # What to do, what is expected and the keys stay in view below it: a
        # long query or many rows would push them out of a short terminal.
        with Vertical(id="proc-foot"):
            yield Static("", id="proc-action")
            yield Static("", id="proc-verdict")
            reason = NoteInput(
                placeholder="why skip this step? (Enter)",
                id="skip-reason",
                select_on_focus=False,
            )
            reason.display = False
            yield reason
            yield Static("", id="proc-message")
            yield KeysLine(id="proc-keys", classes="keys")

    def on_resize(self, event: Resize) -> None:
        # A short terminal shows fewer rows, so the step's result fits below.
        self.set_class(event.size.height < SHORT_HEIGHT, "-short")
        self.call_after_refresh(self._offer_paging)

    def _offer_paging(self) -> None:
        """Offer PgUp PgDn in the keys line only while the step is taller than
        its room: a wide screen that shows it all keeps the line short."""
        scrolls = self.query_one("#procedure", VerticalScroll).max_scroll_y > 0
        if scrolls != self._pages:
            self._pages = scrolls
            self.query_one("#proc-keys", KeysLine).show(*self._keys())

    def reveal(self) -> None:
        """Bring a chosen run's cause or the final counts into view.

        The result, the messages and the keys stay in view below the step on
        their own; the page moves only for the detail, never to the end of a
        long query, which would push the step's purpose and rows out of sight.
        """
        detail = self.query_one("#proc-detail", Static)
        if str(detail.content):
            self.call_after_refresh(detail.scroll_visible, animate=False)

    def on_mount(self) -> None:
        target, row = self.initial
        self.run = Run(
            self.procedure,
            operator=self.dash.settings.operator,
            clock=self.dash.clock,
            timeline=self.dash.timeline,
            target=target,
        )
        self.run.chosen = dict(row)
        self.show_step()
        # The dashboard beneath keeps polling: a connection lost or found
        # again, or a grant, changes whether this step's write is allowed.
        self.set_interval(ACTION_RECHECK_S, self._recheck_action)

    def _recheck_action(self) -> None:
        show_text(self.query_one("#proc-action", Static), self._action_text())
        self.query_one("#proc-keys", KeysLine).show(*self._keys())

    # -- rendering -------------------------------------------------------

    def show_step(self, verify: bool = False) -> None:
        """Render the current step and read its rows."""
        self.rowset = None
        self.render_step()
        self.query_one("#proc-rows", DataTable).focus()
        self._load(self.run.index, self.run.step.view, self.run.target, verify)

    def _write_block(self) -> str | None:
        action = self.run.step.action
        if action is None:
            return None
        if action.kind == "job":
            job = self._job()
            if job is None:
                return "Choose a failed run first."
            return self.dash.blocked(f"run-{job}")
        spec = "seat-fix" if action.kind == "seat_fix" else "expire-ride"
        return self.dash.blocked(spec)

    def _job(self) -> str | None:
        action = self.run.step.action
        if action is None:
            return None
        job = action.job or self.run.chosen.get("job_name")
        return str(job) if job in JOBS_BY_NAME else None

    def render_step(self) -> None:
        run, step, proc = self.run, self.run.step, self.procedure
        head = f"{proc.section} {proc.title} · {run.position}: {step.title}"
        self.query_one("#proc-head", Static).update(safe_markup(head, 200))
        purpose = f"[b]What this step is for:[/] {safe_markup(step.purpose, 600)}"
        if run.target:
            purpose += f"\n[b]Chosen:[/] {safe_markup(self._chosen_text(), 160)}"
        if step.advice:
            purpose += f"\n[b $warning]{safe_markup(step.advice, 400)}[/]"
        self.query_one("#proc-purpose", Static).update(purpose)
        self.query_one("#proc-detail", Static).update(self._detail())
        self.query_one("#proc-action", Static).update(self._action_text())
        self.query_one("#proc-verdict", Static).update(self._verdict_text())
        self.query_one("#proc-keys", KeysLine).show(*self._keys())
        self.call_after_refresh(self._offer_paging)
        if self.run.over:
            self.reveal()

    def _chosen_text(self) -> str:
        """The chosen item as a reader finds it among the rows: a run by its job
        and start, since its id column is off screen on 80 columns."""
        run = self.run
        job, started = run.chosen.get("job_name"), run.chosen.get("started_at")
        if job and isinstance(started, datetime):
            return f"{job}, started {fmt.full_stamp(started)} ({run.target})"
        return str(run.target)

    def _chosen_row(self, rowset: RowSet) -> int | None:
        """The index of the chosen item's row, for the cursor to start on it;
        among the latest run of each job, the chosen run's job, which may have
        run again since."""
        target = self.run.target
        for n, row in enumerate(rowset.rows):
            if target is not None and target in (
                str(row.get("id")),
                str(row.get("ride_id")),
            ):
                return n
        job = self.run.chosen.get("job_name")
        if rowset.view == "latest_runs" and job:
            for n, row in enumerate(rowset.rows):
                if row.get("job_name") == job:
                    return n
        return None

    def _action_text(self) -> str:
        step = self.run.step
        if step.action is None:
            if not step.fixes_automatically:
                return "[b $warning]No automatic fix: investigate and fix by hand.[/]"
            return "No action in this step: read the rows."
        blocked = self._write_block()
        what = step.action.title
        if step.action.kind == "job" and self._job():
            what = f"Run {self._job()}()"
        if blocked:
            return (
                f"[b]Action:[/] {safe_markup(what, 80)} — "
                f"[b $warning]writes disabled: {safe_markup(blocked, 200)}[/]"
            )
        first = "it asks to confirm" if step.action.kind == "job" else "preview first"
        return f"[b]Action (a):[/] {safe_markup(what, 80)}; {first}."

    def _verdict_text(self) -> str:
        run = self.run
        if run.over:
            # Fixed by hand is amber: the checks pass, health is not claimed.
            style = "$error"
            if run.healthy:
                style = "$success"
            elif run.checks_passed:
                style = "$warning"
            return f"[b {style}]{safe_markup(run.ending(), 200)}[/]"
        check = run.step.check
        if check is None:
            return "No check in this step: n moves on."
        verdict = run.verdict
        expect = f"[b]Expected:[/] {safe_markup(check.expect, 100)}"
        if verdict is None:
            return f"{expect} · not checked yet (c)"
        text = safe_markup(verdict.text, 200)
        if not verdict.ok and (run.result or {}).get("applied") is False:
            # The dialog closed before anything was written: not done yet, which
            # a red FAILED would read as a write that went wrong.
            return (
                f"{expect} · [b $warning]NOT DONE YET[/] {text} Nothing was "
                "written: a opens the dialog again."
            )
        style, word = ("$success", "PASSED") if verdict.ok else ("$error", "FAILED")
        return f"{expect} · [b {style}]{word}[/] {text}"

    def _keys(self) -> list[tuple[str, str]]:
        if self.run.over:
            paging = [("PgUp PgDn", "scroll")] if self._pages else []
            return [("b", "back"), ("m", "export timeline"), *paging, ("Esc", "close")]
        pairs = []
        step = self.run.step
        if step.check is not None and step.check.rule == "chosen":
            pairs.append(("Enter", "choose"))
        if step.action is not None:
            pairs.append(("a", "act"))
        if step.check is not None:
            pairs.append(("c", "check"))
        pairs += [("n", "next"), ("b", "back"), ("k", "skip"), ("r", "reload")]
        if self.rowset is not None and any(
            follow_up(self.rowset.view, row) for row in self.rowset.rows
        ):
            pairs.append(("f", "follow its procedure"))
        pairs.append(("m", "timeline"))
        if self._pages:
            pairs.append(("PgUp PgDn", "scroll"))
        pairs.append(("Esc", "stop"))
        return pairs

    def _detail(self) -> str:
        """Advice for a chosen failed run; open and found now for the final check."""
        run = self.run
        if run.step.view == "failed_runs" and run.chosen:
            cause = diagnose(
                run.chosen.get("sqlstate"), run.chosen.get("error_message")
            )
            message = safe_markup(run.chosen.get("error_message") or "—", 400)
            return (
                f"[b]Error:[/] {message}\n"
                f"[b]Cause:[/] [b $warning]{cause.name}[/] — "
                f"{safe_markup(cause.advice, 400)}"
            )
        result = run.result
        if run.step.view == "open_checks" and result and result.get("checks"):
            before: dict[str, Any] = {}
            if self.before is not None:
                before = {r["check"]: r["open_count"] for r in self.before.rows}
            # "open" is what invariant_violations held before the run (a row
            # resolved with x counts 0); "now" is what the check found.
            lines = [f"[b]{'check':<34}{'open':>8}{'now':>8}[/]"]
            for item in result["checks"]:
                name = str(item.get("name"))
                after = item.get("count")
                style = "$success" if after == 0 else "$error"
                lines.append(
                    f"{safe_markup(name, 34):<34}{before.get(name, 0)!s:>8}"
                    f"[{style}]{after!s:>8}[/]"
                )
            return "\n".join(lines)
        return ""

    def render_rows(self, rowset: RowSet) -> None:
        table = self.query_one("#proc-rows", DataTable)
        table.clear(columns=True)
        columns = list(rowset.columns)
        failed = rowset.view == "failed_runs"
        # The cause goes right after the job's name, where a narrow terminal
        # still shows it.
        at = columns.index("job_name") + 1 if failed and "job_name" in columns else 0
        shown = [*columns[:at], "cause", *columns[at:]] if failed else columns
        table.add_columns(*shown)
        for n, row in enumerate(rowset.rows):
            cells = [row_cell(row.get(c)) for c in columns]
            if failed:
                cause = diagnose(row.get("sqlstate"), row.get("error_message"))
                cells.insert(at, Text(cause.name))
            table.add_row(*cells, key=str(n))
        if self._resume_row is not None:
            # Back from a followed procedure: the cursor returns to its row.
            table.move_cursor(row=min(self._resume_row, len(rowset.rows) - 1))
            self._resume_row = None
        elif (chosen := self._chosen_row(rowset)) is not None:
            table.move_cursor(row=chosen)
        table.display = True
        query = f"{rowset.query}"
        count = f"{len(rowset.rows)} row(s)"
        if not rowset.rows and rowset.view in NONE_MEANS:
            count += f": {NONE_MEANS[rowset.view]}"
        self.query_one("#proc-query", Static).update(
            Text(f"-- {count}, read by:\n{query};", no_wrap=False)
        )

    # -- data ------------------------------------------------------------

    @work(exclusive=True, group="proc-rows")
    async def _load(
        self, index: int, view: str, target: str | None, verify: bool
    ) -> None:
        try:
            value: RowSet | OpsError = await self.dash.repo.procedure_rows(view, target)
        except OpsError as err:
            value = err
        self.post_message(RowsLoaded(index, value, verify))

    def on_rows_loaded(self, message: RowsLoaded) -> None:
        if message.index != self.run.index:
            return
        value = message.value
        if isinstance(value, OpsError):
            self.error = value
            hint = f" {safe_markup(value.hint, 200)}" if value.hint else ""
            self.set_message(f"[b $error]{safe_markup(value.message, 300)}[/]{hint}")
            if self._rows_of != message.index:
                # The rows shown are another step's: under this step's title
                # they would read as its own.
                self.query_one("#proc-rows", DataTable).clear(columns=True)
                self.query_one("#proc-query", Static).update(
                    Text("-- this step's rows could not be read (see below)")
                )
                self._rows_of = None
            return
        if self.error is not None:
            self.set_message("")  # the failed read's words: this one worked
        self.error = None
        self.rowset = value
        self._rows_of = message.index
        if value.view == "open_checks" and self.run.result is None:
            self.before = value
        self.render_rows(value)
        if message.verify:
            verdict = self.run.verify(value.rows)
            if verdict is not None:
                self.set_message("")
        self.render_step()
        if message.verify:
            self.reveal()

    @on(NoteInput.BreakTaken)
    def _break_taken(self) -> None:
        self.set_message(f"[b $warning]{BREAK_HINT}[/]")

    def set_message(self, markup: str) -> None:
        message = self.query_one("#proc-message", Static)
        message.update(markup)
        message.display = bool(markup)
        self.call_after_refresh(self._offer_paging)
        if markup:
            self.reveal()

    # -- keys ------------------------------------------------------------

    @on(DataTable.RowSelected, "#proc-rows")
    def _chosen(self, event: DataTable.RowSelected) -> None:
        if self.rowset is None or self.run.over:
            return
        row = self.rowset.rows[int(event.row_key.value or 0)]
        target = row.get("ride_id") or row.get("id")
        if target is None:
            return
        self.run.choose(str(target), row)
        if self.run.step.check is not None:
            self.run.verify(self.rowset.rows)
        self.set_message("")  # a refusal to move on before the choice is answered
        self.render_step()
        self.reveal()

    def action_act(self) -> None:
        run = self.run
        action = run.step.action
        if run.over or action is None:
            self.set_message("This step has no action.")
            return
        blocked = self._write_block()
        if blocked:
            self.set_message(f"[b $warning]{safe_markup(blocked, 300)}[/]")
            return
        if action.kind == "job":
            job = JOBS_BY_NAME[self._job() or ""]

            def confirmed(ok: bool | None) -> None:
                if ok:
                    # The job's latest run now: one after it is this step's run,
                    # should the job's answer be lost on the way.
                    self._runs_before = latest_start(self.rowset, job.name)
                    self._sent_at = self.run.clock()
                    self.app.push_screen(JobRunDialog(job), self._job_done)
                else:
                    self.run.acted(f"run {job.name}", None, "cancelled at confirm")
                    self.render_step()

            self.app.push_screen(
                ConfirmJobDialog(job, self.dash.settings.operator), confirmed
            )
        else:
            dialog: RideDialog = (
                SeatFixDialog(run.target)
                if action.kind == "seat_fix"
                else ExpireRideDialog(run.target)
            )
            self.app.push_screen(dialog, partial(self._write_done, dialog))

    def _job_done(self, result: JobResult | None) -> None:
        job = self._job() or "job"
        if result is not None and not result.outcome_unknown:
            self.run.acted(
                f"run {job}", result.model_dump(), result.describe(job), self._sent_at
            )
        else:
            # No answer (closed while waiting, or the outcome is unknown): the
            # check reads the job log for a run that started after the send.
            unknown = {
                "success": False,
                "outcome_unknown": True,
                "job_name": job,
                "runs_before": self._runs_before,
            }
            said = "closed without a result" if result is None else "outcome unknown"
            self.run.acted(f"run {job}", unknown, said, self._sent_at)
        self.show_step(verify=True)

    def _write_done(self, dialog: RideDialog, done: bool | None) -> None:
        action = self.run.step.action
        what = action.title if action else "write"
        preview = dialog.preview
        ride = None if preview is None else str(preview.ride_id)
        at = dialog.sent_at if done else None
        if ride is not None and ride != self.run.target:
            # Typed in the dialog (the choice was skipped, or another ride was
            # typed): the step's check follows the ride previewed, written to
            # or not (one already right needs no write to pass).
            self.run.typed(ride, at)
        if done:
            note = dialog.query_one("#note", Input).value.strip()
            early = isinstance(preview, ExpirePreview) and not preview.due
            summary = (
                f"applied to ride {ride}{' before it was due' if early else ''}"
                f" with the note {note!r} (see admin_audit_log)"
            )
        else:
            summary = "closed without applying"
        applied = bool(done)
        self.run.acted(what, {"success": applied, "applied": applied}, summary, at)
        self.show_step(verify=True)

    def _cursor_row(self) -> dict[str, Any] | None:
        """The step's row under the cursor, if its rows are shown."""
        table = self.query_one("#proc-rows", DataTable)
        if self.rowset is not None and 0 <= table.cursor_row < len(self.rowset.rows):
            return self.rowset.rows[table.cursor_row]
        return None

    def action_follow(self) -> None:
        """Open the procedure for the row under the cursor; back here after it."""
        row = self._cursor_row()
        view = self.rowset.view if self.rowset is not None else ""
        opening = None if row is None else follow_up(view, row)
        if opening is None or opening.procedure.id == self.procedure.id:
            if row and row.get("open_count") and view == "open_checks":
                self.set_message(
                    "This violation row names no single check (the deployed "
                    "functions keep one row for every check): open it from the "
                    "dashboard's violations panel to see its samples."
                )
                return
            self.set_message(
                "f follows a row to its procedure: put the cursor on a failed run "
                "(4.1) or on a check with open violations (4.2)."
            )
            return
        proc = opening.procedure
        self.run.log("follow", f"{proc.section} {proc.title}")
        self._resume_row = self.query_one("#proc-rows", DataTable).cursor_row
        self.app.push_screen(
            ProcedureScreen(proc, opening.target, opening.row),
            lambda _: self.show_step(),
        )

    def action_keys(self) -> None:
        """Every key of a procedure, where the step's message goes."""
        self.set_message(
            " · ".join(f"[b]{key}[/] {what}" for key, what in PROCEDURE_KEYS)
        )

    def action_copy_id(self) -> None:
        """Copy the id of the row under the cursor with OSC 52, as y does on
        the dashboard, for a ticket or another terminal."""
        row = self._cursor_row()
        found = None if row is None else row_id(row)
        if found is None:
            said = "This step has no rows." if row is None else "This row has no id."
            self.notify(f"{said} Nothing was copied.", severity="warning")
            return
        column, text = found
        copy_for_operator(self.app, text, f"{column} {text}")

    def action_page(self, direction: int) -> None:
        page = self.query_one("#procedure", VerticalScroll)
        if direction < 0:
            page.scroll_page_up(animate=False)
        else:
            page.scroll_page_down(animate=False)

    def action_check(self) -> None:
        if self.run.over or self.run.step.check is None:
            self.set_message("No check in this step.")
            return
        self.set_message("Checking…")
        self.show_step(verify=True)

    def action_reload(self) -> None:
        # A verdict on the rows before the reload is checked again on the new ones.
        self.show_step(verify=self.run.verdict is not None)

    def action_next(self) -> None:
        refused = self.run.advance()
        if refused:
            self.set_message(f"[b $warning]{safe_markup(refused, 300)}[/]")
            return
        self.set_message("")
        self.show_step()

    def action_back(self) -> None:
        refused = self.run.back()
        if refused:
            self.set_message(safe_markup(refused, 200))
            return
        self.show_step()

    def action_skip(self) -> None:
        if self.run.over:
            return
        reason = self.query_one("#skip-reason", Input)
        # A reason typed and put away (Esc) waits for this step's next k,
        # the cursor after it; another step starts with an empty box.
        if self._skip_step != self.run.index:
            reason.value = ""
        self._skip_step = self.run.index
        reason.display = True
        reason.focus()
        reason.cursor_position = len(reason.value)
        self.reveal()

    @on(Input.Submitted, "#skip-reason")
    def _skip_reason(self, event: Input.Submitted) -> None:
        # Written to the timeline and the exported review as a note is to
        # the audit log: no control characters, and nothing that shows blank.
        reason = clean_note(event.value)
        refused = self.run.skip("" if shows_nothing(reason) else reason)
        if refused:
            self.set_message(f"[b $warning]{safe_markup(refused, 200)}[/]")
            return
        event.input.value = ""
        event.input.display = False
        self.set_message("")
        self.show_step()

    def action_export(self) -> None:
        text = export_timeline(self.dash)
        self.set_message(safe_markup(text, 300))
        self.notify(text, title="Incident timeline")

    @property
    def under_way(self) -> bool:
        """Something was done here that stopping would leave behind: a step
        passed or skipped, an action taken, or a row chosen."""
        run = self.run
        return not run.over and (
            run.index > 0
            or any(r is not None for r in run.results)
            or run.target != self.initial[0]
        )

    def action_stop(self) -> None:
        """Esc: put the skip reason away, or stop. A procedure under way stops
        only on a second Esc: the first clears the notices, which operators
        press Esc to clear, and says what stopping would lose."""
        reason = self.query_one("#skip-reason", Input)
        if reason.display:
            reason.display = False
            self.query_one("#proc-rows", DataTable).focus()
            return
        asked, self._stop_asked = self._stop_asked, None
        now = time.monotonic()
        if self.under_way and (asked is None or now - asked > STOP_AGAIN_S):
            self._stop_asked = now
            self.app.clear_notifications()
            back = " b goes back a step." if self.run.index else ""
            self.set_message(
                f"[b $warning]Esc again stops the procedure at "
                f"{self.run.position.lower()}[/]: its timeline is kept, but it "
                f"would start again at step 1.{back}"
            )
            return
        self.run.stop()
        self.dismiss(None)
