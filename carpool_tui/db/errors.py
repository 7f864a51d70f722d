"""Database failures turned into one readable line plus what to do about it."""

from __future__ import annotations

import asyncio
import re
import socket

import asyncpg
import pydantic


class OpsError(Exception):
    """A failure the operator can act on: what went wrong and what to do next.

    `retryable` says whether trying the same thing again later may succeed; a
    dashboard keeps retrying those and stops on the others.
    """

    retryable = True
    sent = True
    """Whether the request may have reached the server; False when it surely
    did not (no connection could be had), so a write was surely not made."""

    def __init__(self, message: str, hint: str = "", sqlstate: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.sqlstate = sqlstate

    def __str__(self) -> str:
        return with_hint(self.message, self.hint)


def with_hint(message: str, hint: str | None) -> str:
    """A message, then its hint; one full stop between them, even when the
    message ends with one of its own (the server's DETAIL or HINT line)."""
    if not hint:
        return message
    stop = "" if message.endswith((".", "!", "?")) else "."
    return f"{message}{stop} {hint}"


class ConnectionLost(OpsError):
    """The server could not be reached or the connection dropped."""


class NeverSent(ConnectionLost):
    """No connection to send the request on: it never reached the server."""

    sent = False


class LoginRefused(ConnectionLost):
    """The server refused the user or password; retrying cannot fix it."""

    retryable = False


class DatabaseMissing(ConnectionLost):
    """The named database does not exist on the server; retrying cannot fix it."""

    retryable = False


class SettingsInvalid(OpsError):
    """The DSN or connection options cannot be used; retrying cannot fix it."""

    retryable = False


class NotMigrated(OpsError):
    """The database lacks the tables or functions the command needs."""


class PermissionMissing(OpsError):
    """The role lacks a grant; the message names the object."""


class ReadOnlySession(OpsError):
    """A write was attempted in a read-only session."""


class RowUnreadable(OpsError):
    """A row or function result has a shape the models cannot read."""


_CONNECTION_STATES = {
    "08000",
    "08003",
    "08006",
    "08001",
    "08004",
    "57P01",
    "57P02",
    "57P03",
}


# The server's words when a role may not connect to the database it names.
_CONNECT_REFUSED = re.compile(r"permission denied for database (.+)", re.DOTALL)

ROW_UNREADABLE_HINT = "Look at that row in the database."

READ_ONLY = (
    "Writes are off: the session was started read-only (--read-only, or"
    " read_only = true in its config target) or the server takes reads only (a"
    " standby). To make changes, start one without it, on the primary."
)


def translate(exc: BaseException, *, doing: str) -> OpsError:
    """Map a driver or socket exception to an OpsError that says what to do."""
    if isinstance(exc, OpsError):
        return exc
    state = getattr(exc, "sqlstate", None)
    text = _one_line(str(exc)) or type(exc).__name__
    if isinstance(
        exc,
        (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError),
    ):
        if _may_not_log_in(exc):
            return LoginRefused(
                f"{doing}: the server accepted the user but it may not log in ({text})",
                "It is a NOLOGIN role, as carpool_ops_viewer and"
                " carpool_ops_operator are: connect as a login role that has"
                " been granted one of them.",
                state,
            )
        return LoginRefused(
            f"{doing}: the server rejected the password or user ({text})",
            "Check the user and password in --dsn, DATABASE_URL or PGPASSWORD.",
            state,
        )
    if isinstance(exc, asyncpg.TooManyConnectionsError):
        # The server is up: a limit of the role's or the server's is reached.
        # A connection may be freed at any moment, so it is retried.
        return ConnectionLost(
            f"{doing}: no connection is free ({text})",
            "Close other sessions of this role, or ask for a higher limit (the"
            " role's CONNECTION LIMIT, or the server's max_connections).",
            state,
        )
    if state == "57P03":
        # The server answered: it is starting up, shutting down or recovering.
        return ConnectionLost(
            f"{doing}: the server is not taking connections now ({text})",
            "It is starting up, shutting down or recovering: wait for it, then"
            " try again.",
            state,
        )
    if (
        isinstance(exc, asyncpg.UndefinedObjectError)
        and "unrecognized configuration parameter" in text
    ) or (
        isinstance(exc, asyncpg.InvalidParameterValueError)
        and "invalid value for parameter" in text
    ):
        # An option of the DSN's URL query or of PGOPTIONS that the driver
        # passed on as a server setting: the server is up, the name is wrong.
        return SettingsInvalid(
            f"{doing}: the server refused a setting the connection asked for ({text})",
            "Check the options in the DSN's query (after ?) and in PGOPTIONS:"
            " one is not a libpq connection option nor a server setting, or has"
            " a value the setting does not take.",
            state,
        )
    if isinstance(exc, asyncpg.TargetServerAttributeNotMatched):
        # The servers answered, but none is the kind the DSN asked for; a
        # failover may yet make one so, so it is retried.
        # The driver's text names an enum of its own; the option says it all.
        return ConnectionLost(
            f"{doing}: no server is of the kind target_session_attrs asks for",
            "The server is up: target_session_attrs=read-only or standby wants a"
            " standby, read-write or primary a primary. Check that option in the"
            " DSN or PGTARGETSESSIONATTRS, or wait for a failover to finish.",
            state,
        )
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return DatabaseMissing(
            f"{doing}: {text}",
            "Check the database name in --dsn or PGDATABASE.",
            state,
        )
    if isinstance(
        exc,
        (
            asyncpg.UndefinedFunctionError,
            asyncpg.UndefinedTableError,
            asyncpg.UndefinedColumnError,
        ),
    ):
        return NotMigrated(
            f"{doing}: {text}",
            "This database lacks the carpool ops functions or tables; run "
            "`carpool-tui migrate --dsn ...` against it.",
            state,
        )
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        database = _database_refused(exc)
        if database is not None:
            # The ops roles grant functions and tables, not CONNECT: naming
            # them would send the operator after a grant that cannot help.
            return PermissionMissing(
                f"{doing}: permission denied for {database} (this role lacks"
                " the CONNECT privilege on it)",
                f"Ask for CONNECT on {database} to be granted to this role;"
                " carpool_ops_viewer and carpool_ops_operator do not carry it.",
                state,
            )
        return PermissionMissing(
            f"{doing}: {text}",
            "Ask for the carpool_ops_operator role (writes) or carpool_ops_viewer "
            "(read only) to be granted to this user.",
            state,
        )
    if isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
        return ReadOnlySession(f"{doing}: this session is read-only", READ_ONLY, state)
    if isinstance(exc, asyncpg.QueryCanceledError):
        return OpsError(
            f"{doing}: the statement was cancelled or timed out ({text})",
            "The database may be under heavy load, or a row it needs may be "
            "locked by another session's open transaction; try again, or raise "
            "the statement timeout.",
            state,
        )
    if isinstance(exc, asyncpg.LockNotAvailableError):
        return OpsError(
            f"{doing}: a row it needs is locked by another session ({text})",
            "Usually self-resolving; try again in a moment.",
            state,
        )
    if isinstance(exc, pydantic.ValidationError):
        # Also a ValueError, but about a row, not the settings.
        return RowUnreadable(
            f"{doing}: a row has a shape this version cannot read ({text})",
            ROW_UNREADABLE_HINT,
            state,
        )
    if isinstance(exc, (ValueError, asyncpg.ClientConfigurationError)):
        return SettingsInvalid(
            f"{doing}: the connection settings are not valid ({text})",
            "Use a DSN like postgresql://user:password@host:5432/dbname.",
            state,
        )
    if state in _CONNECTION_STATES or isinstance(
        exc,
        (
            asyncpg.ConnectionDoesNotExistError,
            asyncpg.InterfaceError,
            ConnectionError,
            OSError,
            asyncio.TimeoutError,
            socket.gaierror,
        ),
    ):
        return ConnectionLost(
            f"{doing}: cannot reach the database ({text})",
            "Check that the server is running and the host, port or socket in the "
            "DSN is right.",
            state,
        )
    if isinstance(exc, asyncpg.PostgresError):
        return OpsError(f"{doing}: {text}", "", state)
    return OpsError(f"{doing}: {type(exc).__name__}: {text}", "", state)


def _may_not_log_in(exc: BaseException) -> bool:
    """Whether a refused login is a role without LOGIN: the server checks it
    after the password, in InitializeSessionUserId, which also refuses a role
    that does not exist; the two are told apart by the English message."""
    at_session = getattr(exc, "server_source_function", None) == (
        "InitializeSessionUserId"
    )
    return at_session and "not permitted to log in" in str(exc)


def _database_refused(exc: BaseException) -> str | None:
    """What a login was refused for want of CONNECT on: ``database "name"`` as
    the server quotes it, or "this database"; None for any other missing
    privilege (CREATE on the database, say, which the server words alike).

    The server refuses it at login in CheckMyDatabase, which the error names
    whatever language the server writes in; one relayed without that name is
    known by its English detail. The name is read from the English message.
    """
    message = str(getattr(exc, "message", None) or (exc.args or [""])[0])
    at_login = getattr(exc, "server_source_function", None) == "CheckMyDatabase"
    detail = str(getattr(exc, "detail", None) or "")
    if not at_login and "CONNECT privilege" not in detail:
        return None
    named = _CONNECT_REFUSED.fullmatch(message.strip())
    return f"database {_one_line(named.group(1))}" if named else "this database"


def _one_line(text: str) -> str:
    return " ".join(text.split())
