"""Typed models of what the SQL returns, and the four jobs described as data.

The UI renders only these models; the repository builds them from rows and
function results. Field names follow the SQL contract (docs/sql-api.md and the
operations manual); extra keys a deployment adds are kept, never rejected.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
)

from carpool_tui.checks import SEAT_CHECKS

JobName = Literal[
    "expire_rides",
    "reconcile_seat_counts",
    "repair_missing_notifications",
    "check_system_invariants",
]

NEGATIVE_INFINITY = datetime.min.replace(tzinfo=UTC)
INFINITY = datetime.max.replace(tzinfo=UTC)


def pg_infinite(value: Any) -> Any:
    """PostgreSQL's '-infinity' / 'infinity' timestamps as aware datetimes.

    asyncpg decodes them as the naive ``datetime.min`` / ``datetime.max`` and
    JSON carries them as text; beside the aware timestamps of every other row a
    naive one makes each comparison and subtraction raise. Any other value is
    returned as it is.
    """
    if isinstance(value, str) and value in ("infinity", "-infinity"):
        return INFINITY if value == "infinity" else NEGATIVE_INFINITY
    if isinstance(value, datetime) and value.tzinfo is None:
        if value == datetime.min:
            return NEGATIVE_INFINITY
        if value == datetime.max:
            return INFINITY
    return value


def infinity_text(value: datetime) -> str | None:
    """'-infinity' or 'infinity' (as PostgreSQL writes them) for such a stamp."""
    plain = value.replace(tzinfo=None)
    if plain == datetime.min:
        return "-infinity"
    if plain == datetime.max:
        return "infinity"
    return None


def iso_stamp(value: datetime | None) -> str | None:
    """A timestamp in ISO 8601 for JSON and files, ±infinity as PostgreSQL says it.

    An aware time is written in UTC with a "+00:00" offset, the form of Python's
    isoformat and of PostgreSQL. A document then writes every time one way:
    asyncpg gives columns in UTC, but JSON from the server carries the session's
    TimeZone offset, and pydantic would write UTC as "Z". A time UTC cannot hold
    (the first hour of year 1 east of Greenwich) keeps its own offset.
    """
    if value is None:
        return None
    text = infinity_text(value)
    if text is not None:
        return text
    if value.tzinfo is not None:
        with contextlib.suppress(OverflowError):
            value = value.astimezone(UTC)
    return value.isoformat()


Stamp = Annotated[
    datetime,
    BeforeValidator(pg_infinite),
    PlainSerializer(iso_stamp, when_used="json"),
]
"""A timestamp column or JSON key, which may be PostgreSQL's ±infinity (and is
written back to JSON as such, and otherwise as iso_stamp writes it)."""


LEGACY_CHECK_NAME = "system_invariant_check"
SEVERITY_ORDER = {"critical": 1, "warning": 2}


@dataclass(frozen=True)
class JobSpec:
    """One background job of manual section 1: what it is called and does."""

    name: JobName
    title: str
    summary: str
    steps: tuple[str, ...]
    frequency: timedelta
    frequency_text: str


JOBS: tuple[JobSpec, ...] = (
    JobSpec(
        name="expire_rides",
        title="Ride expiry",
        summary="Moves rides whose departure or availability has passed, and "
        "their open bookings, to their final states.",
        steps=(
            "Finds rides whose departure_time or available_until has passed",
            "Marks their pending and confirmed bookings completed",
            "Notifies the affected passengers",
            "Marks the rides completed",
            "Records the run in system_job_log",
        ),
        frequency=timedelta(minutes=5),
        frequency_text="every 5 minutes",
    ),
    JobSpec(
        name="reconcile_seat_counts",
        title="Seat reconciliation",
        summary="Sets each ride's available_seats to total seats minus the "
        "seats of its pending and confirmed bookings.",
        steps=(
            "Counts the seats held by pending and confirmed bookings",
            "Compares that with the stored available_seats",
            "Records each difference in admin_audit_log",
            "Fixes the mismatched values",
        ),
        frequency=timedelta(days=1),
        frequency_text="daily (3 AM)",
    ),
    JobSpec(
        name="repair_missing_notifications",
        title="Notification repair",
        summary="Creates booking notifications that were never sent, for "
        "bookings of the last 30 days.",
        steps=(
            "Finds bookings without a BOOKING_REQUEST notification",
            "Finds confirmed bookings without BOOKING_CONFIRMED",
            "Finds cancelled bookings without BOOKING_CANCELLED",
            "Creates the missing ones, marked repaired",
        ),
        frequency=timedelta(days=1),
        frequency_text="daily (4 AM)",
    ),
    JobSpec(
        name="check_system_invariants",
        title="Invariant check",
        summary="Runs the eight consistency checks and records what fails in "
        "invariant_violations.",
        steps=(
            "Checks seats, ride and booking states, duplicates and expiry",
            "Keeps up to 10 samples per failing check",
            "Records the findings in invariant_violations",
        ),
        frequency=timedelta(minutes=15),
        frequency_text="every 15 minutes",
    ),
)

JOBS_BY_NAME: dict[str, JobSpec] = {job.name: job for job in JOBS}


class _Open(BaseModel):
    """A model that keeps keys it does not know about."""

    model_config = ConfigDict(extra="allow")


class RecentJob(_Open):
    """One entry of the health summary's recent_job_status."""

    job_name: str
    status: str
    started_at: Stamp | None = None
    completed_at: Stamp | None = None
    records_processed: int | None = None
    duration_ms: float | None = None
    error_message: str | None = None


