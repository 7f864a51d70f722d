"""The four jobs of the ops layer: results, logging, locking, concurrency.

Rules 1-5 of the ops contract: a failed or cancelled run leaves a failed row
and none of its work; jobs never double-process, never duplicate a
notification, never wait longer than the lock timeout; expire_rides notifies
exactly what it completed and closes orphans; reconcile locks, is idempotent
and reports overbooked rides; repair never duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import asyncpg
import pytest
from factories import (
    call_json,
    connected,
    job,
    make_booking,
    make_profile,
    make_ride,
    overlapping_runs,
)

from carpool_tui.db.connect import connect

PAST = timedelta(hours=-1)


@pytest.fixture
async def other(ops_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A second connection to the same database, for locks and races."""
    async with connected(ops_dsn, purpose="test-other") as conn:
        yield conn


async def _job_while_locked(
    conn: asyncpg.Connection,
    locker: asyncpg.Connection,
    lock_sql: str,
    key: uuid.UUID,
    name: str,
) -> tuple[dict[str, object], float]:
    """Run a job on ``conn`` while ``locker`` holds a row lock; with the time."""
    async with locker.transaction():
        await locker.execute(lock_sql, key)
        started = time.monotonic()
        result = await job(conn, name)
        return result, time.monotonic() - started


async def _log_rows(conn: asyncpg.Connection, name: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM system_job_log WHERE job_name = $1 ORDER BY started_at", name
    )


# --- expire_rides ----------------------------------------------------------


async def test_expire_rides_completes_due_rides_and_notifies_exactly_those(
    ops_conn: asyncpg.Connection,
) -> None:
    due = await make_ride(ops_conn, departs_in=PAST)
    b1 = await make_booking(ops_conn, due, status="pending")
    b2 = await make_booking(ops_conn, due, status="confirmed")
    gone = await make_booking(ops_conn, due, status="cancelled")
    # Flexible ride: available_until overrides departure in both directions.
    flexible_due = await make_ride(
        ops_conn, departs_in=timedelta(hours=2), available_for=timedelta(minutes=-5)
    )
    b3 = await make_booking(ops_conn, flexible_due)
    flexible_open = await make_ride(
        ops_conn, departs_in=PAST, available_for=timedelta(hours=1)
    )
    await make_booking(ops_conn, flexible_open)
    future = await make_ride(ops_conn)
    await make_booking(ops_conn, future)
    # A booking completed moments ago by someone else: must not be notified.
    other_ride = await make_ride(ops_conn, status="completed", departs_in=PAST)
    await make_booking(ops_conn, other_ride, status="completed")

    result = await job(ops_conn, "expire_rides")

    assert result["success"] is True
    assert result["rides_expired"] == 2
    assert result["bookings_completed"] == 3
    assert result["notifications_created"] == 3
    assert result["orphan_bookings_closed"] == 0
    statuses = dict(
        await ops_conn.fetch(
            "SELECT id, status FROM rides WHERE id = ANY($1)",
            [due, flexible_due, flexible_open, future],
        )
    )
    assert statuses == {
        due: "completed",
        flexible_due: "completed",
        flexible_open: "active",
        future: "active",
    }
    notified = await ops_conn.fetch(
        "SELECT (data->>'booking_id')::uuid AS booking, type, category,"
        " data->>'auto_completed' AS auto FROM notifications"
    )
    assert {r["booking"] for r in notified} == {b1, b2, b3}
    assert {(r["type"], r["category"], r["auto"]) for r in notified} == {
        ("BOOKING_CONFIRMED", "BOOKING_CONFIRMED", "true")
    }
    assert (
        await ops_conn.fetchval("SELECT status FROM ride_bookings WHERE id = $1", gone)
        == "cancelled"
    )
    log = await _log_rows(ops_conn, "expire_rides")
    assert [(r["status"], r["records_processed"]) for r in log] == [("completed", 2)]
    assert str(log[0]["id"]) == result["job_log_id"]

    again = await job(ops_conn, "expire_rides")
    assert (again["rides_expired"], again["notifications_created"]) == (0, 0)


