"""The benchmark's timing loop on a small seeded platform.

A job is timed in transactions rolled back after each run, and the platform's
tables are vacuumed between runs so that no run steps over the dead row
versions of the runs before it; a read is timed without either.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from factories import connected

from benchmarks import measure
from benchmarks.run import EXPIRE, HEALTH, measure_layer
from carpool_tui.db.seed import seed_platform

TABLES = ("rides", "ride_bookings", "notifications", "system_job_log")


async def _vacuums(dsn: str) -> dict[str, int]:
    async with connected(dsn, purpose="test-bench") as conn:
        rows = await conn.fetch(
            "SELECT relname, vacuum_count FROM pg_stat_user_tables"
            " WHERE relname = ANY ($1::text[])",
            list(TABLES),
        )
    return {r["relname"]: r["vacuum_count"] for r in rows}


async def test_a_job_is_rolled_back_and_vacuumed_after_every_run(ops_dsn: str) -> None:
    async with connected(ops_dsn, purpose="test-bench") as conn:
        await seed_platform(conn, rides=200, seed=11, faults=["expired_active_ride"])
        due = await conn.fetchval(
            "SELECT count(*) FROM rides WHERE status IN ('active', 'in-progress')"
            " AND COALESCE(available_until, departure_time) < now()"
        )
    assert due > 0
    before = await _vacuums(ops_dsn)
    database = urlsplit(ops_dsn).path.lstrip("/")
    said: list[str] = []

    out = await measure_layer(ops_dsn, database, (HEALTH, EXPIRE), 2, said.append, None)

    assert set(out) == {"health", "expire"}
    assert all(value > 0 for value, _ in out.values())
    # Every run of the job, the unmeasured one too, was followed by a VACUUM of
    # each platform table; the read was not.
    after = await _vacuums(ops_dsn)
    runs = measure.WARM_RUNS + 2
    assert {t: after[t] - before.get(t, 0) for t in TABLES} == dict.fromkeys(
        TABLES, runs
    )
    # And rolled back: the rides due are still due.
    async with connected(ops_dsn, purpose="test-bench") as conn:
        assert due == await conn.fetchval(
            "SELECT count(*) FROM rides WHERE status IN ('active', 'in-progress')"
            " AND COALESCE(available_until, departure_time) < now()"
        )
