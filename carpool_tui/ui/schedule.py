"""The schedule view: pg_cron's entries for the four jobs beside the manual's.

pg_cron's table is read once when the view opens (r reads it again); whether
a job is overdue comes from the dashboard's latest snapshot, judged by the
same rule as the jobs panel. Without pg_cron the view says so and still
shows the overdue marks, since an external scheduler leaves only the log.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Static

from carpool_tui.config import DEFAULT_OVERDUE_FACTOR
from carpool_tui.db.errors import OpsError
from carpool_tui.models import last_start
from carpool_tui.ui import fmt
from carpool_tui.ui.dialogs import KeysLine
from carpool_tui.ui.text import safe_markup, safe_text
from carpool_tui.ui.widgets import RowTable
from carpool_tui.warroom import CronTable, ScheduleRow, schedule_rows

if TYPE_CHECKING:
    from carpool_tui.ui.app import DashboardApp


class CronRead(Message):
    """The cron.job read finished: the table, or why it failed."""

    def __init__(self, table: CronTable | OpsError) -> None:
        super().__init__()
        self.table = table


def verdict_text(row: ScheduleRow) -> Text:
    """The entry's verdict, loud when it is not as the manual says."""
    if row.verdict == "ok":
        return Text("as manual", style="green")
    if row.verdict == "unknown":
        return Text("—")
    return Text(row.verdict.upper(), style="bold reverse red")


class ScheduleScreen(Screen[None]):
    """Where each job is scheduled, how that compares, and whether it is overdue."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,c", "close", "Back", show=False),
        Binding("r", "reload", "Read again", show=False),
    ]
    DEFAULT_CSS = """
    #schedule { padding: 0 1; }
    #schedule .title { text-style: bold; color: $accent; }
    #schedule-table { height: auto; max-height: 8; margin: 1 0; }
    #schedule-problems { height: auto; }
    #schedule .keys { dock: bottom; height: auto; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.cron: CronTable | None = None
        self.error: OpsError | None = None
        self.loaded = False

    @property
    def dash(self) -> DashboardApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        with Vertical(id="schedule"):
            yield Static("Job schedule (manual section 2)", classes="title")
            yield Static("Reading pg_cron's cron.job…", id="cron-state")
            table: DataTable[Text] = RowTable(cursor_type="row", id="schedule-table")
            yield table
            yield Static("", id="schedule-problems")
            yield KeysLine(("r", "read again"), ("Esc", "back"), classes="keys")

    def on_mount(self) -> None:
        table = self.query_one("#schedule-table", DataTable)
        table.add_columns("Job", "pg_cron", "Due", "Scheduled", "Manual", "Last run")
        self.render_rows()
        self._read()

    def action_close(self) -> None:
        self.dismiss(None)

    def action_reload(self) -> None:
        self._read()

    @work(exclusive=True, group="cron")
    async def _read(self) -> None:
        try:
            table: CronTable | OpsError = await self.dash.repo.cron_table()
        except OpsError as err:
            table = err
        self.post_message(CronRead(table))

    def on_cron_read(self, message: CronRead) -> None:
        if isinstance(message.table, OpsError):
            self.error, self.cron = message.table, None
        else:
            self.error, self.cron = None, message.table
        self.loaded = True
        self.render_rows()

    def _state_line(self) -> str:
        if not self.loaded:
            return "Reading pg_cron's cron.job…"
        if self.error is not None:
            return (
                f"[b $error]Could not read the schedule:[/] "
                f"{safe_markup(self.error.message, 200)}"
            )
        cron = self.cron
        if cron is None or not cron.installed:
            return (
                "pg_cron is not installed here (no cron.job table): the jobs must "
                "run from an external scheduler (manual 2, option B, "
                "`carpool-tui run-job`). Overdue marks come from the job log."
            )
        if cron.error is not None:
            return f"[b $warning]pg_cron is installed but {safe_markup(cron.error)}[/]"
        return (
            f"pg_cron is installed: {len(cron.entries)} entries in cron.job. "
            "Overdue marks come from the job log."
        )

    def render_rows(self) -> None:
        now = self.dash.clock()
        rows = schedule_rows(self.cron, self.dash.dashboard.snapshot, now)
        self.query_one("#cron-state", Static).update(self._state_line())
        table = self.query_one("#schedule-table", DataTable)
        table.clear()
        for row in rows:
            due = (
                Text("OVERDUE", style="bold reverse red")
                if row.overdue
                else Text("ok", style="green")
            )
            started = last_start(row.last_run)
            table.add_row(
                Text(row.job.name),
                verdict_text(row),
                due,
                safe_text(row.scheduled, 40),
                Text(row.recommended),
                Text(f"{fmt.stamp(started)} ({fmt.since(started, now)})"),
                key=row.job.name,
            )
        problems = [
            f"[b $error]{row.job.name}[/]: {safe_markup(row.problem)}"
            + (f" (found {safe_markup(row.scheduled, 60)})" if row.entries else "")
            for row in rows
            if row.problem
        ]
        problems += [
            f"[b $error]{row.job.name}[/]: overdue, no run in the last "
            f"{_span(row.job.frequency * DEFAULT_OVERDUE_FACTOR)} "
            f"(twice its interval, {row.job.frequency_text})"
            for row in rows
            if row.overdue
        ]
        self.query_one("#schedule-problems", Static).update(
            "\n".join(problems) or "[$success]Every job is on schedule.[/]"
        )


def _span(span: timedelta) -> str:
    """A whole number of days, hours or minutes: '10 minutes', '2 days'."""
    seconds = int(span.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    minutes = max(1, round(seconds / 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
