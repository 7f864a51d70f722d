"""The war-room wallboard: the state in large type, what is wrong and since when.

It takes no keys and polls nothing itself: it sits on top of the live
dashboard screen, whose poll loop keeps running, and redraws from that
screen's latest snapshot and connection state once a second. The state is
judged as `carpool-tui check` judges it, with the thresholds `check` uses for
the same target, and UNKNOWN when a panel `check` reads could not be read, so
the wall, the pager and the channel agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, ClassVar

from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Digits, Static

from carpool_tui.config import CheckThresholds
from carpool_tui.db.errors import ConnectionLost
from carpool_tui.db.probe import HealthReading
from carpool_tui.models import JOBS_BY_NAME, HealthSummary, PanelError, Snapshot
from carpool_tui.monitor import CheckResult, Level, evaluate
from carpool_tui.ui import fmt
from carpool_tui.ui.text import safe_markup
from carpool_tui.ui.widgets import show_text

if TYPE_CHECKING:
    from carpool_tui.ui.app import DashboardApp
    from carpool_tui.ui.dashboard import DashboardScreen

MAX_PROBLEMS = 12
"""Problems listed before the wall is laid out; then as many as fit."""
STATE_CLASSES = ("-ok", "-warning", "-critical", "-unknown")


@dataclass(frozen=True)
class Problem:
    """One thing that is wrong, how bad, and since when (None when unknown)."""

    level: Level
    text: str
    since: datetime | None


@dataclass(frozen=True)
class BoardState:
    """What the wall shows: a level, the counts in big digits and the problems."""

    level: Level
    headline: str
    counts: tuple[tuple[str, int | None], ...]
    problems: tuple[Problem, ...]


def unread_panels(snapshot: Snapshot) -> dict[str, PanelError]:
    """The panels `check` reads that failed in this snapshot, with why.

    `check` reads the health summary, the latest job runs where there is a
    job log, and the open violations where there is a violations table; when
    any of them fails it says UNKNOWN. A panel that failed reads as empty in
    the snapshot (no summary, no runs, no violations), so judging without
    this would take what could not be read for all clear.
    """
    caps = snapshot.capabilities
    needed = {"health"}
    if caps.job_log_columns:
        needed.add("jobs")
    if caps.violation_columns:
        needed.add("violations")
    return {panel: e for panel, e in snapshot.errors.items() if panel in needed}


def jobs_unread(snapshot: Snapshot, unread: Mapping[str, PanelError]) -> bool:
    """Whether the jobs' last runs are unknown: they come from the job log
    where there is one, else from the health summary."""
    source = "jobs" if snapshot.capabilities.job_log_columns else "health"
    return source in unread


UNREAD_METRICS: dict[str, tuple[str, ...]] = {
    "health": (
        "seat_mismatches",
        "unresolved_violations",
        "expired_active_rides",
        "failed_runs_24h",
    ),
    "violations": ("critical_violations",),
}
"""The metrics each panel measures, left out while it cannot be read; the
jobs' two (failing and overdue) go by jobs_unread."""


def judge(
    snapshot: Snapshot, now: datetime, thresholds: CheckThresholds | None = None
) -> CheckResult:
    """The snapshot judged as `check` judges it with ``thresholds`` (None: the
    defaults).

    When a panel `check` reads failed, the level is UNKNOWN, the summary says
    what could not be read and why, and the measures and jobs that panel
    would have given are left out rather than judged as zeros.
    """
    caps = snapshot.capabilities
    reading = HealthReading(
        capabilities=caps,
        health=snapshot.health or HealthSummary(),
        latest_runs=snapshot.latest_runs,
        failed_runs_24h=None,
        violations=snapshot.violations,
        server_now=now,
        has_job_log=bool(caps.job_log_columns),
    )
    result = evaluate(reading, thresholds or CheckThresholds(), caps.database)
    unread = unread_panels(snapshot)
    if not unread:
        return result
    blind = {metric for panel in unread for metric in UNREAD_METRICS.get(panel, ())}
    jobs = result.jobs
    if jobs_unread(snapshot, unread):
        blind |= {"failing_jobs", "overdue_jobs"}
        jobs = ()
    return replace(
        result,
        level=Level.UNKNOWN,
        summary="; ".join(e.message for e in unread.values()),
        measures=tuple(m for m in result.measures if m.metric not in blind),
        jobs=jobs,
    )


