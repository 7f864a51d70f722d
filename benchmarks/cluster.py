"""A private PostgreSQL 15 cluster for one benchmark run.

The server refuses to run as root, so when the harness runs as root every
server command runs as the ``postgres`` user, in a data directory that user
owns under ``/var/tmp``. It listens on 127.0.0.1 only and on a socket
directory of its own, with ``shared_buffers = 512MB`` like the figures to beat
and ``pg_stat_statements`` loaded so a dashboard poll's server time can be read
per statement.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path(os.environ.get("CARPOOL_BENCH_PG_BIN", "/usr/lib/postgresql/15/bin"))
DEFAULT_PORT = 55432

# Only what the benchmark needs differs from a stock server: the buffer size of
# the figures to beat, room for twenty dashboards' pools, per-statement timing,
# and faster bulk loading (maintenance memory, fewer checkpoints).
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "shared_buffers": "'512MB'",
    "max_connections": "120",
    "shared_preload_libraries": "'pg_stat_statements'",
    "pg_stat_statements.track": "'top'",
    "pg_stat_statements.track_planning": "on",
    "maintenance_work_mem": "'512MB'",
    "max_wal_size": "'8GB'",
    "checkpoint_timeout": "'30min'",
    "log_min_messages": "'warning'",
}


@dataclass
class Cluster:
    """A data directory, its server and how to reach it."""

    base: Path
    port: int = DEFAULT_PORT
    keep: bool = False
    pid: int | None = None

    @classmethod
    def fresh_or_existing(cls, base: Path | None, port: int, keep: bool) -> Cluster:
        """A cluster in ``base`` (reused if it holds one), else in a new folder."""
        if base is None:
            base = Path(tempfile.mkdtemp(prefix="carpool-bench-", dir="/var/tmp"))
        base.mkdir(parents=True, exist_ok=True)
        return cls(base=base, port=port, keep=keep)

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def sockets(self) -> Path:
        return self.base / "sock"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=True, text=True, capture_output=True)

    def start(self) -> str:
        """Initialise the data directory if needed, start the server, give a DSN."""
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        if not (self.data / "PG_VERSION").exists():
            self._run(
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            )
            lines = [f"{key} = {value}" for key, value in SETTINGS.items()]
            lines += [
                f"port = {self.port}",
                f"unix_socket_directories = '{self.sockets}'",
            ]
            conf = self.data / "postgresql.auto.conf"
            self._run("sh", "-c", f"printf '%s\\n' \"$@\" >> {conf}", "sh", *lines)
        self._run("mkdir", "-p", str(self.sockets))
        status = subprocess.run(
            self._wrap(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "status"),
            text=True,
            capture_output=True,
        )
        if status.returncode != 0:
            self._run(
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.base / "server.log"),
                "-w",
                "-t",
                "120",
                "start",
            )
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        return self.dsn

    def _wrap(self, *args: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *args]
        return list(args)

    def stop(self) -> None:
        """Stop the server (fast shutdown); remove the folder unless kept."""
        if (self.data / "postmaster.pid").exists():
            self._run(
                str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"
            )
        self.pid = None
        if not self.keep:
            shutil.rmtree(self.base, ignore_errors=True)

    def cpu_ms(self, pids: Sequence[int]) -> float:
        """CPU time used so far by these server processes (all that are still up).

        Read from ``/proc/<pid>/schedstat`` (nanoseconds on a CPU), so the cost
        of a round of polls is what the server spent, not how long twenty
        statements waited for two cores.
        """
        total = 0
        for pid in pids:
            try:
                total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
        return total / 1e6
