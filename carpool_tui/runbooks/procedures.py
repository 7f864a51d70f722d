"""The procedures of operations manual section 4, written as data for the engine.

Each violation kind of 4.2 gets its own path, built from one table of remedies.
The common causes of failing jobs (4.1) are recognised here from SQLSTATE and
message, so the screen and the tests share one reading of the manual.
"""

from __future__ import annotations

from dataclasses import dataclass

from carpool_tui.checks import CHECK_NAMES, CHECKS_BY_NAME
from carpool_tui.runbooks.engine import Action, Check, Procedure, Step

CHECK_KINDS: tuple[str, ...] = CHECK_NAMES
"""The violation kinds of manual 4.2: one per invariant check."""


@dataclass(frozen=True)
class Cause:
    """A common cause of a failed job run (manual 4.1) and what to do about it."""

    name: str
    advice: str


LOCK_TIMEOUT = Cause(
    "Lock timeout",
    "Another process held the rows. Usually self-resolving: run the job again; "
    "if it keeps failing, look for a long transaction holding locks: 4.1's "
    "second step (g on the run) lists the sessions in a transaction.",
)
RUN_IN_PROGRESS = Cause(
    "Another run",
    "Another run of the same job held its lock and this one gave up waiting. "
    "Nothing is wrong with the data: let that run finish (the error names it), "
    "then look at its result before running the job again.",
)
STATEMENT_TIMEOUT = Cause(
    "Statement timeout",
    "The run took longer than the statement timeout and was rolled back; the "
    "database may be under heavy load. Check the load, then run the job again.",
)
CANCELLED = Cause(
    "Cancelled",
    "Someone cancelled the run (from this dashboard or another client); its work "
    "was rolled back. Run the job again when ready.",
)
PERMISSION = Cause(
    "Permission denied",
    "The role running the job lacks a privilege; the service role key may be "
    "invalid. Check the grants (carpool_ops_operator) before running it again.",
)
CONNECTION = Cause(
    "Connection trouble",
    "The database may be under heavy load or restarting. Check the server, then "
    "run the job again.",
)
UNKNOWN = Cause(
    "Not a common cause",
    "Read the error message and details; the manual lists no standard fix.",
)


def diagnose(sqlstate: str | None, message: str | None) -> Cause:
    """The manual's common cause that a failure's SQLSTATE or message points to."""
    state = (sqlstate or "").upper()
    text = (message or "").lower()
    if "most likely another run of the job" in text:
        return RUN_IN_PROGRESS
    if state == "55P03" or "lock timeout" in text or "could not obtain lock" in text:
        return LOCK_TIMEOUT
    if "statement timeout" in text:
        return STATEMENT_TIMEOUT
    if "canceling statement due to user request" in text:
        return CANCELLED
    if state == "42501" or "permission denied" in text:
        return PERMISSION
    if (
        state.startswith("08")
        or state.startswith("57P0")
        or "connection" in text
        or "terminating" in text
    ):
        return CONNECTION
    return UNKNOWN


FINAL_CHECK = "invariants"


def _recheck(kind: str | None) -> Step:
    """The invariant check: verifying a 4.2 fix, or (no kind) the start of
    shift's look at every check, where nothing was fixed to verify."""
    what = kind or "every check"
    table = (
        "The table shows, for each check, its violations open before this run "
        "and the count it finds now."
    )
    if kind is None:
        title = "Run the invariant check"
        purpose = (
            f"See what you take over: check_system_invariants() counts every check "
            f"now. {table} A check with open violations: f on it follows its 4.2 "
            "path."
        )
    else:
        title = "Run the invariant check again"
        purpose = (
            f"Verify the fix: check_system_invariants() counts every check again. "
            f"{table}"
        )
    return Step(
        title=title,
        purpose=purpose,
        view="open_checks",
        action=Action("job", "Run check_system_invariants", "check_system_invariants"),
        check=Check("check_passes", f"{what} passes", kind),
    )


def _job_step(kind: str, job: str, why: str) -> Step:
    return Step(
        title=f"Run {job}()",
        purpose=why,
        view=f"findings:{kind}",
        action=Action("job", f"Run {job}", job),
        check=Check("no_rows", f"no {kind} rows remain"),
    )