def _problems(
    result: CheckResult, snapshot: Snapshot, unread: Mapping[str, PanelError]
) -> list[Problem]:
    """Open violations, failing and overdue jobs, then other counts over limits.

    With everything read, no line claims more than the judged level: under a
    target's thresholds (critical violations off, say) a critical row shows
    as WARNING when `check` says WARNING, and a line the thresholds make no
    problem at all is left out.
    """
    found: list[Problem] = []
    for v in snapshot.violations:
        level = Level.CRITICAL if v.severity == "critical" else Level.WARNING
        count = f" ({v.violation_count})" if v.violation_count else ""
        text = f"violation {v.check_name}{count}"
        found.append(Problem(level, text, v.detected_at))
    factor = result.thresholds.overdue_factor if result.thresholds else 0.0
    for job in result.jobs:
        if job.failing:
            run = snapshot.latest_runs.get(job.name)
            why = f": {run.error_message}" if run and run.error_message else ""
            found.append(
                Problem(Level.CRITICAL, f"{job.name} failed{why}", job.last_started_at)
            )
        if job.overdue:
            if job.last_started_at is None:
                found.append(Problem(Level.WARNING, f"{job.name} never ran", None))
            else:
                every = JOBS_BY_NAME[job.name].frequency * factor
                found.append(
                    Problem(
                        Level.WARNING,
                        f"{job.name} overdue (runs "
                        f"{JOBS_BY_NAME[job.name].frequency_text})",
                        job.last_started_at + every,
                    )
                )
    told = {"critical_violations", "failing_jobs", "overdue_jobs"}
    if "violations" not in unread:
        # Listed row by row above; unread, the summary's count is all there is.
        told.add("unresolved_violations")
    for measure in result.measures:
        if measure.level is not Level.OK and measure.metric not in told:
            found.append(Problem(measure.level, measure.text(), None))
    if not unread:
        capped = (replace(p, level=min(p.level, result.level)) for p in found)
        found = [p for p in capped if p.level is not Level.OK]
    never = datetime.max.replace(tzinfo=UTC)
    found.sort(key=lambda p: (-int(p.level), p.since or never))
    return found


def board_state(
    snapshot: Snapshot | None,
    now: datetime,
    *,
    lost_since: datetime | None = None,
    error: str | None = None,
    unread_since: Mapping[str, datetime] | None = None,
    thresholds: CheckThresholds | None = None,
) -> BoardState:
    """The wall's content from the dashboard's latest snapshot and poll state,
    judged with ``thresholds`` (None: the defaults).

    ``unread_since`` says since when each failed panel has been failing. A
    figure from a panel that could not be read is None (drawn as a dash),
    never the zero an empty panel would give.
    """
    if snapshot is None:
        return BoardState(
            Level.UNKNOWN,
            "NO DATA",
            (),
            (Problem(Level.UNKNOWN, error or "Connecting…", lost_since),),
        )
    result = judge(snapshot, now, thresholds)
    unread = unread_panels(snapshot)
    problems = _problems(result, snapshot, unread)
    since = unread_since or {}
    for panel, failure in reversed(unread.items()):
        problems.insert(0, Problem(Level.UNKNOWN, failure.message, since.get(panel)))
    level = result.level
    if error is not None:
        problems.insert(0, Problem(Level.UNKNOWN, error, lost_since))
        level = Level.UNKNOWN if lost_since is not None else level
    health = None if "health" in unread else snapshot.health
    violations = None if "violations" in unread else snapshot.violations
    critical = (
        None
        if violations is None
        else sum(1 for v in violations if v.severity == "critical")
    )
    overdue = (
        None
        if jobs_unread(snapshot, unread)
        else sum(1 for j in result.jobs if j.overdue)
    )
    counts: tuple[tuple[str, int | None], ...] = (
        ("critical", critical),
        ("violations", None if violations is None else len(violations)),
        ("failed 24 h", None if health is None else health.failed_jobs_24h),
        ("overdue", overdue),
        ("mismatches", None if health is None else health.seat_mismatches),
    )
    headline = {
        Level.OK: "ALL OK",
        Level.WARNING: "WARNING",
        Level.CRITICAL: "CRITICAL",
        Level.UNKNOWN: "UNKNOWN",
    }[level]
    return BoardState(level, headline, counts, tuple(problems))


def problem_line(problem: Problem, now: datetime) -> str:
    """'CRITICAL   41 min  violation seat_mismatch (3) · since 03-04 02:19:00'.

    The age comes first, so a line cut at the right edge still says since when.
    """
    style = {
        Level.CRITICAL: "b reverse $error",
        Level.WARNING: "b reverse $warning",
        Level.UNKNOWN: "b reverse $error",
        Level.OK: "b",
    }[problem.level]
    age, since = "", ""
    if problem.since is not None:
        if problem.since > now:
            since = f" · due {fmt.stamp(problem.since)}"
        else:
            age = fmt.since(problem.since, now)
            since = f" · since {fmt.stamp(problem.since)}"
    return (
        f"[{style}] {problem.level.name:<8} [/] [b]{age:>7}[/]  "
        f"{safe_markup(problem.text, 90)}{since}"
    )


