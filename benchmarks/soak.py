"""Concurrency soak: live booking traffic against the four ops jobs, then an audit.

    python -m benchmarks.soak --dsn DSN [--clients N] [--seconds S]

Clients, each on its own connection, book, confirm and cancel through the
platform functions (``request_booking``, ``confirm_booking``,
``cancel_booking``) on active rides that depart long after the soak ends, while
every one of the four jobs runs over and over from other connections. The soak
stops by itself when its time or its action budget is spent, then checks what
the ops contract promises under load:

- no invariant violation, neither in any ``check_system_invariants`` run nor
  at the end, and the same facts read with direct SQL (seats consistent on
  every open ride, no ride overbooked, no duplicate active booking);
  ``reconcile_seat_counts`` never finds a mismatch, because the seat trigger
  keeps correct traffic right;
- no deadlock (40P01) seen by a client or a job, nor counted by the server;
- every booking a client made exists with the status that client last gave
  it, and no other booking appeared;
- every booking has exactly the notifications its history calls for, none
  twice and none left for the repair job to make; no duplicate notification
  appeared anywhere else either;
- every job run completed, or failed only for an accepted reason (a lock wait
  past the job's lock timeout) recorded in its ``system_job_log`` row.

An empty platform database (schema and ops layer applied, no rides) is seeded
first with :func:`carpool_tui.db.seed.seed_platform`. The exit status is 0 when
everything held, 1 when something did not, 2 when the soak could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from carpool_tui.db.connect import as_dict, connect
from carpool_tui.db.errors import NotMigrated, OpsError
from carpool_tui.db.seed import seed_platform

JOBS: tuple[str, ...] = (
    "expire_rides",
    "reconcile_seat_counts",
    "repair_missing_notifications",
    "check_system_invariants",
)
# Job failures the contract allows under load, each recorded in the run's log row.
ACCEPTED_JOB_FAILURES: dict[str, str] = {
    "55P03": "waited past the job's lock timeout",
}
DEADLOCK = "40P01"

# What a client does next, when it has a booking to act on.
CONFIRM_SHARE = 0.35
CANCEL_SHARE = 0.2
TWO_SEATS_SHARE = 0.2
# Rides the clients book depart at least this long after the soak ends, so
# expire_rides never has a reason to touch them.
RIDE_MARGIN_S = 2 * 3600
# A client or job still busy this long after the deadline counts as hung.
HANG_GRACE_S = 60.0
CLIENT_STATEMENT_TIMEOUT_MS = 30_000
CLIENT_LOCK_TIMEOUT_MS = 10_000
JOB_STATEMENT_TIMEOUT_MS = 30_000
KEEP_SAMPLES = 10

# Per job, the result keys summed over its runs.
_TOTALS: dict[str, tuple[str, ...]] = {
    "expire_rides": (
        "rides_expired",
        "bookings_completed",
        "orphan_bookings_closed",
        "notifications_created",
    ),
    "reconcile_seat_counts": ("mismatches_found", "mismatches_fixed"),
    "repair_missing_notifications": ("total_notifications_created",),
    "check_system_invariants": ("total_violations",),
}


@dataclass
class JobStats:
    """What one job's runs during the soak returned."""

    runs: int = 0
    completed: int = 0
    failed_accepted: int = 0
    failed_other: list[str] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    runs_with_findings: int = 0
    findings: list[str] = field(default_factory=list)
    # job_log_id -> (success, sqlstate) as the call returned them
    logged: dict[str, tuple[bool, str | None]] = field(default_factory=dict)
    unlogged: int = 0


@dataclass
class _Booking:
    """One booking a client made, and what that client last did to it."""

    ride_id: uuid.UUID
    passenger_id: uuid.UUID
    status: str = "pending"
    confirmed: bool = False


