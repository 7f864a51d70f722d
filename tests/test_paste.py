"""Bracketed pastes reach the app whole, whatever escape codes they hold and
however the terminal's reads cut them."""

from __future__ import annotations

import pytest
from textual import events
from textual.drivers import linux_driver, web_driver
from textual.message import Message

from carpool_tui.ui import paste
from carpool_tui.ui.paste import CleanPasteParser

COLOURED = (
    "\x1b[200~deploy \x1b[1mfailed\x1b[0m on web-3 restarted pgbouncer seats fixed"
    " by reconcile\nsee \x1b]8;;http://x.example/\x1b\\the runbook\x1b]8;;\x1b\\"
    " \x1b(Bend\x1b[201~"
)
PLAIN = (
    "deploy failed on web-3 restarted pgbouncer seats fixed by reconcile\n"
    "see the runbook end"
)


def events_of(*reads: str) -> list[Message]:
    parser = CleanPasteParser()
    found: list[Message] = []
    for data in reads:
        found.extend(parser.feed(data))
    return found


def described(found: list[Message]) -> list[tuple[str, str]]:
    return [
        ("paste", e.text) if isinstance(e, events.Paste) else ("key", e.key)
        for e in found
        if isinstance(e, events.Paste | events.Key)
    ]


def test_a_coloured_paste_is_one_paste_without_its_codes() -> None:
    assert described(events_of(COLOURED)) == [("paste", PLAIN)]


@pytest.mark.parametrize("cut", range(1, len(COLOURED)))
def test_a_paste_cut_between_two_reads_anywhere_is_the_same(cut: int) -> None:
    found = events_of("x", COLOURED[:cut], COLOURED[cut:], "y")
    assert described(found) == [("key", "x"), ("paste", PLAIN), ("key", "y")]


def test_keys_outside_a_paste_are_not_held() -> None:
    """An arrow key right after a paste, and a read ending in an escape that a
    key begins, go on as they come: holding them would hold the key."""
    parser = CleanPasteParser()
    assert parser.cleaner.clean("\x1b[200~a\x1b[1mb\x1b[201~\x1b[A") == (
        "\x1b[200~ab\x1b[201~\x1b[A"
    )
    assert parser.cleaner.clean("q\x1b") == "q\x1b"
    assert described(events_of("\x1b[200~a\x1b[201~", "\x1b[A")) == [
        ("paste", "a"),
        ("key", "up"),
    ]


def test_the_drivers_read_with_the_cleaning_parser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(linux_driver, "XTermParser", linux_driver.XTermParser)
    monkeypatch.setattr(web_driver, "XTermParser", web_driver.XTermParser)
    paste.install()
    assert linux_driver.XTermParser is CleanPasteParser
    assert web_driver.XTermParser is CleanPasteParser
