"""Opening connections: a read-only session refuses every write, and the server
is judged as it is when the DSN asks for one kind (target_session_attrs)."""

from __future__ import annotations

import asyncpg
import pytest
from factories import once

from carpool_tui.db.connect import connect, create_pool
from carpool_tui.db.errors import OpsError

WRITE = "CREATE TABLE written_in_a_read_only_session (id int)"
WRITTEN = "SELECT to_regclass('written_in_a_read_only_session') IS NOT NULL"


def _asking(dsn: str, attrs: str) -> str:
    """The DSN with target_session_attrs set to ``attrs``."""
    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}target_session_attrs={attrs}"


async def test_a_read_only_connection_to_a_read_write_server_refuses_writes(
    ops_dsn: str,
) -> None:
    """The session's read-only default must not make the server look read-only
    to the driver, nor stop being read-only for that."""
    conn = await connect(_asking(ops_dsn, "read-write"), purpose="test", read_only=True)
    try:
        assert await conn.fetchval("SHOW transaction_read_only") == "on"
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await conn.execute(WRITE)
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            async with conn.transaction():
                await conn.execute(WRITE)
    finally:
        await conn.close()
    assert await once(ops_dsn, WRITTEN) is False


async def test_every_connection_of_a_read_only_pool_stays_read_only(
    ops_dsn: str,
) -> None:
    """Each connection the pool opens refuses writes, and still does after it
    was released and taken again."""
    pool = await create_pool(
        _asking(ops_dsn, "read-write"), purpose="test", read_only=True, max_size=3
    )
    try:
        for _ in range(2):
            held = [await pool.acquire() for _ in range(3)]
            try:
                for conn in held:
                    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                        await conn.execute(WRITE)
            finally:
                for conn in held:
                    await pool.release(conn)
    finally:
        await pool.close()
    assert await once(ops_dsn, WRITTEN) is False


@pytest.mark.parametrize("pooled", [False, True], ids=["connection", "pool"])
async def test_a_read_only_session_does_not_pass_for_a_read_only_server(
    ops_dsn: str, pooled: bool
) -> None:
    """target_session_attrs=read-only asks for a server that takes no writes;
    a primary is not one because this session will not write."""
    dsn = _asking(ops_dsn, "read-only")
    with pytest.raises(OpsError) as refused:
        if pooled:
            pool = await create_pool(dsn, purpose="test", read_only=True)
            await pool.close()
        else:
            conn = await connect(dsn, purpose="test", read_only=True)
            await conn.close()
    assert "None of the hosts match" in str(refused.value)