@dataclass
class _ClientResult:
    actions: int = 0
    requests: int = 0
    confirms: int = 0
    cancels: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    deadlocks: int = 0
    bookings: dict[uuid.UUID, _Booking] = field(default_factory=dict)


@dataclass
class SoakReport:
    """What the soak did and every property it checked afterwards."""

    clients: int
    seconds: float
    rides_booked_on: int
    passengers: int
    actions: int = 0
    requests: int = 0
    bookings_created: int = 0
    confirms: int = 0
    cancels: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    unexpected_errors: int = 0
    unexpected_samples: list[str] = field(default_factory=list)
    deadlocks_seen: int = 0
    deadlocks_counted_by_server: int = 0
    jobs: dict[str, JobStats] = field(default_factory=dict)
    baseline_violations: int = 0
    final_checks: dict[str, int] = field(default_factory=dict)
    final_reconcile_mismatches: int = 0
    seat_mismatches: list[str] = field(default_factory=list)
    overbooked_rides: list[str] = field(default_factory=list)
    duplicate_active_bookings: list[str] = field(default_factory=list)
    missing_bookings: list[str] = field(default_factory=list)
    wrong_status: list[str] = field(default_factory=list)
    unknown_bookings: int = 0
    notification_problems: list[str] = field(default_factory=list)
    duplicate_notifications: int = 0
    job_log_problems: list[str] = field(default_factory=list)
    hung: list[str] = field(default_factory=list)
    # booking id -> the status its client last gave it
    bookings: dict[uuid.UUID, str] = field(default_factory=dict)

    @property
    def bookings_per_second(self) -> float:
        return self.bookings_created / self.seconds if self.seconds > 0 else 0.0

    @property
    def job_runs(self) -> int:
        return sum(s.runs for s in self.jobs.values())

    @property
    def violations_found(self) -> int:
        """Invariant findings in any check run during the soak or at its end."""
        during = sum(
            s.totals.get("total_violations", 0)
            for name, s in self.jobs.items()
            if name == "check_system_invariants"
        )
        return during + sum(self.final_checks.values())

    def problems(self) -> list[str]:
        """Every property that did not hold, one readable line each."""
        out: list[str] = []

        def add(items: Sequence[str], what: str) -> None:
            if items:
                shown = "; ".join(items[:3])
                more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
                out.append(f"{what}: {len(items)}: {shown}{more}")

        if self.violations_found:
            out.append(f"invariant violations found: {self.violations_found}")
        found = self.jobs.get("reconcile_seat_counts", JobStats()).totals
        if found.get("mismatches_found", 0) or self.final_reconcile_mismatches:
            out.append(
                "reconcile_seat_counts found mismatches under correct traffic: "
                f"{found.get('mismatches_found', 0)} during, "
                f"{self.final_reconcile_mismatches} at the end"
            )
        add(self.seat_mismatches, "open rides whose seats disagree with bookings")
        add(self.overbooked_rides, "overbooked rides")
        add(self.duplicate_active_bookings, "duplicate active bookings")
        if self.deadlocks_seen or self.deadlocks_counted_by_server:
            out.append(
                f"deadlocks: {self.deadlocks_seen} seen by clients and jobs, "
                f"{self.deadlocks_counted_by_server} counted by the server"
            )
        if self.unexpected_errors:
            out.append(
                f"unexpected errors: {self.unexpected_errors}: "
                + "; ".join(self.unexpected_samples[:3])
            )
        add(self.missing_bookings, "bookings made but missing")
        add(self.wrong_status, "bookings whose status is not what the client set")
        if self.unknown_bookings:
            out.append(f"bookings nobody made: {self.unknown_bookings}")
        add(self.notification_problems, "notification problems")
        if self.duplicate_notifications:
            out.append(f"duplicate notifications: {self.duplicate_notifications}")
        for name, stats in self.jobs.items():
            add(stats.failed_other, f"{name} runs failed for no accepted reason")
            if stats.unlogged:
                out.append(f"{name} runs without a job_log_id: {stats.unlogged}")
        add(self.job_log_problems, "job log rows that disagree with the runs")
        add(self.hung, "tasks that did not stop")
        return out

    @property
    def held(self) -> bool:
        return not self.problems()

    def lines(self) -> list[str]:
        """The report for a terminal."""
        refusals = ", ".join(f"{k} {v}" for k, v in sorted(self.refusals.items()))
        out = [
            f"soak: {self.clients} clients for {self.seconds:.1f} s on "
            f"{self.rides_booked_on} rides, {self.passengers} passengers",
            f"bookings/s            {self.bookings_per_second:10.1f}",
            f"actions               {self.actions:10,}",
            f"bookings created      {self.bookings_created:10,}"
            f"   (of {self.requests:,} requests)",
            f"confirms              {self.confirms:10,}",
            f"cancels               {self.cancels:10,}",
            f"refusals              {sum(self.refusals.values()):10,}"
            + (f"   ({refusals})" if refusals else ""),
            f"unexpected errors     {self.unexpected_errors:10,}",
            f"deadlocks             {self.deadlocks_seen:10,}"
            f"   (server counted {self.deadlocks_counted_by_server})",
            f"job runs              {self.job_runs:10,}",
        ]
        for name in JOBS:
            s = self.jobs.get(name, JobStats())
            out.append(
                f"  {name:<29}{s.runs:7,} runs: {s.completed:,} completed, "
                f"{s.failed_accepted} lock timeouts, {len(s.failed_other)} other"
            )
            if s.totals:
                out.append(
                    "    " + ", ".join(f"{k} {v:,}" for k, v in s.totals.items())
                )
        accounted = (
            len(self.bookings) - len(self.missing_bookings) - len(self.wrong_status)
        )
        out += [
            f"violations found      {self.violations_found:10,}"
            f"   (before the soak: {self.baseline_violations})",
            f"duplicate notices     {self.duplicate_notifications:10,}",
            f"bookings accounted    {accounted:10,} of {len(self.bookings):,}",
        ]
        problems = self.problems()
        if problems:
            out.append("FAILED:")
            out += [f"  {p}" for p in problems]
        else:
            out.append("held: every property checked")
        return out