def _look(kind: str, purpose: str) -> Step:
    return Step(
        title="See what is wrong",
        purpose=purpose,
        view=f"findings:{kind}",
    )


def _manual_fix(kind: str, advice: str) -> Step:
    return Step(
        title="Investigate and fix by hand",
        purpose="The manual offers no automatic fix. The rows below are the "
        "offending ones and the query under them shows how to inspect them; fix "
        "them deliberately, then check again.",
        view=f"findings:{kind}",
        check=Check("no_rows", f"no {kind} rows remain"),
        advice=advice,
        fixes_automatically=False,
    )


def _violation(kind: str) -> Procedure:
    reconcile = "reconcile_seat_counts"
    expire = "expire_rides"
    steps: tuple[Step, ...]
    healthy = True
    if kind == "seat_mismatch":
        steps = (
            _look(
                kind,
                "Open rides whose stored available_seats differs from "
                "total seats minus the seats of pending and confirmed bookings.",
            ),
            _job_step(
                kind,
                reconcile,
                "Manual 4.2: run reconcile_seat_counts(); it "
                "recounts every open ride and records each fix in the audit log.",
            ),
        )
    elif kind in ("negative_seats", "seat_overflow"):
        steps = (
            _look(
                kind,
                "Rides whose available_seats is below zero."
                if kind == "negative_seats"
                else "Rides whose available_seats is above their total seats.",
            ),
            _job_step(kind, reconcile, "Manual 4.2: run reconciliation first."),
            Step(
                title="Investigate the rides",
                purpose="Manual 4.2: then investigate each ride: its seats now and "
                "the bookings that hold them. An overbooked ride stays wrong until "
                "a booking is cancelled.",
                view="overbooked",
                check=Check("no_rows", "no open ride is overbooked"),
            ),
        )
    elif kind in ("active_booking_on_terminal_ride", "expired_active_ride"):
        what = (
            "Pending or confirmed bookings on rides already completed or cancelled."
            if kind == "active_booking_on_terminal_ride"
            else "Rides still active more than 10 minutes after they expired."
        )
        steps = (
            _look(kind, what),
            _job_step(
                kind,
                expire,
                "Manual 4.2: run expire_rides(); it finishes "
                "the expired rides and closes bookings left on finished ones.",
            ),
        )
    elif kind in ("invalid_ride_status", "invalid_booking_status"):
        healthy = False
        table = "rides" if kind == "invalid_ride_status" else "ride_bookings"
        states = (
            "active, in-progress, completed, cancelled"
            if kind == "invalid_ride_status"
            else "pending, confirmed, completed, cancelled"
        )
        steps = (
            _look(
                kind,
                f"{table} rows whose status is none of the four canonical "
                f"states ({states}; manual 5): data corruption.",
            ),
            _manual_fix(
                kind,
                "Find out how the value got there before changing "
                f"anything, then set one of {states} by hand.",
            ),
        )
    else:
        healthy = False
        steps = (
            _look(
                kind,
                "The same passenger holds more than one pending or "
                "confirmed booking on one ride.",
            ),
            _manual_fix(
                kind,
                "The manual names no remedy: decide with the passenger which "
                "booking stays (booking_ids lists them, oldest first) and cancel "
                "the other through the platform, or by hand.",
            ),
        )
    severity = CHECKS_BY_NAME[kind].severity
    return Procedure(
        id=f"violation:{kind}",
        section="4.2",
        title=f"Violation: {kind}",
        summary=(
            f"A {severity} invariant violation: follow the manual's remedy and "
            "verify with the invariant check."
            if healthy
            else f"A {severity} invariant violation that no job fixes: read the "
            "rows, fix them by hand and verify with the invariant check."
        ),
        steps=(*steps, _recheck(kind)),
        target="violation",
        can_end_healthy=healthy,
    )


