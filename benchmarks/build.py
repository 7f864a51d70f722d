"""The databases a benchmark run measures, built once and reused.

Per size, ``bench_legacy_<rides>`` is the deployed shape: the platform schema,
the deployed functions and a generated platform with every fault (0.5% of open
rides with drifted seats, 1% of rides expired but still active, about 3% of
recent bookings missing a notification) and 30 days of job history, vacuumed
and analysed as autovacuum would leave it. It is measured as it is and then
copied; the copy is upgraded with the ops layer (an upgraded production
database, same rows) and measured again. Every job runs in a transaction that
is rolled back, so all runs see the same rows.

Two variants of the largest platform answer questions the plain shape cannot:

- ``history``: the same number of rides, but only as many open rides (per
  kind: future, in progress, expired) as the smallest platform. The health
  summary and a dashboard poll must cost about what they cost there.
- ``healthy``: every fault repaired, for the invariant check on a healthy
  database (where the deployed "first 10 samples" queries cannot stop early).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from carpool_tui.db.migrate import apply_legacy, migrate
from carpool_tui.db.seed import seed_platform

SEED = 7
HISTORY_DAYS = 30
BUILD_VERSION = 4  # bump when the built shape changes, to rebuild kept clusters

Log = Callable[[str], None]


def with_database(dsn: str, database: str) -> str:
    """The server DSN pointed at another database."""
    head, _, query = dsn.partition("?")
    scheme, rest = head.split("://", 1)
    host = rest.split("/", 1)[0]
    return f"{scheme}://{host}/{database}" + (f"?{query}" if query else "")


async def admin(dsn: str) -> asyncpg.Connection:
    conn: asyncpg.Connection = await asyncpg.connect(dsn, timeout=30)
    return conn


async def db_conn(dsn: str, database: str) -> asyncpg.Connection:
    conn: asyncpg.Connection = await asyncpg.connect(
        with_database(dsn, database),
        timeout=30,
        server_settings={"application_name": "carpool-bench", "statement_timeout": "0"},
    )
    return conn


@dataclass
class Built:
    """A database ready to measure, and what it took to make."""

    name: str
    seconds: float
    note: str


async def _exists(dsn: str, name: str) -> bool:
    conn = await admin(dsn)
    try:
        return bool(
            await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        )
    finally:
        await conn.close()


async def _marker(dsn: str, name: str) -> str | None:
    """The build key recorded in a database, or None."""
    if not await _exists(dsn, name):
        return None
    conn = await db_conn(dsn, name)
    try:
        if await conn.fetchval("SELECT to_regclass('bench_build_info')") is None:
            return None
        value: str | None = await conn.fetchval("SELECT key FROM bench_build_info")
        return value
    finally:
        await conn.close()


async def _recreate(dsn: str, name: str, template: str | None = None) -> None:
    conn = await admin(dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if template is None:
            await conn.execute(f"CREATE DATABASE {name}")
        else:
            # A file copy: far faster than the WAL-logged default for gigabytes.
            await conn.execute(
                f"CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY"
            )
    finally:
        await conn.close()


async def _vacuum(conn: asyncpg.Connection) -> None:
    """Vacuum and analyse, then write out what that dirtied.

    Without the checkpoint the first measurements would pay for evicting the
    build's dirty buffers. A role that may not checkpoint skips it.
    """
    for table in ("profiles", "rides", "ride_bookings", "notifications"):
        await conn.execute(f"VACUUM (ANALYZE) {table}")
    await conn.execute("VACUUM (ANALYZE)")
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await conn.execute("CHECKPOINT")


async def legacy_database(dsn: str, rides: int, log: Log) -> Built:
    """``bench_legacy_<rides>``: reused when a kept cluster already has it."""
    name = f"bench_legacy_{rides}"
    key = f"v{BUILD_VERSION}:rides={rides}:seed={SEED}:faults=all:days={HISTORY_DAYS}"
    if await _marker(dsn, name) == key:
        conn = await db_conn(dsn, name)
        try:
            await _vacuum(conn)  # clear what earlier runs' rollbacks left
            built = await conn.fetchval("SELECT built FROM bench_build_info")
        finally:
            await conn.close()
        log(f"{name}: reusing the database built at {built:%H:%M} in this cluster")
        return Built(name, 0.0, f"reused (built {built:%Y-%m-%d %H:%M} UTC)")
    log(f"{name}: building ({rides:,} rides)")
    started = time.perf_counter()
    await _recreate(dsn, name)
    conn = await db_conn(dsn, name)
    try:
        await migrate(conn, ("base",))
        await apply_legacy(conn)
        seeded = time.perf_counter()
        await seed_platform(
            conn, rides=rides, seed=SEED, faults=("all",), history_days=HISTORY_DAYS
        )
        seed_s = time.perf_counter() - seeded
        await _vacuum(conn)
        await conn.execute(
            "CREATE TABLE bench_build_info AS SELECT $1::text AS key, now() AS built",
            key,
        )
    finally:
        await conn.close()
    total = time.perf_counter() - started
    log(f"{name}: built in {total:.0f} s (seed {seed_s:.0f} s)")
    return Built(name, total, f"seed {seed_s:.0f} s, build {total:.0f} s")


async def upgraded_copy(dsn: str, source: str, name: str, log: Log) -> Built:
    """A copy of ``source`` with the ops layer migrated on top."""
    started = time.perf_counter()
    await _recreate(dsn, name, template=source)
    copied = time.perf_counter()
    conn = await db_conn(dsn, name)
    try:
        await migrate(conn, ("ops",))
        migrate_s = time.perf_counter() - copied
        # The copy carries the dead rows and cleared visibility bits of the
        # deployed layer's rolled-back runs; autovacuum would clear them.
        await _vacuum(conn)
    finally:
        await conn.close()
    log(f"{name}: ops layer migrated in {migrate_s:.1f} s")
    return Built(
        name, time.perf_counter() - started, f"ops migration {migrate_s:.1f} s"
    )


async def variant(
    dsn: str,
    source: str,
    name: str,
    change: Callable[[asyncpg.Connection], Awaitable[str]],
    log: Log,
) -> Built:
    """A copy of ``source`` changed by ``change``, vacuumed and analysed."""
    started = time.perf_counter()
    await _recreate(dsn, name, template=source)
    conn = await db_conn(dsn, name)
    try:
        note = await change(conn)
        await _vacuum(conn)
    finally:
        await conn.close()
    log(f"{name}: {note}")
    return Built(name, time.perf_counter() - started, note)


_OPEN_KIND = """
    CASE WHEN status = 'in-progress' THEN 'in_progress'
         WHEN coalesce(available_until, departure_time) < now() THEN 'expired'
         ELSE 'future' END