@dataclass(frozen=True)
class _Setup:
    dsn: str
    rides: dict[uuid.UUID, uuid.UUID]  # ride id -> driver id
    passengers: list[uuid.UUID]
    seed: int
    deadline: float
    max_actions: int


def _sqlstate(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None)
    return state if isinstance(state, str) else None


def _describe(action: str, exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:160]
    return f"{action}: {_sqlstate(exc) or type(exc).__name__} {text}"


def _refusal(exc: asyncpg.PostgresError) -> str | None:
    """The expected refusal a failed request_booking is, or None."""
    if isinstance(exc, asyncpg.UniqueViolationError):
        return "already_booked"
    if isinstance(exc, asyncpg.CheckViolationError) and "seats left" in str(exc):
        return "no_seats"
    return None


def _take(rng: random.Random, items: list[uuid.UUID]) -> uuid.UUID:
    """Remove and return a random element (order of the rest does not matter)."""
    i = rng.randrange(len(items))
    items[i], items[-1] = items[-1], items[i]
    return items.pop()


async def _client(index: int, setup: _Setup) -> _ClientResult:
    """Book, confirm and cancel until the deadline or the action budget."""
    rng = random.Random(f"{setup.seed}:soak-client:{index}")
    rides = list(setup.rides)
    out = _ClientResult()
    pending: list[uuid.UUID] = []
    confirmed: list[uuid.UUID] = []
    conn = await connect(
        setup.dsn,
        purpose=f"soak client {index}",
        statement_timeout_ms=CLIENT_STATEMENT_TIMEOUT_MS,
        lock_timeout_ms=CLIENT_LOCK_TIMEOUT_MS,
    )
    try:
        while out.actions < setup.max_actions and time.monotonic() < setup.deadline:
            out.actions += 1
            roll = rng.random()
            if pending and roll < CONFIRM_SHARE:
                booking = _take(rng, pending)
                action = "confirm_booking"
                sql = "SELECT confirm_booking($1)"
                args: tuple[Any, ...] = (booking,)
            elif (pending or confirmed) and roll < CONFIRM_SHARE + CANCEL_SHARE:
                both = pending and confirmed
                use_pending = rng.random() < 0.5 if both else bool(pending)
                booking = _take(rng, pending if use_pending else confirmed)
                action = "cancel_booking"
                sql = "SELECT cancel_booking($1, 'soak')"
                args = (booking,)
            else:
                ride = rng.choice(rides)
                passenger = rng.choice(setup.passengers)
                seats = 2 if rng.random() < TWO_SEATS_SHARE else 1
                action = "request_booking"
                sql = "SELECT request_booking($1, $2, $3)"
                args = (ride, passenger, seats)
                out.requests += 1
            try:
                result = await conn.fetchval(sql, *args)
            except asyncpg.PostgresError as exc:
                if _sqlstate(exc) == DEADLOCK:
                    out.deadlocks += 1
                reason = _refusal(exc) if action == "request_booking" else None
                if reason:
                    out.refusals[reason] = out.refusals.get(reason, 0) + 1
                else:
                    out.unexpected.append(_describe(action, exc))
                if action == "confirm_booking":
                    pending.append(booking)
                elif action == "cancel_booking":
                    state = out.bookings[booking].status
                    (pending if state == "pending" else confirmed).append(booking)
                continue
            except (OSError, asyncpg.InterfaceError) as exc:
                out.unexpected.append(_describe(action, exc))
                break
            if action == "request_booking":
                out.bookings[result] = _Booking(ride, passenger)
                pending.append(result)
            elif result is not True:
                # Only this client acts on its bookings, and no job may move a
                # booking of a ride that departs hours from now.
                out.unexpected.append(
                    f"{action}: refused booking {booking} that this client left "
                    f"{out.bookings[booking].status}"
                )
            elif action == "confirm_booking":
                out.confirms += 1
                out.bookings[booking].status = "confirmed"
                out.bookings[booking].confirmed = True
                confirmed.append(booking)
            else:
                out.cancels += 1
                out.bookings[booking].status = "cancelled"
    finally:
        await conn.close(timeout=5)
    return out


