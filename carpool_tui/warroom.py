"""War-room data: the recommended schedule, cron entries, job trends and overdue jobs.

Plain models and pure functions (no database, no Textual): the repository
fills the models, the schedule, trends and wallboard screens render them, and
tests can judge them without a terminal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from carpool_tui.config import DEFAULT_OVERDUE_FACTOR
from carpool_tui.models import (
    JOBS,
    JobLogEntry,
    JobSpec,
    RecentJob,
    Snapshot,
    last_start,
)

RECOMMENDED_CRON: dict[str, str] = {
    "expire_rides": "*/5 * * * *",
    "reconcile_seat_counts": "0 3 * * *",
    "repair_missing_notifications": "0 4 * * *",
    "check_system_invariants": "*/15 * * * *",
}
"""The manual's schedule (section 2, option A), in UTC, by job."""

TREND_HOURS = 24


def overdue(
    run: JobLogEntry | RecentJob | None,
    now: datetime,
    frequency: timedelta,
    factor: float = DEFAULT_OVERDUE_FACTOR,
) -> bool:
    """A job is overdue when it never ran or its last start is older than
    ``factor`` times its frequency; a factor of 0 or less turns the test off.

    The jobs panel, the schedule view, exports, `check` and the wallboard all
    use this one rule, so a wall and a laptop never disagree. The default of
    twice the frequency keeps a job whose run is merely late (or whose running
    row is not yet committed) from flashing OVERDUE every cycle.
    """
    if factor <= 0:
        return False
    started = last_start(run)
    if started is None:
        return True
    try:
        limit = frequency * factor
    except OverflowError:  # a factor no age can pass (1e12 of 5 minutes)
        return False
    return (now - started) > limit


# -- pg_cron ---------------------------------------------------------------


class CronEntry(BaseModel):
    """One row of pg_cron's cron.job."""

    jobid: int
    schedule: str
    command: str
    jobname: str | None = None
    active: bool = True


class CronTable(BaseModel):
    """What cron.job holds, or why it could not be read."""

    installed: bool
    """Whether the database has a cron.job table at all."""
    entries: list[CronEntry] = Field(default_factory=list)
    error: str | None = None
    """Why cron.job exists but could not be read (permissions), else None."""


Verdict = Literal["ok", "missing", "different", "inactive", "unknown"]


@dataclass(frozen=True)
class ScheduleRow:
    """One job's scheduled entry beside the manual's, and what is wrong with it."""

    job: JobSpec
    recommended: str
    entries: tuple[CronEntry, ...]
    verdict: Verdict
    overdue: bool
    last_run: JobLogEntry | RecentJob | None

    @property
    def scheduled(self) -> str:
        """The schedules found for the job, or a dash."""
        return ", ".join(e.schedule for e in self.entries) or "—"

    @property
    def problem(self) -> str:
        """The verdict in words, empty when all is well."""
        return {
            "ok": "",
            "missing": "not scheduled in pg_cron",
            "different": f"scheduled differently from {self.recommended}",
            "inactive": "scheduled but inactive",
            "unknown": "",
        }[self.verdict]


def normal_schedule(schedule: str) -> str:
    """A cron expression with its whitespace collapsed, for comparison."""
    return " ".join(schedule.split())


def entries_for(job: str, table: CronTable) -> tuple[CronEntry, ...]:
    """The cron entries that run a job: by the function in the command, or by name."""
    found = []
    for entry in table.entries:
        command = entry.command.replace(" ", "")
        if f"{job}(" in command or entry.jobname == job:
            found.append(entry)
    return tuple(found)


def schedule_rows(
    table: CronTable | None, snapshot: Snapshot | None, now: datetime
) -> list[ScheduleRow]:
    """Each job: cron entries (when pg_cron is readable), verdict and overdue mark."""
    rows: list[ScheduleRow] = []
    for job in JOBS:
        recommended = RECOMMENDED_CRON[job.name]
        run = snapshot.latest_run(job.name) if snapshot is not None else None
        entries: tuple[CronEntry, ...] = ()
        verdict: Verdict = "unknown"
        if table is not None and table.installed and table.error is None:
            entries = entries_for(job.name, table)
            active = [e for e in entries if e.active]
            if not entries:
                verdict = "missing"
            elif not active:
                verdict = "inactive"
            elif (
                any(normal_schedule(e.schedule) != recommended for e in active)
                or len(active) > 1
            ):
                verdict = "different"
            else:
                verdict = "ok"
        rows.append(
            ScheduleRow(
                job=job,
                recommended=recommended,
                entries=entries,
                verdict=verdict,
                overdue=snapshot is not None and overdue(run, now, job.frequency),
                last_run=run,
            )
        )
    return rows


# -- trends ----------------------------------------------------------------


class TrendBucket(BaseModel):
    """One job's runs in one hour of the last day; hour 0 is the oldest."""

    job_name: str
    hour: int
    runs: int = 0
    failed: int = 0
    avg_seconds: float | None = None
    records: int = 0
    violations: int | None = None
    """For the invariant check: the most violations one run of the hour found."""


@dataclass(frozen=True)
class JobTrend:
    """A job's hourly series over the last day, oldest first."""

    job: str
    durations: tuple[float, ...]
    records: tuple[float, ...]
    runs: int
    failed: int


def job_trends(
    buckets: list[TrendBucket], hours: int = TREND_HOURS
) -> tuple[list[JobTrend], tuple[float, ...]]:
    """Per-job hourly series, and the violations found per hour by the check."""
    trends: list[JobTrend] = []
    violations = [0.0] * hours
    for job in JOBS:
        durations = [0.0] * hours
        records = [0.0] * hours
        runs = failed = 0
        for bucket in buckets:
            if bucket.job_name != job.name or not 0 <= bucket.hour < hours:
                continue
            durations[bucket.hour] = bucket.avg_seconds or 0.0
            records[bucket.hour] = float(bucket.records)
            runs += bucket.runs
            failed += bucket.failed
            if bucket.violations is not None:
                violations[bucket.hour] = float(bucket.violations)
        trends.append(
            JobTrend(
                job=job.name,
                durations=tuple(durations),
                records=tuple(records),
                runs=runs,
                failed=failed,
            )
        )
    return trends, tuple(violations)
