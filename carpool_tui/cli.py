"""Command line: the dashboard, the embedded demo, migrations and demo data."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from carpool_tui import __version__
from carpool_tui.config import (
    DEFAULT_REFRESH_SECONDS,
    MAX_REFRESH_SECONDS,
    MIN_REFRESH_SECONDS,
    Settings,
    default_action_log,
    default_log_file,
    default_operator,
    describe_target,
    resolve_dsn,
)
from carpool_tui.db.errors import OpsError

DEMO_DATABASE = "carpool_demo"
DEMO_RIDES = 400
DEMO_HISTORY_DAYS = 3

EPILOG = f"""\
commands:
  (none)     open the dashboard on the database given by --dsn, DATABASE_URL
             or the PG* variables
  demo       start an embedded PostgreSQL with a seeded demo database and
             open the dashboard on it
  migrate    apply the ops layer's SQL migrations
  seed       fill a database with a generated carpool platform

Diagnostics go to {default_log_file()} (set CARPOOL_TUI_LOG to move it);
every write the dashboard makes is also appended to {default_action_log()}.
"""


class _Stop(Exception):
    """Raised from a signal handler so that cleanup runs in finally blocks."""


def _refresh(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        message = f"{text!r} is not a number of seconds"
        raise argparse.ArgumentTypeError(message) from None
    if not MIN_REFRESH_SECONDS <= value <= MAX_REFRESH_SECONDS:
        raise argparse.ArgumentTypeError(
            f"refresh must be between {MIN_REFRESH_SECONDS:g} and "
            f"{MAX_REFRESH_SECONDS:g} seconds"
        )
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _add_dsn(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn",
        help="PostgreSQL DSN, e.g. postgresql://user@host:5432/db "
        "(default: DATABASE_URL, then the PG* variables)",
    )


def _add_dashboard_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--refresh",
        type=_refresh,
        default=DEFAULT_REFRESH_SECONDS,
        metavar="SECONDS",
        help=f"poll interval (default {DEFAULT_REFRESH_SECONDS:g})",
    )
    parser.add_argument(
        "--read-only",
        action="store_true",
        help="open a read-only session: the database refuses every write",
    )
    parser.add_argument(
        "--operator",
        default=None,
        metavar="NAME",
        help="name recorded in audit rows (default: user@host)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command."""
    parser = argparse.ArgumentParser(
        prog="carpool-tui",
        description="Terminal dashboard for a carpool platform's PostgreSQL health.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=__version__)
    _add_dsn(parser)
    _add_dashboard_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="open the dashboard on a seeded embedded database",
        description="Start an embedded PostgreSQL server, create, migrate and seed "
        "a demo database with every fault kind and a few days of job history, open "
        "the dashboard, and stop the server on exit. A second start reuses it.",
    )
    demo.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the embedded server keeps its files "
        "(default /var/tmp/carpool-tui-USER/demo)",
    )
    demo.add_argument(
        "--reset", action="store_true", help="delete the demo data and start afresh"
    )
    demo.add_argument(
        "--rides",
        type=_positive,
        default=DEMO_RIDES,
        help=f"rides to generate on first start (default {DEMO_RIDES})",
    )
    _add_dashboard_options(demo)

    mig = sub.add_parser(
        "migrate",
        help="apply the ops layer's SQL migrations",
        description="Apply the ops layer's migrations that are missing, each file "
        "in one transaction, recording name and checksum. Refuses to run when an "
        "applied file has changed.",
    )
    _add_dsn(mig)
    mig.add_argument(
        "--dry-run",
        action="store_true",
        help="say what would be applied, change nothing",
    )
    mig.add_argument(
        "--base",
        action="store_true",
        help="also create the platform's own tables (for a fresh, empty database)",
    )

    seed = sub.add_parser(
        "seed",
        help="fill a database with a generated carpool platform",
        description="Generate drivers, passengers, rides, bookings and "
        "notifications inside the server; optionally inject the faults that the "
        "invariant checks look for. Same seed, same data.",
    )
    _add_dsn(seed)
    seed.add_argument(
        "--rides", type=_positive, default=200, help="rides (default 200)"
    )
    seed.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    seed.add_argument(
        "--faults",
        default="none",
        metavar="LIST|all|none",
        help="comma-separated fault kinds to inject (default none)",
    )
    seed.add_argument(
        "--history-days",
        type=_non_negative,
        default=0,
        metavar="N",
        help="add N days of job history (default 0)",
    )
    return parser