async def _job_worker(
    name: str,
    index: int,
    setup: _Setup,
    stats: JobStats,
    stop: asyncio.Event,
    pause: float,
    max_runs: int,
) -> int:
    """Run one job over and over until told to stop; return its deadlocks."""
    deadlocks = 0
    conn = await connect(
        setup.dsn,
        purpose=f"soak job {name} {index}",
        statement_timeout_ms=JOB_STATEMENT_TIMEOUT_MS,
    )
    try:
        await conn.execute(
            "SELECT set_config('carpool.operator', $1, false)", f"soak:{name}:{index}"
        )
        while not stop.is_set() and stats.runs < max_runs:
            stats.runs += 1
            try:
                result = as_dict(await conn.fetchval(f"SELECT {name}()"))
            except asyncpg.PostgresError as exc:
                if _sqlstate(exc) == DEADLOCK:
                    deadlocks += 1
                stats.failed_other.append(_describe(name, exc))
                continue
            except (OSError, asyncpg.InterfaceError) as exc:
                stats.failed_other.append(_describe(name, exc))
                break
            _record_run(name, result, stats)
            if result.get("sqlstate") == DEADLOCK:
                deadlocks += 1
            await asyncio.sleep(pause)
    finally:
        await conn.close(timeout=5)
    return deadlocks


