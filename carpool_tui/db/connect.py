"""Opening named, time-limited connections and pools to PostgreSQL."""

from __future__ import annotations

import asyncio
import configparser
import json
import os
import re
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import asyncpg

from carpool_tui.config import URL_FORM, UnclosedQuote, keyword_options
from carpool_tui.db.errors import OpsError, SettingsInvalid, translate

CONNECT_TIMEOUT_S = 10.0
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
    "sslnegotiation": {"postgres"},
}
_SSL_MODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
# libpq options that restrict how it connects or authenticates; the driver
# would ignore them, so a connection psql refuses could be made.
_UNSUPPORTED = {
    "gssencmode",
    "sslnegotiation",
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
    """A DSN asyncpg reads as libpq (psql) reads ``dsn``, and the connect timeout
    it asked for.

    The DSN, URL or ``key=value``, is read into libpq's options by libpq's
    rules (a URL's query overrides its own parts; a service, named in the DSN
    or by PGSERVICE, fills what the DSN leaves unset), then written as one URL
    whose every part asyncpg reads one way only. ``connect_timeout`` becomes
    the timeout. A server address asyncpg cannot honour (``hostaddr``,
    ``PGHOSTADDR``) is refused: asyncpg would connect to another server than
    libpq does. So is a service asyncpg would connect without (see
    ``_service_options``), and a libpq option that restricts the connection
    (``_UNSUPPORTED``). libpq options that only tune the client
    (``_CLIENT_TUNING``) are dropped: asyncpg would send them to the server as
    settings, which it refuses.
    """
    _refuse_pghostaddr()
    _refuse_unsupported_variables()
    default_service = os.environ.get("PGSERVICE", "").strip()
    session_options = os.environ.get("PGOPTIONS", "").strip()
    if dsn is None:
        if not default_service and not session_options:
            _refuse_bad_pgport()
            return None, CONNECT_TIMEOUT_S
        dsn = ""
    dsn = dsn.strip()
    options = _url_options(dsn) if URL_FORM.match(dsn) else _keyword_options(dsn)
    said_by = dict.fromkeys(options, "The DSN")
    service = options.pop("service", None)
    if service is None and default_service:
        service, named_by = default_service, f"PGSERVICE ({default_service})"
    else:
        named_by = "The DSN"
    if service:
        path, defined = _service_options(service, named_by)
        for key, value in defined.items():
            if key not in options:  # the DSN's own options come first
                options[key] = value
                said_by[key] = f"Service {service!r} in {path}"
    if session_options and "options" not in options:
        options["options"] = session_options  # asyncpg ignores PGOPTIONS
    timeout = CONNECT_TIMEOUT_S
    kept: dict[str, str] = {}
    for key, value in options.items():
        if key == "hostaddr" and value:
            _refuse_hostaddr(said_by[key], value)
        if key in _CLIENT_TUNING or value in _ASKS_NOTHING.get(key, ()):
            continue
        if key in _UNSUPPORTED:
            _refuse_unsupported(f"{said_by[key]} sets {key}={value}", f"Remove {key}")
        if key == "connect_timeout":
            try:
                timeout = max(1.0, float(value))
            except ValueError:
                raise OpsError(
                    f"connect_timeout={value!r} in the DSN is not a number of seconds",
                    _BAD_DSN_HINT,
                ) from None
        elif key != "hostaddr":
            kept[key] = value
    if not kept.get("port"):
        _refuse_bad_pgport()  # read only where the DSN names no port, as in libpq
    asked = kept.get("sslmode") or os.environ.get("PGSSLMODE", "")
    sockets = _sockets_only(kept.get("host") or os.environ.get("PGHOST", ""))
    if sockets and asked in _SSL_MODES:  # a bad value is still refused, as in libpq
        # libpq never uses SSL on a Unix socket, so PGSSLMODE=verify-full (a
        # policy for TCP) does not stop psql; the driver would refuse to start
        # without the root certificate it cannot use there.
        kept["sslmode"] = "disable"
    return _options_to_url(kept), timeout


def _sockets_only(hosts: str) -> bool:
    """Whether a host list names only Unix socket directories."""
    return bool(hosts) and all(h.startswith("/") for h in hosts.split(","))


def _url_options(dsn: str) -> dict[str, str]:
    """libpq's options from a URL: user, password, hosts, ports and database
    from its parts, then its query, which overrides them as in libpq."""
    try:
        parts = urlsplit(dsn)
    except ValueError as exc:  # an unclosed [ of an IPv6 address, say
        raise OpsError(
            f"The DSN is not a valid connection URL ({exc})", _BAD_DSN_HINT
        ) from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise OpsError(
            f"The DSN is a {parts.scheme}:// URL, not a PostgreSQL one",
            _BAD_DSN_HINT,
        )
    options: dict[str, str] = {}
    auth, _, hostspec = parts.netloc.rpartition("@")
    if auth:
        user, colon, password = auth.partition(":")
        if user:
            options["user"] = unquote(user)
        if colon:
            options["password"] = unquote(password)
    hosts, ports = [], []
    for spec in hostspec.split(",") if hostspec else []:
        bracketed = re.fullmatch(r"\[([^\]]*)\](?::(.*))?", spec)
        if bracketed:
            host, port = bracketed.group(1), bracketed.group(2) or ""
        else:
            host, _, port = spec.partition(":")
        if port and not _is_port(port):
            raise OpsError(
                f"The port in the DSN is not a port number (1-65535): {hostspec}",
                _BAD_DSN_HINT,
            )
        hosts.append(unquote(host))
        ports.append(port)
    if any(hosts):
        options["host"] = ",".join(hosts)
    if any(ports):
        options["port"] = ",".join(ports)
    if parts.path.strip("/"):
        # An empty name is none given, as for libpq: PGDATABASE or a
        # service's dbname applies.
        options["dbname"] = unquote(parts.path[1:])
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        options[key] = value
    return options


def _refuse_bad_pgport() -> None:
    """The driver reads PGPORT with int() and would say "invalid literal for
    int() with base 10" without naming the variable."""
    value = os.environ.get("PGPORT", "").strip()
    if value and not all(_is_port(part.strip()) for part in value.split(",")):
        raise SettingsInvalid(
            f"PGPORT is set to {value!r}, which is not a port number",
            "Set PGPORT to a port (5432, say), or unset it and give the port in"
            " the DSN.",
        )


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and 0 < int(text) < 65536


def _options_to_url(options: dict[str, str]) -> str:
    """One URL for libpq's ``options`` that asyncpg reads as libpq would.

    The hosts and ports go in the query, where asyncpg pairs them one to one
    (or one port for every host) as libpq does, socket directories included;
    an IPv6 address goes in brackets there. An empty host or port is none
    given, as in libpq.
    """
    rest = dict(options)
    user = rest.pop("user", "")
    password = rest.pop("password", "")
    dbname = rest.pop("dbname", "")
    host = rest.pop("host", "")
    port = rest.pop("port", "")
    query: list[tuple[str, str]] = []
    hosts = host.split(",") if host else []
    if "" in hosts:
        raise OpsError(
            f"The DSN's host list {host!r} has an empty entry", _BAD_DSN_HINT
        )
    if hosts:
        query.append(
            (
                "host",
                ",".join(
                    f"[{h}]" if ":" in h and not h.startswith(("/", "[")) else h
                    for h in hosts
                ),
            )
        )
    if port:
        ports = [p or "5432" for p in port.split(",")]
        bad = [p for p in ports if not _is_port(p)]
        if bad:
            raise OpsError(
                f"The port in the DSN is not a port number (1-65535): {bad[0]}",
                _BAD_DSN_HINT,
            )
        if hosts and len(ports) not in (1, len(hosts)):
            raise OpsError(
                f"The DSN gives {len(ports)} ports for {len(hosts)} hosts",
                "Give one port for every host, in the same order, or one for all.",
            )
        query.append(("port", ",".join(ports)))
    auth = quote(user, safe="")
    if password:
        auth += ":" + quote(password, safe="")
    # An empty dbname given is the user's database (the server's default);
    # none given lets PGDATABASE apply, as for libpq.
    path = "/" + quote(dbname, safe="") if "dbname" in options else ""
    query += rest.items()
    return f"postgresql://{auth}{'@' if auth else ''}{path}" + (
        f"?{urlencode(query)}" if query else ""
    )


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


def _refuse_hostaddr(said_by: str, address: str) -> NoReturn:
    """Refuse a ``hostaddr``: asyncpg has no such option and would send it to
    the server as a setting, after connecting to the host beside it, PGHOST or
    the default socket, a server other than the one libpq (psql) would reach."""
    raise SettingsInvalid(
        f"{said_by} sets hostaddr={address}, which carpool-tui's PostgreSQL driver"
        " does not support: it would connect to the host named beside it, PGHOST"
        " or the local socket instead",
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


def _service_options(service: str, named_by: str) -> tuple[Path, dict[str, str]]:
    """The service file asyncpg would read, and the options it gives ``service``.

    The ops layer reads the service itself and hands asyncpg the options: asyncpg
    skips a service's hostaddr, options and application_name, and fails on a
    ``%`` in a value (a password, say). Like asyncpg it reads only PGSERVICEFILE
    (else ~/.pg_service.conf), so a service defined only in the system-wide file
    libpq also reads is refused rather than connected without. ``named_by`` says
    where the service was named (the DSN, PGSERVICE).
    """
    path = _service_file()
    if path is None:
        raise SettingsInvalid(
            f"{named_by} names service {service!r}, but carpool-tui finds no"
            " service file (PGSERVICEFILE is not set and there is no home"
            " directory), and would connect without it",
            "Set PGSERVICEFILE to the file that defines the service.",
        )
    services = configparser.ConfigParser(interpolation=None)
    try:
        services.read(path, encoding="utf-8")  # a missing file defines nothing
    except (configparser.Error, OSError, UnicodeDecodeError) as exc:
        raise SettingsInvalid(
            f"The service file {path} cannot be read ({type(exc).__name__})",
            "Correct the file, or set PGSERVICEFILE to another one.",
        ) from None
    if not services.has_section(service):
        raise SettingsInvalid(
            f"{named_by} names service {service!r}, which {path} does not define:"
            " carpool-tui reads no other service file, and would connect without"
            " it",
            "Define the service in that file, or set PGSERVICEFILE to the file"
            " that defines it.",
        )
    return path, dict(services.items(service))


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


def _keyword_options(text: str) -> dict[str, str]:
    """libpq's options from its ``key=value`` form, or OpsError saying why not."""
    try:
        return keyword_options(text)
    except UnclosedQuote as exc:
        raise OpsError(
            str(exc),
            "Close the quote, or leave the quotes out of a value without spaces.",
        ) from None
    except ValueError as exc:
        raise OpsError(str(exc), _BAD_DSN_HINT) from None


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
    """The settings every session starts with: its name, its timeouts, and
    times written in ISO form in UTC.

    The product shows every time in UTC, but the ops layer's functions write
    times into their messages as text (a refusal's "does not expire until
    ..."), which the server renders in the session's time zone and date
    style. Sent in the startup packet, TimeZone and DateStyle override the
    server's, the database's and the role's default, and any given in the
    DSN's ``options`` or PGOPTIONS (applied before these); nothing the tool
    runs depends on a local zone or date order.
    """
    return {
        "application_name": f"carpool-tui {purpose}"[:63],
        "statement_timeout": str(statement_timeout_ms),
        "lock_timeout": str(lock_timeout_ms),
        "idle_in_transaction_session_timeout": "60000",
        "TimeZone": "UTC",
        "DateStyle": "ISO, YMD",
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