class HealthSummary(_Open):
    """The result of get_system_health_summary() (manual 3.1)."""

    timestamp: Stamp | None = None
    total_rides: int | None = None
    active_rides: int | None = None
    in_progress_rides: int | None = None
    total_bookings: int | None = None
    pending_bookings: int | None = None
    confirmed_bookings: int | None = None
    expired_active_rides: int | None = None
    seat_mismatches: int | None = None
    unresolved_violations: int | None = None
    recent_job_status: list[RecentJob] = Field(default_factory=list)
    failed_jobs_24h: int | None = None
    ops_layer_version: str | None = None

    @field_validator("recent_job_status", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value


def run_duration(
    started_at: datetime | None, completed_at: datetime | None
) -> timedelta | None:
    """How long a logged run took, or None where the row does not say.

    The deployed functions stamp both times with ``now()``, their transaction's
    start, so every legacy run reads as exactly zero: that is no measurement,
    and showing "0 ms" would claim one. The ops layer stamps with the clock.
    A run stamped ±infinity has no measurable duration either.
    """
    if started_at is None or completed_at is None or completed_at == started_at:
        return None
    if infinity_text(started_at) or infinity_text(completed_at):
        return None
    return completed_at - started_at


class JobLogEntry(BaseModel):
    """One row of system_job_log; the ops-layer columns may be absent."""

    id: UUID | int | str
    job_name: str
    started_at: Stamp | None = None
    completed_at: Stamp | None = None
    status: str
    records_processed: int | None = None
    errors_encountered: int | None = None
    details: Any = None
    """Whatever JSON the row holds; a dict where the ops layer wrote it."""
    error_message: str | None = None
    sqlstate: str | None = None
    triggered_by: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @property
    def duration(self) -> timedelta | None:
        return run_duration(self.started_at, self.completed_at)

    @property
    def error_sqlstate(self) -> str | None:
        """The SQLSTATE from the column, else from details (legacy rows have none)."""
        if self.sqlstate:
            return self.sqlstate
        if isinstance(self.details, dict):
            value = self.details.get("sqlstate")
            return str(value) if value else None
        return None


class JobLogPage(BaseModel):
    """A page of the job log, newest first."""

    entries: list[JobLogEntry]
    offset: int = 0
    limit: int = 100
    failed_only: bool = False
    has_more: bool = False


def json_text(value: Any) -> Any:
    """A JSON value as text: a string or null as it is, anything else as JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


class ViolationSample(_Open):
    """One sample of a failing check; the fields present depend on the check."""

    check: str | None = None
    name: str | None = None
    severity: str | None = None
    ride_id: str | None = None
    booking_id: str | None = None
    passenger_id: str | None = None
    current: int | None = None
    expected: int | None = None
    status: str | None = None

    @field_validator(
        "check",
        "name",
        "severity",
        "ride_id",
        "booking_id",
        "passenger_id",
        "status",
        mode="before",
    )
    @classmethod
    def _any_json_as_text(cls, value: Any) -> Any:
        """A number, bool or object where text is expected, as its JSON text.

        Samples are free-form JSON that hand-written checks and scripts fill
        too (an integer ride id, say): showing the value is better than
        refusing the row it is in.
        """
        return json_text(value)

    def fields(self) -> dict[str, Any]:
        """Every key of the sample, known or not, in a stable order."""
        data = self.model_dump(exclude_none=True)
        return dict(sorted(data.items()))


class Violation(BaseModel):
    """One row of invariant_violations: an ops-layer row or a legacy one."""

    id: UUID | int | str
    check_name: str
    severity: str
    violation_count: int | None = None
    sample_data: list[ViolationSample] = Field(default_factory=list)
    sample_total: int | None = None
    """How many samples the row holds, where more than were read."""
    detected_at: Stamp | None = None
    resolved_at: Stamp | None = None
    auto_resolved: bool | None = None
    notes: str | None = None
    check_id: str | None = None
    last_seen_at: Stamp | None = None
    resolved_by: str | None = None
    unreadable: str | None = None
    """What of the row could not be read, and why; those columns are left
    empty (no samples, say) and the rest of the row is shown."""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Violation:
        """A row of invariant_violations; columns that cannot be read are left out.

        One malformed row must neither hide the others nor itself: it is kept
        with its check name, severity and count, so that it is still counted,
        listed and can be resolved, and ``unreadable`` says what is missing.
        """
        try:
            return cls.model_validate(row)
        except ValidationError as exc:
            problems = exc.errors(include_url=False)
        bad = {str(p["loc"][0]) for p in problems if p["loc"]}
        kept = {k: v for k, v in row.items() if k not in bad}
        if "sample_data" in bad:
            kept.pop("sample_total", None)  # counts samples no longer shown
        for key in _VIOLATION_REQUIRED & bad:
            # Text is all these need; the row's identity is worth keeping.
            kept[key] = str(json_text(row.get(key)) or "?")
        what = ", ".join(
            "samples" if key == "sample_data" else key for key in sorted(bad)
        )
        why = "; ".join(
            ".".join(str(part) for part in p["loc"]) + ": " + p["msg"] for p in problems
        )
        return cls.model_validate(
            {**kept, "unreadable": f"{what} could not be read ({why})"}
        )

    @field_validator("sample_data", mode="before")
    @classmethod
    def _samples_as_list(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, dict):
            inner = value.get("samples") or value.get("violations")
            value = inner if isinstance(inner, list) else [value]
        if not isinstance(value, list):
            value = [value]
        # A sample that is not an object (a bare string from a hand-written
        # check) is kept, as its value, rather than hiding the whole row.
        return [v if isinstance(v, dict) else {"value": v} for v in value]

    @property
    def legacy(self) -> bool:
        """True for a row the deployed check wrote (all checks in one row)."""
        return self.check_name == LEGACY_CHECK_NAME

    @property
    def checks(self) -> list[str]:
        """The check names this row is about (several for a legacy row)."""
        if not self.legacy:
            return [self.check_name]
        names = {s.name for s in self.sample_data if s.name}
        return sorted(names)

    @property
    def seat_ride_ids(self) -> list[str]:
        """Ride ids of the samples a seat fix can act on, in sample order."""
        found: list[str] = []
        for sample in self.sample_data:
            name = sample.name or self.check_name
            if sample.ride_id and name in SEAT_CHECKS and sample.ride_id not in found:
                found.append(sample.ride_id)
        return found


_VIOLATION_REQUIRED = frozenset(
    name for name, field in Violation.model_fields.items() if field.is_required()
)


class PanelError(BaseModel):
    """Why one panel could not be filled on this refresh."""

    message: str
    hint: str = ""
    kind: str = "OpsError"


class Capabilities(BaseModel):
    """What this database and role allow, found once per connection."""

    ops_layer_version: str | None = None
    read_only: bool = False
    missing_grants: list[str] = Field(default_factory=list)
    missing_functions: list[str] = Field(default_factory=list)
    pending_migrations: list[str] = Field(default_factory=list)
    """Shipped ops-layer files the database's ledger does not record."""
    job_log_columns: list[str] = Field(default_factory=list)
    violation_columns: list[str] = Field(default_factory=list)
    server_version: str = ""
    database: str = ""
    user: str = ""

    @property
    def ops_layer(self) -> bool:
        return self.ops_layer_version is not None

    @property
    def ops_layer_incomplete(self) -> bool:
        """Part of the ops layer is there: a migrate that stopped part way
        (perhaps before the file that names its version), or a function
        dropped since."""
        return bool(self.pending_migrations) or (
            self.ops_layer and bool(self.missing_functions)
        )

    def can_execute(self, function: str) -> bool:
        return (
            function not in self.missing_grants
            and function not in self.missing_functions
        )


class Snapshot(BaseModel):
    """Everything one refresh fetched, with the errors of panels that failed."""

    fetched_at: datetime
    capabilities: Capabilities
    health: HealthSummary | None = None
    latest_runs: dict[str, JobLogEntry] = Field(default_factory=dict)
    job_log: JobLogPage | None = None
    violations: list[Violation] = Field(default_factory=list)
    errors: dict[str, PanelError] = Field(default_factory=dict)

    def latest_run(self, job: str) -> JobLogEntry | RecentJob | None:
        """The newest run of a job: from the log, else from the health summary."""
        if self.health is None:
            return self.latest_runs.get(job)
        return last_run(
            job,
            self.latest_runs,
            self.health.recent_job_status,
            self.health.timestamp,
        )


CLOCK_MARGIN = timedelta(minutes=5)
"""A job's latest run is its newest not stamped more than this ahead of the
server's clock. A row dated ahead (a clock set wrong, a hand-written row)
would otherwise stay "latest" and hide every newer run, failed or missing;
the job log still lists it."""


def last_start(run: JobLogEntry | RecentJob | None) -> datetime | None:
    """When a run started (or, lacking that, completed)."""
    if run is None:
        return None
    return run.started_at or run.completed_at


def dated_ahead(run: JobLogEntry | RecentJob, now: datetime | None) -> bool:
    """Whether a run is stamped more than CLOCK_MARGIN after ``now``."""
    stamp = last_start(run)
    return now is not None and stamp is not None and stamp > now + CLOCK_MARGIN


def last_run(
    job: str,
    logged: dict[str, JobLogEntry],
    recent: list[RecentJob],
    now: datetime | None,
) -> JobLogEntry | RecentJob | None:
    """A job's newest run: the log's (already read without rows dated ahead),
    else the health summary's, which is not filtered, so filtered here."""
    if job in logged:
        return logged[job]
    return next(
        (r for r in recent if r.job_name == job and not dated_ahead(r, now)), None
    )


class JobResult(_Open):
    """What a job function returned; failures carry error and sqlstate."""

    success: bool = False
    error: str | None = None
    sqlstate: str | None = None
    hint: str | None = None
    job_log_id: str | None = None
    server_seconds: float | None = None
    """How long the run took on the server, from its system_job_log row."""
    connection_dropped: str | None = None
    """Why the job's connection dropped before its answer came; the outcome
    was then read from the job log."""
    outcome_unknown: bool = False
    """The answer never came (a dropped connection that could not be settled
    from the job log, or the run stopped while it waited)."""

    def describe(self, job: str) -> str:
        """The result in words, for the operator."""
        if self.outcome_unknown:
            return (
                f"Outcome unknown: {self.error or 'the connection dropped'}. The job "
                "may have completed or failed on the server; its row in the job log "
                "says which once the server answers."
            )
        if self.connection_dropped is not None:
            records = counted(
                self.model_dump().get("records_processed") or 0,
                "{} record processed",
                "{} records processed",
            )
            ended = (
                f"completed ({records})"
                if self.success
                else f"failed: {self.error or 'no error message'}"
            )
            return (
                f"The connection dropped before the job's answer came "
                f"({self.connection_dropped}); its job-log row shows it {ended}."
            )
        if not self.success:
            state = f" (SQLSTATE {self.sqlstate})" if self.sqlstate else ""
            return f"Failed: {self.error or 'no error message'}{state}"
        data = self.model_dump()
        parts = [
            counted(data[key], one, many)
            for key, one, many in _RESULT_WORDS.get(job, ())
            if data.get(key) is not None
        ]
        if job == "check_system_invariants":
            healthy = data.get("healthy")
            head = "Healthy" if healthy else "Violations found"
            failing = self.failing_checks()
            if parts and data.get("total_violations") is not None and failing:
                parts[0] += counted(failing, " in {} check", " in {} checks")
            return ", ".join([head, *parts]) + "."
        if job == "repair_missing_notifications" and data.get("scope"):
            whole = data["scope"] == "full"
            parts.append(
                "checked all 30 days" if whole else "checked since the last run"
            )
        if job == "reconcile_seat_counts" and data.get("overbooked_rides"):
            parts.append(
                counted(
                    len(data["overbooked_rides"]),
                    "{} overbooked ride reported",
                    "{} overbooked rides reported",
                )
            )
        if not parts:
            return "Completed."
        text = ", ".join(parts)
        return text[0].upper() + text[1:] + "."

    def failing_checks(self) -> int:
        """How many checks found violations: from `checks`, else sample names."""
        data = self.model_dump()
        checks = data.get("checks")
        if isinstance(checks, list) and checks:
            counts = [c.get("count") for c in checks if isinstance(c, dict)]
            return sum(1 for n in counts if isinstance(n, int) and n > 0)
        samples = data.get("violations")
        if isinstance(samples, list):
            names = {s.get("name") for s in samples if isinstance(s, dict)}
            return len(names - {None})
        return 0


def counted(count: Any, one: str, many: str) -> str:
    """`one` for a count of exactly 1, else `many`, with the count put in for {}.

    English takes the singular for one and the plural for every other count,
    zero included ("1 mismatch", "0 mismatches"). Each wording names both
    forms itself, as irregular plurals (mismatch, mismatches) need.
    """
    return (one if count == 1 else many).format(count)


_RESULT_WORDS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "expire_rides": (
        ("rides_expired", "expired {} ride", "expired {} rides"),
        ("bookings_completed", "completed {} booking", "completed {} bookings"),
        (
            "notifications_created",
            "created {} notification",
            "created {} notifications",
        ),
        (
            "orphan_bookings_closed",
            "closed {} orphan booking",
            "closed {} orphan bookings",
        ),
        (
            "rides_skipped_locked",
            "skipped {} ride locked by another session",
            "skipped {} rides locked by another session",
        ),
    ),
    "reconcile_seat_counts": (
        ("mismatches_found", "found {} mismatch", "found {} mismatches"),
        ("mismatches_fixed", "fixed {} mismatch", "fixed {} mismatches"),
        (
            "rides_skipped_locked",
            "skipped {} ride locked by another session",
            "skipped {} rides locked by another session",
        ),
    ),
    "repair_missing_notifications": (
        (
            "booking_requests_created",
            "created {} booking request",
            "created {} booking requests",
        ),
        ("confirmations_created", "{} confirmation", "{} confirmations"),
        ("cancellations_created", "{} cancellation", "{} cancellations"),
        (
            "total_notifications_created",
            "{} notification in total",
            "{} notifications in total",
        ),
    ),
    "check_system_invariants": (
        ("total_violations", "{} violation", "{} violations"),
        ("violations_opened", "{} opened", "{} opened"),
        ("violations_auto_resolved", "{} auto-resolved", "{} auto-resolved"),
    ),
}
"""Each result key a job returns, in words for a count of one and for any other."""