def _record_run(name: str, result: dict[str, Any], stats: JobStats) -> None:
    success = result.get("success") is True
    state = result.get("sqlstate")
    log_id = result.get("job_log_id")
    if log_id is not None:
        stats.logged[str(log_id)] = (success, state)
    else:
        stats.unlogged += 1
    if not success:
        if state in ACCEPTED_JOB_FAILURES:
            stats.failed_accepted += 1
        else:
            stats.failed_other.append(f"{name}: {state} {result.get('error')}")
        return
    stats.completed += 1
    for key in _TOTALS[name]:
        stats.totals[key] = stats.totals.get(key, 0) + int(result.get(key) or 0)
    if name == "reconcile_seat_counts" and result.get("overbooked_rides"):
        stats.findings.append(f"overbooked {result['overbooked_rides']}")
    if name == "check_system_invariants" and int(result.get("total_violations", 0)):
        stats.runs_with_findings += 1
        if len(stats.findings) < KEEP_SAMPLES:
            stats.findings.append(
                ", ".join(
                    f"{c['name']} {c['count']}"
                    for c in result.get("checks", [])
                    if int(c["count"])
                )
            )


async def _prepare(
    conn: asyncpg.Connection,
    *,
    rides: int,
    seed: int,
    seconds: float,
    rides_to_book: int,
    passengers: int,
) -> tuple[dict[uuid.UUID, uuid.UUID], list[uuid.UUID]]:
    """Seed an empty database; pick the rides to book on and the passengers."""
    if not await conn.fetchval(
        "SELECT to_regprocedure('ops_layer_version()') IS NOT NULL"
        " AND to_regprocedure('request_booking(uuid, uuid, integer)') IS NOT NULL"
    ):
        raise NotMigrated(
            "The soak needs the ops layer and the platform's booking functions",
            "Apply them first: carpool-tui migrate --base --dsn ...",
        )
    if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM rides)"):
        await seed_platform(conn, rides=rides, seed=seed)
    margin = RIDE_MARGIN_S + seconds + HANG_GRACE_S
    ride_rows = await conn.fetch(
        """
        SELECT id, driver_id FROM rides
         WHERE status = 'active'
           AND departure_time > now() + make_interval(secs => $1)
           AND COALESCE(available_until, departure_time)
               > now() + make_interval(secs => $1)
         ORDER BY id
         LIMIT $2
        """,
        margin,
        rides_to_book,
    )
    people = await conn.fetch(
        """
        SELECT p.id FROM profiles p
         WHERE NOT p.is_admin
           AND NOT EXISTS (SELECT 1 FROM rides r WHERE r.driver_id = p.id)
         ORDER BY p.id
         LIMIT $1
        """,
        passengers,
    )
    if len(ride_rows) < 2 or len(people) < 2:
        raise OpsError(
            f"Found {len(ride_rows)} active rides departing after the soak and "
            f"{len(people)} passengers; the soak needs at least two of each",
            "Soak an empty database (it is seeded) or one with future rides.",
        )
    return {r["id"]: r["driver_id"] for r in ride_rows}, [p["id"] for p in people]


async def _duplicate_notifications(
    conn: asyncpg.Connection,
) -> dict[tuple[str, ...], int]:
    """Booking notifications sent more than once: (type, booking, user) -> count."""
    rows = await conn.fetch(
        """
        SELECT type, data ->> 'booking_id' AS booking_id, user_id::text, count(*) AS n
          FROM notifications
         WHERE data ? 'booking_id'
         GROUP BY 1, 2, 3
        HAVING count(*) > 1
        """
    )
    return {(r["type"], r["booking_id"], r["user_id"]): r["n"] for r in rows}


async def _server_deadlocks(conn: asyncpg.Connection) -> int:
    return int(
        await conn.fetchval(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        )
        or 0
    )