def _setup_logging() -> None:
    path = default_log_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        logging.basicConfig(
            filename=path,
            level=logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    except OSError:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


async def _migrate(dsn: str | None, *, base: bool, dry_run: bool) -> list[str]:
    from carpool_tui.db.connect import connect
    from carpool_tui.db.migrate import Group, migrate

    groups: tuple[Group, ...] = ("base", "ops") if base else ("ops",)
    conn = await connect(dsn, purpose="migrate", statement_timeout_ms=0)
    try:
        items = await migrate(conn, groups, dry_run=dry_run)
    finally:
        await conn.close()
    pending = [i.migration.name for i in items if i.state == "pending"]
    verb = "would apply" if dry_run else "applied"
    lines = [f"{verb} {name}" for name in pending]
    already = len(items) - len(pending)
    lines.append(
        f"{len(pending)} {verb}, {already} already applied"
        + (" (nothing changed: dry run)" if dry_run else "")
    )
    return lines


def cmd_migrate(args: argparse.Namespace) -> int:
    dsn = resolve_dsn(args.dsn)
    _say(f"Migrating {describe_target(dsn)}")
    for line in _run(_migrate(dsn, base=args.base, dry_run=args.dry_run)):
        print(line)
    return 0


async def _seed(dsn: str | None, args: argparse.Namespace) -> list[str]:
    from carpool_tui.db.connect import connect
    from carpool_tui.db.seed import parse_faults, seed_platform

    try:
        faults = parse_faults(args.faults)
    except ValueError as exc:
        raise OpsError(str(exc), "") from exc
    conn = await connect(dsn, purpose="seed", statement_timeout_ms=0)
    try:
        report = await seed_platform(
            conn,
            rides=args.rides,
            seed=args.seed,
            faults=faults,
            history_days=args.history_days,
        )
    finally:
        await conn.close()
    return report.lines()


def cmd_seed(args: argparse.Namespace) -> int:
    dsn = resolve_dsn(args.dsn)
    _say(f"Seeding {describe_target(dsn)}")
    for line in _run(_seed(dsn, args)):
        print(line)
    return 0


def _settings(args: argparse.Namespace, dsn: str | None) -> Settings:
    return Settings(
        dsn=dsn,
        refresh_seconds=args.refresh,
        read_only=args.read_only,
        operator=args.operator or default_operator(),
    )


def cmd_dashboard(args: argparse.Namespace) -> int:
    from carpool_tui.ui.app import run_dashboard

    restore = _install_stop_handlers()
    try:
        return run_dashboard(_settings(args, resolve_dsn(args.dsn)))
    except _Stop as stop:
        _say(f"Stopping on {stop}.")
        return 0
    finally:
        restore()


async def _prepare_demo(admin_dsn: str, demo_dsn: str, rides: int) -> None:
    """Create, migrate and seed the demo database unless it already exists."""
    from carpool_tui.db.connect import connect
    from carpool_tui.db.migrate import migrate
    from carpool_tui.db.seed import FAULT_KINDS, seed_platform

    admin = await connect(admin_dsn, purpose="demo-setup", statement_timeout_ms=0)
    try:
        exists = await admin.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", DEMO_DATABASE
        )
        if not exists:
            await admin.execute(f"CREATE DATABASE {DEMO_DATABASE}")
    finally:
        await admin.close()
    conn = await connect(demo_dsn, purpose="demo-setup", statement_timeout_ms=0)
    try:
        seeded = await conn.fetchval("SELECT to_regclass('rides') IS NOT NULL")
        if seeded and await conn.fetchval("SELECT count(*) FROM rides") > 0:
            await migrate(conn, ("base", "ops"))
            _say("Reusing the existing demo database (use --reset to start afresh).")
            return
        _say("Creating the demo database: platform schema and ops layer...")
        await migrate(conn, ("base", "ops"))
        _say(f"Generating {rides} rides with every fault kind and job history...")
        report = await seed_platform(
            conn,
            rides=rides,
            seed=1,
            faults=FAULT_KINDS,
            history_days=DEMO_HISTORY_DAYS,
        )
        for line in report.lines():
            _say(f"  {line}")
        await conn.execute("SELECT check_system_invariants()")
    finally:
        await conn.close()


def _install_stop_handlers() -> Callable[[], None]:
    """Turn SIGTERM and SIGHUP (a closed SSH session) into a clean stop."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Stop(signal.Signals(signum).name)

    previous = {
        sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)
    }

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def cmd_demo(args: argparse.Namespace) -> int:
    from carpool_tui.db.embedded import EmbeddedServer, default_data_dir

    data_dir: Path = args.data_dir or default_data_dir()
    if args.reset and data_dir.exists():
        stale = EmbeddedServer(data_dir)
        stale.start()
        stale.stop()
        shutil.rmtree(data_dir)
        _say(f"Removed the demo data in {data_dir}")
    restore = _install_stop_handlers()
    server = EmbeddedServer(data_dir)
    try:
        _say(f"Starting the embedded PostgreSQL server in {data_dir}...")
        admin_dsn = server.start()
        demo_dsn = server.dsn(DEMO_DATABASE)
        _run(_prepare_demo(admin_dsn, demo_dsn, args.rides))
        from carpool_tui.ui.app import run_dashboard

        return run_dashboard(_settings(args, demo_dsn))
    except _Stop as stop:
        _say(f"Stopping on {stop}.")
        return 0
    finally:
        server.stop()
        restore()


COMMANDS: dict[str | None, Callable[[argparse.Namespace], int]] = {
    None: cmd_dashboard,
    "demo": cmd_demo,
    "migrate": cmd_migrate,
    "seed": cmd_seed,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``carpool-tui`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging()
    try:
        return COMMANDS[args.command](args)
    except OpsError as exc:
        logging.getLogger(__name__).warning("%s", exc)
        _say(f"carpool-tui: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
