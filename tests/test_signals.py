"""SIGTERM and SIGHUP end a running demo cleanly and stop its embedded server."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import signal
import struct
import sys
import termios
import time
from pathlib import Path

import pytest


def _read_until(fd: int, needle: bytes, seconds: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
            if needle in seen:
                return seen
    raise AssertionError(f"{needle!r} did not appear; last output: {seen[-500:]!r}")


def _end(pid: int, fd: int) -> None:
    """Kill the child if it is still there, and close its terminal."""
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
    os.close(fd)


def _gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_signal_stops_demo_and_its_server(signum: int, tmp_path: Path) -> None:
    data_dir = Path("/tmp") / f"carpool-tui-signal-{os.getpid()}-{signum}" / "pgdata"
    argv = [
        sys.executable,
        "-m",
        "carpool_tui",
        "demo",
        "--data-dir",
        str(data_dir),
        "--rides",
        "40",
    ]
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="100", LINES="30")
    pid, fd = pty.fork()
    if pid == 0:  # the child: become the demo, with the pty as its terminal
        os.execvpe(argv[0], argv, env)
    try:
        started = _read_until(fd, b"updated", 120)
        # The start-up report ends with the check that opened the violations.
        assert b"invariant check: " in started and b" open" in started
        postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signum)
        output = _read_until(fd, b"Stopping on", 30)
        assert signal.Signals(signum).name.encode() in output
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert _gone(postmaster, 15), "the embedded server was left running"
    finally:
        _end(pid, fd)
        _stop_leftover_server(data_dir)
        shutil.rmtree(data_dir.parent, ignore_errors=True)


def _stop_leftover_server(data_dir: Path) -> None:
    """After a failed or interrupted run, fast-stop the server the demo left."""
    from carpool_tui.db.embedded import running_postmaster

    leftover = running_postmaster(data_dir)
    if leftover is not None:
        os.kill(leftover, signal.SIGINT)  # PostgreSQL's fast shutdown
        _gone(leftover, 15)


def _wait_exit(pid: int, seconds: float) -> int | None:
    """The exit status once the child ends within ``seconds``, else None."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.1)
    return None


def test_sigterm_ends_a_dashboard_whose_terminal_stopped_reading(
    ops_dsn: str, tmp_path: Path
) -> None:
    """A stalled SSH link: the terminal takes no more output, then SIGTERM."""
    argv = [sys.executable, "-m", "carpool_tui", "--dsn", ops_dsn, "--refresh", "1"]
    env = dict(
        os.environ,
        TERM="xterm-256color",
        COLUMNS="100",
        LINES="30",
        CARPOOL_TUI_LOG=str(tmp_path / "state" / "carpool-tui.log"),
    )
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(argv[0], argv, env)
    try:
        _read_until(fd, b"updated", 60)
        # Stop reading, and make the dashboard redraw until its output backs up.
        for n in range(60):
            size = struct.pack("HHHH", 30 + n % 2, 100, 0, 0)
            fcntl.ioctl(fd, termios.TIOCSWINSZ, size)
            os.kill(pid, signal.SIGWINCH)
            time.sleep(0.05)
        time.sleep(2)
        os.kill(pid, signal.SIGTERM)
        status = _wait_exit(pid, 20)
        assert status is not None, "the dashboard ignored SIGTERM"
    finally:
        _end(pid, fd)