class Booking(_Open):
    """A booking as the admin previews list it."""

    booking_id: str
    passenger_id: str | None = None
    status: str | None = None
    seats_requested: int | None = None
    created_at: Stamp | None = None


class SeatFixPreview(_Open):
    """ops_preview_seat_fix(): the ride's seats now and what they should be."""

    ride_id: str
    status: str | None = None
    total_seats: int
    current: int
    computed: int
    counted_seats: int | None = None
    needs_fix: bool
    overbooked: bool = False
    bookings: list[Booking] = Field(default_factory=list)


class SeatFixApplied(_Open):
    """ops_apply_seat_fix() succeeded."""

    ride_id: str
    before: Any = None
    after: Any = None
    audit_id: str | None = None


class ExpirePreview(_Open):
    """ops_preview_expire_ride(): whether the ride is due and what would change."""

    ride_id: str
    status: str | None = None
    departure_time: Stamp | None = None
    available_until: Stamp | None = None
    expires_at: Stamp | None = None
    due: bool = False
    terminal: bool = False
    bookings: list[Booking] = Field(default_factory=list)


class ExpireApplied(_Open):
    """ops_expire_ride() succeeded."""

    ride_id: str
    bookings_completed: int = 0
    notifications_created: int = 0
    audit_id: str | None = None


