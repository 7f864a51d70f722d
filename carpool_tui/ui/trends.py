"""Trends of the last 24 hours: job durations, records processed, violations found.

One grouped query of the job log per round, in its own worker, every
TREND_REFRESH_S seconds while the view is open: far less often than the
panels, since an hourly series barely moves between two polls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Vertical
from textual.events import Resize
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Sparkline, Static

from carpool_tui.db.errors import OpsError
from carpool_tui.models import JOBS, counted
from carpool_tui.ui import fmt
from carpool_tui.ui.dialogs import KeysLine
from carpool_tui.ui.text import safe_markup
from carpool_tui.warroom import TREND_HOURS, TrendBucket, job_trends

if TYPE_CHECKING:
    from carpool_tui.ui.app import DashboardApp

TREND_REFRESH_S = 60.0
LABEL_WIDTH = 29
"""The job column: repair_missing_notifications, the longest name, and a space."""
GAP = 2
"""Between a job's two sparklines, so they do not run together."""


class TrendsRead(Message):
    """One trends round finished: the hourly buckets, or why it failed."""

    def __init__(self, buckets: list[TrendBucket] | OpsError) -> None:
        super().__init__()
        self.buckets = buckets


class TimeAxis(Widget):
    """The time under a sparkline: where its hours start, and "now" at its end."""

    DEFAULT_CSS = "TimeAxis { height: 1; color: $text-muted; }"

    def render(self) -> Text:
        start, end = f"└ {TREND_HOURS} h ago", "now ┘"
        gap = self.size.width - len(start) - len(end)
        return Text(start + " " * gap + end if gap > 0 else end.rjust(self.size.width))


def hour_cells(room: int) -> int:
    """The widest multiple of 24 cells in `room`; under 24, all of it (some
    cells then hold two hours, but every hour is drawn)."""
    if room < TREND_HOURS:
        return max(1, room)
    return room // TREND_HOURS * TREND_HOURS


