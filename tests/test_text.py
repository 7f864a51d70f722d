"""Database text reaches the screen cut, escaped and inert; times render stably."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from textual.content import Content

from carpool_tui.ui import fmt
from carpool_tui.ui.dialogs import _is_an_id
from carpool_tui.ui.fmt import short_target
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
    rendered = Content.from_markup(f"[b]label:[/] [i]{safe_markup(hostile)}[/] end")
    shown = printable(hostile)
    gap = " " if shown.endswith("\\") else ""
    assert rendered.plain == f"label: {shown}{gap} end"


@pytest.mark.parametrize("path", ["C:\\path\\", "x\\\\", "\\"])
def test_a_trailing_backslash_does_not_swallow_the_closing_tag(path: str) -> None:
    rendered = Content.from_markup(f"[b]{safe_markup(path)}[/]")
    assert "[/]" not in rendered.plain
    assert rendered.plain.rstrip() == path
    assert rendered.spans and rendered.spans[0].style == "b"


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


def test_the_first_8_characters_of_an_id_are_called_that() -> None:
    with pytest.raises(ValueError) as short:
        parse_uuid("6fdf766f")
    assert "a narrow table may show only the first 8" in str(short.value)
    with pytest.raises(ValueError) as other:
        parse_uuid("ride-42")
    assert "first 8" not in str(other.value)


def test_parse_uuid_accepts_a_uuid_with_spaces() -> None:
    value = "  0f8fad5b-d9cb-469f-a165-70867728950e "
    assert str(parse_uuid(value)) == value.strip()


def test_parse_uuid_refuses_lookalike_digits() -> None:
    # Fullwidth digits read as ASCII ones by UUID(); they name no typed ride.
    lookalike = "\uff10f8fad5b-d9cb-469f-a165-70867728950e"
    with pytest.raises(ValueError) as info:
        parse_uuid(lookalike)
    assert "'\\uff10' is not one of 0-9, a-f or '-'" in str(info.value)


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
    # Ordered as the ages are, across each change of unit.
    shown = [fmt.age(s) for s in (85, 95, 119, 120, 7100, 7200, 47 * 3600, 48 * 3600)]
    assert shown == ["85 s", "95 s", "119 s", "2 min", "118 min", "2 h", "47 h", "2 d"]
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


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        (
            "postgresql://newuser:secret@127.0.0.1:5432/newuser_db",
            "newuser_db@127.0.0.1:5432",
        ),
        ("postgres://u@db.internal/carpool?sslmode=require", "carpool@db.internal"),
        ("postgresql://postgres@/carpool?host=/tmp/pg", "carpool"),
        ("postgresql:///carpool", "carpool"),
        ("host=/var/run/postgresql dbname=carpool", "carpool"),
        ("host=10.0.0.5 port=6432 dbname=carpool password=x", "carpool@10.0.0.5:6432"),
        ("postgresql://u@[::1]:5433/d", "d@[::1]:5433"),
    ],
)
def test_the_database_is_named_by_db_and_host_never_password(
    dsn: str, shown: str
) -> None:
    assert short_target(dsn, env={}) == shown
    assert "secret" not in short_target(dsn, env={})


def test_the_database_name_falls_back_to_the_libpq_environment() -> None:
    env = {"PGHOST": "127.0.0.1", "PGPORT": "5432", "PGDATABASE": "carpool"}
    assert short_target(None, env=env) == "carpool@127.0.0.1:5432"
    assert short_target(None, env={"PGUSER": "ops"}) == "ops"


def test_an_unreadable_dsn_is_named_as_such_not_a_crash() -> None:
    assert short_target("postgresql://u:pw@[::1/db", env={}) == "(unreadable DSN)"


def test_a_count_cut_by_its_limit_says_so() -> None:
    assert fmt.at_least(499, 500) == "499"
    assert fmt.at_least(500, 500) == "500+"


@pytest.mark.parametrize(
    ("note", "refused"),
    [
        ("0b7d5a3e-2f44-4c4e-9a55-3d2b8f0e9c11", True),
        ("{0B7D5A3E-2F44-4C4E-9A55-3D2B8F0E9C11}", True),
        ("0b7d5a3e", True),
        ("0b7d5a3e-2f44", True),
        ("40012345", False),  # a ticket number
        ("20261205", False),  # a date
        ("2026-12-05", False),
        ("INC-40012345", False),
    ],
)
def test_a_note_that_is_only_an_id_is_told_from_a_number(
    note: str, refused: bool
) -> None:
    assert _is_an_id(note) is refused