async def test_expire_rides_closes_orphan_bookings_on_ended_rides(
    ops_conn: asyncpg.Connection,
) -> None:
    completed = await make_ride(ops_conn)
    cancelled = await make_ride(ops_conn)
    on_completed = await make_booking(ops_conn, completed, status="confirmed")
    on_cancelled = await make_booking(ops_conn, cancelled, status="pending")
    await ops_conn.execute(
        "UPDATE rides SET status = CASE WHEN id = $1 THEN 'completed'"
        " ELSE 'cancelled' END WHERE id IN ($1, $2)",
        completed,
        cancelled,
    )

    result = await job(ops_conn, "expire_rides")

    assert result["orphan_bookings_closed"] == 2
    assert result["rides_expired"] == 0
    rows = dict(
        await ops_conn.fetch(
            "SELECT id, status FROM ride_bookings WHERE id IN ($1, $2)",
            on_completed,
            on_cancelled,
        )
    )
    assert rows == {on_completed: "completed", on_cancelled: "cancelled"}
    types = dict(
        await ops_conn.fetch(
            "SELECT (data->>'booking_id')::uuid, type FROM notifications"
        )
    )
    assert types == {
        on_completed: "BOOKING_CONFIRMED",
        on_cancelled: "BOOKING_CANCELLED",
    }
    check = await job(ops_conn, "check_system_invariants")
    counts = {c["name"]: c["count"] for c in check["checks"]}
    assert counts["active_booking_on_terminal_ride"] == 0


async def test_two_expire_runs_at_once_never_process_a_ride_twice(
    ops_conn: asyncpg.Connection, other: asyncpg.Connection, ops_dsn: str
) -> None:
    rides = [await make_ride(ops_conn, departs_in=PAST) for _ in range(30)]
    for ride in rides:
        await make_booking(ops_conn, ride, status="confirmed")
        await make_booking(ops_conn, ride, status="pending")

    # Deterministic overlap: the first run holds its locks in an open
    # transaction while the second runs; the second must skip, not wait.
    async with ops_conn.transaction():
        first = await job(ops_conn, "expire_rides")
        started = time.monotonic()
        second = await job(other, "expire_rides")
        assert time.monotonic() - started < 2
    assert first["rides_expired"] == 30
    assert second["rides_expired"] == 0
    assert second["rides_skipped_locked"] == 30

    # And truly parallel runs on fresh work.
    more = [await make_ride(ops_conn, departs_in=PAST) for _ in range(40)]
    for ride in more:
        await make_booking(ops_conn, ride, status="confirmed")
    conns = [ops_conn, other] + [
        await connect(ops_dsn, purpose="test-par") for _ in range(2)
    ]
    try:
        results = await asyncio.gather(*(job(c, "expire_rides") for c in conns))
    finally:
        for conn in conns[2:]:
            await conn.close()
    assert all(r["success"] for r in results)
    assert sum(r["rides_expired"] for r in results) == 40
    assert sum(r["bookings_completed"] for r in results) == 40

    per_booking = await ops_conn.fetch(
        "SELECT b.id, count(n.id) AS sent FROM ride_bookings b"
        " LEFT JOIN notifications n ON n.data->>'booking_id' = b.id::text"
        " GROUP BY b.id"
    )
    assert len(per_booking) == 100
    assert {r["sent"] for r in per_booking} == {1}
    assert (
        await ops_conn.fetchval(
            "SELECT count(*) FROM rides WHERE status <> 'completed'"
        )
        == 0
    )


async def test_expire_skips_a_ride_whose_booking_is_locked_without_waiting(
    ops_conn: asyncpg.Connection, other: asyncpg.Connection
) -> None:
    stuck = await make_ride(ops_conn, departs_in=PAST)
    locked_booking = await make_booking(ops_conn, stuck, status="confirmed")
    free = await make_ride(ops_conn, departs_in=PAST)
    await make_booking(ops_conn, free, status="confirmed")

    result, elapsed = await _job_while_locked(
        ops_conn,
        other,
        "SELECT 1 FROM ride_bookings WHERE id = $1 FOR UPDATE",
        locked_booking,
        "expire_rides",
    )

    assert elapsed < 2
    assert result["success"] is True
    assert result["rides_expired"] == 1
    assert result["rides_skipped_locked"] == 1
    assert await ops_conn.fetchval("SELECT status FROM rides WHERE id = $1", stuck) == (
        "active"
    )
    # Once the lock is gone the next run finishes the ride.
    later = await job(ops_conn, "expire_rides")
    assert later["rides_expired"] == 1
    assert (
        await ops_conn.fetchval(
            "SELECT status FROM ride_bookings WHERE id = $1", locked_booking
        )
        == "completed"
    )


