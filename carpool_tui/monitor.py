"""Judging one health reading: OK, WARNING, CRITICAL or UNKNOWN, with reasons.

The levels and exit codes follow the convention of Nagios-style plugins, so
`carpool-tui check` can be called from cron, a monitoring system or CI. The
judgement is a pure function of the reading and the thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import Any

from carpool_tui.config import CHECK_METRICS, CheckThresholds
from carpool_tui.db.errors import OpsError
from carpool_tui.db.probe import HealthReading
from carpool_tui.db.repo import VIOLATION_LIMIT
from carpool_tui.models import (
    JOBS,
    Violation,
    infinity_text,
    iso_stamp,
    last_run,
    last_start,
)
from carpool_tui.warroom import overdue

PREFIX = "CARPOOL"


class Level(IntEnum):
    """A check's outcome; the value is the process exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


@dataclass(frozen=True)
class Measure:
    """One metric's value against its limits."""

    metric: str
    value: int
    warn: int | None
    critical: int | None
    detail: str = ""

    @property
    def words(self) -> str:
        return CHECK_METRICS[self.metric][0]

    @property
    def level(self) -> Level:
        if self.critical is not None and self.value > self.critical:
            return Level.CRITICAL
        if self.warn is not None and self.value > self.warn:
            return Level.WARNING
        return Level.OK

    def text(self) -> str:
        """'3 seat mismatches (critical above 0: ...)'."""
        text = f"{self.value} {self.words}"
        limit = self.critical if self.level is Level.CRITICAL else self.warn
        if self.level is not Level.OK:
            name = "critical" if self.level is Level.CRITICAL else "warning"
            text += f" ({name} above {limit}"
            text += f": {self.detail})" if self.detail else ")"
        return text

    def perfdata(self) -> str:
        """Nagios performance data: 'label'=value;warn;crit;min."""
        warn = "" if self.warn is None else str(self.warn)
        crit = "" if self.critical is None else str(self.critical)
        return f"{self.metric}={self.value};{warn};{crit};0"


@dataclass(frozen=True)
class JobState:
    """The last run of one job and whether it is overdue or failing."""

    name: str
    last_status: str | None
    last_started_at: datetime | None
    age_seconds: float | None
    expected_every_seconds: float
    overdue: bool
    failing: bool
    error_message: str | None = None
    """The last run's error_message from the job log (or the health summary):
    why a failing job failed, in the record's own words."""

    def describe(self) -> str:
        if self.last_started_at is None:
            return f"{self.name} never ran"
        if self.age_seconds is None:
            at = infinity_text(self.last_started_at) or self.last_started_at
            return f"{self.name} {self.last_status} at {at}"
        return f"{self.name} {self.last_status} {_ago(self.age_seconds)}"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: level, one line, and everything behind it."""

    level: Level
    summary: str
    database: str
    measures: tuple[Measure, ...] = ()
    jobs: tuple[JobState, ...] = ()
    thresholds: CheckThresholds | None = None
    reading: HealthReading | None = None
    error: OpsError | None = None

    @property
    def exit_code(self) -> int:
        return int(self.level)

    def line(self) -> str:
        """The plugin output line: 'CARPOOL WARNING - ... | perfdata'."""
        line = f"{PREFIX} {self.level.name} - {self.summary}"
        if self.measures:
            line += " | " + " ".join(m.perfdata() for m in self.measures)
        return line

    def as_json(self) -> dict[str, Any]:
        """The full result for --json."""
        data: dict[str, Any] = {
            "status": self.level.name,
            "exit_code": self.exit_code,
            "summary": self.summary,
            "database": self.database,
        }
        if self.error is not None:
            data["error"] = self.error.message
            data["hint"] = self.error.hint
            return data
        reading = self.reading
        assert reading is not None and self.thresholds is not None
        data["checked_at"] = iso_stamp(reading.server_now)
        data["problems"] = [
            {
                "metric": m.metric,
                "level": m.level.name,
                "value": m.value,
                "warn": m.warn,
                "critical": m.critical,
                "text": m.text(),
            }
            for m in self.measures
            if m.level is not Level.OK
        ]
        data["metrics"] = {m.metric: m.value for m in self.measures}
        data["thresholds"] = {
            "warn": self.thresholds.warn,
            "critical": self.thresholds.critical,
            "overdue_factor": self.thresholds.overdue_factor,
        }
        data["jobs"] = [
            {
                "name": j.name,
                "last_status": j.last_status,
                "last_started_at": iso_stamp(j.last_started_at),
                "age_seconds": j.age_seconds,
                "expected_every_seconds": j.expected_every_seconds,
                "overdue": j.overdue,
                "failing": j.failing,
                "error_message": j.error_message,
            }
            for j in self.jobs
        ]
        listed = [violation_json(v) for v in reading.violations]
        data["violations"] = listed
        # The list stops at the dashboard's page; the open count says whether
        # rows were left off (unknown without a health summary).
        open_count = reading.health.unresolved_violations
        data["violations_truncated"] = len(listed) >= VIOLATION_LIMIT and (
            open_count is None or open_count > len(listed)
        )
        caps = reading.capabilities
        data["ops_layer_version"] = caps.ops_layer_version
        data["server_version"] = caps.server_version
        data["health"] = reading.health.model_dump(mode="json")
        return data


def violation_json(violation: Violation) -> dict[str, Any]:
    """One open violation row for --json, read whole or not.

    A row that could not be read whole is counted like any other, so it is
    listed like any other too, with ``unreadable`` saying what is missing and
    why: a script reading the list finds the rows the counts are made of.
    """
    row: dict[str, Any] = {
        "id": str(violation.id),
        "check_name": violation.check_name,
        "severity": violation.severity,
        "violation_count": violation.violation_count,
        "detected_at": iso_stamp(violation.detected_at),
    }
    if violation.unreadable:
        row["unreadable"] = violation.unreadable
    return row


def job_states(reading: HealthReading, factor: float) -> tuple[JobState, ...]:
    """Each job's last run: from the job log, else from the health summary."""
    states: list[JobState] = []
    for job in JOBS:
        run = last_run(
            job.name,
            reading.latest_runs,
            reading.health.recent_job_status,
            reading.server_now,
        )
        started = last_start(run)
        status = None if run is None else run.status
        every = job.frequency.total_seconds()
        age = (
            None
            if started is None or infinity_text(started)
            else (reading.server_now - started).total_seconds()
        )
        late = overdue(run, reading.server_now, job.frequency, factor)
        states.append(
            JobState(
                name=job.name,
                last_status=status,
                last_started_at=started,
                age_seconds=None if age is None else round(max(age, 0.0), 3),
                expected_every_seconds=every,
                overdue=late,
                failing=status == "failed",
                error_message=None if run is None else run.error_message,
            )
        )
    return tuple(states)


