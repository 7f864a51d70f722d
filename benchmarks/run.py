"""Time the deployed job functions and the ops layer on generated platforms.

    python -m benchmarks.run [--sizes 100000,1000000] [--runs 5] [--dsn DSN]

Without ``--dsn`` it starts its own PostgreSQL 15 cluster (as the ``postgres``
user, data under /var/tmp, 127.0.0.1:55432, shared_buffers 512MB) and stops it
at the end; ``--keep DIR`` keeps that cluster and its databases in DIR so a
later run with the same DIR skips the builds. Prints the table and writes it,
with the machine and the server version, to ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from benchmarks import build, measure
from benchmarks.cluster import DEFAULT_PORT, Cluster

HERE = Path(__file__).resolve().parent
POLL_ROUNDS = 9
POLL_SPACING_S = 2.5
CONCURRENT_VIEWERS = 20


@dataclass(frozen=True)
class Operation:
    """A row of the table: what is timed and what it must meet at the top size."""

    key: str
    title: str
    sql: str = ""
    writes: bool = False
    setup: str = ""  # session settings before the runs
    prepare: str = ""  # committed once before the runs
    target: float | None = None  # ms at the largest size (ratio for "viewers")
    growth: float | None = None  # most the largest size may cost over the smallest
    unit: str = "ms"


# Computed every time: the ops layer's shared cache is switched off for it, so
# the figure is the cost of a fresh summary (the deployed one ignores it).
NO_CACHE = "SET carpool.health_cache = 'off'"
HEALTH = Operation(
    "health",
    "get_system_health_summary",
    "SELECT get_system_health_summary()",
    target=25,
    setup=NO_CACHE,
)
POLL = Operation("poll", "dashboard poll (one refresh)", target=25)
VIEWERS = Operation(
    "viewers",
    f"{CONCURRENT_VIEWERS} dashboards vs 1 (server cost)",
    target=2.0,
    unit="x",
)
INVARIANTS = Operation(
    "invariants",
    "check_system_invariants",
    "SELECT check_system_invariants()",
    writes=True,
    target=500,
)
RECONCILE = Operation(
    "reconcile",
    "reconcile_seat_counts",
    "SELECT reconcile_seat_counts()",
    writes=True,
    target=100,
)
EXPIRE = Operation(
    "expire", "expire_rides", "SELECT expire_rides()", writes=True, target=700
)
REPAIR = Operation(
    "repair",
    "repair_missing_notifications, whole 30 days",
    "SELECT repair_missing_notifications()",
    writes=True,
    target=700,
    growth=12,
)
# The ops layer's run after yesterday's: one whole run is committed, then its
# progress is moved back a day, so each timed run checks a day of events (the
# deployed function has no progress and checks the 30 days every time).
DAILY_PREPARE = """
DO $$
BEGIN
    IF to_regclass('ops_repair_progress') IS NOT NULL THEN
        PERFORM repair_missing_notifications();
        UPDATE ops_repair_progress
           SET checked_before = checked_before - interval '1 day';
    END IF;