async def _final_checks(conn: asyncpg.Connection, report: SoakReport) -> dict[str, Any]:
    """One reconcile and one invariant check now, after the traffic stopped."""
    await conn.execute("SELECT set_config('carpool.operator', 'soak:audit', false)")
    reconcile = as_dict(await conn.fetchval("SELECT reconcile_seat_counts()"))
    check = as_dict(await conn.fetchval("SELECT check_system_invariants()"))
    for name, result in (
        ("reconcile_seat_counts", reconcile),
        ("check_system_invariants", check),
    ):
        if result.get("success") is not True:
            report.job_log_problems.append(
                f"final {name} failed: {result.get('sqlstate')} {result.get('error')}"
            )
    report.final_reconcile_mismatches = int(reconcile.get("mismatches_found") or 0)
    report.final_checks = {
        c["name"]: int(c["count"]) for c in check.get("checks", []) if int(c["count"])
    }
    return check


async def _audit_database(
    conn: asyncpg.Connection,
    report: SoakReport,
    made: dict[uuid.UUID, _Booking],
    setup: _Setup,
    bookings_before: int,
    started_at: Any,
) -> None:
    """The direct-SQL half of the checks."""
    rows = await conn.fetch(
        """
        SELECT r.id, r.available_seats, r.total_seats,
               r.total_seats - COALESCE(sum(b.seats_requested)
                   FILTER (WHERE b.status IN ('pending', 'confirmed')), 0) AS expected
          FROM rides r
          LEFT JOIN ride_bookings b ON b.ride_id = r.id
         WHERE r.status IN ('active', 'in-progress')
         GROUP BY r.id
        HAVING r.available_seats <> r.total_seats - COALESCE(sum(b.seats_requested)
                   FILTER (WHERE b.status IN ('pending', 'confirmed')), 0)
        """
    )
    report.seat_mismatches = [
        f"ride {r['id']} holds {r['available_seats']}, bookings say {r['expected']}"
        for r in rows
    ]
    report.overbooked_rides = [
        f"ride {r['id']} booked {r['total_seats'] - r['expected']} of "
        f"{r['total_seats']}"
        for r in rows
        if r["expected"] < 0
    ]
    rows = await conn.fetch(
        """
        SELECT ride_id, passenger_id, count(*) AS n FROM ride_bookings
         WHERE status IN ('pending', 'confirmed')
         GROUP BY ride_id, passenger_id
        HAVING count(*) > 1
        """
    )
    report.duplicate_active_bookings = [
        f"passenger {r['passenger_id']} holds {r['n']} on ride {r['ride_id']}"
        for r in rows
    ]

    ids = list(made)
    found = {
        r["id"]: r
        for r in await conn.fetch(
            "SELECT id, ride_id, passenger_id, status FROM ride_bookings"
            " WHERE id = ANY($1::uuid[])",
            ids,
        )
    }
    for booking_id, mine in made.items():
        row = found.get(booking_id)
        if row is None:
            report.missing_bookings.append(str(booking_id))
        elif (row["status"], row["ride_id"], row["passenger_id"]) != (
            mine.status,
            mine.ride_id,
            mine.passenger_id,
        ):
            report.wrong_status.append(
                f"{booking_id} is {row['status']}, its client left it {mine.status}"
            )
    total = await conn.fetchval("SELECT count(*) FROM ride_bookings")
    report.unknown_bookings = max(0, total - bookings_before - len(found))

    # The notifications each booking's history calls for, exactly once each.
    have: dict[tuple[str, str, uuid.UUID], tuple[int, bool]] = {}
    for r in await conn.fetch(
        """
        SELECT data ->> 'booking_id' AS booking_id, type, user_id, count(*) AS n,
               bool_or(COALESCE((data ->> 'repaired')::boolean, false)) AS repaired
          FROM notifications
         WHERE data ->> 'booking_id' = ANY($1::text[])
         GROUP BY 1, 2, 3
        """,
        [str(i) for i in ids],
    ):
        have[(r["booking_id"], r["type"], r["user_id"])] = (r["n"], r["repaired"])
    problems = report.notification_problems
    for booking_id, mine in made.items():
        key = str(booking_id)
        wanted = {("BOOKING_REQUEST", setup.rides[mine.ride_id])}
        if mine.confirmed:
            wanted.add(("BOOKING_CONFIRMED", mine.passenger_id))
        if mine.status == "cancelled":
            wanted.add(("BOOKING_CANCELLED", mine.passenger_id))
        for kind, user in wanted:
            n, repaired = have.pop((key, kind, user), (0, False))
            if n == 0:
                problems.append(f"{kind} missing for booking {key}")
            elif n > 1:
                problems.append(f"{kind} sent {n} times for booking {key}")
            if repaired:
                problems.append(f"{kind} for booking {key} was left to the repair job")
    problems.extend(
        f"unexpected {kind} to {user} for booking {key}" for key, kind, user in have
    )

    # Every run's log row says what the run returned; none is left running.
    logged: dict[str, tuple[bool, str | None]] = {}
    for stats in report.jobs.values():
        logged.update(stats.logged)
    rows = await conn.fetch(
        """
        SELECT id::text AS id, job_name, status, sqlstate, error_message
          FROM system_job_log
         WHERE triggered_by LIKE 'soak:%' AND started_at >= $1
        """,
        started_at,
    )
    seen = set()
    for r in rows:
        if r["status"] == "running":
            report.job_log_problems.append(
                f"{r['job_name']} run {r['id']} left running"
            )
            continue
        if r["id"] not in logged:
            continue  # the audit's own final runs
        seen.add(r["id"])
        success, state = logged[r["id"]]
        if (r["status"] == "completed") != success:
            report.job_log_problems.append(
                f"{r['job_name']} run {r['id']} logged {r['status']}"
            )
        if r["status"] == "failed" and (
            r["sqlstate"] != state or not r["error_message"]
        ):
            report.job_log_problems.append(
                f"{r['job_name']} run {r['id']} failed without its reason logged"
            )
    report.job_log_problems.extend(
        f"run {i} returned a job_log_id with no row" for i in set(logged) - seen
    )


