"""Database text made safe for the screen: cut, control characters escaped, no markup.

Anything read from the database (error messages, notes, sample values) may
hold newlines, terminal escape sequences, bidirectional overrides or text that
looks like markup. These helpers turn it into one visible line of bounded
length before it reaches a widget.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from rich.text import Text

from carpool_tui.models import infinity_text

ELLIPSIS = "…"
DEFAULT_LIMIT = 200
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNSAFE_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def _escape_char(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _is_unsafe(char: str) -> bool:
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


def as_string(value: Any) -> str:
    """Any database value as text: None is empty, containers as compact JSON,
    a ±infinity timestamp as PostgreSQL writes it."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, datetime):
        return infinity_text(value) or str(value)
    return str(value)


def printable(value: Any, limit: int | None = DEFAULT_LIMIT) -> str:
    """One visible line: control and format characters escaped, cut to `limit`."""
    text = as_string(value)
    # isprintable() is false for every unsafe category (and for spaces other
    # than ' '): a text it passes needs no escape, and most texts pass.
    if not text.isprintable():
        text = "".join(_escape_char(c) if _is_unsafe(c) else c for c in text)
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)] + ELLIPSIS
    return text


def safe_markup(value: Any, limit: int | None = DEFAULT_LIMIT) -> str:
    """Printable text that can be placed inside Textual markup without effect.

    Textual's markup has no escape for a backslash, and one right before a tag
    (``[/]`` closing the caller's style) would turn that tag into text; a text
    ending in a backslash therefore gets a trailing space.
    """
    text = printable(value, limit).replace("[", "\\[")
    if text.endswith("\\"):
        text += " "
    return text


def safe_text(value: Any, limit: int | None = DEFAULT_LIMIT, style: str = "") -> Text:
    """Printable text as a Rich Text, which is never parsed as markup."""
    return Text(printable(value, limit), style=style, no_wrap=True, end="")


def safe_block(value: Any, width: int = 100, max_lines: int = 40) -> str:
    """Multi-line text (e.g. pretty JSON) with each line made printable and cut."""
    lines = as_string(value).splitlines() or [""]
    shown = [printable(line, width) for line in lines[:max_lines]]
    if len(lines) > max_lines:
        shown.append(f"{ELLIPSIS} {len(lines) - max_lines} more lines")
    return "\n".join(shown)


def parse_uuid(text: str, what: str = "ride id") -> UUID:
    """A UUID from operator input, or ValueError with a sentence that says why not."""
    value = text.strip()
    if not value:
        raise ValueError(f"Type a {what} first (a UUID).")
    if not value.isascii():
        # UUID() reads fullwidth and other Unicode digits as ASCII ones, so a
        # pasted look-alike would name a ride the operator never typed.
        odd = next(ch for ch in value if not ch.isascii())
        raise ValueError(
            f"'{printable(value, 40)}' is not a valid {what}: {odd!a} is not one "
            "of 0-9, a-f or '-'. Type or paste the id again in plain ASCII."
        )
    try:
        return UUID(value)
    except ValueError:
        shown = printable(value, 40)
        short = re.fullmatch(r"[0-9a-fA-F]{8}", value) is not None
        raise ValueError(
            f"'{shown}' is not a valid {what}: expected a UUID like "
            "0f8fad5b-d9cb-469f-a165-70867728950e."
            + (
                f" A whole {what} has 36 characters; a narrow table may show only "
                "the first 8."
                if short
                else ""
            )
        ) from None


def packed(parts: Iterable[tuple[str, int]], width: int | None, gap: int) -> str:
    """Markup parts, each with its width in cells, joined by ``gap`` spaces into
    lines of at most ``width`` cells (one line without a width).

    A part is never split where the lines break: a key stays with its label, a
    count with what it counts.
    """
    lines: list[str] = []
    used = 0
    for part, cells in parts:
        if lines and (width is None or used + gap + cells <= width):
            lines[-1] += " " * gap + part
            used += gap + cells
        else:
            lines.append(part)
            used = cells
    return "\n".join(lines)