"""


async def open_ride_mix(conn: asyncpg.Connection) -> dict[str, int]:
    """How many open rides of each kind (future, in progress, expired) there are."""
    rows = await conn.fetch(
        f"SELECT {_OPEN_KIND} AS kind, count(*) AS n FROM rides"
        " WHERE status IN ('active', 'in-progress') GROUP BY 1"
    )
    return {r["kind"]: r["n"] for r in rows}


def shrink_open_set(
    keep: dict[str, int],
) -> Callable[[asyncpg.Connection], Awaitable[str]]:
    """Finish all but ``keep[kind]`` open rides of each kind (a longer history).

    The finished rides and their open bookings become ``completed`` without the
    seat trigger (replica mode): a finished ride's seat count is read by no
    check, and the rows stay consistent.
    """

    async def change(conn: asyncpg.Connection) -> str:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(
                f"""
                CREATE TEMP TABLE bench_finish ON COMMIT DROP AS
                SELECT id FROM (
                    SELECT id, {_OPEN_KIND} AS kind,
                           row_number() OVER (PARTITION BY {_OPEN_KIND}
                                              ORDER BY md5(id::text)) AS n
                      FROM rides WHERE status IN ('active', 'in-progress')) o
                 WHERE n > COALESCE(($1::jsonb ->> kind)::int, 0)
                """,
                json.dumps(keep),
            )
            await conn.execute(
                "UPDATE ride_bookings b SET status = 'completed'"
                " FROM bench_finish f WHERE b.ride_id = f.id"
                " AND b.status IN ('pending', 'confirmed')"
            )
            done = await conn.execute(
                "UPDATE rides r SET status = 'completed'"
                " FROM bench_finish f WHERE r.id = f.id"
            )
        left = await open_ride_mix(conn)
        return f"finished {int(done.split()[-1]):,} open rides; open now {left}"

    return change


async def repair_all_faults(conn: asyncpg.Connection) -> str:
    """Repair every seeded fault with plain SQL, as an operator would."""
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute("""
            UPDATE rides SET status = 'completed'
             WHERE status NOT IN ('active', 'in-progress', 'completed', 'cancelled')
                OR (status IN ('active', 'in-progress')
                    AND coalesce(available_until, departure_time) < now());
            UPDATE ride_bookings SET status = 'cancelled', cancelled_at = updated_at
             WHERE status NOT IN ('pending', 'confirmed', 'completed', 'cancelled');
            UPDATE ride_bookings b SET status = 'completed'
              FROM rides r
             WHERE r.id = b.ride_id AND r.status IN ('completed', 'cancelled')
               AND b.status IN ('pending', 'confirmed');
            UPDATE ride_bookings b SET status = 'cancelled', cancelled_at = b.updated_at
              FROM (SELECT id, row_number() OVER (PARTITION BY ride_id, passenger_id
                                                  ORDER BY created_at, id) AS k
                      FROM ride_bookings
                     WHERE status IN ('pending', 'confirmed')) d
             WHERE d.id = b.id AND d.k > 1;
            UPDATE rides r
               SET available_seats = GREATEST(0, r.total_seats - COALESCE(
                       (SELECT sum(b.seats_requested) FROM ride_bookings b
                         WHERE b.ride_id = r.id
                           AND b.status IN ('pending', 'confirmed')), 0))
             WHERE r.status IN ('active', 'in-progress');
            UPDATE rides SET available_seats = LEAST(total_seats, GREATEST(0,
                                                                    available_seats))
             WHERE available_seats < 0 OR available_seats > total_seats;
        """)
    return "every seeded fault repaired"
