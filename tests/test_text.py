"""Database text reaches the screen cut, escaped and inert; times render stably."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from textual.content import Content

from carpool_tui.ui import fmt
from carpool_tui.ui.text import (
    ELLIPSIS,
    parse_uuid,
    printable,
    safe_block,
    safe_markup,
    safe_text,
)


def test_control_characters_become_visible_escapes() -> None:
    text = "line1\nline2\tTab\r\x1b[31mred\x07\x00"
    assert printable(text) == "line1\\nline2\\tTab\\r\\x1b[31mred\\x07\\x00"


def test_bidi_override_and_zero_width_are_escaped() -> None:
    assert printable("abc\u202edef\u200b") == "abc\\u202edef\\u200b"


def test_ordinary_unicode_is_kept() -> None:
    assert printable("Zürich → Genève ✓") == "Zürich → Genève ✓"


def test_long_values_are_cut_with_an_ellipsis() -> None:
    shown = printable("x" * 500, 20)
    assert len(shown) == 20
    assert shown.endswith(ELLIPSIS)
    assert printable("short", 20) == "short"


def test_cut_counts_the_escapes() -> None:
    assert len(printable("\n" * 50, 10)) == 10


def test_none_and_containers() -> None:
    assert printable(None) == ""
    assert printable({"b": 1, "a": [1, 2]}) == '{"a": [1, 2], "b": 1}'


@pytest.mark.parametrize(
    "hostile",
    [
        "[bold red]alarm[/]",
        "[@click=app.quit]press[/]",
        "[$error]x[/]",
        "a\\[b]",
        "trailing backslash\\",
        "[link=https://example.invalid]x[/link]",
    ],
)
def test_markup_in_database_text_is_shown_literally(hostile: str) -> None:
    rendered = Content.from_markup(f"[b]label:[/] {safe_markup(hostile)}")
    assert rendered.plain == f"label: {printable(hostile)}"


def test_safe_text_is_never_parsed_as_markup() -> None:
    text = safe_text("[bold]x[/bold]\n", 100, "red")
    assert text.plain == "[bold]x[/bold]\\n"
    assert str(text.style) == "red"


def test_safe_block_keeps_lines_but_escapes_and_limits_them() -> None:
    block = safe_block("a\x1b\n" + "\n".join(str(i) for i in range(100)), 10, 5)
    lines = block.splitlines()
    assert lines[0] == "a\\x1b"
    assert len(lines) == 6
    assert "more lines" in lines[-1]


def test_parse_uuid_accepts_a_uuid_with_spaces() -> None:
    value = "  0f8fad5b-d9cb-469f-a165-70867728950e "
    assert str(parse_uuid(value)) == value.strip()


@pytest.mark.parametrize("bad", ["", "abc", "0f8fad5b-d9cb-469f-a165", "\x1b[2J"])
def test_parse_uuid_refuses_with_a_readable_sentence(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_uuid(bad)
    message = str(info.value)
    assert "UUID" in message
    assert "\x1b" not in message


def test_ages_and_durations() -> None:
    assert fmt.age(42) == "42 s"
    assert fmt.age(5 * 60) == "5 min"
    assert fmt.age(3 * 3600) == "3 h"
    assert fmt.age(3 * 86400) == "3 d"
    assert fmt.age(-5) == "0 s"
    assert fmt.duration(timedelta(milliseconds=120)) == "120 ms"
    assert fmt.duration(4.25) == "4.2 s"
    assert fmt.duration(185) == "3 min 5 s"
    assert fmt.duration(None) == "—"


def test_stamps_are_utc() -> None:
    local = datetime(2025, 3, 4, 4, 0, tzinfo=UTC).astimezone(
        timezone(timedelta(hours=1))
    )
    assert fmt.stamp(local) == "03-04 04:00:00"
    assert fmt.full_stamp(local) == "2025-03-04 04:00:00 UTC"
    assert fmt.count(12345) == "12,345"
    assert fmt.count(None) == "—"
