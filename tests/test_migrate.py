"""The migration runner: applies once, records checksums, refuses changed files."""

from __future__ import annotations

import asyncio

import pytest

from carpool_tui.db.connect import connect
from carpool_tui.db.errors import NotMigrated
from carpool_tui.db.migrate import load, migrate, plan


async def test_fresh_base_and_ops_apply_then_nothing_pending(empty_dsn: str) -> None:
    conn = await connect(empty_dsn, purpose="test")
    try:
        done = await migrate(conn, ("base", "ops"))
        assert {i.state for i in done} == {"pending"}
        again = await plan(conn, ("base", "ops"))
        assert {i.state for i in again} == {"applied"}
        assert await conn.fetchval("SELECT to_regclass('rides') IS NOT NULL")
        rows = await conn.fetchval("SELECT count(*) FROM ops_schema_migrations")
        assert rows == len(load(("base", "ops")))
    finally:
        await conn.close()


async def test_ops_group_refuses_database_without_platform(empty_dsn: str) -> None:
    conn = await connect(empty_dsn, purpose="test")
    try:
        with pytest.raises(NotMigrated, match="no platform tables"):
            await migrate(conn, ("ops",))
    finally:
        await conn.close()


async def test_two_migrations_at_once_both_succeed(empty_dsn: str) -> None:
    first = await connect(empty_dsn, purpose="test", statement_timeout_ms=0)
    second = await connect(empty_dsn, purpose="test", statement_timeout_ms=0)
    try:
        one, two = await asyncio.gather(
            migrate(first, ("base", "ops")), migrate(second, ("base", "ops"))
        )
        applied = [sum(i.state == "pending" for i in items) for items in (one, two)]
        assert sorted(applied) == [0, len(load(("base", "ops")))]
        rows = await first.fetchval("SELECT count(*) FROM ops_schema_migrations")
        assert rows == len(load(("base", "ops")))
    finally:
        await first.close()
        await second.close()
