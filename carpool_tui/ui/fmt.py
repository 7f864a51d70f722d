"""Short, stable renderings of times, ages and counts for narrow terminals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def age(seconds: float) -> str:
    """Elapsed time in the largest sensible unit: 42 s, 5 min, 3 h, 2 d."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{int(seconds)} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{int(minutes)} min"
    hours = minutes / 60
    if hours < 36:
        return f"{int(hours)} h"
    return f"{int(hours / 24)} d"


def since(then: datetime | None, now: datetime) -> str:
    """The age of `then` at `now`, or a dash when unknown."""
    if then is None:
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
    """A UTC timestamp without the year: 06-01 11:55:00."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%m-%d %H:%M:%S")


def full_stamp(value: datetime | None) -> str:
    """A full UTC timestamp for detail views."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def count(value: int | None) -> str:
    """A count with thousands separators, or a dash when missing."""
    return "—" if value is None else f"{value:,}"
