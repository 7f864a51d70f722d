"""Measure the dashboard as an operator runs it: in a terminal, idle.

    python -m benchmarks.tui [--dsn DSN] [--rides 100000] [--idle 60] [--keep DIR]

Starts ``python -m carpool_tui`` in a pseudo-terminal (120x40) against an
ops-layer database with a 100k-row job log, and next to it a bare Textual app
with one DataTable ticking every 2 s (the baseline the targets compare with).
It reports, for both:

- first screen: from spawning the process to the first snapshot on screen
  (the job-log caption, which is drawn only from a snapshot), median of a few
  starts after an unmeasured one, with the database already built and warm
  and Python's bytecode cache on;
- idle CPU: the process's user+system time over ``--idle`` seconds at the
  default refresh (5 s), as a share of one core;
- resident memory: the largest RSS seen over that time;

and the cost of a job-log page at several depths of the 100k-row log (the
screen reads one page at a time, never the whole log). Without ``--dsn`` it
builds the database in the benchmark cluster (``benchmarks.run`` shares it).
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import pty
import re
import select
import statistics
import struct
import sys
import tempfile
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import psutil

from benchmarks import build
from benchmarks.cluster import DEFAULT_PORT, Cluster

LOG_ROWS = 100_000
PAGE_DEPTHS = (0, 1_000, 50_000, LOG_ROWS - 100)
FIRST_SCREEN_STARTS = 5
COLUMNS, LINES = 120, 40
ANSI = re.compile(rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]")
APP_MARKER = b"newest first"
BASELINE_MARKER = b"baseline ready"

# The reference point: a bare Textual app whose table changes every 2 s.
BASELINE_APP = """
from textual.app import App
from textual.widgets import DataTable, Static


class Bare(App[None]):
    def compose(self):
        yield Static("baseline ready")
        yield DataTable()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("job", "status", "rows")
        for i in range(20):
            table.add_row(f"job {i}", "completed", str(i))
        self.ticks = 0
        self.set_interval(2.0, self.tick)

    def tick(self) -> None:
        self.ticks += 1
        table = self.query_one(DataTable)
        table.update_cell_at((self.ticks % 20, 2), str(self.ticks))