class WallboardScreen(Screen[None]):
    """Large, high-contrast and keyless: only Ctrl+Q (the app's) leaves it."""

    BINDINGS: ClassVar[list[BindingType]] = []
    AUTO_FOCUS = None
    DEFAULT_CSS = """
    WallboardScreen { layout: vertical; background: $background; }
    #wb { height: 1fr; padding: 0 1; }
    #wb-state {
        height: 3; content-align: center middle; text-style: bold;
        background: $foreground; color: $background;
    }
    WallboardScreen.-ok #wb-state { background: $success; color: $text; }
    WallboardScreen.-warning #wb-state { background: $warning; color: $text; }
    WallboardScreen.-critical #wb-state, WallboardScreen.-unknown #wb-state {
        background: $error; color: $text;
    }
    #wb-counts { height: 5; margin-top: 1; }
    .wb-count { width: 1fr; height: 5; align-horizontal: center; }
    .wb-digits { width: auto; text-style: bold; }
    .wb-count.-bad .wb-digits { color: $error; }
    .wb-label { width: auto; color: $foreground; }
    #wb-problems {
        height: 1fr; margin-top: 1; text-wrap: nowrap; text-overflow: ellipsis;
    }
    #wb-foot { height: 1; color: $foreground; }
    """

    @property
    def dash(self) -> DashboardApp:
        return self.app  # type: ignore[return-value]

    @property
    def source(self) -> DashboardScreen:
        return self.dash.dashboard

    def compose(self) -> ComposeResult:
        with Vertical(id="wb"):
            yield Static("", id="wb-state")
            with Horizontal(id="wb-counts"):
                for index in range(5):
                    with Vertical(classes="wb-count", id=f"wb-count-{index}"):
                        yield Digits("", classes="wb-digits")
                        yield Static("", classes="wb-label")
            yield Static("", id="wb-problems")
            yield Static("", id="wb-foot")

    def on_mount(self) -> None:
        self.redraw()
        self.set_interval(1.0, self.redraw)

    def state(self) -> BoardState:
        """The wall's state now, from the dashboard screen beneath."""
        source = self.source
        now = self.dash.clock()
        error = None if source.error is None else source.error.message
        lost = source.failed_since if source.error is not None else None
        if isinstance(source.error, ConnectionLost) and source.snapshot is not None:
            error = f"DISCONNECTED: {source.error.message}"
        return board_state(
            source.snapshot,
            now,
            lost_since=lost,
            error=error,
            unread_since=source.panels_failed_since,
            thresholds=self.dash.thresholds,
        )

    def redraw(self) -> None:
        now = self.dash.clock()
        state = self.state()
        self.set_class(False, *STATE_CLASSES)
        self.add_class(f"-{state.level.name.lower()}")
        database = safe_markup(self.dash.label, 40)
        headline = f"{state.headline}  ·  {database}"
        show_text(self.query_one("#wb-state", Static), headline)
        for index in range(5):
            box = self.query_one(f"#wb-count-{index}")
            if index < len(state.counts):
                label, value = state.counts[index]
                box.display = True
                box.set_class(bool(value), "-bad")
                box.query_one(Digits).update("-" if value is None else str(value))
                show_text(box.query_one(".wb-label", Static), label)
            else:
                box.display = False
        problems = self.query_one("#wb-problems", Static)
        room = problems.size.height or MAX_PROBLEMS
        if len(state.problems) > room:
            room -= 1  # the last line says how many more there are
        shown = state.problems[: max(1, room)]
        lines = [problem_line(p, now) for p in shown]
        if len(state.problems) > len(shown):
            lines.append(f"… and {len(state.problems) - len(shown)} more")
        if not lines:
            lines = ["[b $success]Nothing is wrong.[/]"]
        show_text(problems, "\n".join(lines))
        # One line whose clock changes every second: no layout pass needed.
        self.query_one("#wb-foot", Static).update(self._foot(now), layout=False)

    def _foot(self, now: datetime) -> str:
        source = self.source
        if source.last_ok is None:
            fresh = "no data yet"
        else:
            age = (now - source.last_ok).total_seconds()
            fresh = f"data {fmt.age(age)} old"
        stamp = fmt.stamp(now)
        # The wall takes no keys; the one way out is said where it is seen.
        return (
            f"{stamp} UTC · {fresh} · every {fmt.duration(source.interval)}"
            " · Ctrl+Q quits"
        )
