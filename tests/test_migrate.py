"""The migration runner: applies once, records checksums, refuses changed files."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from asyncpg.transaction import Transaction
from factories import connected

from carpool_tui.db.errors import NotMigrated, OpsError
from carpool_tui.db.migrate import PlatformPresent, load, migrate, plan, read_sql


async def test_fresh_base_and_ops_apply_then_nothing_pending(empty_dsn: str) -> None:
    async with connected(empty_dsn, timeout_ms=5_000) as conn:
        done = await migrate(conn, ("base", "ops"))
        assert {i.state for i in done} == {"pending"}
        again = await plan(conn, ("base", "ops"))
        assert {i.state for i in again} == {"applied"}
        assert await conn.fetchval("SELECT to_regclass('rides') IS NOT NULL")
        rows = await conn.fetchval("SELECT count(*) FROM ops_schema_migrations")
        assert rows == len(load(("base", "ops")))


async def test_ops_group_refuses_database_without_platform(empty_dsn: str) -> None:
    async with connected(empty_dsn, timeout_ms=5_000) as conn:
        with pytest.raises(NotMigrated, match="no platform tables"):
            await migrate(conn, ("ops",))


async def test_base_group_refuses_a_platform_it_did_not_create(
    empty_dsn: str,
) -> None:
    """The platform's own tables, unrecorded: base would fail on its first
    CREATE, so it refuses before it changes anything, dry run or not."""
    async with connected(empty_dsn, timeout_ms=5_000) as conn:
        async with conn.transaction():
            await conn.execute(read_sql("base/0001_platform_schema.sql"))
        for dry_run in (True, False):
            with pytest.raises(PlatformPresent) as refused:
                await migrate(conn, ("base", "ops"), dry_run=dry_run)
            assert "already has the platform schema" in refused.value.message
            assert "profiles, vehicles, rides" in refused.value.message
            assert "rerun without --base" in refused.value.hint
        ledger = await conn.fetchval("SELECT to_regclass('ops_schema_migrations')")
        assert ledger is None
        # Without base the ops layer goes on top, and base stays unrecorded.
        done = await migrate(conn, ("ops",))
        assert all(i.state == "pending" for i in done)
        assert not any(
            i.migration.name.startswith("base/") for i in await plan(conn, ("ops",))
        )


async def test_base_group_upgrades_a_platform_it_created(base_dsn: str) -> None:
    """A recorded base group is this tool's own: later base files still apply."""
    async with connected(base_dsn, timeout_ms=5_000) as conn:
        await conn.execute(
            "DELETE FROM ops_schema_migrations"
            " WHERE name = 'base/0002_booking_traffic.sql'"
        )
        await conn.execute(
            "DROP FUNCTION request_booking, confirm_booking, cancel_booking"
        )
        done = await migrate(conn, ("base",))
        pending = [i.migration.name for i in done if i.state == "pending"]
        assert pending == ["base/0002_booking_traffic.sql"]


async def test_two_migrations_at_once_both_succeed(empty_dsn: str) -> None:
    async with (
        connected(empty_dsn, timeout_ms=0) as first,
        connected(empty_dsn, timeout_ms=0) as second,
    ):
        one, two = await asyncio.gather(
            migrate(first, ("base", "ops")), migrate(second, ("base", "ops"))
        )
        applied = [sum(i.state == "pending" for i in items) for items in (one, two)]
        assert sorted(applied) == [0, len(load(("base", "ops")))]
        rows = await first.fetchval("SELECT count(*) FROM ops_schema_migrations")
        assert rows == len(load(("base", "ops")))


async def _hold_snapshot(conn: asyncpg.Connection) -> Transaction:
    """A report's transaction, open with its snapshot taken, as a backup holds it."""
    report = conn.transaction(isolation="repeatable_read")
    await report.start()
    await conn.fetchval("SELECT count(*) FROM profiles")
    return report


async def test_a_concurrent_index_build_waits_for_an_older_transaction(
    empty_dsn: str,
) -> None:
    async with (
        connected(empty_dsn, purpose="migrate", timeout_ms=0) as conn,
        connected(empty_dsn, timeout_ms=5_000) as reader,
    ):
        await migrate(conn, ("base",))
        # A report holding its snapshot for longer than the session's 2 s lock
        # timeout: the index builds must wait for it, not fail.
        report = await _hold_snapshot(reader)

        async def finish_report() -> None:
            await asyncio.sleep(3.5)
            await report.commit()

        done, _ = await asyncio.gather(migrate(conn, ("ops",)), finish_report())
        assert all(i.state == "pending" for i in done)
        assert await conn.fetchval("SHOW lock_timeout") == "2s"
        invalid = await conn.fetchval(
            "SELECT count(*) FROM pg_index WHERE NOT indisvalid"
        )
        assert invalid == 0


async def test_a_migrate_whose_session_is_ended_says_so(empty_dsn: str) -> None:
    async with (
        connected(empty_dsn, purpose="migrate", timeout_ms=0) as conn,
        connected(empty_dsn, timeout_ms=5_000) as admin,
    ):
        await migrate(conn, ("base",))
        # Keep the index builds waiting, then end the migrating session.
        report = await _hold_snapshot(admin)

        async def end_it() -> None:
            await asyncio.sleep(1.5)
            await admin.fetchval(
                "SELECT pg_terminate_backend($1)", conn.get_server_pid()
            )

        with pytest.raises(OpsError, match="cannot reach the database"):
            await asyncio.gather(migrate(conn, ("ops",)), end_it())
        await report.rollback()
