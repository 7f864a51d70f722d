"""Fixtures: a real PostgreSQL server and a fresh database for every test.

The server is the embedded one unless ``CARPOOL_TEST_DSN`` names another (a
role that may create databases). Three template databases are built once per
session (platform schema only, legacy deployed functions, our ops layer) and
each test gets its own copy of one of them.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from factories import connected

from carpool_tui.config import CONFIG_ENV, LOG_FILE_ENV
from carpool_tui.db.embedded import EmbeddedServer
from carpool_tui.db.migrate import apply_legacy, migrate

# Unique per test session, so that two sessions can share one external server.
_SESSION = uuid.uuid4().hex[:8]

# The tests never read the operator's config nor write into the operator's
# action or diagnostics log: those default to directories of this test run,
# for the CLI runs the tests start too.
_OWN_HOME = Path(tempfile.mkdtemp(prefix="carpool-tui-tests-home-"))
os.environ["XDG_STATE_HOME"] = str(_OWN_HOME / "state")
os.environ["XDG_CONFIG_HOME"] = str(_OWN_HOME / "config")
for _name in (LOG_FILE_ENV, CONFIG_ENV):
    os.environ.pop(_name, None)
atexit.register(shutil.rmtree, _OWN_HOME, ignore_errors=True)
TEMPLATES = {
    kind: f"carpool_tpl_{kind}_{_SESSION}"
    for kind in ("base", "legacy", "ops", "legacy_ops")
}


def _with_database(dsn: str, database: str) -> str:
    """The same server DSN pointed at another database."""
    if "?" in dsn:
        head, query = dsn.split("?", 1)
        query = "?" + query
    else:
        head, query = dsn, ""
    scheme, rest = head.split("://", 1)
    if "/" in rest:
        rest = rest.split("/", 1)[0]
    return f"{scheme}://{rest}/{database}{query}"


class PgServer:
    """A reachable PostgreSQL server and a way to make databases on it."""

    def __init__(self, admin_dsn: str):
        self.admin_dsn = admin_dsn

    def dsn(self, database: str) -> str:
        return _with_database(self.admin_dsn, database)

    def template(self, kind: str) -> str:
        """The name of this session's template database of a kind ("legacy", ...)."""
        return TEMPLATES[kind]

    async def create_database(self, template: str | None = None) -> str:
        name = f"carpool_t_{uuid.uuid4().hex[:12]}"
        async with connected(self.admin_dsn, plain=True) as conn:
            tpl = f" TEMPLATE {template}" if template else ""
            for attempt in range(20):
                try:
                    await conn.execute(f"CREATE DATABASE {name}{tpl}")
                    break
                except asyncpg.ObjectInUseError:
                    if attempt == 19:
                        raise
                    await asyncio.sleep(0.1)
        return name

    async def drop_database(self, name: str) -> None:
        async with connected(self.admin_dsn, plain=True) as conn:
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def _drop_templates(server: PgServer) -> None:
    async with connected(server.admin_dsn, plain=True) as conn:
        for name in TEMPLATES.values():
            await conn.execute(
                f"UPDATE pg_database SET datistemplate = false WHERE datname = '{name}'"
            )
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def _build_templates(server: PgServer) -> None:
    await _drop_templates(server)
    async with connected(server.admin_dsn, plain=True) as conn:
        for name in TEMPLATES.values():
            await conn.execute(f"CREATE DATABASE {name}")
    for kind, name in TEMPLATES.items():
        async with connected(
            server.dsn(name), purpose="test-setup", timeout_ms=120_000
        ) as db:
            await migrate(db, ("base",))
            if kind in ("legacy", "legacy_ops"):
                await apply_legacy(db)
            if kind in ("ops", "legacy_ops"):
                await migrate(db, ("ops",))
    async with connected(server.admin_dsn, plain=True) as conn:
        for name in TEMPLATES.values():
            await conn.execute(
                f"UPDATE pg_database SET datistemplate = true WHERE datname = '{name}'"
            )


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The PostgreSQL server the whole test session uses, with templates built."""
    external = os.environ.get("CARPOOL_TEST_DSN")
    embedded: EmbeddedServer | None = None
    base: Path | None = None
    if external:
        server = PgServer(external)
    else:
        base = Path(tempfile.mkdtemp(prefix="carpool-tui-tests-", dir="/tmp"))
        embedded = EmbeddedServer(base / "pgdata", delete_on_stop=True)
        server = PgServer(embedded.start())
    asyncio.run(_build_templates(server))
    try:
        yield server
    finally:
        if embedded is not None:
            embedded.stop()
        else:
            asyncio.run(_drop_templates(server))
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)


async def _fresh(pg_server: PgServer, kind: str | None) -> AsyncIterator[str]:
    template = TEMPLATES[kind] if kind else None
    name = await pg_server.create_database(template)
    try:
        yield pg_server.dsn(name)
    finally:
        await pg_server.drop_database(name)


@pytest.fixture
async def ops_dsn(pg_server: PgServer) -> AsyncIterator[str]:
    """A fresh database with the platform schema and our ops layer."""
    async for dsn in _fresh(pg_server, "ops"):
        yield dsn


@pytest.fixture
async def legacy_dsn(pg_server: PgServer) -> AsyncIterator[str]:
    """A fresh database in the legacy shape: platform schema + deployed functions."""
    async for dsn in _fresh(pg_server, "legacy"):
        yield dsn


@pytest.fixture
async def legacy_ops_dsn(pg_server: PgServer) -> AsyncIterator[str]:
    """A legacy database upgraded with our ops layer on top."""
    async for dsn in _fresh(pg_server, "legacy_ops"):
        yield dsn


@pytest.fixture
async def base_dsn(pg_server: PgServer) -> AsyncIterator[str]:
    """A fresh database with only the platform schema."""
    async for dsn in _fresh(pg_server, "base"):
        yield dsn


@pytest.fixture
async def empty_dsn(pg_server: PgServer) -> AsyncIterator[str]:
    """A fresh, empty database."""
    async for dsn in _fresh(pg_server, None):
        yield dsn


@pytest.fixture
async def ops_conn(ops_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a fresh ops-layer database."""
    async with connected(ops_dsn) as conn:
        yield conn


@pytest.fixture
async def legacy_conn(legacy_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a fresh legacy-shape database."""
    async with connected(legacy_dsn) as conn:
        yield conn
