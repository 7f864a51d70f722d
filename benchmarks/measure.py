"""How each operation is timed.

Server time, not round trips: a temporary PL/pgSQL function reads
``clock_timestamp()`` before and after ``EXECUTE`` of the statement, inside
the server, so the figure is planning plus execution of that one statement.
A job runs in a transaction that is rolled back afterwards, so every run sees
the same rows.

A dashboard poll is whatever ``Repository.snapshot()`` sends (health summary,
latest run per job, a job log page, open violations). Its server time is the
sum of planning and execution time of every statement of the round, read from
``pg_stat_statements`` (reset before the round). Where that extension is not
loaded (``--dsn`` to a server without it), the client's wall time is used and
the table says so. When the repository module is missing, the same four reads
are sent as plain SQL.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from benchmarks.build import db_conn, with_database

_TIMER = """
CREATE OR REPLACE FUNCTION pg_temp.bench_ms(q text) RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
BEGIN
    EXECUTE q;
    RETURN 1000 * extract(epoch FROM clock_timestamp() - t0);
END
$$
"""


@dataclass
class Sample:
    """The runs of one operation on one database."""

    runs: list[float] = field(default_factory=list)
    how: str = "server"
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else float("nan")


WARM_RUNS = 1


async def time_statement(
    dsn: str,
    database: str,
    sql: str,
    runs: int,
    *,
    rollback: bool,
    setup: str = "",
    between: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
) -> Sample:
    """Server time of ``sql``, ``runs`` times, each in a rolled-back transaction.

    ``setup`` runs once on the connection first (session settings). The first
    ``WARM_RUNS`` runs are not kept: they pay for planning the functions'
    statements and reading the pages in, which every later run is spared.
    """
    conn = await db_conn(dsn, database)
    sample = Sample()
    try:
        await conn.execute(_TIMER)
        if setup:
            await conn.execute(setup)
        for run in range(WARM_RUNS + runs):
            tx = conn.transaction()
            await tx.start()
            try:
                took = float(await conn.fetchval("SELECT pg_temp.bench_ms($1)", sql))
                if run >= WARM_RUNS:
                    sample.runs.append(took)
            finally:
                if rollback:
                    await tx.rollback()
                else:
                    await tx.commit()
            if between is not None:
                await between(conn)
    finally:
        await conn.close()
    return sample


async def vacuum_platform(conn: asyncpg.Connection) -> None:
    """Clear what a rolled-back job run left behind, before the next run.

    A rolled-back run leaves its new row versions dead in the tables and their
    entries in every index, and the next run steps over them: five runs of
    expire_rides in one sitting grew from 1.2 s to 2.8 s. A platform's job
    commits and autovacuum clears the old versions between daily runs, so each
    timed run starts from the same vacuumed tables instead.
    """
    await conn.execute("VACUUM rides, ride_bookings, notifications, system_job_log")


# -- dashboard polls ------------------------------------------------------

_PLAIN_POLL = (
    "SELECT get_system_health_summary()",
    "SELECT l.* FROM unnest($1::text[]) AS j(name) CROSS JOIN LATERAL"
    " (SELECT * FROM system_job_log WHERE job_name = j.name"
    " ORDER BY started_at DESC NULLS LAST LIMIT 1) AS l",
    "SELECT * FROM system_job_log ORDER BY started_at DESC NULLS LAST, id DESC"
    " OFFSET 0 LIMIT 101",
    "SELECT * FROM invariant_violations WHERE resolved_at IS NULL ORDER BY"
    " CASE severity WHEN 'critical' THEN 1 WHEN 'warning' THEN 2 ELSE 3 END,"
    " detected_at DESC, id LIMIT 500",
)
WARM_ROUNDS = 4
_JOBS = [
    "expire_rides",
    "reconcile_seat_counts",
    "repair_missing_notifications",
    "check_system_invariants",
]


class _Viewer:
    """One dashboard: the real repository when present, else its four reads."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.repo: Any = None
        self.pool: asyncpg.Pool | None = None

    async def open(self) -> str:
        try:
            from carpool_tui.config import Settings
            from carpool_tui.db.repo import Repository
        except ImportError:
            self.pool = await asyncpg.create_pool(
                self.dsn,
                min_size=3,
                max_size=3,
                server_settings={"application_name": VIEWER_APP},
            )
            return "plain SQL (repository module missing)"
        self.repo = Repository(Settings(dsn=self.dsn, statement_timeout_ms=60_000))
        await self.repo.open()
        return "Repository.snapshot()"

    async def poll(self) -> None:
        if self.repo is not None:
            await self.repo.snapshot()
            return
        assert self.pool is not None

        async def one(sql: str) -> None:
            assert self.pool is not None
            async with self.pool.acquire() as conn:
                if "$1" in sql:
                    await conn.fetch(sql, _JOBS)
                else:
                    await conn.fetch(sql)

        await asyncio.gather(*(one(sql) for sql in _PLAIN_POLL))

    async def close(self) -> None:
        if self.repo is not None:
            await self.repo.close()
        if self.pool is not None:
            await self.pool.close()