async def test_single_ride_expiry_waits_at_most_the_lock_timeout(
    ops_conn: asyncpg.Connection, other: asyncpg.Connection
) -> None:
    ride = await make_ride(ops_conn, departs_in=PAST)
    booking = await make_booking(ops_conn, ride, status="confirmed")
    await ops_conn.execute("SET carpool.lock_timeout = '300ms'")
    await ops_conn.execute("SET lock_timeout = 0")  # the caller's own: forever

    async with other.transaction():
        await other.execute(
            "SELECT 1 FROM ride_bookings WHERE id = $1 FOR UPDATE", booking
        )
        started = time.monotonic()
        with pytest.raises(asyncpg.LockNotAvailableError):
            await ops_conn.fetchval(
                "SELECT ops_expire_ride($1, 'ann', 'stuck ride')", ride
            )
        elapsed = time.monotonic() - started
    assert 0.25 < elapsed < 3
    # The function's bounded wait does not leak into the caller's session.
    assert await ops_conn.fetchval("SHOW lock_timeout") == "0"


# --- failures: rule 1 -----------------------------------------------------


async def test_failed_job_keeps_failed_row_and_rolls_back_its_work(
    ops_conn: asyncpg.Connection,
) -> None:
    ride = await make_ride(ops_conn, departs_in=PAST)
    booking = await make_booking(ops_conn, ride, status="confirmed")
    await ops_conn.execute(
        """
        CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'notifications are down' USING ERRCODE = 'P0001'; END
        $$;
        CREATE TRIGGER test_refuse BEFORE INSERT ON notifications
            FOR EACH ROW EXECUTE FUNCTION test_refuse();
        """
    )

    result = await job(ops_conn, "expire_rides")

    assert result["success"] is False
    assert result["error"] == "notifications are down"
    assert result["sqlstate"] == "P0001"
    rows = await _log_rows(ops_conn, "expire_rides")
    assert len(rows) == 1
    row = rows[0]
    assert (row["status"], row["sqlstate"], row["error_message"]) == (
        "failed",
        "P0001",
        "notifications are down",
    )
    assert row["completed_at"] is not None
    assert row["details"]["sqlstate"] == "P0001"
    assert str(row["id"]) == result["job_log_id"]
    # The work rolled back: the ride and its booking are as they were.
    assert await ops_conn.fetchval("SELECT status FROM rides WHERE id = $1", ride) == (
        "active"
    )
    assert (
        await ops_conn.fetchval(
            "SELECT status FROM ride_bookings WHERE id = $1", booking
        )
        == "confirmed"
    )
    health = await job(ops_conn, "get_system_health_summary")
    assert health["failed_jobs_24h"] == 1
    assert [(j["job_name"], j["status"]) for j in health["recent_job_status"]] == [
        ("expire_rides", "failed")
    ]


async def test_lock_timeout_fails_the_job_with_its_sqlstate(
    ops_conn: asyncpg.Connection, other: asyncpg.Connection
) -> None:
    """A passenger profile locked elsewhere blocks the notification insert."""
    passenger = await make_profile(ops_conn)
    ride = await make_ride(ops_conn, departs_in=PAST)
    await make_booking(ops_conn, ride, passenger, status="confirmed")
    await ops_conn.execute("SET carpool.lock_timeout = '300ms'")

    result, elapsed = await _job_while_locked(
        ops_conn,
        other,
        "SELECT 1 FROM profiles WHERE id = $1 FOR UPDATE",
        passenger,
        "expire_rides",
    )

    assert elapsed < 3
    assert result["success"] is False
    assert result["sqlstate"] == "55P03"
    row = (await _log_rows(ops_conn, "expire_rides"))[0]
    assert (row["status"], row["sqlstate"]) == ("failed", "55P03")
    assert "another run" not in row["error_message"]  # a row lock, not a run
    assert await ops_conn.fetchval("SELECT status FROM rides WHERE id = $1", ride) == (
        "active"
    )
    assert await ops_conn.fetchval("SELECT count(*) FROM notifications") == 0


