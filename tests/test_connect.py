"""Opening connections: a read-only session refuses every write, and the server
is judged as it is when the DSN asks for one kind (target_session_attrs)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, timedelta
from pathlib import Path
from urllib.parse import quote

import asyncpg
import pytest
from factories import connected, make_ride, once, role_without_connect

from carpool_tui.config import dsn_parts
from carpool_tui.db.connect import as_dict, connect, create_pool, normalize_dsn
from carpool_tui.db.errors import (
    ConnectionLost,
    LoginRefused,
    OpsError,
    PermissionMissing,
    SettingsInvalid,
    translate,
)

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
    assert "no server is of the kind target_session_attrs asks for" in str(
        refused.value
    )


async def _reached(dsn: str | None) -> tuple[str, str]:
    """The database a connection by ``dsn`` reached, and its search_path."""
    conn = await connect(dsn, purpose="test")
    try:
        return (
            await conn.fetchval("SELECT current_database()"),
            await conn.fetchval("SHOW search_path"),
        )
    finally:
        await conn.close()


async def test_the_dsn_reaches_the_database_psql_would(ops_dsn: str) -> None:
    """libpq's rules, where asyncpg's differ: a URL's query overrides the URL's
    own host, port and database, and a list of hosts pairs with its list of
    ports one to one (127.0.0.1:1, where nothing listens, first)."""
    named = dsn_parts(ops_dsn)
    user, socket, port, db = (named[k] for k in ("user", "host", "port", "dbname"))
    url = (
        f"postgresql://{user}@127.0.0.1:1/postgres"
        f"?host={quote(socket, safe='')}&port={port}&dbname={db}"
    )
    assert (await _reached(url))[0] == db
    words = f"host=127.0.0.1,{socket} port=1,{port} dbname={db} user={user}"
    assert (await _reached(words))[0] == db


def _service(path: Path, dsn: str, *settings: str) -> None:
    """A service file defining carpool_test: ``dsn``'s server and database, then
    ``settings``."""
    named = dsn_parts(dsn)
    lines = ["[carpool_test]", *(f"{k}={named[k]}" for k in ("host", "port", "user"))]
    path.write_text("\n".join([*lines, f"dbname={named['dbname']}", *settings]) + "\n")


async def test_a_services_options_apply_as_in_libpq(
    ops_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver's own service reading skips a service's options and fails on
    a % in a password; the service is read as libpq reads it."""
    path = tmp_path / "pg_service.conf"
    _service(path, ops_dsn, "password=p%ss", "options=-c search_path=pg_catalog")
    monkeypatch.setenv("PGSERVICEFILE", str(path))
    assert await _reached("service=carpool_test") == (
        dsn_parts(ops_dsn)["dbname"],
        "pg_catalog",
    )
    _service(path, ops_dsn, "channel_binding=require")
    with pytest.raises(OpsError) as refused:
        await _reached("service=carpool_test")
    assert f"Service 'carpool_test' in {path} sets channel_binding=require" in str(
        refused.value
    )


