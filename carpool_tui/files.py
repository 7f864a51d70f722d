"""Files the dashboard writes for people: exports and incident timelines."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_new(folder: Path, stem: str, suffix: str, text: str) -> Path:
    """Write ``text`` to a file of ``folder`` no one else has: stem.suffix, then
    stem-2.suffix, stem-3.suffix.

    The name is claimed by creating the file exclusively, so two dashboards
    writing in the same second each get their own file.
    """
    folder.mkdir(parents=True, exist_ok=True)
    number = 1
    while True:
        name = f"{stem}{suffix}" if number == 1 else f"{stem}-{number}{suffix}"
        path = folder / name
        try:
            out = path.open("x", encoding="utf-8")
        except FileExistsError:
            number += 1
            continue
        try:
            with out:
                out.write(text)
        except OSError:
            # A full disk: no half-written file left looking like an export.
            path.unlink(missing_ok=True)
            raise
        return path


def append_line(path: Path, line: str) -> None:
    """Append one line to ``path``, whole or not at all.

    On a full disk a partial write would leave a line with no end, onto which
    the next append would be glued: the file is cut back to where it ended.
    """
    data = (line + "\n").encode("utf-8")
    with path.open("ab") as out:
        end = out.seek(0, os.SEEK_END)
        try:
            out.write(data)
            out.flush()
        except OSError:
            with contextlib.suppress(OSError):
                out.truncate(end)
            raise