async def test_cancelled_statement_is_recorded_as_failed(
    ops_conn: asyncpg.Connection,
) -> None:
    ride = await make_ride(ops_conn, departs_in=PAST)
    await make_booking(ops_conn, ride, status="confirmed")
    await ops_conn.execute(
        """
        CREATE FUNCTION test_slow() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_sleep(2); RETURN NEW; END
        $$;
        CREATE TRIGGER test_slow BEFORE INSERT ON notifications
            FOR EACH ROW EXECUTE FUNCTION test_slow();
        SET statement_timeout = '300ms';
        """
    )

    result = await job(ops_conn, "expire_rides")

    await ops_conn.execute("RESET statement_timeout")
    assert result["success"] is False
    assert result["sqlstate"] == "57014"
    row = (await _log_rows(ops_conn, "expire_rides"))[0]
    assert (row["status"], row["sqlstate"]) == ("failed", "57014")
    assert await ops_conn.fetchval("SELECT status FROM rides WHERE id = $1", ride) == (
        "active"
    )


async def test_triggered_by_records_the_operator(ops_conn: asyncpg.Connection) -> None:
    await ops_conn.execute("SET carpool.operator = 'night-shift'")
    await job(ops_conn, "repair_missing_notifications")
    await ops_conn.execute("RESET carpool.operator")
    await job(ops_conn, "repair_missing_notifications")
    rows = await _log_rows(ops_conn, "repair_missing_notifications")
    assert [r["triggered_by"] for r in rows] == ["night-shift", "carpool-tui test"]


# --- reconcile_seat_counts: rule 4 -----------------------------------------


async def test_reconcile_fixes_once_audits_like_legacy_and_reports_overbooked(
    ops_conn: asyncpg.Connection,
) -> None:
    drifted = await make_ride(ops_conn, total_seats=4)
    await make_booking(ops_conn, drifted, seats=2, status="confirmed")
    overbooked = await make_ride(ops_conn, total_seats=2)
    await make_booking(ops_conn, overbooked, seats=2, status="confirmed")
    await make_booking(ops_conn, overbooked, seats=1, status="pending")
    fine = await make_ride(ops_conn, total_seats=3)
    await make_booking(ops_conn, fine)
    ended = await make_ride(ops_conn, status="completed")
    await ops_conn.execute(
        "UPDATE rides SET available_seats = 4 WHERE id IN ($1, $2)", drifted, ended
    )

    first = await job(ops_conn, "reconcile_seat_counts")

    assert first["success"] is True
    assert (first["mismatches_found"], first["mismatches_fixed"]) == (1, 1)
    assert first["overbooked_rides"] == [str(overbooked)]
    assert (
        await ops_conn.fetchval(
            "SELECT available_seats FROM rides WHERE id = $1", drifted
        )
        == 2
    )
    audit = await ops_conn.fetch("SELECT * FROM admin_audit_log")
    assert len(audit) == 1
    row = audit[0]
    assert row["admin_id"] is None
    assert (row["admin_role"], row["action"], row["target_type"]) == (
        "super_admin",
        "seat_reconciliation",
        "ride",
    )
    assert row["target_id"] == drifted
    assert row["details"]["previous_available"] == 4
    assert row["details"]["calculated_available"] == 2
    assert row["details"]["total_seats"] == 4

    second = await job(ops_conn, "reconcile_seat_counts")
    assert (second["mismatches_found"], second["mismatches_fixed"]) == (0, 0)
    assert second["overbooked_rides"] == [str(overbooked)]
    assert await ops_conn.fetchval("SELECT count(*) FROM admin_audit_log") == 1