class HourSparkline(Sparkline):
    """A sparkline of one value an hour that gives every hour the same cells.

    Textual's sparkline spreads fewer values than cells by stepping through
    them in fractions, so at 3 cells an hour some hours got 4 cells, others
    2, and the newest hour was cut. Here each value is repeated to fill the
    cells exactly when the width is a whole number of cells per hour (what
    TrendsScreen sizes it to); narrower, hours share cells as they must.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__([], **kwargs)
        self.hours: list[float] = []

    def show(self, hours: list[float]) -> None:
        """Draw these values, one an hour, oldest first."""
        self.hours = list(hours)
        self._spread()

    def on_resize(self) -> None:
        self._spread()

    def _spread(self) -> None:
        count, width = len(self.hours), self.size.width
        cells = width // count if count and width % count == 0 else 1
        self.data = [value for value in self.hours for _ in range(cells)]


class TrendsScreen(Screen[None]):
    """Sparklines per job (duration, records) and of the violations found."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,h", "close", "Back", show=False),
        Binding("r", "reload", "Read again", show=False),
    ]
    DEFAULT_CSS = """
    #trends { padding: 0 0 0 1; }
    #trends .title { text-style: bold; color: $accent; }
    #trends-grid {
        grid-size: 3; grid-columns: 29 26 1fr; grid-rows: 1 3 3 3 3 1;
        height: auto; margin: 1 0;
    }
    #trends-grid Sparkline { height: 2; }
    #trend-violations { height: 3; }
    #trends .keys { dock: bottom; height: auto; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.buckets: list[TrendBucket] | None = None
        self.error: OpsError | None = None
        self._timer: Timer | None = None

    @property
    def dash(self) -> DashboardApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        with Vertical(id="trends"):
            yield Static(
                f"Trends, last {TREND_HOURS} h by hour (oldest left)", classes="title"
            )
            yield Static("Reading the job log…", id="trends-state")
            with Grid(id="trends-grid"):
                yield Static("[b]job[/]", classes="trend-head")
                yield Static("[b]mean duration[/]", classes="trend-head")
                yield Static("[b]records processed[/]", classes="trend-head")
                for job in JOBS:
                    yield Static(
                        "", id=f"trend-label-{job.name}", classes="trend-label"
                    )
                    yield HourSparkline(id=f"trend-duration-{job.name}")
                    yield HourSparkline(id=f"trend-records-{job.name}")
                yield Static("")
                yield TimeAxis()
                yield TimeAxis()
            yield Static("", id="trend-violations-label")
            yield HourSparkline(id="trend-violations")
            yield TimeAxis(id="trend-violations-axis")
            yield KeysLine(("r", "read again"), ("Esc", "back"), classes="keys")

    def on_mount(self) -> None:
        self._read()

    def on_resize(self, event: Resize) -> None:
        self._fit(event.size.width)

    def _fit(self, width: int) -> None:
        """Size each sparkline to a whole number of cells per hour.

        A sparkline narrower than its 24 values merges hours into a cell, and a
        wider one repeats some hours and not others; either way the cells stop
        lining up with the hours. 80 columns give each column one cell an hour.
        """
        inner = width - 1  # the view's padding
        column = (inner - LABEL_WIDTH - GAP) // 2
        per_job = hour_cells(column)
        grid = self.query_one("#trends-grid", Grid)
        grid.styles.grid_columns = f"{LABEL_WIDTH} {per_job + GAP} 1fr"
        for widget in self.query("#trends-grid Sparkline, #trends-grid TimeAxis"):
            widget.styles.width = per_job
        whole = hour_cells(inner - 1)
        for widget in self.query("#trend-violations, #trend-violations-axis"):
            widget.styles.width = whole

    def action_close(self) -> None:
        self.dismiss(None)

    def action_reload(self) -> None:
        self._read()

    @work(exclusive=True, group="trends")
    async def _read(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        try:
            buckets: list[TrendBucket] | OpsError = await self.dash.repo.trend_buckets()
        except OpsError as err:
            buckets = err
        self.post_message(TrendsRead(buckets))

    def on_trends_read(self, message: TrendsRead) -> None:
        if isinstance(message.buckets, OpsError):
            self.error = message.buckets
        else:
            self.error, self.buckets = None, message.buckets
        self.render_trends()
        self._timer = self.set_timer(TREND_REFRESH_S, self._read)

    def render_trends(self) -> None:
        state = self.query_one("#trends-state", Static)
        now = fmt.stamp(self.dash.clock())
        if self.error is not None:
            state.update(
                f"[b $error]Could not read the trends:[/] "
                f"{safe_markup(self.error.message, 200)}"
            )
        elif self.buckets is not None:
            runs = sum(b.runs for b in self.buckets)
            state.update(
                f"{counted(runs, '{} run', '{} runs')} up to {now} UTC · read every "
                f"{fmt.duration(TREND_REFRESH_S)} · r reads again"
            )
        if self.buckets is None:
            return
        trends, violations = job_trends(self.buckets)
        for trend in trends:
            longest = max(trend.durations)
            failed = f", [b $error]{trend.failed} failed[/]" if trend.failed else ""
            # Three short lines: the label column is LABEL_WIDTH cells wide.
            self.query_one(f"#trend-label-{trend.job}", Static).update(
                f"{trend.job}\n{counted(trend.runs, '{} run', '{} runs')}{failed}\n"
                f"{fmt.count(int(sum(trend.records)))} rec, peak "
                f"{fmt.duration(longest)}"
            )
            self.query_one(f"#trend-duration-{trend.job}", HourSparkline).show(
                list(trend.durations)
            )
            self.query_one(f"#trend-records-{trend.job}", HourSparkline).show(
                list(trend.records)
            )
        self.query_one("#trend-violations-label", Static).update(
            "[b]violations found[/] by check_system_invariants, the most one "
            "run found each hour: "
            f"this hour {fmt.count(int(violations[-1]))}, peak "
            f"{fmt.count(int(max(violations)))}"
        )
        self.query_one("#trend-violations", HourSparkline).show(list(violations))
