"""Short, stable renderings of times, ages and counts for narrow terminals."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from carpool_tui.config import dsn_parts
from carpool_tui.models import infinity_text


def age(seconds: float) -> str:
    """Elapsed time in the largest sensible unit: 42 s, 5 min, 3 h, 2 d.

    A unit starts at 2 (119 s, then 2 min): an age shown as "1 min" would
    read younger than one of 85 s beside it.
    """
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{int(seconds)} s"
    minutes = seconds / 60
    if minutes < 120:
        return f"{int(minutes)} min"
    hours = minutes / 60
    if hours < 48:
        return f"{int(hours)} h"
    return f"{int(hours / 24)} d"


def since(then: datetime | None, now: datetime) -> str:
    """The age of `then` at `now`, or a dash when unknown (or ±infinity)."""
    if then is None or infinity_text(then):
        return "—"
    return age((now - then).total_seconds())


def duration(value: timedelta | float | None) -> str:
    """A run's duration: 120 ms, 4.2 s, 3 min 5 s."""
    if value is None:
        return "—"
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if seconds < 0:
        return "—"
    if seconds < 1:
        return f"{int(seconds * 1000)} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    return f"{minutes // 60} h {minutes % 60} min"


def stamp(value: datetime | None) -> str:
    """A UTC timestamp without the year: 06-01 11:55:00; ±infinity in words."""
    if value is None:
        return "—"
    if infinite := infinity_text(value):
        return infinite
    return value.astimezone(UTC).strftime("%m-%d %H:%M:%S")


def full_stamp(value: datetime | None) -> str:
    """A full UTC timestamp for detail views; ±infinity in words."""
    if value is None:
        return "—"
    if infinite := infinity_text(value):
        return infinite
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def count(value: int | None) -> str:
    """A count with thousands separators, or a dash when missing."""
    return "—" if value is None else f"{value:,}"


def at_least(value: int, limit: int) -> str:
    """A count read with a limit: '500+' when the limit cut it short."""
    return f"{limit:,}+" if value >= limit else f"{value:,}"


def where_written(path: Path) -> str:
    """A written file's name, then its folder on a line of its own.

    A long path wraps mid-word in a narrow toast; this way the name (what the
    operator copies) stays whole.
    """
    return f"{path.name}\nin {path.parent}"


def short_target(dsn: str | None, env: Mapping[str, str] | None = None) -> str:
    """The database as 'dbname@host:port', or just 'dbname' on a unix socket.

    Reads a URL or key=value DSN and falls back to the libpq environment
    (PGHOST, PGPORT, PGDATABASE, PGUSER), so the name on screen is the one the
    connection uses; a password is never part of it.
    """
    env = os.environ if env is None else env
    try:
        found = dsn_parts(dsn) if dsn else {}
    except ValueError:
        return "(unreadable DSN)"
    host = found.get("host") or env.get("PGHOST", "")
    port = found.get("port") or env.get("PGPORT", "")
    user = found.get("user") or env.get("PGUSER", "")
    db = found.get("dbname") or env.get("PGDATABASE", "") or user or "postgres"
    host = host.split(",", 1)[0]
    if not host or host.startswith("/") or host.startswith("@"):
        return db
    if ":" in host:
        host = f"[{host}]"
    return f"{db}@{host}:{port}" if port else f"{db}@{host}"
