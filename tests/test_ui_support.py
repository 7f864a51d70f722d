"""Helpers the UI tests share: settings, a frozen clock, waiting and reading the screen.

Waiting is a bounded loop on a condition the user could see, never a fixed sleep.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rich.text import Text
from textual.content import Content
from textual.geometry import Region
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import DataTable, Static

from carpool_tui.config import Settings

FIXED_NOW = datetime(2025, 3, 4, 3, 0, tzinfo=UTC)
OPERATOR = "alice@oncall"


def make_settings(
    dsn: str, tmp_path: Path, *, read_only: bool = False, refresh: float = 1.0
) -> Settings:
    """Settings for a test session with its own action log."""
    return Settings(
        dsn=dsn,
        refresh_seconds=refresh,
        read_only=read_only,
        operator=OPERATOR,
        action_log=tmp_path / "state" / "actions.log",
    )


def frozen(at: datetime = FIXED_NOW) -> Callable[[], datetime]:
    """A clock that always says `at`."""
    return lambda: at


async def until(
    pilot: Pilot[Any], check: Callable[[], Any], what: str, timeout: float = 20.0
) -> Any:
    """Let the app run until `check()` is truthy; fail with `what` after `timeout`."""
    waited = 0.0
    while waited < timeout:
        value = check()
        if value:
            return value
        await pilot.pause(0.05)
        waited += 0.05
    raise AssertionError(f"timed out after {timeout} s waiting for: {what}")


def layout_requests(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, every widget that asks for a layout pass, in order."""
    asked: list[str] = []
    refresh = Widget.refresh

    def counted(self: Widget, *regions: Any, **kwargs: Any) -> Widget:
        if kwargs.get("layout"):
            asked.append(f"{type(self).__name__}#{self.id}")
        return refresh(self, *regions, **kwargs)

    monkeypatch.setattr(Widget, "refresh", counted)
    return asked


def static_text(widget: Static) -> str:
    """The plain text a Static shows."""
    content = widget.content
    if isinstance(content, Text):
        return content.plain
    visual = widget.visual
    if isinstance(visual, Content):
        return visual.plain
    return str(content)


def table_text(table: DataTable[Any]) -> str:
    """Every row of a table, cells separated by two spaces."""
    lines = []
    for index in range(table.row_count):
        cells = table.get_row_at(index)
        lines.append(
            "  ".join(c.plain if isinstance(c, Text) else str(c) for c in cells)
        )
    return "\n".join(lines)


def screen_text(screen: Screen[Any]) -> str:
    """What a screen shows in its visible Statics and tables, as plain text."""
    parts: list[str] = []
    for widget in screen.query("*"):
        if not widget.display:
            continue
        if isinstance(widget, Static):
            parts.append(static_text(widget))
        elif isinstance(widget, DataTable):
            parts.append(table_text(widget))
    return "\n".join(parts)


def terminal_lines(screen: Screen[Any]) -> list[str]:
    """The lines of the terminal as the screen draws it now, as plain text."""
    return [strip.text for strip in screen._compositor.render_strips()]


def drawn_lines(widget: Widget) -> list[str]:
    """The lines a widget draws on the terminal now, as plain text."""
    region = Region(0, 0, *widget.region.size)
    return [strip.text for strip in widget.render_lines(region)]


def pairs_whole(widget: Widget, pairs: list[tuple[str, str]]) -> list[str]:
    """The drawn lines, after checking every "key label" pair is on one of them."""
    lines = drawn_lines(widget)
    for key, label in pairs:
        assert any(f" {key}  {label}" in line for line in lines), (key, label, lines)
    return lines


def test_frozen_clock_does_not_move() -> None:
    clock = frozen()
    assert clock() == clock() == FIXED_NOW


@pytest.mark.parametrize("read_only", [False, True])
def test_settings_keep_the_action_log_in_the_test_folder(
    tmp_path: Path, read_only: bool
) -> None:
    settings = make_settings("postgresql:///x", tmp_path, read_only=read_only)
    assert settings.action_log.is_relative_to(tmp_path)
    assert settings.read_only is read_only