class ResolvePreview(_Open):
    """ops_preview_resolve_violation(): the row and whether its check fails now."""

    violation: dict[str, Any] = Field(default_factory=dict)
    still_failing: bool | None
    """None when the row names no check that can be run (an unknown check)."""
    current_count: int | None = None


class ResolveApplied(_Open):
    """ops_resolve_violation() succeeded."""

    violation_id: str
    still_failing: bool | None = None
    audit_id: str | None = None


class Refusal(_Open):
    """An admin function said no: a code, a readable sentence, maybe a new preview."""

    code: str
    error: str
    preview: SeatFixPreview | ExpirePreview | None = None
    violation: dict[str, Any] | None = None
    """The row as it stands, where an already_resolved refusal carries it."""

    @field_validator("preview", mode="before")
    @classmethod
    def _known_previews(cls, value: Any) -> Any:
        """The fresh preview a stale_preview refusal carries, by its shape."""
        if isinstance(value, dict) and "computed" in value:
            return SeatFixPreview.model_validate(value)
        if isinstance(value, dict) and "expires_at" in value:
            return ExpirePreview.model_validate(value)
        return None


class RowSet(BaseModel):
    """Live rows a procedure step shows, with the query that read them."""

    view: str
    query: str
    columns: list[str] = Field(default_factory=list)
    rows: list[dict[str, Any]] = Field(default_factory=list)