def evaluate(
    reading: HealthReading, thresholds: CheckThresholds, database: str
) -> CheckResult:
    """Judge a reading: the worst level of any metric decides."""
    health = reading.health
    jobs = job_states(reading, thresholds.overdue_factor)
    critical_rows = [v for v in reading.violations if v.severity == "critical"]
    overdue = [j for j in jobs if j.overdue]
    failing = [j for j in jobs if j.failing]
    values: dict[str, tuple[int | None, str]] = {
        "seat_mismatches": (health.seat_mismatches, ""),
        "critical_violations": (
            len(critical_rows)
            if reading.critical_open is None
            else max(reading.critical_open, len(critical_rows)),
            ", ".join(sorted({c for v in critical_rows for c in v.checks})),
        ),
        "unresolved_violations": (health.unresolved_violations, ""),
        "expired_active_rides": (health.expired_active_rides, ""),
        "failing_jobs": (len(failing), ", ".join(j.describe() for j in failing)),
        "failed_runs_24h": (
            reading.failed_runs_24h
            if reading.failed_runs_24h is not None
            else health.failed_jobs_24h,
            "",
        ),
        "overdue_jobs": (
            len(overdue) if reading.has_job_log or health.recent_job_status else None,
            ", ".join(j.describe() for j in overdue),
        ),
    }
    if thresholds.overdue_factor <= 0:
        values["overdue_jobs"] = (None, "")
    measures = tuple(
        Measure(
            metric=metric,
            value=value,
            warn=thresholds.warn.get(metric),
            critical=thresholds.critical.get(metric),
            detail=detail,
        )
        for metric, (value, detail) in values.items()
        if value is not None
    )
    level = max((m.level for m in measures), default=Level.OK)
    bad = sorted(
        (m for m in measures if m.level is not Level.OK),
        key=lambda m: -int(m.level),
    )
    if bad:
        summary = "; ".join(m.text() for m in bad)
    else:
        shown = [m for m in measures if m.metric != "critical_violations"]
        summary = "healthy: " + ", ".join(m.text() for m in shown)
    return CheckResult(
        level=level,
        summary=summary,
        database=database,
        measures=measures,
        jobs=jobs,
        thresholds=thresholds,
        reading=reading,
    )


def unknown(error: OpsError, database: str) -> CheckResult:
    """The result when the database could not be read at all."""
    return CheckResult(
        level=Level.UNKNOWN, summary=str(error), database=database, error=error
    )


def _ago(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f}h ago"
    return f"{seconds / 86400:.0f}d ago"
