"""Opening named, time-limited connections and pools to PostgreSQL."""

from __future__ import annotations

import asyncio
import configparser
import json
import os
import re
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import asyncpg

from carpool_tui.db.errors import OpsError, SettingsInvalid, translate

CONNECT_TIMEOUT_S = 10.0
_KEYWORD = re.compile(r"\s*(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)")
_URL_PARTS = {"user", "password", "host", "port", "dbname"}
_BAD_DSN_HINT = "Use a DSN like postgresql://user:password@host:5432/dbname."
# libpq options the driver does not know, which it would send to the server as
# settings (and the server refuses). These only tune the client's TCP socket or
# name a fallback, so going without them reaches the same server as safely.
_CLIENT_TUNING = {
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "fallback_application_name",
    "sslcompression",
    "sslsni",
    "load_balance_hosts",
}
# Options that ask for more than the driver gives unless they are left at a
# value that asks for nothing: these only are dropped.
_ASKS_NOTHING = {
    "gssencmode": {"disable", "prefer"},
    "channel_binding": {"disable", "prefer"},
}
# libpq options that restrict how it connects or authenticates; the driver
# would ignore them, so a connection psql refuses could be made.
_UNSUPPORTED = {
    "gssencmode",
    "channel_binding",
    "require_auth",
    "requirepeer",
    "sslcertmode",
    "sslcrldir",
    "sslkeylogfile",
    "gssdelegation",
    "replication",
    "min_protocol_version",
    "max_protocol_version",
    "oauth_issuer",
    "oauth_client_id",
    "oauth_client_secret",
    "oauth_scope",
    "scram_client_key",
    "scram_server_key",
}
_UNSUPPORTED_VARIABLES = {
    "PGGSSENCMODE": "gssencmode",
    "PGCHANNELBINDING": "channel_binding",
    "PGREQUIREAUTH": "require_auth",
    "PGREQUIREPEER": "requirepeer",
    "PGSSLCERTMODE": "sslcertmode",
    "PGSSLCRLDIR": "sslcrldir",
    "PGMINPROTOCOLVERSION": "min_protocol_version",
    "PGMAXPROTOCOLVERSION": "max_protocol_version",
}


def normalize_dsn(dsn: str | None) -> tuple[str | None, float]:
    """A DSN asyncpg accepts, and the connect timeout it asked for.

    libpq's ``key=value`` form becomes a URL, and ``connect_timeout`` (a libpq
    option asyncpg would send to the server as a setting) becomes the timeout.
    A server address asyncpg cannot honour (``hostaddr``, ``PGHOSTADDR``) is
    refused: asyncpg would connect to another server than libpq does. So is a
    service asyncpg would connect without (see ``_check_service``), and a libpq
    option that restricts the connection (``_UNSUPPORTED``). libpq options that
    only tune the client (``_CLIENT_TUNING``) are dropped: asyncpg would send
    them to the server as settings, which it refuses.
    """
    _refuse_pghostaddr()
    _refuse_unsupported_variables()
    default_service = os.environ.get("PGSERVICE", "").strip()
    if dsn is None:
        if not default_service:
            return None, CONNECT_TIMEOUT_S
        dsn = "postgresql://"
    dsn = dsn.strip()
    keywords = "://" not in dsn and "=" in dsn
    if keywords:
        dsn = _keywords_to_url(dsn)
    try:
        parts = urlsplit(dsn)
    except ValueError as exc:  # an unclosed [ of an IPv6 address, say
        raise OpsError(
            f"The DSN is not a valid connection URL ({exc})", _BAD_DSN_HINT
        ) from None
    query = parse_qsl(parts.query, keep_blank_values=True)
    timeout = CONNECT_TIMEOUT_S
    kept = []
    for key, value in query:
        if key == "hostaddr":
            _refuse_hostaddr(value)
        if key in _CLIENT_TUNING or value in _ASKS_NOTHING.get(key, ()):
            continue
        if key in _UNSUPPORTED:
            _refuse_unsupported(f"The DSN sets {key}={value}", f"Remove {key}")
        if key == "connect_timeout":
            try:
                timeout = max(1.0, float(value))
            except ValueError:
                raise OpsError(
                    f"connect_timeout={value!r} in the DSN is not a number of seconds",
                    _BAD_DSN_HINT,
                ) from None
        else:
            kept.append((key, value))
    services = [value for key, value in kept if key == "service"]
    if services:
        _check_service(services[-1], "The DSN")
    elif default_service:
        # libpq reads PGSERVICE for a DSN that names no service; asyncpg does
        # not, so it goes into the DSN.
        _check_service(default_service, f"PGSERVICE ({default_service})")
        kept.append(("service", default_service))
    host_port = parts.netloc.rsplit("@", 1)[-1]
    if "," not in host_port:  # asyncpg checks multi-host lists itself
        try:
            port = parts.port
        except ValueError:
            port = -1
        if port is not None and not 0 < port < 65536:
            raise OpsError(
                f"The port in the DSN is not a port number (1-65535): {host_port}",
                _BAD_DSN_HINT,
            )
    path = parts.path
    if path == "/" and not keywords:
        # libpq reads a URL's empty database name as none given, so that
        # PGDATABASE or a service's dbname applies; asyncpg would connect to an
        # empty name, which the server takes as the user's name.
        path = ""
    return urlunsplit(parts._replace(path=path, query=urlencode(kept))), timeout