Bare().run()
"""


@dataclass
class Tty:
    """A process on a pseudo-terminal whose output is drained as it comes."""

    argv: list[str]
    env: dict[str, str]
    pid: int = 0
    fd: int = -1
    seen: bytearray = field(default_factory=bytearray)

    def spawn(self) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: become the program
            os.execvpe(self.argv[0], self.argv, self.env)
        self.pid, self.fd = pid, fd
        # Not into the next program spawned: holding this terminal open
        # unread, it would leave this one blocked on output for good.
        os.set_inheritable(fd, False)
        size = struct.pack("HHHH", LINES, COLUMNS, 0, 0)
        fcntl.ioctl(fd, termios.TIOCSWINSZ, size)

    def drain(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                return
            # Keep only the text, and only the tail: the marker is recent.
            self.seen += ANSI.sub(b"", chunk)
            del self.seen[:-8192]

    def wait_for(self, marker: bytes, limit: float) -> float | None:
        """Seconds until ``marker`` is on screen, None if not within ``limit``."""
        started = time.perf_counter()
        while time.perf_counter() - started < limit:
            self.drain(0.01)
            if marker in self.seen:
                return time.perf_counter() - started
        return None

    def stop(self) -> None:
        if self.pid:
            try:
                os.kill(self.pid, 15)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    self.drain(0.05)
                    done, _ = os.waitpid(self.pid, os.WNOHANG)
                    if done:
                        break
                else:
                    os.kill(self.pid, 9)
                    os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.pid = 0
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass
class Figures:
    first_screen_s: list[float] = field(default_factory=list)
    cpu_share: float | None = None
    rss_mb: float | None = None


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(TERM="xterm-256color", COLUMNS=str(COLUMNS), LINES=str(LINES))
    env.pop("TEXTUAL", None)
    # Bytecode is cached, as it is for an installed package: a shell that
    # turns the cache off would charge every start with compiling the
    # project's sources (about 0.1 s on a 2-core machine).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def first_screens(argv: list[str], marker: bytes, log: Callable[[str], None]) -> list:
    """Seconds to the first screen of each measured start.

    One unmeasured start comes first: it writes the bytecode cache and reads
    the files into the page cache, as any earlier run on the machine would.
    """
    times = []
    for n in range(FIRST_SCREEN_STARTS + 1):
        tty = Tty(argv, _env())
        started = time.perf_counter()
        tty.spawn()
        try:
            shown = tty.wait_for(marker, 30)
            if shown is None:
                raise RuntimeError(f"{argv[-1]}: nothing on screen after 30 s")
            if n:
                times.append(time.perf_counter() - started)
        finally:
            tty.stop()
    log(f"  first screen {' '.join(f'{t:.2f}' for t in times)} s")
    return times


def idle_together(
    ttys: dict[str, Tty], markers: dict[str, bytes], seconds: float
) -> dict[str, tuple[float, float]]:
    """(share of a core, largest RSS in MB) of each process over ``seconds``.

    Both processes are stopped before it returns, whatever happens.
    """
    try:
        return _measure_idle(ttys, markers, seconds)
    finally:
        for tty in ttys.values():
            tty.stop()


def _measure_idle(
    ttys: dict[str, Tty], markers: dict[str, bytes], seconds: float
) -> dict[str, tuple[float, float]]:
    for name, tty in ttys.items():
        tty.spawn()
        if tty.wait_for(markers[name], 30) is None:
            raise RuntimeError(f"{name}: nothing on screen after 30 s")
    settle = time.monotonic() + 5  # start-up work is not idle work
    while time.monotonic() < settle:
        for tty in ttys.values():
            tty.drain(0.02)
    procs = {name: psutil.Process(tty.pid) for name, tty in ttys.items()}
    cpu0 = {n: sum(p.cpu_times()[:2]) for n, p in procs.items()}
    rss = dict.fromkeys(procs, 0)
    started = time.monotonic()
    next_sample = started
    while time.monotonic() - started < seconds:
        for tty in ttys.values():
            tty.drain(0.02)
        if time.monotonic() >= next_sample:
            next_sample += 1
            for n, p in procs.items():
                rss[n] = max(rss[n], p.memory_info().rss)
    elapsed = time.monotonic() - started
    out = {}
    for n, p in procs.items():
        used = sum(p.cpu_times()[:2]) - cpu0[n]
        out[n] = (used / elapsed, rss[n] / 2**20)
    return out


async def job_log_database(dsn: str, rides: int, log: Callable[[str], None]) -> str:
    """An ops-layer platform whose job log holds LOG_ROWS runs."""
    legacy = await build.legacy_database(dsn, rides, log)
    name = f"bench_tui_{rides}"
    conn = await build.admin(dsn)
    try:
        exists = await conn.fetchval(
            "SELECT true FROM pg_database WHERE datname = $1", name
        )
    finally:
        await conn.close()
    if not exists:
        await build.upgraded_copy(dsn, legacy.name, name, log)
    conn = await build.db_conn(dsn, name)
    try:
        have = await conn.fetchval("SELECT count(*) FROM system_job_log")
        if have < LOG_ROWS:
            # Older runs of the four jobs, every 5 minutes back in time, a few failed.
            await conn.execute(
                """
                INSERT INTO system_job_log (job_name, started_at, completed_at,
                                            status, records_processed,
                                            errors_encountered, error_message)
                SELECT (ARRAY['expire_rides', 'reconcile_seat_counts',
                              'repair_missing_notifications',
                              'check_system_invariants'])[1 + g % 4],
                       t, t + interval '2 seconds',
                       CASE WHEN g % 97 = 0 THEN 'failed' ELSE 'completed' END,
                       g % 50, (g % 97 = 0)::int,
                       CASE WHEN g % 97 = 0 THEN 'canceling statement' END
                  FROM generate_series(1, $1) g,
                       LATERAL (SELECT now() - interval '40 days'
                                       - g * interval '5 minutes' AS t) s
                """,
                LOG_ROWS - have,
            )
            await conn.execute("VACUUM ANALYZE system_job_log")
        log(
            f"{name}: {await conn.fetchval('SELECT count(*) FROM system_job_log'):,}"
            " job-log rows"
        )
    finally:
        await conn.close()
    return name


async def page_costs(dsn: str, database: str) -> list[str]:
    """Server time of the dashboard's job-log page at several depths."""
    conn = await build.db_conn(dsn, database)
    lines = []
    try:
        for depth in PAGE_DEPTHS:
            plan = await conn.fetchval(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM system_job_log"
                " ORDER BY started_at DESC NULLS LAST, id DESC OFFSET $1 LIMIT 101",
                depth,
            )
            top = (plan if isinstance(plan, list) else json.loads(plan))[0]
            node = top["Plan"]
            while node.get("Plans") and node["Node Type"] in ("Limit",):
                node = node["Plans"][0]
            hits = top["Plan"].get("Shared Hit Blocks", 0) + top["Plan"].get(
                "Shared Read Blocks", 0
            )
            lines.append(
                f"job-log page at row {depth:,}: {top['Execution Time']:.2f} ms"
                f" ({node['Node Type']} on {node.get('Index Name', '-')},"
                f" {hits} buffers, 101 rows returned)"
            )
    finally:
        await conn.close()
    return lines