async def test_pgoptions_apply_as_in_libpq(
    ops_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver ignores PGOPTIONS; psql's session would differ from ours."""
    monkeypatch.setenv("PGOPTIONS", "-c search_path=pg_catalog")
    assert (await _reached(ops_dsn))[1] == "pg_catalog"


def test_a_keyword_value_may_hold_a_url() -> None:
    """libpq takes a DSN for a URL only when it starts with a scheme."""
    dsn, _ = normalize_dsn("dbname=carpool application_name='on call://a'")
    assert dsn == "postgresql:///carpool?application_name=on+call%3A%2F%2Fa"
    assert dsn_parts("dbname=carpool application_name='a://b'")["dbname"] == "carpool"
    with pytest.raises(OpsError, match="is a mysql:// URL, not a PostgreSQL one"):
        normalize_dsn("mysql://db.internal/carpool")


async def test_an_option_the_server_does_not_know_is_named_not_an_outage(
    ops_dsn: str,
) -> None:
    """The driver sends a DSN option it does not know to the server as a
    setting; the server's refusal is not an unreachable server."""
    for extra in ("bogus=1", "sslnegotiation=postgres&foo_bar=x"):
        dsn = f"{ops_dsn}{'&' if '?' in ops_dsn else '?'}{extra}"
        with pytest.raises(SettingsInvalid) as refused:
            await connect(dsn, purpose="test")
        said = str(refused.value)
        assert "the server refused a setting the connection asked for" in said
        assert "unrecognized configuration parameter" in said
        assert "Check the options in the DSN's query" in said
        assert "server is up" not in said
    # A setting the server knows, with a value it does not take.
    dsn = (
        f"{ops_dsn}{'&' if '?' in ops_dsn else '?'}options=-c%20statement_timeout%3Dabc"
    )
    with pytest.raises(SettingsInvalid) as refused:
        await connect(dsn, purpose="test")
    said = str(refused.value)
    assert 'invalid value for parameter "statement_timeout"' in said
    assert "has a value the setting does not take" in said
    assert "server is running" not in said
    with pytest.raises(SettingsInvalid, match="sets sslnegotiation=direct"):
        normalize_dsn("host=h dbname=db sslnegotiation=direct")


def test_a_server_starting_or_stopping_is_named_so() -> None:
    """57P03 comes from a server that answered: not a wrong host or port."""
    refused = asyncpg.CannotConnectNowError("the database system is shutting down")
    said = str(translate(refused, doing="Connecting"))
    assert "not taking connections now (the database system is shutting down)" in said
    assert "wait for it" in said and "host, port" not in said


async def test_a_server_of_the_wrong_kind_for_target_session_attrs_is_named(
    ops_dsn: str,
) -> None:
    """The test server is a primary: asking it for a standby is not an
    outage, and the message says which option to look at."""
    dsn = f"{ops_dsn}{'&' if '?' in ops_dsn else '?'}target_session_attrs=read-only"
    with pytest.raises(ConnectionLost) as refused:
        await connect(dsn, purpose="test")
    said = str(refused.value)
    assert "no server is of the kind target_session_attrs asks for" in said
    assert "The server is up" in said and "server is up and accepts" not in said
    assert "SessionAttribute" not in said


def test_a_pgport_that_is_not_a_port_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGPORT", "abc")
    for dsn in (None, "postgresql://u@h/db", "host=h dbname=db"):
        with pytest.raises(SettingsInvalid, match="PGPORT is set to 'abc', which"):
            normalize_dsn(dsn)
    # A port in the DSN wins, and libpq then never reads PGPORT.
    assert (
        normalize_dsn("postgresql://u@h:5433/db")[0]
        == "postgresql://u@/db?host=h&port=5433"
    )


def test_a_keyword_value_that_opens_a_quote_must_close_it() -> None:
    """libpq refuses an unterminated quote; reading the rest as the value would
    name another database (``dbname='carpool_demox`` read as carpool_demo)."""
    for text in ("host=/tmp dbname='carpool_demox", "dbname='a b\\' port=5"):
        with pytest.raises(OpsError) as refused:
            normalize_dsn(text)
        assert "dbname value opens a quote (') that is never closed" in str(
            refused.value
        )
        assert refused.value.hint.startswith("Close the quote")
    assert dsn_parts("dbname='carpool demo' user=ops")["dbname"] == "carpool demo"
    assert dsn_parts(r"dbname='it\'s' user=ops")["dbname"] == "it's"


def test_a_socket_is_reached_without_ssl_whatever_pgsslmode_asks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """libpq ignores sslmode on a Unix socket; on TCP it stays as asked."""
    monkeypatch.setenv("PGSSLMODE", "verify-full")
    dsn, _ = normalize_dsn("host=/run/postgresql,/tmp dbname=carpool")
    assert dsn is not None and dsn.endswith("&sslmode=disable")
    monkeypatch.setenv("PGHOST", "/run/postgresql")
    assert normalize_dsn("dbname=carpool")[0] == "postgresql:///carpool?sslmode=disable"
    for tcp in ("host=db.internal dbname=carpool", "host=/tmp,db.internal"):
        assert "sslmode" not in (normalize_dsn(tcp)[0] or "")
    # A value libpq would refuse is left for the driver to refuse.
    assert "sslmode=nonsense" in (normalize_dsn("host=/tmp sslmode=nonsense")[0] or "")


async def test_pgsslmode_verify_full_does_not_stop_a_socket_connection(
    ops_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As psql connects over the server's socket with PGSSLMODE=verify-full."""
    named = dsn_parts(ops_dsn)
    monkeypatch.setenv("PGSSLMODE", "verify-full")
    monkeypatch.setenv("PGSSLROOTCERT", "/nonexistent/root.crt")
    if named["host"].startswith("/"):
        assert (await _reached(ops_dsn))[0] == named["dbname"]
    else:  # a server on TCP only: the policy still holds there
        with pytest.raises((OpsError, asyncpg.ClientConfigurationError)):
            await _reached(ops_dsn)


async def _refusal_to_expire_early(conn: asyncpg.Connection, ride: object) -> str:
    """The message of ops_expire_ride's refusal to end ``ride`` before it is due."""
    refused = as_dict(
        await conn.fetchval("SELECT ops_expire_ride($1, 'ann', 'early')", ride)
    )
    assert refused["code"] == "not_due"
    return str(refused["error"])


@pytest.mark.parametrize(
    "asked",
    [None, "dsn", "pgoptions"],
    ids=["database-zone", "dsn-zone", "pgoptions-zone"],
)
async def test_times_the_server_writes_read_in_utc_whatever_its_zone(
    ops_dsn: str, asked: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ops layer's messages render times in the session's zone and date
    style; every session the tool opens, connection or pool, writes them in
    ISO form in UTC as the screen does, whatever the database's zone and date
    style or a zone the DSN or PGOPTIONS asks for."""
    name = dsn_parts(ops_dsn)["dbname"]
    await once(ops_dsn, f"ALTER DATABASE {name} SET timezone = 'America/Los_Angeles'")
    await once(ops_dsn, f"ALTER DATABASE {name} SET datestyle = 'SQL, DMY'")
    async with connected(ops_dsn, plain=True) as plain:
        assert await plain.fetchval("SHOW TimeZone") == "America/Los_Angeles"
        ride = await make_ride(plain, departs_in=timedelta(days=3))
        departs = await plain.fetchval(
            "SELECT departure_time FROM rides WHERE id = $1", ride
        )
    dsn = ops_dsn
    if asked == "dsn":
        dsn = f"{ops_dsn}{'&' if '?' in ops_dsn else '?'}timezone=Asia%2FTokyo"
    elif asked == "pgoptions":
        monkeypatch.setenv("PGOPTIONS", "-c TimeZone=Asia/Kolkata")
    in_utc = re.compile(
        re.escape(f"until {departs.astimezone(UTC):%Y-%m-%d %H:%M:%S}")
        + r"(\.\d+)?\+00;"
    )
    conn = await connect(dsn, purpose="test")
    try:
        said = await _refusal_to_expire_early(conn, ride)
        assert in_utc.search(said), said
        assert await conn.fetchval("SHOW TimeZone") == "UTC"
        assert await conn.fetchval("SHOW DateStyle") == "ISO, YMD"
    finally:
        await conn.close()
    pool = await create_pool(dsn, purpose="test", max_size=2)
    try:
        async with pool.acquire() as pooled:
            said = await _refusal_to_expire_early(pooled, ride)
            assert in_utc.search(said), said
    finally:
        await pool.close()


@pytest.mark.parametrize("pooled", [False, True], ids=["connection", "pool"])
async def test_a_role_that_may_not_connect_is_told_to_ask_for_connect(
    ops_dsn: str, pooled: bool
) -> None:
    """A login refused for want of CONNECT names that privilege on that
    database: the ops roles, which the role already holds here, carry no
    CONNECT, so asking for them cannot help. One full stop between the
    server's detail and the advice."""
    name = dsn_parts(ops_dsn)["dbname"]
    async with role_without_connect(ops_dsn) as dsn:
        with pytest.raises(PermissionMissing) as refused:
            if pooled:
                pool = await create_pool(dsn, purpose="test")
                await pool.close()
            else:
                conn = await connect(dsn, purpose="test")
                await conn.close()
    said = str(refused.value)
    assert said == (
        f'Connecting to the database: permission denied for database "{name}"'
        " (this role lacks the CONNECT privilege on it). Ask for CONNECT on"
        f' database "{name}" to be granted to this role; carpool_ops_viewer and'
        " carpool_ops_operator do not carry it."
    )


async def test_a_role_without_login_is_told_so_not_to_check_the_password(
    ops_dsn: str,
) -> None:
    """The ops roles are NOLOGIN: one given as the DSN's user (with the right
    password) is told to log in as a role granted it."""
    role = f"carpool_t_nologin_{uuid.uuid4().hex[:8]}"
    scheme, rest = ops_dsn.split("://", 1)
    host_and_db = rest.rsplit("@", 1)[-1]
    async with connected(ops_dsn, plain=True) as admin:
        await admin.execute(
            f"CREATE ROLE {role} NOLOGIN PASSWORD 'pw' IN ROLE carpool_ops_viewer"
        )
        try:
            with pytest.raises(LoginRefused) as refused:
                await connect(f"{scheme}://{role}:pw@{host_and_db}", purpose="test")
        finally:
            await admin.execute(f"DROP ROLE {role}")
    said = str(refused.value)
    assert said.startswith(
        "Connecting to the database: the server accepted the user but it may not"
        f' log in (role "{role}" is not permitted to log in). It is a NOLOGIN role'
    )
    assert "password" not in said


async def test_a_role_at_its_connection_limit_is_told_so_not_to_check_the_server(
    ops_dsn: str,
) -> None:
    role = f"carpool_t_nolimit_{uuid.uuid4().hex[:8]}"
    scheme, rest = ops_dsn.split("://", 1)
    host_and_db = rest.rsplit("@", 1)[-1]
    async with connected(ops_dsn, plain=True) as admin:
        await admin.execute(
            f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 0 PASSWORD 'pw'"
            " IN ROLE carpool_ops_viewer"
        )
        try:
            with pytest.raises(ConnectionLost) as refused:
                await connect(f"{scheme}://{role}:pw@{host_and_db}", purpose="test")
        finally:
            await admin.execute(f"DROP ROLE {role}")
    assert refused.value.retryable
    said = str(refused.value)
    assert said.startswith(
        "Connecting to the database: no connection is free (too many connections"
        f' for role "{role}"). Close other sessions of this role, or ask for a'
        " higher limit"
    ), said


async def test_a_missing_create_on_the_database_is_not_taken_for_connect(
    ops_dsn: str,
) -> None:
    """The server words a missing CREATE on the database as it does a missing
    CONNECT; only the refusal at login is about CONNECT."""
    async with connected(ops_dsn) as conn:
        await conn.execute("SET ROLE carpool_ops_operator")
        with pytest.raises(asyncpg.InsufficientPrivilegeError) as denied:
            await conn.execute("CREATE SCHEMA not_allowed_here")
    assert "permission denied for database" in str(denied.value)
    said = str(translate(denied.value, doing="Migrating"))
    assert "CONNECT" not in said


async def test_a_server_message_ending_in_a_full_stop_gets_no_second_one(
    ops_dsn: str,
) -> None:
    """The server's DETAIL and HINT lines end with a full stop; the advice
    after them starts with no second one."""
    async with connected(ops_dsn) as conn:
        with pytest.raises(asyncpg.UndefinedFunctionError) as missing:
            await conn.execute("SELECT ops_expire_ride(1)")
    assert str(missing.value).endswith("casts.")
    said = str(translate(missing.value, doing="Expiring the ride"))
    assert "casts. This database lacks the carpool ops functions" in said
    assert "casts.." not in said
