"""Grants (rule 9): nothing runs for anon, authenticated or PUBLIC; the
viewer reads and previews; the operator also runs jobs and writes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from factories import call_json, connected, job, make_ride

from carpool_tui.db.connect import connect

JOBS = (
    "expire_rides",
    "reconcile_seat_counts",
    "repair_missing_notifications",
    "check_system_invariants",
)
OPS_FUNCTIONS = """
    SELECT p.oid::regprocedure::text
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname = 'public'
       AND (p.proname LIKE 'ops\\_%' OR p.proname = ANY($1::text[]))
"""


@pytest.fixture
async def nobody(ops_dsn: str) -> AsyncIterator[str]:
    """A role with no grants at all: it has only what PUBLIC has."""
    name = f"carpool_test_nobody_{uuid.uuid4().hex[:8]}"
    conn = await connect(ops_dsn, purpose="test-roles")
    await conn.execute(f"CREATE ROLE {name} NOLOGIN")
    try:
        yield name
    finally:
        await conn.execute(f"DROP ROLE {name}")
        await conn.close()


async def _all_functions(conn: asyncpg.Connection) -> list[str]:
    names = [*JOBS, "get_system_health_summary"]
    return [r[0] for r in await conn.fetch(OPS_FUNCTIONS, names)]


async def _assert_locked_out(dsn: str, nobody: str) -> None:
    async with connected(dsn, timeout_ms=5_000) as conn:
        functions = await _all_functions(conn)
        assert len(functions) > 20
        for role in ("anon", "authenticated", nobody):
            allowed = [
                fn
                for fn in functions
                if await conn.fetchval(
                    "SELECT has_function_privilege($1, $2, 'EXECUTE')", role, fn
                )
            ]
            assert allowed == [], role
            await conn.execute(f"SET ROLE {role}")
            try:
                for name in (*JOBS, "get_system_health_summary"):
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await conn.fetchval(f"SELECT {name}()")
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.fetchval(
                        "SELECT ops_run_job('expire_rides', 'ops_expire_rides_work')"
                    )
            finally:
                await conn.execute("RESET ROLE")


async def test_api_roles_and_public_cannot_execute_anything(
    ops_dsn: str, nobody: str
) -> None:
    await _assert_locked_out(ops_dsn, nobody)


async def test_deployed_grants_are_revoked_on_upgrade(
    legacy_ops_dsn: str, nobody: str
) -> None:
    """The deployed SQL granted its jobs to anon and authenticated."""
    await _assert_locked_out(legacy_ops_dsn, nobody)


async def test_viewer_reads_and_previews_but_cannot_write(
    ops_conn: asyncpg.Connection,
) -> None:
    ride = await make_ride(ops_conn)
    await ops_conn.execute("SET ROLE carpool_ops_viewer")
    try:
        health = await job(ops_conn, "get_system_health_summary")
        assert health["total_rides"] == 1
        preview = await call_json(ops_conn, "SELECT ops_preview_seat_fix($1)", ride)
        assert preview["success"] is True
        assert await ops_conn.fetchval("SELECT count(*) FROM system_job_log") == 0
        assert await ops_conn.fetchval("SELECT ops_layer_version()")
        for name in JOBS:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await ops_conn.fetchval(f"SELECT {name}()")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await ops_conn.fetchval(
                "SELECT ops_apply_seat_fix($1, 4, 4, 'eve', 'x')", ride
            )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await ops_conn.execute("UPDATE rides SET available_seats = 0")
    finally:
        await ops_conn.execute("RESET ROLE")


async def test_operator_runs_jobs_and_writes(ops_conn: asyncpg.Connection) -> None:
    ride = await make_ride(ops_conn)
    await ops_conn.execute("UPDATE rides SET available_seats = 3 WHERE id = $1", ride)
    await ops_conn.execute("SET ROLE carpool_ops_operator")
    try:
        for name in JOBS:
            if name != "reconcile_seat_counts":  # it would fix the drift first
                assert (await job(ops_conn, name))["success"] is True
        fixed = await call_json(
            ops_conn, "SELECT ops_apply_seat_fix($1, 3, 4, 'op', 'check')", ride
        )
        assert fixed["success"] is True
        assert (await job(ops_conn, "reconcile_seat_counts"))["success"] is True
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await ops_conn.execute("DELETE FROM system_job_log")
    finally:
        await ops_conn.execute("RESET ROLE")