async def run(args: argparse.Namespace) -> int:
    log: Callable[[str], None] = lambda text: print(text, flush=True)  # noqa: E731
    cluster = None
    if args.dsn:
        dsn = args.dsn
    else:
        cluster = Cluster.fresh_or_existing(
            args.keep, DEFAULT_PORT, keep=args.keep is not None
        )
        dsn = cluster.start()
    try:
        database = await job_log_database(dsn, args.rides, log)
        app_dsn = build.with_database(dsn, database)
        app = [sys.executable, "-m", "carpool_tui", "--dsn", app_dsn]
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(BASELINE_APP)
        bare = [sys.executable, f.name]
        try:
            log("carpool-tui:")
            app_first = first_screens(app, APP_MARKER, log)
            log("baseline (bare Textual app, DataTable ticking every 2 s):")
            bare_first = first_screens(bare, BASELINE_MARKER, log)
            log(f"idle for {args.idle:g} s, both at once…")
            idle = idle_together(
                {"app": Tty(app, _env()), "bare": Tty(bare, _env())},
                {"app": APP_MARKER, "bare": BASELINE_MARKER},
                args.idle,
            )
        finally:
            Path(f.name).unlink(missing_ok=True)
        pages = await page_costs(dsn, database)
    finally:
        if cluster is not None:
            cluster.stop()
    table = [
        "| TUI figure | carpool-tui | bare Textual app | target | met? |",
        "|---|---:|---:|---|---|",
        _row(
            "first screen (s)",
            statistics.median(app_first),
            statistics.median(bare_first),
            0.7,
            "{:.2f}",
        ),
        _row(
            "idle CPU (% of a core)",
            idle["app"][0] * 100,
            idle["bare"][0] * 100,
            1.0,
            "{:.2f}",
        ),
        _row("resident memory (MB)", idle["app"][1], idle["bare"][1], 80, "{:.0f}"),
    ]
    text = [
        *table,
        "",
        f"Database {database} ({args.rides:,} rides, ops layer, {LOG_ROWS:,} job-log"
        f" rows); terminal {COLUMNS}x{LINES}; refresh 5 s (the default) for"
        f" carpool-tui, a 2 s tick for the bare app; idle measured over"
        f" {args.idle:g} s; first screen median of {FIRST_SCREEN_STARTS} starts"
        " after an unmeasured one, bytecode cached"
        f" (carpool-tui {', '.join(f'{t:.2f}' for t in app_first)} s; bare"
        f" {', '.join(f'{t:.2f}' for t in bare_first)} s), from spawning the"
        " process (Python start-up and imports included).",
        "",
        *(f"- {line}" for line in pages),
    ]
    print("\n" + "\n".join(text))
    if args.output:
        args.output.write_text("\n".join(text) + "\n")
        log(f"\nwrote {args.output}")
    return 0


def _row(title: str, app: float, bare: float, target: float, form: str) -> str:
    met = "yes" if app <= target else f"NO: {app / target:.2f}x the target"
    return (
        f"| {title} | {form.format(app)} | {form.format(bare)} | ≤ {target:g} | {met} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.tui",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dsn", help="use this server instead of starting one")
    parser.add_argument("--rides", type=int, default=100_000)
    parser.add_argument("--idle", type=float, default=60.0, help="seconds idle")
    parser.add_argument("--keep", type=Path, metavar="DIR")
    parser.add_argument("--output", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run(args))
    except asyncpg.PostgresError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
