"""Opening named, time-limited connections and pools to PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg

from carpool_tui.db.errors import translate

CONNECT_TIMEOUT_S = 10.0


async def _init_connection(conn: asyncpg.Connection) -> None:
    """Decode json and jsonb into Python values on every connection."""
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


def _server_settings(
    purpose: str, statement_timeout_ms: int, read_only: bool, lock_timeout_ms: int
) -> dict[str, str]:
    settings = {
        "application_name": f"carpool-tui {purpose}"[:63],
        "statement_timeout": str(statement_timeout_ms),
        "lock_timeout": str(lock_timeout_ms),
        "idle_in_transaction_session_timeout": "60000",
    }
    if read_only:
        settings["default_transaction_read_only"] = "on"
    return settings


async def connect(
    dsn: str | None,
    *,
    purpose: str,
    statement_timeout_ms: int = 5_000,
    lock_timeout_ms: int = 2_000,
    read_only: bool = False,
) -> asyncpg.Connection:
    """One connection that names itself and carries a statement timeout."""
    try:
        conn: asyncpg.Connection = await asyncpg.connect(
            dsn,
            timeout=CONNECT_TIMEOUT_S,
            server_settings=_server_settings(
                purpose, statement_timeout_ms, read_only, lock_timeout_ms
            ),
        )
    except Exception as exc:
        raise translate(exc, doing="Connecting to the database") from exc
    await _init_connection(conn)
    return conn


async def create_pool(
    dsn: str | None,
    *,
    purpose: str,
    statement_timeout_ms: int = 5_000,
    read_only: bool = False,
    max_size: int = 3,
) -> asyncpg.Pool:
    """A small pool for polling; each connection is named and time-limited."""
    try:
        pool = await asyncio.wait_for(
            asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=max_size,
                timeout=CONNECT_TIMEOUT_S,
                server_settings=_server_settings(
                    purpose, statement_timeout_ms, read_only, 2_000
                ),
                init=_init_connection,
            ),
            timeout=CONNECT_TIMEOUT_S * 2,
        )
    except Exception as exc:
        raise translate(exc, doing="Connecting to the database") from exc
    assert pool is not None
    return pool


def as_dict(value: Any) -> dict[str, Any]:
    """A jsonb function result as a dict, whether the codec decoded it or not."""
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, dict):
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return value