END
$$
"""
REPAIR_DAILY = Operation(
    "repair_daily",
    "repair_missing_notifications, daily run",
    REPAIR.sql,
    writes=True,
    target=700,
    growth=12,
    prepare=DAILY_PREPARE,
)
MAIN_OPS = (
    HEALTH,
    POLL,
    VIEWERS,
    INVARIANTS,
    RECONCILE,
    EXPIRE,
    REPAIR,
    REPAIR_DAILY,
)
HISTORY_OPS = (
    Operation(
        HEALTH.key, HEALTH.title, HEALTH.sql, target=25, growth=1.5, setup=NO_CACHE
    ),
    Operation(POLL.key, POLL.title, target=25, growth=1.5),
)
HEALTHY_OPS = (INVARIANTS,)


@dataclass
class Row:
    """One operation on one platform, on both layers."""

    platform: str
    rides: int
    op: Operation
    deployed: float | None = None
    ops: float | None = None
    ratio: float | None = None
    notes: list[str] = field(default_factory=list)

    def met(self, top: bool) -> str:
        """ "yes", or "NO" with how far off, at the size the targets apply to."""
        if not top or self.ops is None:
            return ""
        misses: list[str] = []
        checked = False
        if self.op.target is not None:
            checked = True
            if self.ops > self.op.target:
                misses.append(f"{self.ops / self.op.target:.2f}x the target")
        if self.op.growth is not None and self.ratio is not None:
            checked = True
            if self.ratio > self.op.growth:
                misses.append(f"growth {self.ratio:.2f}x")
        if not checked:
            return ""
        return "NO: " + ", ".join(misses) if misses else "yes"

    def target_text(self) -> str:
        parts = []
        if self.op.target is not None:
            mark = "x" if self.op.unit == "x" else " ms"
            parts.append(f"≤ {self.op.target:g}{mark}")
        if self.op.growth is not None:
            parts.append(f"≤ {self.op.growth:g}x the smallest")
        return ", ".join(parts)


def fmt(value: float | None, unit: str = "ms") -> str:
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.2f}x"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


async def measure_layer(
    dsn: str,
    database: str,
    ops: tuple[Operation, ...],
    runs: int,
    log: Callable[[str], None],
    cpu: Callable[[Sequence[int]], float] | None,
) -> dict[str, tuple[float, str]]:
    """The median of each operation on one database, with a note on how."""
    out: dict[str, tuple[float, str]] = {}
    one: measure.PollResult | None = None
    for op in ops:
        if op.key in ("poll", "viewers") and one is None:
            one = await measure.time_polls(
                dsn, database, 1, POLL_ROUNDS, POLL_SPACING_S, cpu
            )
        if op.key == "poll":
            assert one is not None
            out[op.key] = (one.median, f"{one.source}, {one.how}")
        elif op.key == "viewers":
            assert one is not None
            many = await measure.time_polls(
                dsn, database, CONCURRENT_VIEWERS, POLL_ROUNDS, POLL_SPACING_S, cpu
            )
            p50 = statistics.median(many.latency_ms)
            if one.cpu_ms and many.cpu_ms:
                a, b = statistics.median(many.cpu_ms), statistics.median(one.cpu_ms)
                how = "server CPU"
            else:
                a, b = many.median, one.median
                how = one.how
            out[op.key] = (
                a / b,
                f"{how} {a:.1f} ms vs {b:.1f} ms per round; poll latency p50"
                f" {p50:.0f} ms with {CONCURRENT_VIEWERS} viewers",
            )
        else:
            if op.prepare:
                conn = await build.db_conn(dsn, database)
                try:
                    await conn.execute(op.prepare)
                finally:
                    await conn.close()
            sample = await measure.time_statement(
                dsn,
                database,
                op.sql,
                runs,
                rollback=op.writes,
                setup=op.setup,
                between=measure.vacuum_platform if op.writes else None,
            )
            runs_text = ", ".join(f"{r:.0f}" for r in sample.runs)
            out[op.key] = (sample.median, f"runs {runs_text}")
        unit = "" if op.unit == "x" else " ms"
        log(
            f"  {database} {op.title}: {fmt(out[op.key][0], op.unit)}{unit}"
            f" ({out[op.key][1]})"
        )
    return out


async def run(args: argparse.Namespace) -> int:
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    log: Callable[[str], None] = lambda text: print(text, flush=True)  # noqa: E731
    cluster: Cluster | None = None
    cpu: Callable[[Sequence[int]], float] | None = None
    if args.dsn:
        dsn = args.dsn
    else:
        cluster = Cluster.fresh_or_existing(
            args.keep, DEFAULT_PORT, keep=args.keep is not None
        )
        dsn = cluster.start()
        cpu = cluster.cpu_ms
        log(f"started PostgreSQL in {cluster.base} (pid {cluster.pid})")
    started = time.perf_counter()
    rows: list[Row] = []
    builds: list[str] = []
    try:
        server = await _server_info(dsn)
        for rides in sizes:
            legacy = await build.legacy_database(dsn, rides, log)
            builds.append(f"{legacy.name}: {legacy.note}")
            deployed = await measure_layer(
                dsn, legacy.name, MAIN_OPS, args.runs, log, cpu
            )
            ops_db = await build.upgraded_copy(
                dsn, legacy.name, f"bench_ops_{rides}", log
            )
            builds.append(f"bench_ops_{rides}: {ops_db.note}")
            ours = await measure_layer(dsn, ops_db.name, MAIN_OPS, args.runs, log, cpu)
            rows += _rows(f"{rides:,}", rides, MAIN_OPS, deployed, ours)
            await _drop(dsn, ops_db.name, args.keep is not None)
        if len(sizes) > 1 and not args.no_variants:
            small, large = sizes[0], sizes[-1]
            mix_conn = await build.db_conn(dsn, f"bench_legacy_{small}")
            try:
                mix = await build.open_ride_mix(mix_conn)
            finally:
                await mix_conn.close()
            variants = (
                (f"{large:,} history", "hist", build.shrink_open_set(mix), HISTORY_OPS),
                (f"{large:,} healthy", "healthy", build.repair_all_faults, HEALTHY_OPS),
            )
            for label, tag, change, ops in variants:
                name = f"bench_{tag}_{large}"
                made = await build.variant(
                    dsn, f"bench_legacy_{large}", name, change, log
                )
                builds.append(f"{name}: {made.note}")
                deployed = await measure_layer(dsn, name, ops, args.runs, log, cpu)
                upgraded = await build.upgraded_copy(dsn, name, f"{name}_ops", log)
                ours = await measure_layer(dsn, upgraded.name, ops, args.runs, log, cpu)
                rows += _rows(label, large, ops, deployed, ours)
                await _drop(dsn, upgraded.name, args.keep is not None)
                await _drop(dsn, name, args.keep is not None)
        _ratios(rows, sizes[0])
        table = _table(rows, sizes[-1])
        print()
        print("\n".join(table))
        if not args.no_write:
            elapsed = time.perf_counter() - started
            _write(args.output, table, rows, server, builds, args, elapsed)
            log(f"\nwrote {args.output}")
    finally:
        if cluster is not None:
            cluster.stop()
            log(
                "stopped PostgreSQL"
                + (f" (kept in {cluster.base})" if args.keep else "")
            )
    return 0


async def _drop(dsn: str, name: str, keep: bool) -> None:
    if keep:
        return
    conn = await build.admin(dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


def _rows(
    label: str,
    rides: int,
    ops: tuple[Operation, ...],
    deployed: dict[str, tuple[float, str]],
    ours: dict[str, tuple[float, str]],
) -> list[Row]:
    out = []
    for op in ops:
        row = Row(label, rides, op, deployed[op.key][0], ours[op.key][0])
        row.notes = [f"deployed: {deployed[op.key][1]}", f"ops: {ours[op.key][1]}"]
        out.append(row)
    return out


def _ratios(rows: list[Row], smallest: int) -> None:
    base = {r.op.key: r.ops for r in rows if r.platform == f"{smallest:,}"}
    for row in rows:
        ref = base.get(row.op.key)
        if ref and row.ops is not None and row.op.unit == "ms":
            row.ratio = row.ops / ref


def _table(rows: list[Row], largest: int) -> list[str]:
    lines = [
        "| rides | operation | deployed median | ops median | times faster |"
        " target | met? | ratio to smallest |",
        "|---|---|---:|---:|---:|---|---|---:|",
    ]
    for r in rows:
        top = r.rides == largest
        faster = (
            f"{r.deployed / r.ops:.1f}x"
            if r.op.unit == "ms" and r.deployed and r.ops
            else ""
        )
        lines.append(
            f"| {r.platform} | {r.op.title} | {fmt(r.deployed, r.op.unit)} |"
            f" {fmt(r.ops, r.op.unit)} | {faster} | {r.target_text() if top else ''} |"
            f" {r.met(top)} | {fmt(r.ratio, 'x') if r.ratio else ''} |"
        )
    return lines


async def _server_info(dsn: str) -> dict[str, str]:
    conn = await build.admin(dsn)
    try:
        info = {}
        for name in ("server_version", "shared_buffers", "work_mem", "max_connections"):
            info[name] = str(await conn.fetchval(f"SHOW {name}"))
        return info
    finally:
        await conn.close()


def _machine() -> dict[str, str]:
    model = "unknown"
    mem = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "cpus (nproc)": str(os.cpu_count()),
        "cpu model": model,
        "memory": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def _write(
    path: Path,
    table: list[str],
    rows: list[Row],
    server: dict[str, str],
    builds: list[str],
    args: argparse.Namespace,
    elapsed: float,
) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = _machine()
    text = [
        "# Benchmark results",
        "",
        f"Measured {now} by `python -m benchmarks.run --sizes {args.sizes}"
        f" --runs {args.runs}{f' --keep {args.keep}' if args.keep else ''}`"
        f" ({elapsed / 60:.1f} min in all).",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in machine.items()) + ".",
        "",
        "PostgreSQL: " + "; ".join(f"{k} {v}" for k, v in server.items()) + ".",
        "",
        *table,
        "",
        "## How it is measured",
        "",
        "- *deployed* is `sql/legacy/deployed_functions.sql` on the generated"
        " platform; *ops* is the same database copied and upgraded with `sql/ops`"
        " (an upgraded production database, same rows), measured in the same run.",
        "- Platform: `seed_platform(rides=N, faults=all, history_days=30)`: 3 bookings"
        " and 2.5 notifications per ride, 4% of rides in the future, 1% expired but"
        " still active, 0.5% of open rides with drifted seats, about 3% of recent"
        " bookings without their notification; then `VACUUM ANALYZE`.",
        "- *history*: the largest platform with only as many open rides (future, in"
        " progress, expired) as the smallest; its ratio is the growth with history"
        " alone. *healthy*: the largest platform with every fault repaired.",
        "- The health summary row is computed on every call (the ops layer's"
        " shared cache off); the poll rows use the cache as a dashboard does.",
        f"- Functions and jobs: median of {args.runs} runs of server time"
        " (`clock_timestamp()` around `EXECUTE` inside the server: planning and"
        " execution, no round trip), after"
        f" {measure.WARM_RUNS} unmeasured run (planning the functions' statements,"
        " reading the pages in); each job in a transaction rolled back after"
        " the run, then `VACUUM` of the platform's tables, so that every run"
        " starts from the same tables (a rolled-back run's dead row versions"
        " and their index entries would slow the runs after it).",
        "- Repair: *whole 30 days* is a run with no progress recorded (the first"
        " run, and the weekly whole check); *daily run* follows one committed"
        " whole run whose recorded progress is then moved back a day, so each run"
        " checks a day of events. The deployed function checks the 30 days on"
        " every run; both of its rows time the same thing.",
        f"- Dashboard poll: `Repository.snapshot()` (health summary, latest run per"
        f" job, a job log page, open violations); server time is the planning and"
        f" execution time of every statement of the round from `pg_stat_statements`;"
        f" median of {POLL_ROUNDS} rounds {POLL_SPACING_S:g} s apart, after"
        f" {measure.WARM_ROUNDS} unmeasured rounds (a dashboard polls for hours:"
        " its pooled connections have started and prepared their statements).",
        f"- {CONCURRENT_VIEWERS} dashboards: each round, {CONCURRENT_VIEWERS}"
        " repositories (each its own pool) poll at once; the figure is the CPU time"
        " the dashboards' own server processes (their backends, by"
        " application_name) spent in such a round (`/proc/<pid>/schedstat`, own"
        " cluster only; statement time otherwise) over the same for a round"
        " with one dashboard, both after the same unmeasured rounds.",
        "- Times faster: deployed median over ops median, same platform, same run.",
        "- Ratio: ops median over the ops median of the same operation on the"
        " smallest platform.",
        "",
        "## Builds",
        "",
        *(f"- {b}" for b in builds),
        "",
        "## Details per row",
        "",
        *(f"- {r.platform} · {r.op.title}: " + "; ".join(r.notes) for r in rows),
        "",
    ]
    notes = HERE / "NOTES.md"
    if notes.exists():
        text += [notes.read_text().rstrip(), ""]
    path.write_text("\n".join(text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sizes", default="100000,1000000", help="rides per platform, comma separated"
    )
    parser.add_argument("--runs", type=int, default=5, help="runs per operation")
    parser.add_argument(
        "--dsn", help="use this server (needs CREATEDB) instead of starting one"
    )
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep (and reuse) the started cluster in DIR",
    )
    parser.add_argument(
        "--no-variants",
        action="store_true",
        help="skip the history and healthy variants",
    )
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run(args))
    except asyncpg.PostgresError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