async def soak(
    dsn: str,
    *,
    clients: int = 8,
    seconds: float = 10.0,
    rides: int = 200,
    seed: int = 1,
    rides_to_book: int = 16,
    passengers: int = 24,
    job_workers: int = 2,
    job_pause: float = 0.02,
    max_actions_per_client: int = 1_000_000,
    max_runs_per_job: int = 100_000,
) -> SoakReport:
    """Run the soak against ``dsn`` and return what it saw and what it checked.

    ``clients`` connections book for ``seconds`` (or ``max_actions_per_client``
    actions each) on the first ``rides_to_book`` active rides that depart long
    after the soak, for a shared pool of ``passengers``; ``job_workers``
    connections per job run it back to back, ``job_pause`` seconds apart, at
    most ``max_runs_per_job`` times. ``rides`` and ``seed`` size the platform
    when the database is empty; ``seed`` also seeds each client's choices.
    """
    if clients < 1 or seconds <= 0 or job_workers < 1:
        raise ValueError("clients and job_workers must be >= 1 and seconds > 0")
    audit = await connect(dsn, purpose="soak audit", statement_timeout_ms=300_000)
    try:
        ride_map, people = await _prepare(
            audit,
            rides=rides,
            seed=seed,
            seconds=seconds,
            rides_to_book=rides_to_book,
            passengers=passengers,
        )
        report = SoakReport(
            clients=clients,
            seconds=seconds,
            rides_booked_on=len(ride_map),
            passengers=len(people),
        )
        baseline = as_dict(await audit.fetchval("SELECT check_system_invariants()"))
        report.baseline_violations = int(baseline.get("total_violations") or 0)
        duplicates_before = await _duplicate_notifications(audit)
        deadlocks_before = await _server_deadlocks(audit)
        bookings_before = await audit.fetchval("SELECT count(*) FROM ride_bookings")
        started_at = await audit.fetchval("SELECT clock_timestamp()")

        began = time.monotonic()
        setup = _Setup(
            dsn=dsn,
            rides=ride_map,
            passengers=people,
            seed=seed,
            deadline=began + seconds,
            max_actions=max_actions_per_client,
        )
        stop = asyncio.Event()
        report.jobs = {name: JobStats() for name in JOBS}
        job_tasks = {
            asyncio.create_task(
                _job_worker(
                    name,
                    i,
                    setup,
                    report.jobs[name],
                    stop,
                    job_pause,
                    max_runs_per_job,
                )
            ): f"job {name} {i}"
            for name in JOBS
            for i in range(job_workers)
        }
        client_tasks = {
            asyncio.create_task(_client(i, setup)): f"client {i}"
            for i in range(clients)
        }
        await asyncio.wait(client_tasks, timeout=seconds + HANG_GRACE_S)
        report.seconds = time.monotonic() - began
        stop.set()
        await asyncio.wait(job_tasks, timeout=HANG_GRACE_S)

        made: dict[uuid.UUID, _Booking] = {}
        tasks: dict[asyncio.Task[Any], str] = {**client_tasks, **job_tasks}
        hung = [task for task in tasks if not task.done()]
        for task in hung:
            task.cancel()
        await asyncio.gather(*hung, return_exceptions=True)
        for task, label in tasks.items():
            if task in hung:
                report.hung.append(label)
                continue
            exc = task.exception()
            if exc is not None:
                report.unexpected_errors += 1
                report.unexpected_samples.append(_describe(label, exc))
                continue
            value = task.result()
            if isinstance(value, int):
                report.deadlocks_seen += value
                continue
            report.actions += value.actions
            report.requests += value.requests
            report.confirms += value.confirms
            report.cancels += value.cancels
            report.deadlocks_seen += value.deadlocks
            report.unexpected_errors += len(value.unexpected)
            report.unexpected_samples.extend(value.unexpected[:KEEP_SAMPLES])
            for reason, n in value.refusals.items():
                report.refusals[reason] = report.refusals.get(reason, 0) + n
            made.update(value.bookings)
        report.bookings_created = len(made)
        report.bookings = {k: b.status for k, b in made.items()}

        await _final_checks(audit, report)
        await _audit_database(audit, report, made, setup, bookings_before, started_at)
        duplicates_after = await _duplicate_notifications(audit)
        report.duplicate_notifications = sum(
            n - duplicates_before.get(key, 1)
            for key, n in duplicates_after.items()
            if n > duplicates_before.get(key, 1)
        )
        # Closed backends flush their statistics on exit; give them a moment.
        await asyncio.sleep(0.5)
        report.deadlocks_counted_by_server = (
            await _server_deadlocks(audit) - deadlocks_before
        )
    finally:
        await audit.close(timeout=5)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description="Book, confirm and cancel from many connections while the "
        "four ops jobs run, then check that nothing broke.",
    )
    parser.add_argument("--dsn", required=True, help="an ops-layer database")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rides", type=int, default=200, help="seed size if empty")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rides-to-book", type=int, default=16)
    parser.add_argument("--passengers", type=int, default=24)
    parser.add_argument("--job-workers", type=int, default=2, help="per job")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = asyncio.run(
            soak(
                args.dsn,
                clients=args.clients,
                seconds=args.seconds,
                rides=args.rides,
                seed=args.seed,
                rides_to_book=args.rides_to_book,
                passengers=args.passengers,
                job_workers=args.job_workers,
            )
        )
    except (OpsError, ValueError, asyncpg.PostgresError, OSError) as exc:
        print(f"soak: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print("\n".join(report.lines()))
    return 0 if report.held else 1


if __name__ == "__main__":
    sys.exit(main())
