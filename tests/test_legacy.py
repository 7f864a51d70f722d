"""The deployed (legacy) functions: their outputs and each documented fault."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest
from factories import connected

from carpool_tui.config import Settings
from carpool_tui.db.repo import Repository
from carpool_tui.db.seed import FAULT_KINDS, seed_platform

JOBS = (
    "expire_rides",
    "reconcile_seat_counts",
    "repair_missing_notifications",
    "check_system_invariants",
)
HEALTH_KEYS = {
    "timestamp",
    "total_rides",
    "active_rides",
    "in_progress_rides",
    "total_bookings",
    "pending_bookings",
    "confirmed_bookings",
    "expired_active_rides",
    "seat_mismatches",
    "unresolved_violations",
    "recent_job_status",
}
RESULT_KEYS = {
    "expire_rides": {
        "success",
        "rides_expired",
        "bookings_completed",
        "notifications_created",
    },
    "reconcile_seat_counts": {"success", "mismatches_found", "mismatches_fixed"},
    "repair_missing_notifications": {
        "success",
        "booking_requests_created",
        "confirmations_created",
        "cancellations_created",
        "total_notifications_created",
    },
    "check_system_invariants": {"success", "healthy", "total_violations", "violations"},
}


class Platform:
    """Small hand-made rows on one connection, for exact legacy scenarios."""

    def __init__(self, conn: asyncpg.Connection):
        self.conn = conn
        self.driver = uuid.uuid4()
        self.n = 0

    async def start(self) -> Platform:
        await self.conn.execute(
            "INSERT INTO profiles (id, email) VALUES ($1, $2)",
            self.driver,
            f"{self.driver}@example.test",
        )
        return self

    async def passenger(self) -> uuid.UUID:
        pid = uuid.uuid4()
        await self.conn.execute(
            "INSERT INTO profiles (id, email) VALUES ($1, $2)", pid, f"{pid}@x.test"
        )
        return pid

    async def ride(
        self,
        *,
        departs_in: timedelta = timedelta(days=1),
        until_in: timedelta | None = None,
        total: int = 4,
        status: str = "active",
    ) -> uuid.UUID:
        rid = uuid.uuid4()
        await self.conn.execute(
            """INSERT INTO rides (id, driver_id, origin, destination, departure_time,
                                  available_until, available_seats, total_seats,
                                  status)
               VALUES ($1, $2, 'A', 'B', now() + $3, now() + $4, $5, $5, $6)""",
            rid,
            self.driver,
            departs_in,
            until_in,
            total,
            status,
        )
        return rid

    async def booking(
        self, ride: uuid.UUID, status: str = "confirmed", seats: int = 1
    ) -> uuid.UUID:
        bid = uuid.uuid4()
        await self.conn.execute(
            """INSERT INTO ride_bookings (id, ride_id, passenger_id, seats_requested,
                                          status)
               VALUES ($1, $2, $3, $4, $5)""",
            bid,
            ride,
            await self.passenger(),
            seats,
            status,
        )
        return bid


@pytest.fixture
async def platform(legacy_conn: asyncpg.Connection) -> Platform:
    return await Platform(legacy_conn).start()


@pytest.fixture
async def second_conn(legacy_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    async with connected(legacy_dsn, purpose="test-2") as conn:
        yield conn


async def _job_rows(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM system_job_log ORDER BY started_at")


async def test_tables_have_the_deployed_columns(
    legacy_conn: asyncpg.Connection,
) -> None:
    async def columns(table: str) -> list[str]:
        rows = await legacy_conn.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = $1 ORDER BY ordinal_position",
            table,
        )
        return [r["column_name"] for r in rows]

    assert await columns("system_job_log") == [
        "id",
        "job_name",
        "started_at",
        "completed_at",
        "status",
        "records_processed",
        "errors_encountered",
        "details",
        "error_message",
    ]
    assert await columns("invariant_violations") == [
        "id",
        "check_name",
        "severity",
        "violation_count",
        "sample_data",
        "detected_at",
        "resolved_at",
        "auto_resolved",
        "notes",
    ]


@pytest.mark.parametrize("name", (*JOBS, "get_system_health_summary"))
async def test_functions_are_definer_jsonb_and_open_to_app_roles(
    legacy_conn: asyncpg.Connection, name: str
) -> None:
    row = await legacy_conn.fetchrow(
        """SELECT p.prosecdef, p.pronargs, format_type(p.prorettype, NULL) AS ret,
                  has_function_privilege('anon', p.oid, 'EXECUTE') AS anon,
                  has_function_privilege('authenticated', p.oid, 'EXECUTE') AS auth
             FROM pg_proc p WHERE p.proname = $1""",
        name,
    )
    assert dict(row) == {
        "prosecdef": True,
        "pronargs": 0,
        "ret": "jsonb",
        "anon": True,
        "auth": True,
    }


async def test_health_before_any_job_has_null_recent_job_status(
    legacy_conn: asyncpg.Connection,
) -> None:
    await seed_platform(legacy_conn, rides=200, faults=["seat_mismatch"])
    health = await legacy_conn.fetchval("SELECT get_system_health_summary()")
    assert set(health) == HEALTH_KEYS
    assert health["recent_job_status"] is None
    assert health["total_rides"] == 200
    assert health["seat_mismatches"] == 3
    raw = await legacy_conn.fetchval(
        "SELECT get_system_health_summary()->'recent_job_status'"
    )
    assert raw is None or raw == "null"


async def test_each_job_logs_a_completed_row_with_its_result_in_details(
    legacy_conn: asyncpg.Connection,
) -> None:
    await seed_platform(legacy_conn, rides=200, faults=["seat_mismatch"])
    for job in JOBS:
        result = await legacy_conn.fetchval(f"SELECT {job}()")
        assert set(result) == RESULT_KEYS[job]
        assert result["success"] is True
        row = await legacy_conn.fetchrow(
            "SELECT * FROM system_job_log WHERE job_name = $1", job
        )
        assert row["status"] == "completed"
        assert row["completed_at"] == row["started_at"]
        assert row["error_message"] is None
        assert row["errors_encountered"] == 0
        assert set(row["details"]) == {"started_at"} | (RESULT_KEYS[job] - {"success"})
    health = await legacy_conn.fetchval("SELECT get_system_health_summary()")
    recent = health["recent_job_status"]
    assert {j["job_name"] for j in recent} == set(JOBS)
    for job in recent:
        assert set(job) == {"job_name", "status", "completed_at", "records_processed"}
        assert job["status"] == "completed"
    stamps = [j["completed_at"] for j in recent]
    assert stamps == sorted(stamps, reverse=True)
    reconcile = next(j for j in recent if j["job_name"] == "reconcile_seat_counts")
    assert reconcile["records_processed"] == 3


async def test_a_failed_run_leaves_no_row_and_a_locked_booking_stalls_expiry(
    legacy_conn: asyncpg.Connection,
    second_conn: asyncpg.Connection,
    platform: Platform,
) -> None:
    ride = await platform.ride(departs_in=timedelta(minutes=-10))
    booking = await platform.booking(ride)
    holder = second_conn.transaction()
    await holder.start()
    try:
        await second_conn.execute(
            "SELECT 1 FROM ride_bookings WHERE id = $1 FOR UPDATE", booking
        )
        await legacy_conn.execute("SET lock_timeout = '200ms'")
        with pytest.raises(asyncpg.LockNotAvailableError):
            await legacy_conn.fetchval("SELECT expire_rides()")
    finally:
        await holder.rollback()
    assert await _job_rows(legacy_conn) == []
    assert (
        await legacy_conn.fetchval("SELECT status FROM rides WHERE id = $1", ride)
        == "active"
    )


async def test_expiry_uses_available_until_over_departure_both_ways(
    legacy_conn: asyncpg.Connection, platform: Platform
) -> None:
    kept = await platform.ride(
        departs_in=timedelta(hours=-1), until_in=timedelta(hours=1)
    )
    early = await platform.ride(
        departs_in=timedelta(hours=3), until_in=timedelta(minutes=-1)
    )
    plain = await platform.ride(departs_in=timedelta(minutes=-1))
    b_kept = await platform.booking(kept)
    b_early = await platform.booking(early, "pending")
    result = await legacy_conn.fetchval("SELECT expire_rides()")
    assert result == {
        "success": True,
        "rides_expired": 2,
        "bookings_completed": 1,
        "notifications_created": 1,
    }
    status = dict(
        await legacy_conn.fetch(
            "SELECT id, status FROM rides WHERE id = ANY($1)", [kept, early, plain]
        )
    )
    assert status == {kept: "active", early: "completed", plain: "completed"}
    assert (
        await legacy_conn.fetchval(
            "SELECT status FROM ride_bookings WHERE id = $1", b_kept
        )
        == "confirmed"
    )
    note = await legacy_conn.fetchrow(
        "SELECT type, category, data FROM notifications WHERE data->>'booking_id' = $1",
        str(b_early),
    )
    assert note["type"] == note["category"] == "BOOKING_CONFIRMED"
    assert note["data"]["auto_completed"] is True


async def test_expiry_notifies_bookings_it_did_not_complete(
    legacy_conn: asyncpg.Connection, platform: Platform
) -> None:
    # Manual 4.3 expired this ride by hand a moment ago.
    manual = await platform.ride(departs_in=timedelta(hours=-2), status="completed")
    await platform.booking(manual, "completed")
    due = await platform.ride(departs_in=timedelta(minutes=-5))
    await platform.booking(due)
    result = await legacy_conn.fetchval("SELECT expire_rides()")
    assert result["bookings_completed"] == 1
    assert result["notifications_created"] == 2
    # A second run seconds later notifies the same passengers again.
    again = await legacy_conn.fetchval("SELECT expire_rides()")
    assert again["rides_expired"] == 0
    assert again["notifications_created"] == 2


async def test_expiry_leaves_active_bookings_on_terminal_rides(
    legacy_conn: asyncpg.Connection, platform: Platform
) -> None:
    ride = await platform.ride(status="completed")
    booking = await platform.booking(ride, "confirmed")
    await legacy_conn.fetchval("SELECT expire_rides()")
    assert (
        await legacy_conn.fetchval(
            "SELECT status FROM ride_bookings WHERE id = $1", booking
        )
        == "confirmed"
    )
    check = await legacy_conn.fetchval("SELECT check_system_invariants()")
    assert [v["name"] for v in check["violations"]] == [
        "active_booking_on_terminal_ride"
    ]


async def test_reconcile_fixes_drift_once_with_a_super_admin_audit_row(
    legacy_conn: asyncpg.Connection, platform: Platform
) -> None:
    ride = await platform.ride(total=4)
    await platform.booking(ride)
    await platform.booking(ride)
    await legacy_conn.execute(
        "UPDATE rides SET available_seats = 1 WHERE id = $1", ride
    )
    first = await legacy_conn.fetchval("SELECT reconcile_seat_counts()")
    assert first == {"success": True, "mismatches_found": 1, "mismatches_fixed": 1}
    audit = await legacy_conn.fetchrow("SELECT * FROM admin_audit_log")
    assert audit["admin_id"] is None
    assert audit["admin_role"] == "super_admin"
    assert audit["action"] == "seat_reconciliation"
    assert audit["target_type"] == "ride" and audit["target_id"] == ride
    assert set(audit["details"]) == {
        "driver_id",
        "total_seats",
        "reconciled_at",
        "previous_available",
        "calculated_available",
    }
    assert audit["details"]["previous_available"] == 1
    assert audit["details"]["calculated_available"] == 2
    second = await legacy_conn.fetchval("SELECT reconcile_seat_counts()")
    assert second["mismatches_found"] == 0


async def test_reconcile_refixes_an_overbooked_ride_on_every_run(
    legacy_conn: asyncpg.Connection, platform: Platform
) -> None:
    ride = await platform.ride(total=2)
    for _ in range(3):
        await platform.booking(ride)
    assert (
        await legacy_conn.fetchval(
            "SELECT available_seats FROM rides WHERE id = $1", ride
        )
        == 0
    )
    for run in range(1, 4):
        result = await legacy_conn.fetchval("SELECT reconcile_seat_counts()")
        assert result["mismatches_found"] == 1
        assert (
            await legacy_conn.fetchval(
                "SELECT count(*) FROM admin_audit_log WHERE target_id = $1", ride
            )
            == run
        )
    assert (
        await legacy_conn.fetchval(
            "SELECT available_seats FROM rides WHERE id = $1", ride
        )
        == 0
    )


async def test_reconcile_overwrites_a_booking_committed_while_it_runs(
    legacy_conn: asyncpg.Connection,
    second_conn: asyncpg.Connection,
    platform: Platform,
) -> None:
    ride = await platform.ride(total=4)
    await platform.booking(ride)
    await legacy_conn.execute(
        "UPDATE rides SET available_seats = 1 WHERE id = $1", ride
    )
    passenger = await platform.passenger()
    booker = second_conn.transaction()
    await booker.start()
    await second_conn.fetchval("SELECT request_booking($1, $2)", ride, passenger)
    job = asyncio.create_task(legacy_conn.fetchval("SELECT reconcile_seat_counts()"))
    for _ in range(200):
        waiting = await second_conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            " AND query LIKE '%reconcile_seat_counts%'"
        )
        if waiting:
            break
        await asyncio.sleep(0.02)
    assert waiting, "reconcile never waited for the booking's ride lock"
    await booker.commit()
    result = await job
    assert result["mismatches_fixed"] == 1
    seats = await legacy_conn.fetchrow(
        """SELECT r.available_seats, r.total_seats - sum(b.seats_requested) AS real
             FROM rides r JOIN ride_bookings b ON b.ride_id = r.id
            WHERE r.id = $1 AND b.status IN ('pending', 'confirmed')
            GROUP BY r.id""",
        ride,
    )
    assert seats["real"] == 2
    assert seats["available_seats"] == 3  # the new booking's seat is sold twice


async def test_repair_backfills_three_kinds_backdated_within_30_days(
    legacy_conn: asyncpg.Connection, platform: Platform
) -> None:
    ride = await platform.ride()
    pending = await platform.booking(ride, "pending")
    confirmed = await platform.booking(ride, "confirmed")
    cancelled = await platform.booking(ride, "cancelled")
    old = await platform.booking(ride, "pending")
    await legacy_conn.execute(
        "UPDATE ride_bookings SET created_at = now() - interval '3 days',"
        " updated_at = now() - interval '2 days' WHERE id = ANY($1)",
        [pending, confirmed, cancelled],
    )
    await legacy_conn.execute(
        "UPDATE ride_bookings SET cancelled_at = now() - interval '1 day'"
        " WHERE id = $1",
        cancelled,
    )
    await legacy_conn.execute(
        "UPDATE ride_bookings SET created_at = now() - interval '40 days',"
        " updated_at = now() - interval '40 days' WHERE id = $1",
        old,
    )
    result = await legacy_conn.fetchval("SELECT repair_missing_notifications()")
    assert result == {
        "success": True,
        "booking_requests_created": 3,
        "confirmations_created": 1,
        "cancellations_created": 1,
        "total_notifications_created": 5,
    }
    rows = await legacy_conn.fetch(
        "SELECT n.type, n.user_id, n.created_at, n.data, b.id AS booking,"
        " b.passenger_id, b.created_at AS b_created, b.updated_at AS b_updated,"
        " b.cancelled_at FROM notifications n"
        " JOIN ride_bookings b ON b.id = (n.data->>'booking_id')::uuid"
    )
    assert old not in {r["booking"] for r in rows}
    for r in rows:
        assert r["data"]["repaired"] is True
        if r["type"] == "BOOKING_REQUEST":
            assert r["user_id"] == platform.driver
            assert r["created_at"] == r["b_created"]
        elif r["type"] == "BOOKING_CONFIRMED":
            assert r["user_id"] == r["passenger_id"]
            assert r["created_at"] == r["b_updated"]
        else:
            assert r["created_at"] == r["cancelled_at"]
    again = await legacy_conn.fetchval("SELECT repair_missing_notifications()")
    assert again["total_notifications_created"] == 0


async def test_overlapping_repairs_create_duplicates(
    legacy_conn: asyncpg.Connection,
    second_conn: asyncpg.Connection,
    platform: Platform,
) -> None:
    ride = await platform.ride()
    for _ in range(3):
        await platform.booking(ride, "pending")
    first = second_conn.transaction()
    await first.start()
    await second_conn.fetchval("SELECT repair_missing_notifications()")
    overlap = await legacy_conn.fetchval("SELECT repair_missing_notifications()")
    await first.commit()
    assert overlap["booking_requests_created"] == 3
    assert (
        await legacy_conn.fetchval(
            "SELECT count(*) FROM notifications WHERE type = 'BOOKING_REQUEST'"
        )
        == 6
    )


async def test_invariant_check_finds_all_eight_kinds(
    legacy_conn: asyncpg.Connection,
) -> None:
    await seed_platform(legacy_conn, rides=300, faults=FAULT_KINDS)
    result = await legacy_conn.fetchval("SELECT check_system_invariants()")
    assert result["healthy"] is False
    assert {v["name"] for v in result["violations"]} == set(FAULT_KINDS)
    for v in result["violations"]:
        assert {"check", "name", "severity"} <= set(v)
        expected = "warning" if v["name"] == "expired_active_ride" else "critical"
        assert v["severity"] == expected
    mismatch = next(v for v in result["violations"] if v["check"] == "INV-SEAT-001")
    assert {"ride_id", "current", "expected"} <= set(mismatch)


async def test_invariant_check_caps_counts_and_adds_a_row_every_run(
    legacy_conn: asyncpg.Connection, platform: Platform
) -> None:
    healthy = await legacy_conn.fetchval("SELECT check_system_invariants()")
    assert healthy == {
        "success": True,
        "healthy": True,
        "total_violations": 0,
        "violations": [],
    }
    assert await legacy_conn.fetchval("SELECT count(*) FROM invariant_violations") == 0
    for _ in range(12):
        ride = await platform.ride(total=3)
        await legacy_conn.execute(
            "UPDATE rides SET available_seats = 2 WHERE id = $1", ride
        )
    for run in (1, 2):
        result = await legacy_conn.fetchval("SELECT check_system_invariants()")
        assert result["total_violations"] == 10  # 12 drifted rides, capped
        assert len(result["violations"]) == 10
        rows = await legacy_conn.fetch("SELECT * FROM invariant_violations")
        assert len(rows) == run
    for row in rows:
        assert row["check_name"] == "system_invariant_check"
        assert row["severity"] == "critical"
        assert row["violation_count"] == 10
        assert len(row["sample_data"]) == 10
        assert row["resolved_at"] is None and row["auto_resolved"] is False
    log = await legacy_conn.fetchrow(
        "SELECT records_processed FROM system_job_log"
        " WHERE job_name = 'check_system_invariants' ORDER BY started_at DESC LIMIT 1"
    )
    assert log["records_processed"] == 10
    health = await legacy_conn.fetchval("SELECT get_system_health_summary()")
    assert health["seat_mismatches"] == 12
    assert health["unresolved_violations"] == 2


async def test_warning_only_findings_make_a_warning_row(
    legacy_conn: asyncpg.Connection, platform: Platform
) -> None:
    await platform.ride(departs_in=timedelta(minutes=-3))
    await legacy_conn.fetchval("SELECT check_system_invariants()")
    assert (
        await legacy_conn.fetchval("SELECT severity FROM invariant_violations")
        == "warning"
    )


async def test_a_deployed_run_shows_no_duration_it_did_not_measure(
    legacy_dsn: str,
) -> None:
    """Both times are the transaction's start: "0 ms" would be a false figure."""
    repo = Repository(Settings(dsn=legacy_dsn, operator="tester"))
    await repo.open()
    try:
        result = await repo.run_job("check_system_invariants")
        page = await repo.job_log()
    finally:
        await repo.close()
    assert result.success
    assert result.server_seconds is None
    assert [e.job_name for e in page.entries] == ["check_system_invariants"]
    assert page.entries[0].started_at == page.entries[0].completed_at
    assert page.entries[0].duration is None


