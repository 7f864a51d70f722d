"""Files written for people stay whole when the disk fills up."""

from __future__ import annotations

import json
import resource
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from carpool_tui.db.repo import append_action_log
from carpool_tui.files import write_new


@contextmanager
def disk_full_after(path: Path, spare: int) -> Iterator[None]:
    """Writes past ``spare`` more bytes than ``path`` holds fail (EFBIG), as on
    a full disk: a file-size limit on this process, lifted on the way out."""
    before = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    size = path.stat().st_size if path.exists() else 0
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + spare, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, before)
        signal.signal(signal.SIGXFSZ, handler)


def test_an_action_log_line_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    log = tmp_path / "actions.log"
    append_action_log(log, {"action": "seat_fix", "note": "first"})
    with disk_full_after(log, 100), pytest.raises(OSError):
        append_action_log(log, {"action": "seat_fix", "note": "x" * 5000})
    append_action_log(log, {"action": "seat_fix", "note": "after"})
    notes = [json.loads(line)["note"] for line in log.read_text().splitlines()]
    assert notes == ["first", "after"]


def test_an_export_that_does_not_fit_leaves_no_file(tmp_path: Path) -> None:
    with disk_full_after(tmp_path / "none", 4096), pytest.raises(OSError):
        write_new(tmp_path, "carpool-log", ".csv", "started,job\n" * 5000)
    assert list(tmp_path.iterdir()) == []