async def test_reconcile_under_live_booking_traffic_ends_consistent(
    ops_conn: asyncpg.Connection, ops_dsn: str
) -> None:
    rides = [await make_ride(ops_conn, total_seats=3) for _ in range(8)]
    passengers = [await make_profile(ops_conn) for _ in range(12)]
    # Drift from a buggy edit form, on a ride traffic does not touch (booking
    # changes would make the trigger correct it first).
    drifted = await make_ride(ops_conn, total_seats=3)
    await make_booking(ops_conn, drifted, passengers[0], status="confirmed")
    await ops_conn.execute(
        "UPDATE rides SET available_seats = 3 WHERE id = $1", drifted
    )
    made: list[uuid.UUID] = []
    cancelled: set[uuid.UUID] = set()
    done = asyncio.Event()

    async def traffic(seed: int) -> None:
        rng = random.Random(seed)
        async with connected(
            ops_dsn, purpose=f"traffic-{seed}", timeout_ms=5_000
        ) as conn:
            for _ in range(60):
                if made and rng.random() < 0.4:
                    target = rng.choice(made)
                    if await conn.fetchval("SELECT cancel_booking($1)", target):
                        cancelled.add(target)
                    continue
                # A full ride, or a passenger who already booked it, is refused.
                with contextlib.suppress(
                    asyncpg.CheckViolationError, asyncpg.UniqueViolationError
                ):
                    made.append(
                        await conn.fetchval(
                            "SELECT request_booking($1, $2)",
                            rng.choice(rides),
                            rng.choice(passengers),
                        )
                    )

    async def reconciler() -> list[dict[str, object]]:
        runs = []
        async with connected(ops_dsn, purpose="reconciler", timeout_ms=5_000) as conn:
            while not done.is_set():
                runs.append(await job(conn, "reconcile_seat_counts"))
                await asyncio.sleep(0.005)
            runs.append(await job(conn, "reconcile_seat_counts"))
        return runs

    watcher = asyncio.create_task(reconciler())
    await asyncio.gather(*(traffic(seed) for seed in range(3)))
    done.set()
    runs = await watcher

    assert all(r["success"] for r in runs)
    assert len(runs) >= 2
    assert runs[-1]["mismatches_found"] == 0
    assert sum(int(r["mismatches_fixed"]) for r in runs) >= 1
    stale = await ops_conn.fetch(
        "SELECT id FROM ops_open_ride_seats"
        " WHERE available_seats <> GREATEST(0, expected_seats)"
    )
    assert stale == []
    # No booking was lost or resurrected.
    statuses = dict(
        await ops_conn.fetch(
            "SELECT id, status FROM ride_bookings WHERE id = ANY($1)", made
        )
    )
    assert len(statuses) == len(made)
    assert {b for b, s in statuses.items() if s == "cancelled"} == cancelled


# --- repair_missing_notifications: rule 5 ------------------------------------


async def _bookings_missing_notifications(conn: asyncpg.Connection) -> dict[str, int]:
    ride = await make_ride(conn)
    await make_booking(conn, ride, status="pending")
    await make_booking(conn, ride, status="confirmed")
    await make_booking(conn, ride, status="cancelled")
    old = await make_booking(conn, ride, status="confirmed")
    await conn.execute(
        "UPDATE ride_bookings SET created_at = now() - interval '40 days',"
        " updated_at = now() - interval '40 days' WHERE id = $1",
        old,
    )
    return {"requests": 3, "confirmations": 1, "cancellations": 1}


async def test_repair_creates_missing_notifications_once(
    ops_conn: asyncpg.Connection,
) -> None:
    expected = await _bookings_missing_notifications(ops_conn)

    first = await job(ops_conn, "repair_missing_notifications")

    assert first["success"] is True
    assert first["booking_requests_created"] == expected["requests"]
    assert first["confirmations_created"] == expected["confirmations"]
    assert first["cancellations_created"] == expected["cancellations"]
    assert first["total_notifications_created"] == 5
    rows = await ops_conn.fetch("SELECT type, category, data FROM notifications")
    assert all(r["type"] == r["category"] for r in rows)
    assert all(r["data"]["repaired"] is True for r in rows)
    second = await job(ops_conn, "repair_missing_notifications")
    assert second["total_notifications_created"] == 0


async def test_two_overlapping_repairs_never_duplicate(
    ops_conn: asyncpg.Connection, other: asyncpg.Connection, ops_dsn: str
) -> None:
    await _bookings_missing_notifications(ops_conn)

    async with ops_conn.transaction():
        first = await job(ops_conn, "repair_missing_notifications")
        second_task = asyncio.create_task(job(other, "repair_missing_notifications"))
        await asyncio.sleep(0.5)
        assert not second_task.done()  # it waits for the first to commit
    second = await second_task
    assert first["total_notifications_created"] == 5
    assert second["success"] is True
    assert second["total_notifications_created"] == 0

    await _bookings_missing_notifications(ops_conn)
    conns = [ops_conn, other] + [
        await connect(ops_dsn, purpose="test-par") for _ in range(2)
    ]
    try:
        results = await asyncio.gather(
            *(job(c, "repair_missing_notifications") for c in conns)
        )
    finally:
        for conn in conns[2:]:
            await conn.close()
    assert all(r["success"] for r in results)
    assert sum(int(r["total_notifications_created"]) for r in results) == 5
    duplicates = await ops_conn.fetchval(
        "SELECT count(*) FROM (SELECT 1 FROM notifications"
        " GROUP BY data->>'booking_id', type HAVING count(*) > 1) d"
    )
    assert duplicates == 0