JOBS_FAILING = Procedure(
    id="jobs-failing",
    section="4.1",
    title="Jobs are failing",
    summary="Read the failed runs and their errors, recognise the cause, run the "
    "job again and verify it completes.",
    steps=(
        Step(
            title="Read the failed runs",
            purpose="Manual 4.1: recent failed runs, newest first, with the error "
            "message and SQLSTATE. The cause column names the common issue.",
            view="failed_runs",
            check=Check("chosen", "a failed run is chosen"),
        ),
        Step(
            title="See what holds locks",
            purpose="The database's sessions in a transaction now, oldest first: "
            "how long, which sessions block each one (blocked_by), what it waits "
            "on and its query. A lock timeout usually waited on the oldest, or on "
            "the session others list in blocked_by; one that stays, ask its owner "
            "to end it. Another role's session shows no details unless this role "
            "has pg_read_all_stats.",
            view="sessions",
        ),
        Step(
            title="Run the job again",
            purpose="Once the cause is dealt with (see the advice), run the same "
            "job again and see it complete.",
            view="latest_runs",
            action=Action("job", "Run the failed job again"),
            check=Check("job_ok", "the job completes"),
        ),
    ),
    target="job_run",
)

EXPIRE_RIDE = Procedure(
    id="expire-ride",
    section="4.3",
    title="Manual ride expiry",
    summary="When automatic expiry is not running: pick a ride past its expiry "
    "and expire it by hand, with its bookings.",
    steps=(
        Step(
            title="Choose the ride",
            purpose="Rides still active after they expired. Press Enter on the ride "
            "to expire. A ride not listed: skip this step (k), then type its id in "
            "the next step's dialog (a).",
            view="findings:expired_active_ride",
            check=Check("chosen", "a ride is chosen", "typed"),
        ),
        Step(
            title="Expire it",
            purpose="Manual 4.3: the ride becomes completed and its pending and "
            "confirmed bookings completed, through ops_expire_ride (audited).",
            view="ride",
            action=Action("expire_ride", "Preview and expire the ride"),
            check=Check("ride_finished", "the ride is finished, no open bookings"),
        ),
    ),
    target="ride",
)

SEAT_FIX = Procedure(
    id="seat-fix",
    section="4.4",
    title="Manual seat fix",
    summary="Compute a ride's correct available seats and set them, with a "
    "preview and a note.",
    steps=(
        Step(
            title="Choose the ride",
            purpose="Open rides whose stored seats differ from the computed value. "
            "Press Enter on the ride to fix. A ride not listed: skip this step (k), "
            "then type its id in the next step's dialog (a).",
            view="findings:seat_mismatch",
            check=Check("chosen", "a ride is chosen", "typed"),
        ),
        Step(
            title="Fix it",
            purpose="Manual 4.4: the correct value is total seats minus the seats "
            "of pending and confirmed bookings; ops_apply_seat_fix sets it (audited).",
            view="ride_seats",
            action=Action("seat_fix", "Preview and apply the seat fix"),
            check=Check("seats_right", "available_seats equals the computed value"),
        ),
    ),
    target="ride",
)

START_OF_SHIFT = Procedure(
    id="start-of-shift",
    section="4",
    title="Start of shift check",
    summary="Health, then jobs, then violations: the state you take over.",
    steps=(
        Step(
            title="Health summary",
            purpose="get_system_health_summary(): the counts to watch. Expired "
            "active rides, seat mismatches, violations and failed jobs should be 0. "
            "failed_jobs_24h counts runs that failed in the last 24 hours: it "
            "falls as they age out, not when the job next succeeds.",
            view="health",
        ),
        Step(
            title="Jobs",
            purpose="The latest run of each job. A job that never ran or last "
            "started more than twice its interval ago is OVERDUE, as carpool-tui "
            "check judges it (a stopped scheduler looks like this). A failed run: "
            "f on it follows 4.1 for that run.",
            view="latest_runs",
            check=Check(
                "no_failed_latest", "every job ran on time and its last run succeeded"
            ),
        ),
        _recheck(None),
    ),
)

PROCEDURES: tuple[Procedure, ...] = (
    JOBS_FAILING,
    *(_violation(kind) for kind in CHECK_KINDS),
    EXPIRE_RIDE,
    SEAT_FIX,
    START_OF_SHIFT,
)
PROCEDURES_BY_ID: dict[str, Procedure] = {p.id: p for p in PROCEDURES}


def for_violation(check_names: list[str]) -> Procedure | None:
    """The 4.2 path for a violation row's first known check."""
    for name in check_names:
        found = PROCEDURES_BY_ID.get(f"violation:{name}")
        if found is not None:
            return found
    return None
