"""Small async helpers for tests: connections, and platform rows to start from.

Rows go straight into the tables (the seat-sync trigger still runs), so a test
can build any state, including the faults the invariant checks look for.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg

from carpool_tui.db.connect import as_dict, connect
from carpool_tui.db.repo import job_lock_held


@asynccontextmanager
async def connected(
    dsn: str,
    *,
    purpose: str = "test",
    timeout_ms: int = 60_000,
    read_only: bool = False,
    plain: bool = False,
) -> AsyncIterator[asyncpg.Connection]:
    """A connection for a test's setup or checks, closed on the way out.

    It is opened as the tool opens its own: named ``carpool-tui <purpose>``,
    with a statement timeout of ``timeout_ms`` (0: none) and json decoded.
    ``plain`` opens a bare asyncpg connection instead, with the server's
    defaults and json left as text, as an outside client would.
    """
    if plain:
        conn = await asyncpg.connect(dsn)
    else:
        conn = await connect(
            dsn, purpose=purpose, statement_timeout_ms=timeout_ms, read_only=read_only
        )
    try:
        yield conn
    finally:
        await conn.close()


@asynccontextmanager
async def role_without_connect(dsn: str) -> AsyncIterator[str]:
    """``dsn`` logging in as a new role that holds carpool_ops_operator but may
    not connect to the database: CONNECT is revoked from PUBLIC and the role.

    The role is dropped on the way out (it is the server's, not the
    database's); the database keeps the revoke, as tests drop it anyway.
    """
    role = f"carpool_t_noconnect_{uuid.uuid4().hex[:8]}"
    scheme, rest = dsn.split("://", 1)
    netloc, _, tail = rest.partition("/")
    database = tail.split("?", 1)[0]
    async with connected(dsn, plain=True) as admin:
        await admin.execute(f"CREATE ROLE {role} LOGIN IN ROLE carpool_ops_operator")
        try:
            await admin.execute(
                f"REVOKE CONNECT ON DATABASE {database} FROM PUBLIC, {role}"
            )
            yield f"{scheme}://{role}@{netloc.rsplit('@', 1)[-1]}/{tail}"
        finally:
            await admin.execute(f"DROP OWNED BY {role}")
            await admin.execute(f"DROP ROLE {role}")


async def make_profile(
    conn: asyncpg.Connection, *, name: str | None = None
) -> uuid.UUID:
    """A profile with a unique email."""
    tag = uuid.uuid4().hex[:10]
    return await conn.fetchval(
        "INSERT INTO profiles (email, full_name) VALUES ($1, $2) RETURNING id",
        f"{tag}@example.test",
        name or f"Person {tag}",
    )


async def make_ride(
    conn: asyncpg.Connection,
    driver: uuid.UUID | None = None,
    *,
    total_seats: int = 4,
    departs_in: timedelta = timedelta(days=1),
    available_for: timedelta | None = None,
    status: str = "active",
) -> uuid.UUID:
    """A ride departing ``departs_in`` from now (negative: in the past).

    ``available_for`` sets ``available_until`` relative to now, as for a
    flexible ride.
    """
    if driver is None:
        driver = await make_profile(conn)
    return await conn.fetchval(
        """
        INSERT INTO rides (driver_id, origin, destination, departure_time,
                           available_until, available_seats, total_seats, status)
        VALUES ($1, 'Origin', 'Destination', now() + $2,
                now() + $3, $4, $4, $5)
        RETURNING id
        """,
        driver,
        departs_in,
        available_for,
        total_seats,
        status,
    )


async def make_booking(
    conn: asyncpg.Connection,
    ride: uuid.UUID,
    passenger: uuid.UUID | None = None,
    *,
    seats: int = 1,
    status: str = "pending",
) -> uuid.UUID:
    """A booking inserted directly, without any notification."""
    if passenger is None:
        passenger = await make_profile(conn)
    cancelled = "now()" if status == "cancelled" else "NULL"
    return await conn.fetchval(
        f"""
        INSERT INTO ride_bookings (ride_id, passenger_id, seats_requested, status,
                                   cancelled_at)
        VALUES ($1, $2, $3, $4, {cancelled})
        RETURNING id
        """,
        ride,
        passenger,
        seats,
        status,
    )


async def once(dsn: str, sql: str, *args: Any) -> Any:
    """One statement on a connection of its own; its first value, if any."""
    async with connected(dsn, plain=True) as conn:
        return await conn.fetchval(sql, *args)


async def call_json(conn: asyncpg.Connection, sql: str, *args: Any) -> dict[str, Any]:
    """The jsonb object a function call returns, e.g. ``SELECT expire_rides()``."""
    return as_dict(await conn.fetchval(sql, *args))


async def job(conn: asyncpg.Connection, name: str) -> dict[str, Any]:
    """Run one of the four jobs (or the health summary) by name."""
    return await call_json(conn, f"SELECT {name}()")


async def overlapping_runs(
    dsn: str,
    name: str = "check_system_invariants",
    *,
    hold: str = "LOCK TABLE rides IN ACCESS EXCLUSIVE MODE",
    during: Callable[[], Awaitable[None]] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two overlapping runs of one job, as when an operator starts a job while
    the scheduler's run of it is going: run A takes the job's lock and is held
    up (a third session runs ``hold``, by default keeping ``rides`` locked),
    run B starts after it, cannot take the lock within its lock timeout and is
    recorded failed, ``during`` runs while A is still held up, then A goes on
    and completes. Both through the job function, each on its own connection
    and in its own transaction; A's result, then B's.
    """
    async with (
        connected(dsn, purpose="test-blocker") as blocker,
        connected(dsn, purpose="test-scheduler") as first,
        connected(dsn, purpose="test-operator") as second,
    ):
        await first.execute("SET carpool.lock_timeout = '60s'")
        await second.execute("SET carpool.lock_timeout = '300ms'")
        held = f"SELECT {job_lock_held('$1::text')}"
        tx = blocker.transaction()
        await tx.start()
        try:
            await blocker.execute(hold)
            running = asyncio.create_task(job(first, name))
            for _ in range(200):
                if await blocker.fetchval(held, name):
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError(f"run A of {name} never took its lock")
            refused = await job(second, name)
            if during is not None:
                await during()
        finally:
            await tx.rollback()
        return await running, refused