@dataclass
class PollResult:
    """Server time of whole rounds of polls, and the client's latency."""

    round_ms: list[float]
    latency_ms: list[float]
    cpu_ms: list[float]
    how: str
    source: str

    @property
    def median(self) -> float:
        return statistics.median(self.round_ms)


async def _stats_available(conn: asyncpg.Connection) -> bool:
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await conn.fetchval("SELECT count(*) FROM pg_stat_statements")
    except asyncpg.PostgresError:
        return False
    return True


_ROUND_COST = """
SELECT COALESCE(sum(total_exec_time + total_plan_time), 0)
  FROM pg_stat_statements
 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND query NOT ILIKE '%pg_stat_statements%'
"""


# The dashboards' backends: the repository names its pool's connections so.
VIEWER_APP = "carpool-tui dashboard"
_VIEWER_PIDS = (
    "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = $2"
)


async def time_polls(
    dsn: str,
    database: str,
    viewers: int,
    rounds: int,
    spacing_s: float,
    cpu: Callable[[Sequence[int]], float] | None = None,
) -> PollResult:
    """``rounds`` rounds in which ``viewers`` dashboards each poll once, together.

    Rounds start ``spacing_s`` apart, as dashboards refreshing on a timer.
    ``cpu`` reads the CPU time so far of the given server processes (own
    cluster only); when it is given, each round records what the dashboards'
    own backends spent, so autovacuum or a checkpoint in the background is not
    charged to them.
    """
    target = with_database(dsn, database)
    admin = await db_conn(dsn, database)
    stats = await _stats_available(admin)
    dashboards = [_Viewer(target) for _ in range(viewers)]
    sources = await asyncio.gather(*(d.open() for d in dashboards))
    round_ms: list[float] = []
    latency: list[float] = []
    cpu_ms: list[float] = []
    try:
        # Unmeasured rounds first: a dashboard polls for hours, so what counts
        # is the steady state, after every pooled connection has started, loaded
        # its catalog caches and prepared each of the poll's statements.
        for _ in range(WARM_ROUNDS):
            await asyncio.gather(*(d.poll() for d in dashboards))
            await asyncio.sleep(spacing_s)
        for _ in range(rounds):
            await asyncio.sleep(spacing_s)
            if stats:
                await admin.execute("SELECT pg_stat_statements_reset()")

            async def timed(d: _Viewer) -> float:
                t0 = time.perf_counter()
                await d.poll()
                return 1000 * (time.perf_counter() - t0)

            pids = [
                r["pid"] for r in await admin.fetch(_VIEWER_PIDS, database, VIEWER_APP)
            ]
            cpu0 = cpu(pids) if cpu else 0.0
            t0 = time.perf_counter()
            latency += await asyncio.gather(*(timed(d) for d in dashboards))
            wall = 1000 * (time.perf_counter() - t0)
            if cpu:
                cpu_ms.append(cpu(pids) - cpu0)
            if stats:
                round_ms.append(float(await admin.fetchval(_ROUND_COST)))
            else:
                round_ms.append(wall)
    finally:
        await asyncio.gather(*(d.close() for d in dashboards))
        await admin.close()
    how = "server (pg_stat_statements)" if stats else "client wall time"
    return PollResult(round_ms, latency, cpu_ms, how, sources[0])