async def test_the_latest_runs_pass_over_a_lock_refusal_in_the_deployed_log(
    legacy_conn: asyncpg.Connection, legacy_dsn: str
) -> None:
    """On the deployed table (no sqlstate column: the refusal's SQLSTATE is in
    details, as the ops layer also writes it) the dashboard's latest runs and
    the procedures' jobs step take the run that held the lock, not the run
    it refused, as the job's latest; the refusal stays in the log."""
    name = "check_system_invariants"
    message = (
        "canceling statement due to lock timeout: the lock of"
        f" {name} is held by another session since 2025-03-04 11:16:58 UTC"
        " (backend 4242, pg_cron scheduler), most likely another run of the"
        " job; wait for it to finish instead of starting another"
    )
    first = await legacy_conn.fetchval(
        "INSERT INTO system_job_log (job_name, started_at, completed_at, status,"
        " records_processed, details) VALUES ($1, now() - interval '60 seconds',"
        " now() - interval '48 seconds', 'completed', 8, '{}') RETURNING id",
        name,
    )
    refused = await legacy_conn.fetchval(
        "INSERT INTO system_job_log (job_name, started_at, completed_at, status,"
        " records_processed, errors_encountered, details, error_message)"
        " VALUES ($1, now() - interval '59.642 seconds',"
        " now() - interval '55 seconds', 'failed', 0, 1,"
        ' \'{"sqlstate": "55P03"}\', $2) RETURNING id',
        name,
        message,
    )
    repo = Repository(Settings(dsn=legacy_dsn, operator="tester"))
    await repo.open()
    try:
        latest = await repo.latest_runs()
        rows = await repo.procedure_rows("latest_runs")
        page = await repo.job_log()
    finally:
        await repo.close()
    assert (latest[name].id, latest[name].status) == (first, "completed")
    row = next(r for r in rows.rows if r["job_name"] == name)
    assert (str(row["id"]), row["status"]) == (str(first), "completed")
    assert [e.id for e in page.entries] == [refused, first]
