"""Settings for one session: where the database is, how often to poll, who acts."""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_REFRESH_SECONDS = 5.0
MIN_REFRESH_SECONDS = 1.0
MAX_REFRESH_SECONDS = 300.0
DEFAULT_STATEMENT_TIMEOUT_MS = 5_000
DEFAULT_JOB_TIMEOUT_MS = 300_000
LOG_FILE_ENV = "CARPOOL_TUI_LOG"


def default_operator() -> str:
    """The operator name recorded in audit rows when none is given: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def default_log_file() -> Path:
    """Where diagnostics go while the TUI owns the terminal."""
    env = os.environ.get(LOG_FILE_ENV)
    if env:
        return Path(env)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "carpool-tui" / "carpool-tui.log"


def default_action_log() -> Path:
    """The local append-only log of every write the dashboard made."""
    return default_log_file().with_name("actions.log")


def resolve_dsn(cli_dsn: str | None) -> str | None:
    """Pick the DSN: --dsn, then DATABASE_URL; None lets libpq's PG* variables act."""
    if cli_dsn:
        return cli_dsn
    env = os.environ.get("DATABASE_URL")
    if env:
        return env
    return None


def describe_target(dsn: str | None) -> str:
    """A short, password-free name of the database for the screen and messages."""
    if dsn is None:
        host = os.environ.get("PGHOST", "local socket")
        db = os.environ.get("PGDATABASE", os.environ.get("PGUSER", getpass.getuser()))
        return f"{db} on {host} (PG* environment)"
    text = dsn
    if "://" in text:
        scheme, rest = text.split("://", 1)
        if "@" in rest:
            creds, rest = rest.rsplit("@", 1)
            user = creds.split(":", 1)[0]
            rest = f"{user}@{rest}"
        text = f"{scheme}://{rest}"
    return text


@dataclass(frozen=True)
class Settings:
    """Everything a dashboard session needs to know before it connects."""

    dsn: str | None = None
    refresh_seconds: float = DEFAULT_REFRESH_SECONDS
    read_only: bool = False
    operator: str = field(default_factory=default_operator)
    statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS
    job_timeout_ms: int = DEFAULT_JOB_TIMEOUT_MS
    action_log: Path = field(default_factory=default_action_log)

    @property
    def target(self) -> str:
        """The database as shown to the operator (no password)."""
        return describe_target(self.dsn)