async def test_repair_waits_at_most_the_lock_timeout_then_fails_cleanly(
    ops_conn: asyncpg.Connection, other: asyncpg.Connection
) -> None:
    await _bookings_missing_notifications(ops_conn)
    await other.execute("SET carpool.lock_timeout = '300ms'")
    async with ops_conn.transaction():
        await job(ops_conn, "repair_missing_notifications")
        started = time.monotonic()
        blocked = await job(other, "repair_missing_notifications")
        elapsed = time.monotonic() - started
    assert elapsed < 3
    assert (blocked["success"], blocked["sqlstate"]) == (False, "55P03")
    holder = await ops_conn.fetchval("SELECT pg_backend_pid()")
    # The message names the run in the way, not just "lock timeout".
    error = str(blocked["error"])
    assert (
        "lock timeout: the lock of repair_missing_notifications is held by"
        " another session since "
    ) in error
    assert f"(backend {holder}, carpool-tui test), most likely another run" in error
    rows = await _log_rows(ops_conn, "repair_missing_notifications")
    assert sorted(r["status"] for r in rows) == ["completed", "failed"]
    failed = next(r for r in rows if r["status"] == "failed")
    assert failed["error_message"] == blocked["error"]


async def test_a_run_refused_by_an_earlier_run_is_not_the_jobs_latest_state(
    ops_conn: asyncpg.Connection, ops_dsn: str
) -> None:
    """Run B of the invariant check starts while run A holds the job's lock,
    fails for it, and A then completes: the summary shows the job completed,
    while B stays in the log and among the day's failures."""
    name = "check_system_invariants"
    first, refused = await overlapping_runs(ops_dsn, name)
    assert first["success"] is True
    assert (refused["success"], refused["sqlstate"]) == (False, "55P03")
    rows = await _log_rows(ops_conn, name)
    assert [r["status"] for r in rows] == ["completed", "failed"]
    assert rows[0]["completed_at"] > rows[1]["started_at"]  # they overlapped
    assert "is held by another session" in rows[1]["error_message"]

    health = await job(ops_conn, "get_system_health_summary")
    latest = {j["job_name"]: j for j in health["recent_job_status"]}
    assert latest[name]["status"] == "completed"
    # As times: jsonb drops a trailing zero of the microseconds.
    started = datetime.fromisoformat(latest[name]["started_at"])
    assert started == rows[0]["started_at"]
    assert health["failed_jobs_24h"] == 1

    # The lock held by a session that is no run of the job: nothing earlier
    # explains the refusal, so it is the job's state, as any failure is.
    key = await ops_conn.fetchval("SELECT ops_job_lock_key($1)", name)
    async with connected(ops_dsn, purpose="test-holder") as holder:
        await holder.execute("SELECT pg_advisory_lock($1)", key)
        await ops_conn.execute("SET carpool.lock_timeout = '300ms'")
        alone = await job(ops_conn, name)
    assert (alone["success"], alone["sqlstate"]) == (False, "55P03")
    health = await job(ops_conn, "get_system_health_summary")
    latest = {j["job_name"]: j for j in health["recent_job_status"]}
    assert latest[name]["status"] == "failed"
    assert latest[name]["error_message"] == alone["error"]
    assert health["failed_jobs_24h"] == 2


async def test_repair_lookup_uses_the_booking_index(
    ops_conn: asyncpg.Connection,
) -> None:
    """At millions of notifications the lookup must not scan the table."""
    await ops_conn.execute("SET enable_seqscan = off")
    plan = await ops_conn.fetchval(
        "EXPLAIN (FORMAT TEXT) SELECT 1 FROM notifications n"
        " WHERE n.data->>'booking_id' = $1 AND n.type = 'BOOKING_REQUEST'",
        str(uuid.uuid4()),
    )
    assert "notifications_ops_booking_idx" in plan


async def test_running_row_turns_completed_in_one_autocommit_call(
    ops_conn: asyncpg.Connection,
) -> None:
    for name in (
        "expire_rides",
        "reconcile_seat_counts",
        "repair_missing_notifications",
        "check_system_invariants",
    ):
        result = await call_json(ops_conn, f"SELECT {name}()")
        assert result["success"] is True, name
    statuses = await ops_conn.fetch("SELECT status, completed_at FROM system_job_log")
    assert len(statuses) == 4
    assert {r["status"] for r in statuses} == {"completed"}
    assert all(r["completed_at"] is not None for r in statuses)