def _refuse_unsupported(what: str, way_out: str) -> NoReturn:
    """Refuse a libpq option that restricts the connection, which the driver
    would ignore: it could connect where psql refuses to."""
    raise SettingsInvalid(
        f"{what}, a libpq option carpool-tui's PostgreSQL driver cannot honour: it"
        " would connect without what the option asks for",
        f"{way_out} if the connection is acceptable without it.",
    )


def _refuse_unsupported_variables() -> None:
    """Refuse a set PG* variable for an option in ``_UNSUPPORTED``."""
    for variable, option in _UNSUPPORTED_VARIABLES.items():
        value = os.environ.get(variable, "").strip()
        if value and value not in _ASKS_NOTHING.get(option, ()):
            _refuse_unsupported(f"{variable} is set ({value})", f"Unset {variable}")


def _refuse_hostaddr(address: str) -> NoReturn:
    """Refuse a DSN's ``hostaddr``: asyncpg has no such option and would send it
    to the server as a setting, after connecting to the DSN's host, PGHOST or the
    default socket, a server other than the one libpq (psql) would reach."""
    raise SettingsInvalid(
        f"The DSN sets hostaddr={address}, which carpool-tui's PostgreSQL driver"
        " does not support: it would connect to the DSN's host, PGHOST or the"
        " local socket instead",
        _use_host(address),
    )


def _use_host(address: str) -> str:
    """The way out of a hostaddr the driver cannot honour."""
    return (
        f"Use host= instead (host={address or 'ADDRESS'}: host= takes an IP"
        " address too)."
    )


def _refuse_ignored(variable: str, consequence: str, remedy: str) -> None:
    """Refuse a set libpq variable that asyncpg ignores; ``remedy`` may name
    the value as ``{value}``."""
    value = os.environ.get(variable, "").strip()
    if value:
        raise SettingsInvalid(
            f"{variable} is set ({value}), which carpool-tui's PostgreSQL driver"
            f" ignores: {consequence}",
            remedy.format(value=value),
        )


def _refuse_pghostaddr() -> None:
    """Refuse a set ``PGHOSTADDR``: libpq connects to that address whatever the
    DSN's host, and asyncpg ignores it, so the two would reach different servers."""
    _refuse_ignored(
        "PGHOSTADDR",
        "it would connect to another server than psql does",
        "Unset PGHOSTADDR and name the server in host= or PGHOST instead"
        " (host={value}).",
    )


def _check_service(service: str, named_by: str) -> None:
    """Refuse a service asyncpg would silently connect without.

    libpq fails on a service it cannot find, and also reads the system-wide
    service file. asyncpg reads only PGSERVICEFILE (else ~/.pg_service.conf),
    ignores a service not defined there, and skips a service's hostaddr: each
    time it would connect by the rest of the DSN, the PG* variables or the
    local socket, to another database. ``named_by`` says where the service was
    named (the DSN, PGSERVICE).
    """
    path = _service_file()
    if path is None:
        raise SettingsInvalid(
            f"{named_by} names service {service!r}, but carpool-tui's PostgreSQL"
            " driver finds no service file (PGSERVICEFILE is not set and there is"
            " no home directory), and would connect without it",
            "Set PGSERVICEFILE to the file that defines the service.",
        )
    services = configparser.ConfigParser(interpolation=None)
    try:
        services.read(path, encoding="utf-8")  # a missing file defines nothing
    except (configparser.Error, OSError, UnicodeDecodeError) as exc:
        raise SettingsInvalid(
            f"The service file {path} cannot be read ({exc})",
            "Correct the file, or set PGSERVICEFILE to another one.",
        ) from None
    if not services.has_section(service):
        raise SettingsInvalid(
            f"{named_by} names service {service!r}, which {path} does not define:"
            " carpool-tui's PostgreSQL driver reads no other service file, and"
            " would connect without it",
            "Define the service in that file, or set PGSERVICEFILE to the file"
            " that defines it.",
        )
    address = services.get(service, "hostaddr", fallback=None)
    if address is not None:
        raise SettingsInvalid(
            f"Service {service!r} in {path} sets hostaddr={address}, which"
            " carpool-tui's PostgreSQL driver does not support: it would connect"
            " to the service's host, PGHOST or the local socket instead",
            _use_host(address),
        )


def _service_file() -> Path | None:
    """The one service file asyncpg reads: PGSERVICEFILE, else
    ~/.pg_service.conf; None without either."""
    named = os.environ.get("PGSERVICEFILE")
    if named is not None:
        return Path(named)
    try:
        return Path.home() / ".pg_service.conf"
    except (RuntimeError, KeyError):
        return None


