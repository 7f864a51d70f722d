"""The ops layer applied on a fresh database and on top of the deployed SQL:
every file idempotent, every job working there, the health summary's shape
(rule 7)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import asyncpg
from factories import connected, job, make_booking, make_ride

from carpool_tui.db.connect import connect
from carpool_tui.db.migrate import _split_statements, load, migrate

JOBS = (
    "expire_rides",
    "reconcile_seat_counts",
    "repair_missing_notifications",
    "check_system_invariants",
)


async def test_every_ops_file_applies_twice(ops_conn: asyncpg.Connection) -> None:
    for migration in load(("ops",)):
        if migration.transactional:
            async with ops_conn.transaction():
                await ops_conn.execute(migration.sql)
        else:
            for statement in _split_statements(migration.sql):
                await ops_conn.execute(statement)
    assert await ops_conn.fetchval("SELECT ops_layer_version()") == "1.0.0"
    invalid = await ops_conn.fetchval(
        "SELECT count(*) FROM pg_index WHERE NOT indisvalid"
    )
    assert invalid == 0


async def test_legacy_database_with_data_upgrades_and_runs_every_job(
    legacy_conn: asyncpg.Connection,
) -> None:
    due = await make_ride(legacy_conn, departs_in=timedelta(hours=-1))
    await make_booking(legacy_conn, due, status="confirmed")
    for name in JOBS:
        assert (await job(legacy_conn, name))["success"] is True
    legacy_jobs = await legacy_conn.fetchval("SELECT count(*) FROM system_job_log")

    await migrate(legacy_conn, ("ops",))

    late = await make_ride(legacy_conn, departs_in=timedelta(hours=-1))
    await make_booking(legacy_conn, late, status="pending")
    for name in JOBS:
        result = await job(legacy_conn, name)
        assert result["success"] is True, (name, result)
        assert "job_log_id" in result
    assert (await job(legacy_conn, "expire_rides"))["rides_expired"] == 0
    assert (
        await legacy_conn.fetchval("SELECT status FROM rides WHERE id = $1", late)
        == "completed"
    )
    health = await job(legacy_conn, "get_system_health_summary")
    assert health["ops_layer_version"] == "1.0.0"
    statuses = {j["job_name"]: j["status"] for j in health["recent_job_status"]}
    assert statuses == dict.fromkeys(JOBS, "completed")
    rows = await legacy_conn.fetchval("SELECT count(*) FROM system_job_log")
    assert rows == legacy_jobs + 5


async def test_legacy_ops_template_runs_every_job(legacy_ops_dsn: str) -> None:
    async with connected(legacy_ops_dsn, timeout_ms=5_000) as conn:
        for name in JOBS:
            assert (await job(conn, name))["success"] is True


async def test_health_summary_shape_on_a_fresh_database(
    ops_conn: asyncpg.Connection,
) -> None:
    health = await job(ops_conn, "get_system_health_summary")
    assert health["recent_job_status"] == []
    for key in (
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
        "failed_jobs_24h",
        "estimated_counts",
    ):
        assert key in health, key
    ride = await make_ride(ops_conn, departs_in=timedelta(hours=-1))
    await make_booking(ops_conn, ride, status="pending")
    await ops_conn.execute("UPDATE rides SET available_seats = 0 WHERE id = $1", ride)
    after = await job(ops_conn, "get_system_health_summary")
    assert (after["total_rides"], after["active_rides"]) == (1, 1)
    assert (after["pending_bookings"], after["expired_active_rides"]) == (1, 1)
    assert after["seat_mismatches"] == 1
    assert after["estimated_counts"] == []


async def _poll(conn: asyncpg.Connection, times: int) -> list[dict[str, object]]:
    return [await job(conn, "get_system_health_summary") for _ in range(times)]


async def test_health_never_waits_on_a_running_job(
    ops_conn: asyncpg.Connection, ops_dsn: str
) -> None:
    """Many viewers poll while a job holds its row locks in an open transaction."""
    for _ in range(20):
        ride = await make_ride(ops_conn, departs_in=timedelta(hours=-1))
        await make_booking(ops_conn, ride, status="confirmed")
    viewers = [await connect(ops_dsn, purpose="viewer") for _ in range(8)]
    try:
        async with ops_conn.transaction():
            await job(ops_conn, "expire_rides")
            started = time.monotonic()
            rounds = await asyncio.gather(*(_poll(v, 5) for v in viewers))
            elapsed = time.monotonic() - started
    finally:
        for viewer in viewers:
            await viewer.close()
    assert elapsed < 5
    polls = [p for r in rounds for p in r]
    assert len(polls) == 40
    assert {p["active_rides"] for p in polls} == {20}
