"""Files the dashboard writes for people: exports and incident timelines."""

from __future__ import annotations

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
            with path.open("x", encoding="utf-8") as out:
                out.write(text)
        except FileExistsError:
            number += 1
            continue
        return path