def _keywords_to_url(text: str) -> str:
    pairs: dict[str, str] = {}
    position = 0
    while position < len(text):
        match = _KEYWORD.match(text, position)
        if match is None:
            if text[position:].strip():
                raise OpsError(
                    f"Cannot read the connection string near {text[position:]!r}",
                    _BAD_DSN_HINT,
                )
            break
        key, value = match.group(1), match.group(2)
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        pairs[key] = value
        position = match.end()
    user = quote(pairs.get("user", ""), safe="")
    password = pairs.get("password")
    auth = (
        f"{user}:{quote(password, safe='')}@"
        if password
        else (f"{user}@" if user else "")
    )
    host = pairs.get("host", "")
    port = pairs.get("port")
    extra = {k: v for k, v in pairs.items() if k not in _URL_PARTS}
    if host.startswith("/"):
        # A socket directory goes in the query, and its port with it: asyncpg
        # reads a port in the URL's host part only together with a host there.
        extra["host"] = host
        host = ""
        if port is not None:
            extra["port"] = port
            port = None
    netloc = f"{auth}{host}" + (f":{port}" if port is not None else "")
    # No dbname, no path: an empty one would be a database name, and would
    # hide the dbname of a service, or PGDATABASE, as libpq does not.
    dbname = pairs.get("dbname")
    path = "" if dbname is None else "/" + quote(dbname, safe="")
    return urlunsplit(("postgresql", netloc, path, urlencode(extra), ""))


async def _init_connection(conn: asyncpg.Connection) -> None:
    """Decode json and jsonb into Python values on every connection."""
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def _make_read_only(conn: asyncpg.Connection) -> None:
    """Make every later transaction of the session read-only, so that the
    server refuses any write, whatever the path.

    It is set once connected, not in the startup packet: the server reports a
    startup value back, and asyncpg's target_session_attrs check would take
    the session's read-only default for a read-only server (refusing
    ``read-write``, accepting a primary for ``read-only``). A value set with SET
    lasts for the session unless reset: nothing here runs RESET ALL or DISCARD
    ALL, and the pool releases connections without its reset query (see
    ``_keep_session``).
    """
    await conn.execute("SET SESSION default_transaction_read_only = on")


async def _init_read_only_connection(conn: asyncpg.Connection) -> None:
    """A pooled connection made read-only before anything else runs on it."""
    await _make_read_only(conn)
    await _init_connection(conn)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release a pooled connection without asyncpg's reset query.

    The default reset (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL) would
    undo the read-only default of a read-only pool's connections, and would be
    one more round trip per read, about a quarter of what a dashboard's own
    reads cost the server. Nothing else needs resetting: every read is one
    autocommit statement and every setting made is transaction-local. asyncpg
    still rolls back a transaction left open.
    """


def _server_settings(
    purpose: str, statement_timeout_ms: int, lock_timeout_ms: int
) -> dict[str, str]:
    return {
        "application_name": f"carpool-tui {purpose}"[:63],
        "statement_timeout": str(statement_timeout_ms),
        "lock_timeout": str(lock_timeout_ms),
        "idle_in_transaction_session_timeout": "60000",
    }


async def connect(
    dsn: str | None,
    *,
    purpose: str,
    statement_timeout_ms: int = 5_000,
    lock_timeout_ms: int = 2_000,
    read_only: bool = False,
) -> asyncpg.Connection:
    """One connection that names itself and carries a statement timeout;
    ``read_only``: one where the server refuses every write."""
    dsn, timeout = normalize_dsn(dsn)
    try:
        conn: asyncpg.Connection = await asyncpg.connect(
            dsn,
            timeout=timeout,
            server_settings=_server_settings(
                purpose, statement_timeout_ms, lock_timeout_ms
            ),
        )
    except Exception as exc:
        raise translate(exc, doing="Connecting to the database") from exc
    try:
        if read_only:
            await _make_read_only(conn)
        await _init_connection(conn)
    except BaseException as exc:
        # Never hand out a connection that may not be read-only as asked.
        conn.terminate()
        if isinstance(exc, Exception):
            raise translate(exc, doing="Connecting to the database") from exc
        raise
    return conn


async def create_pool(
    dsn: str | None,
    *,
    purpose: str,
    statement_timeout_ms: int = 5_000,
    read_only: bool = False,
    max_size: int = 3,
) -> asyncpg.Pool:
    """A small pool for polling; each connection is named and time-limited,
    and with ``read_only`` made read-only before the pool hands it out."""
    dsn, timeout = normalize_dsn(dsn)
    try:
        pool = await asyncio.wait_for(
            asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=max_size,
                timeout=timeout,
                server_settings=_server_settings(purpose, statement_timeout_ms, 2_000),
                init=_init_read_only_connection if read_only else _init_connection,
                reset=_keep_session,
            ),
            timeout=timeout * 2,
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
