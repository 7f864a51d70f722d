"""Bracketed pastes reach the app whole, without the escape codes they hold.

Textual's terminal parser, meeting an escape inside a bracketed paste, sends
the next characters as keys (ESC as "^") until another escape, a pause or 32
characters, then goes back to collecting the paste: a note copied from a
coloured terminal would arrive as keys and a paste in an order no one can put
back together. Here the text between the paste's start and end markers is
cleaned of escape codes before the parser reads it, so the parser sees a
plain paste. A code cut in two by a read is held until the next read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Reaching into the parser is the one way to see a paste before it is taken
# apart; the drivers name it in their own modules, where it is swapped below.
from textual._xterm_parser import XTermParser
from textual.drivers import linux_driver, web_driver
from textual.message import Message

PASTE_START = "\x1b[200~"
PASTE_END = "\x1b[201~"
ESCAPE_CODE = re.compile(
    r"\x1b(?:"
    r"\[[0-?]*[ -/]*[@-~]"  # a control sequence: colour, bold
    r"|\][^\x07\x1b]*(?:\x07|\x1b\\)"  # an operating-system command: a link
    r"|[()*+][0-9A-Za-z]"  # a character set
    r"|[ -~]"  # any other two-character code
    r")"
)
OPEN_CODE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*\x1b?|[()*+])?\Z")
"""An escape code at the end of a read that the next read may finish."""


def _partial_suffix(text: str, marker: str) -> int:
    """How many characters at the end of ``text`` may begin ``marker``."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


class PasteCleaner:
    """Removes escape codes from the bracketed pastes in a stream of reads.

    Outside a paste nothing is held back: an Esc key is one read of its own,
    and holding it would hold the key. A paste's start marker split between
    two reads is still seen, from the end of the text that went on before.
    """

    def __init__(self) -> None:
        self.in_paste = False
        self.held = ""
        """The end of a read inside a paste that may be the start of a code."""
        self.sent_tail = ""
        """The last characters sent on outside a paste."""

    def clean(self, data: str) -> str:
        """What of ``data`` (after what was held) can go on to the parser now."""
        text, self.held = self.held + data, ""
        out: list[str] = []
        while text:
            if self.in_paste:
                at = text.find(PASTE_END)
                if at < 0:
                    keep = self._open_code(text)
                    self.held = text[len(text) - keep :]
                    out.append(_without_codes(text[: len(text) - keep]))
                    break
                out.append(_without_codes(text[:at]) + PASTE_END)
                self.in_paste = False
                text = text[at + len(PASTE_END) :]
                continue
            seen = self.sent_tail + text
            at = seen.find(PASTE_START)
            if at < 0:
                out.append(text)
                self.sent_tail = seen[-(len(PASTE_START) - 1) :]
                break
            upto = at + len(PASTE_START) - len(self.sent_tail)
            out.append(text[:upto])
            self.in_paste, self.sent_tail = True, ""
            text = text[upto:]
        return "".join(out)

    def flush(self) -> str:
        """What is held, at the end of input."""
        held, self.held = self.held, ""
        return _without_codes(held)

    @staticmethod
    def _open_code(text: str) -> int:
        """How much of the end of ``text`` may be a code the next read finishes."""
        keep = _partial_suffix(text, PASTE_END)
        code = OPEN_CODE.search(text)
        if code is not None:
            keep = max(keep, len(text) - code.start())
        return keep


def _without_codes(text: str) -> str:
    return ESCAPE_CODE.sub("", text).replace("\x1b", "")


class CleanPasteParser(XTermParser):
    """Textual's parser, reading each bracketed paste without escape codes."""

    def __init__(self, debug: bool = False) -> None:
        super().__init__(debug)
        self.cleaner = PasteCleaner()

    def feed(self, data: str) -> Iterable[Message]:
        if not data:  # the end of input
            held = self.cleaner.flush()
            if held:
                yield from super().feed(held)
            yield from super().feed("")
            return
        text = self.cleaner.clean(data)
        if text:  # an empty feed would mean the end of input
            yield from super().feed(text)


def install() -> None:
    """Make the terminal and browser drivers read with CleanPasteParser."""
    linux_driver.XTermParser = CleanPasteParser  # type: ignore[attr-defined]
    web_driver.XTermParser = CleanPasteParser  # type: ignore[attr-defined]
