"""Command line: the dashboard, the embedded demo, migrations and demo data."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import ipaddress
import json
import logging
import math
import os
import re
import select
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import warnings
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

from carpool_tui import __version__
from carpool_tui.config import (
    CHECK_METRICS,
    CONFIG_ENV,
    DEFAULT_REFRESH_SECONDS,
    MAX_REFRESH_SECONDS,
    MIN_REFRESH_SECONDS,
    OFF,
    CheckOverrides,
    CheckThresholds,
    ConfigError,
    ConfigFile,
    Settings,
    Target,
    default_action_log,
    default_config_file,
    default_log_file,
    default_operator,
    describe_target,
    load_config,
    login_operator,
    names_nothing,
    operator_problem,
    parse_limit,
    resolve_dsn,
)
from carpool_tui.db.errors import OpsError, translate, with_hint
from carpool_tui.models import JOBS, JOBS_BY_NAME

if TYPE_CHECKING:
    import asyncpg

DEMO_DATABASE = "carpool_demo"
DEMO_RIDES = 400
DEMO_HISTORY_DAYS = 3
SERVE_HOST = "127.0.0.1"
THEME_CHOICES = ("dark", "light", "ansi")
"""The --theme names; carpool_tui.ui.tools maps them to Textual themes."""
SERVE_PORT = 8000
UNKNOWN_EXIT = 3
CHECK_TIMEOUT_S = 8.0
"""check's whole budget by default: closing what it opened may take 2 s more,
and NRPE ends a check that has not answered in 10 s."""
MAX_CHECK_TIMEOUT_S = 3600.0
BROKEN_PIPE_EXIT = 141
"""Exit code when stdout's reader has gone (``| head -1``): 128 + SIGPIPE, what
a shell reports for a command that a closed pipe ended."""

EPILOG = f"""\
commands:
  (none)     open the dashboard on the database given by --dsn, DATABASE_URL
             or the PG* variables
  demo       start an embedded PostgreSQL with a seeded demo database and
             open the dashboard on it
  migrate    apply the ops layer's SQL migrations
  seed       fill a database with a generated carpool platform
  check      one-shot health check for monitors: exit 0 OK, 1 WARNING,
             2 CRITICAL, 3 UNKNOWN
  run-job    run one of the four jobs, for an external scheduler
  serve      the dashboard in a web browser (needs carpool-tui[serve])

Named targets (DSN, read-only, refresh, operator, check thresholds) come
from {default_config_file()} (--config or {CONFIG_ENV} name another file).
Diagnostics go to {default_log_file()} (set CARPOOL_TUI_LOG to move it);
every write the dashboard makes is also appended to {default_action_log()}.
"""


_N = TypeVar("_N", int, float)
_R = TypeVar("_R")


class _Stop(Exception):
    """Raised from a signal handler so that cleanup runs in finally blocks."""


def _number(text: str, kind: Callable[[str], _N], noun: str) -> _N:
    """``kind(text)``, or an argparse error saying what was expected."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None


def _refresh(text: str) -> float:
    value = _number(text, float, "a number of seconds")
    if not MIN_REFRESH_SECONDS <= value <= MAX_REFRESH_SECONDS:
        raise argparse.ArgumentTypeError(
            f"refresh must be between {MIN_REFRESH_SECONDS:g} and "
            f"{MAX_REFRESH_SECONDS:g} seconds"
        )
    return value


def _positive(text: str) -> int:
    if _number(text, int, "a whole number") < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return int(text)


MAX_RIDES = 20_000_000  # about 60M bookings and 40 GB: past that, a typo


def _ride_count(text: str) -> int:
    rides = _positive(text)
    if rides > MAX_RIDES:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_RIDES:,} (a generated platform of that size"
            " already takes about 40 GB)"
        )
    return rides


def _non_negative(text: str) -> int:
    if _number(text, int, "a whole number") < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return int(text)


MAX_HISTORY_DAYS = 3_650  # ten years of job runs every 5 minutes: past that, a typo


def _history_days(text: str) -> int:
    days = _non_negative(text)
    if days > MAX_HISTORY_DAYS:
        raise argparse.ArgumentTypeError(
            f"at most {MAX_HISTORY_DAYS:,} days (ten years of job runs)"
        )
    return days


def _faults(text: str) -> tuple[str, ...]:
    from carpool_tui.db.seed import parse_faults

    try:
        return parse_faults(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str) -> int:
    if not 1 <= _number(text, int, "a port number") <= 65535:
        raise argparse.ArgumentTypeError("a port is between 1 and 65535")
    return int(text)


def _factor(text: str) -> float:
    value = _number(text, float, "a number")
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(
            "must be a finite number, 0 or more (0 turns it off)"
        )
    return value


def _timeout(text: str) -> float:
    value = _number(text, float, "a number of seconds")
    if not math.isfinite(value) or not 0 < value <= MAX_CHECK_TIMEOUT_S:
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds above 0, at most {MAX_CHECK_TIMEOUT_S:g}"
        )
    return value


def _named_path(text: str) -> Path:
    """A path that names something: an empty one (an unset shell variable)
    would be read as the current directory."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "is empty (an unset shell variable?); name a file or folder, or leave"
            " the option out"
        )
    return Path(text)


def _public_url(text: str) -> str:
    """An http(s) URL with a host: the page builds its websocket address on it."""
    try:
        parts = urlsplit(text.strip())
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an http:// or https:// URL with a host (the"
            " address browsers use, https://ops.example/carpool say)"
        )
    return text.strip()


def _limit(text: str) -> tuple[str, int | None]:
    """METRIC=N or METRIC=off, for --warn and --critical."""
    metric, sep, value = text.partition("=")
    metric = metric.strip()
    if not sep or metric not in CHECK_METRICS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected METRIC=N or METRIC={OFF}, METRIC one of "
            + ", ".join(CHECK_METRICS)
        )
    try:
        return metric, parse_limit(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def _thresholds_json(text: str) -> CheckThresholds:
    """A --thresholds value: check thresholds as CheckThresholds.to_json writes."""
    try:
        return CheckThresholds.from_json(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def _dsn_text(text: str) -> str:
    """A --dsn value; one that names no server or database (an unset shell
    variable) is refused, not left to libpq's defaults: another database."""
    if names_nothing(text):
        raise argparse.ArgumentTypeError(
            f"names no server or database ({describe_target(text.strip())!r}: an"
            " unset shell variable?); give a full DSN, or leave --dsn out to use"
            " the target's, DATABASE_URL or the PG* variables"
        )
    return text


def _operator_text(text: str) -> str:
    """An --operator value without surrounding spaces; a blank one is refused.

    Falling back to user@host instead would record someone other than the
    person who asked in every audit row and job-log entry of the session.
    """
    name = text.strip()
    if not name:
        raise argparse.ArgumentTypeError(
            "is blank (an unset shell variable?); give the name to record in audit"
            " rows and the job log, or leave --operator out to use the target's,"
            " else user@host"
        )
    problem = operator_problem(name)
    if problem is not None:
        raise argparse.ArgumentTypeError(
            f"{problem}; type the name to record in audit rows and the job log"
            " as plain text"
        )
    return name


def _job_name(text: str) -> str:
    if text not in JOBS_BY_NAME:
        raise argparse.ArgumentTypeError(
            f"unknown job {text!r}; the jobs are " + ", ".join(job.name for job in JOBS)
        )
    return text


def _add_dsn(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """--dsn, --target and --config; on a command they keep a value given before it."""
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--dsn",
        default=default,
        type=_dsn_text,
        help="PostgreSQL DSN, e.g. postgresql://user@host:5432/db "
        "(default: the target's, then DATABASE_URL, then the PG* variables)",
    )
    parser.add_argument(
        "--target",
        default=default,
        metavar="NAME",
        help="use the settings of this named target from the config file",
    )
    parser.add_argument(
        "--config",
        type=_named_path,
        default=default,
        metavar="FILE",
        help=f"the config file (default: {CONFIG_ENV}, else "
        "$XDG_CONFIG_HOME/carpool-tui/config.toml)",
    )


def _add_refresh_and_operator(
    parser: argparse.ArgumentParser, *, top: bool = False
) -> None:
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--refresh",
        type=_refresh,
        default=default,
        metavar="SECONDS",
        help=f"poll interval (default: the target's, else {DEFAULT_REFRESH_SECONDS:g})",
    )
    _add_operator(
        parser,
        default=default,
        help="name recorded in audit rows and the job log "
        "(default: the target's, else user@host)",
    )


def _add_operator(parser: argparse.ArgumentParser, *, default: Any, help: str) -> None:
    """--operator, parsed the same way by the dashboard, serve, demo and run-job."""
    parser.add_argument(
        "--operator", type=_operator_text, default=default, metavar="NAME", help=help
    )


def _add_view_options(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """--wallboard and --theme: how the dashboard looks, for a terminal or a wall."""
    parser.add_argument(
        "--wallboard",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="war-room wall: large, high-contrast, no keys (Ctrl+Q leaves); only "
        "the state, what is wrong and since when",
    )
    parser.add_argument(
        "--theme",
        choices=THEME_CHOICES,
        default=None if top else argparse.SUPPRESS,
        help="colours: dark (default), light, or ansi (the terminal's 16 colours); "
        "NO_COLOR=1 turns colour off",
    )


def _add_dashboard_options(
    parser: argparse.ArgumentParser, *, top: bool = False
) -> None:
    _add_refresh_and_operator(parser, top=top)
    _add_view_options(parser, top=top)
    parser.add_argument(
        "--read-only",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="open a read-only session: the database refuses every write, and "
        "migrate (but not --dry-run), seed and run-job refuse to run (also on "
        "when the target says read_only = true)",
    )


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command."""
    parser = _Parser(
        prog="carpool-tui",
        description="Terminal dashboard for a carpool platform's PostgreSQL health.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=__version__)
    _add_dsn(parser, top=True)
    _add_dashboard_options(parser, top=True)
    # How `serve --wallboard` hands the check thresholds of its config file and
    # target to the dashboard processes it starts; not for typing.
    parser.add_argument(
        "--thresholds", type=_thresholds_json, default=None, help=argparse.SUPPRESS
    )
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
        type=_named_path,
        default=None,
        help="where the embedded server keeps its files "
        "(default /var/tmp/carpool-tui-USER/demo)",
    )
    demo.add_argument(
        "--reset", action="store_true", help="delete the demo data and start afresh"
    )
    demo.add_argument(
        "--rides",
        type=_ride_count,
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
        help="also create the platform's own tables (for a fresh, empty database; "
        "refused on one that has them)",
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
        "--rides", type=_ride_count, default=200, help="rides (default 200)"
    )
    seed.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    seed.add_argument(
        "--faults",
        type=_faults,
        default="none",
        metavar="LIST|all|none",
        help="comma-separated fault kinds to inject (default none)",
    )
    seed.add_argument(
        "--history-days",
        type=_history_days,
        default=0,
        metavar="N",
        help="add N days of job history (default 0)",
    )
    _add_check_parser(sub)
    _add_run_job_parser(sub)
    _add_serve_parser(sub)
    return parser


def _add_check_parser(sub: Any) -> None:
    check = sub.add_parser(
        "check",
        help="one-shot health check for monitors (exit 0/1/2/3)",
        description="Read the health summary, the job log and the open violations "
        "once, and exit 0 OK, 1 WARNING, 2 CRITICAL or 3 UNKNOWN (cannot connect, "
        "no health function, bad options or config) with one line of output in "
        "the style of a Nagios plugin. Thresholds: a metric above its warning or "
        "critical limit raises that level. Metrics and default limits (warning/"
        "critical): "
        + "; ".join(
            f"{metric} {'-' if w is None else w}/{'-' if c is None else c}"
            for metric, (_, w, c) in CHECK_METRICS.items()
        )
        + ".",
    )
    _add_dsn(check)
    check.add_argument(
        "--json", action="store_true", help="print the full result as JSON"
    )
    for level in ("warn", "critical"):
        check.add_argument(
            f"--{level}",
            type=_limit,
            action="append",
            default=[],
            metavar=f"METRIC=N|{OFF}",
            help=f"{level} when METRIC is above N (repeatable; {OFF}: never)",
        )
    check.add_argument(
        "--timeout",
        type=_timeout,
        default=CHECK_TIMEOUT_S,
        metavar="SECONDS",
        help="say UNKNOWN when the database has not answered within this long "
        f"(default {CHECK_TIMEOUT_S:g}: a monitor such as NRPE gives up at 10)",
    )
    check.add_argument(
        "--overdue-factor",
        type=_factor,
        default=None,
        metavar="F",
        help="a job is overdue when its last run started more than F times its "
        "recommended interval ago (default 2; 0 turns this off)",
    )


def _add_run_job_parser(sub: Any) -> None:
    job = sub.add_parser(
        "run-job",
        help="run one of the four jobs, for an external scheduler",
        description="Run one job once, as the operations manual's option B "
        "(an external scheduler instead of pg_cron), and exit 0 when it "
        "succeeded, 1 when it failed or could not run. Jobs: "
        + ", ".join(job.name for job in JOBS)
        + ".",
    )
    job.add_argument(
        "job", type=_job_name, metavar="NAME", help="the job's function name"
    )
    _add_dsn(job)
    _add_operator(
        job,
        default=argparse.SUPPRESS,
        help="recorded as carpool.operator in the job log "
        "(default: the target's, else user@host)",
    )
    job.add_argument("--json", action="store_true", help="print the job's JSON result")


def _add_serve_parser(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="serve the dashboard to a web browser (needs carpool-tui[serve])",
        description="Serve the dashboard over HTTP with textual-serve: every "
        "browser tab gets its own dashboard process. Read-only unless "
        "--allow-writes. textual-serve has no authentication: keep it on "
        "127.0.0.1 or put it behind a proxy that authenticates.",
    )
    _add_dsn(serve)
    serve.add_argument(
        "--host",
        default=SERVE_HOST,
        help=f"address to listen on (default {SERVE_HOST})",
    )
    serve.add_argument(
        "--port",
        type=_port,
        default=SERVE_PORT,
        help=f"port to listen on (default {SERVE_PORT})",
    )
    serve.add_argument(
        "--public-url",
        default=None,
        type=_public_url,
        metavar="URL",
        help="the address browsers use, when behind a proxy (default http://HOST:PORT)",
    )
    serve.add_argument(
        "--allow-writes",
        action="store_true",
        help="let the browser dashboard run jobs and write (default: read-only)",
    )
    _add_refresh_and_operator(serve)
    _add_view_options(serve)


def _setup_logging() -> None:
    path = default_log_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        logging.basicConfig(
            filename=path,
            level=logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    except OSError as exc:
        # Not to the terminal: the dashboard would have log lines drawn over it.
        logging.basicConfig(handlers=[logging.NullHandler()])
        _say(f"carpool-tui: diagnostics are off: cannot write {path} ({exc})")
    warnings.showwarning = _show_warning


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """A library's warning (asyncpg's about a password file others can read)
    as one line of ours, not Python's two with the source line that raised it."""
    text = " ".join(str(message).split())
    logging.getLogger(__name__).warning("%s: %s", category.__name__, text)
    _say(f"carpool-tui: warning: {text}")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


async def _migrate(
    dsn: str | None, *, base: bool, dry_run: bool
) -> tuple[list[str], list[str]]:
    """What migrate did, and the dashboard's functions dropped since their
    files were applied."""
    from carpool_tui.db.connect import connect
    from carpool_tui.db.migrate import Group, migrate

    groups: tuple[Group, ...] = ("base", "ops") if base else ("ops",)
    conn = await connect(dsn, purpose="migrate", statement_timeout_ms=0)
    try:
        items = await migrate(
            conn,
            groups,
            dry_run=dry_run,
            applied=lambda name: _print_going_on(f"applied {name}"),
        )
        left = [i for i in items if i.state == "pending"] if dry_run else []
        gone = [] if left else await _dropped_functions(conn)
    finally:
        await conn.close()
    pending = [i.migration.name for i in items if i.state == "pending"]
    newer = [i.migration.name for i in items if i.state == "newer"]
    verb = "would apply" if dry_run else "applied"
    # Applied files were printed as they were recorded.
    lines = [f"{verb} {name}" for name in pending] if dry_run else []
    if newer:
        lines.append(
            f"note: the database also records {', '.join(newer)}, applied by a"
            " newer carpool-tui that this one does not know; upgrade carpool-tui"
        )
    already = len(items) - len(pending) - len(newer)
    what = "platform schema and ops layer" if base else "ops layer"
    lines.append(
        f"{len(pending)} {verb}, {already} already applied ({what})"
        + (", nothing changed: dry run" if dry_run else "")
    )
    return lines, gone


async def _dropped_functions(conn: asyncpg.Connection) -> list[str]:
    """The dashboard's functions missing once every ops file is recorded: each
    was dropped after its file was applied, which migrate does not apply
    again."""
    from carpool_tui.db.repo import ALL_FUNCTIONS, function_name

    missing = await conn.fetchval(
        "SELECT COALESCE(array_agg(sig ORDER BY n), '{}') FROM unnest($1::text[])"
        " WITH ORDINALITY AS f(sig, n) WHERE to_regprocedure(sig) IS NULL",
        list(ALL_FUNCTIONS),
    )
    return [function_name(sig) for sig in missing]


def _config(args: argparse.Namespace) -> ConfigFile:
    """The config file, read once per command, with its warning said."""
    config = load_config(getattr(args, "config", None))
    if config.shared_password:
        logging.getLogger(__name__).warning("%s", config.shared_password)
        _say(f"carpool-tui: warning: {config.shared_password}")
    return config


def _target(args: argparse.Namespace, config: ConfigFile) -> Target | None:
    name = getattr(args, "target", None)
    return None if name is None else config.target(name)


def _target_dsn(args: argparse.Namespace) -> str | None:
    """The DSN from --dsn, else --target's, else DATABASE_URL (None: PG*)."""
    return resolve_dsn(getattr(args, "dsn", None), _target(args, _config(args)))


def _writing_dsn(args: argparse.Namespace, command: str) -> str | None:
    """The DSN for a command that writes (migrate, seed); --read-only or a
    read-only target refuses it before connecting, whatever DSN the command
    line gives: a session asked to be read-only must write nothing."""
    if getattr(args, "read_only", False):
        raise OpsError(
            f"--read-only is given, and {command} writes to the database; run it"
            " without --read-only"
        )
    target = _target(args, _config(args))
    if target is not None and target.read_only:
        raise ConfigError(
            f"target {target.name!r} is read_only = true, and {command} writes to the"
            " database; use a target without it (or --dsn without --target)"
        )
    return resolve_dsn(getattr(args, "dsn", None), target)


def cmd_migrate(args: argparse.Namespace) -> int:
    dsn = _target_dsn(args) if args.dry_run else _writing_dsn(args, "migrate")
    _say(f"Migrating {describe_target(dsn)}")
    lines, gone = _run(_migrate(dsn, base=args.base, dry_run=args.dry_run))
    for line in lines:
        _out(line)
    if gone:
        from carpool_tui.models import Capabilities
        from carpool_tui.ui.actions import incomplete_why

        caps = Capabilities(ops_layer_version="", missing_functions=gone)
        raise OpsError(f"The ops layer is INCOMPLETE. {incomplete_why(caps)}", "")
    return 0


async def _seed(
    dsn: str | None, args: argparse.Namespace, faults: tuple[str, ...]
) -> list[str]:
    from carpool_tui.db.connect import connect
    from carpool_tui.db.seed import seed_platform

    conn = await connect(dsn, purpose="seed", statement_timeout_ms=0)
    try:
        try:
            report = await seed_platform(
                conn,
                rides=args.rides,
                seed=args.seed,
                faults=faults,
                history_days=args.history_days,
            )
        except OpsError:
            raise
        except Exception as exc:
            # Nothing was written: the seed is one transaction.
            error = translate(exc, doing="Seeding (nothing was written)")
            if error.sqlstate == "23505":  # unique_violation
                error.hint = (
                    "The database already holds rows of an earlier seed; seed a"
                    " fresh database (drop and recreate this one)."
                )
            raise error from exc
        _SEED_WRITTEN[0] = True
        lines = report.lines()
        lines.append(await _check_after_seed(conn))
    finally:
        await conn.close()
    return lines


async def _check_after_seed(conn: Any) -> str:
    """Run the invariant check so the new data's faults show as violations."""
    has_check = await conn.fetchval(
        "SELECT to_regprocedure('check_system_invariants()') IS NOT NULL"
    )
    if not has_check:
        return "invariant check: not run (this database has no check function yet)"
    try:
        result = await conn.fetchval("SELECT check_system_invariants()")
        rows, still_open = await conn.fetchrow(
            "SELECT count(*), count(*) FILTER (WHERE resolved_at IS NULL)"
            " FROM invariant_violations"
        )
    except Exception as exc:
        # The seed is committed by now; say why the check did not run instead.
        return f"invariant check: not run ({translate(exc, doing='Checking')})"
    if not isinstance(result, dict) or result.get("success") is False:
        from carpool_tui.ui.text import printable

        why = printable(result.get("error"), None) if isinstance(result, dict) else ""
        return (
            f"invariant check: failed ({why or 'no result'}); the seed is kept,"
            " run `carpool-tui run-job check_system_invariants` again"
        )
    found = result.get("total_violations", "?")
    return (
        f"invariant check: {found} violation(s) found; invariant_violations now"
        f" holds {rows} row(s), {still_open} open"
    )


def cmd_seed(args: argparse.Namespace) -> int:
    faults: tuple[str, ...] = args.faults
    dsn = _writing_dsn(args, "seed")
    _say(f"Seeding {describe_target(dsn)}")
    for line in _run(_seed(dsn, args, faults)):
        _out(line)
    return 0


def _settings(
    args: argparse.Namespace,
    dsn: str | None,
    target: Target | None = None,
    *,
    records: bool = True,
) -> Settings:
    """Settings from the options, then the target, then the defaults.

    ``records``: the command writes the operator's name (a job run, an audit
    row), so a login name the server would refuse stops it here.
    """
    refresh = getattr(args, "refresh", None)
    if refresh is None:
        refresh = (target and target.refresh_seconds) or DEFAULT_REFRESH_SECONDS
    operator = getattr(args, "operator", None) or (target and target.operator)
    read_only = bool(getattr(args, "read_only", False)) or bool(
        target and target.read_only
    )
    return Settings(
        dsn=dsn,
        refresh_seconds=refresh,
        read_only=read_only,
        operator=operator or (login_operator() if records else default_operator()),
    )


def _target_settings(
    args: argparse.Namespace, *, records: bool = True
) -> tuple[Settings, ConfigFile, Target | None]:
    """Settings for a command that connects: options over --target over defaults."""
    config = _config(args)
    target = _target(args, config)
    dsn = resolve_dsn(getattr(args, "dsn", None), target)
    return _settings(args, dsn, target, records=records), config, target


def _view(args: argparse.Namespace) -> dict[str, Any]:
    """The --wallboard and --theme choices, as run_dashboard's keywords."""
    return {
        "wallboard": bool(getattr(args, "wallboard", False)),
        "theme": getattr(args, "theme", None),
    }


def _wall_thresholds(
    args: argparse.Namespace, config: ConfigFile, target: Target | None
) -> CheckThresholds:
    """What the wallboard judges with: the thresholds `check` takes from the
    config file for the same target (`serve` passes them on as --thresholds)."""
    given: CheckThresholds | None = getattr(args, "thresholds", None)
    return (given if given is not None else config.thresholds(target)).ordered()


def cmd_dashboard(args: argparse.Namespace) -> int:
    from carpool_tui.ui.app import run_dashboard

    settings, config, target = _target_settings(args)
    thresholds = _wall_thresholds(args, config, target)
    restore = _install_stop_handlers()
    try:
        return run_dashboard(settings, thresholds=thresholds, **_view(args))
    except _Stop as stop:
        _say(f"Stopping on {stop}.")
        return 0
    finally:
        restore()


async def _prepare_demo(admin_dsn: str, demo_dsn: str, rides: int) -> None:
    """Create, migrate and seed the demo database unless it already exists."""
    from carpool_tui.db.connect import connect
    from carpool_tui.db.migrate import MigrationChanged, migrate
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
            try:
                await migrate(conn, ("base", "ops"))
            except MigrationChanged as exc:
                raise OpsError(
                    f"The demo database was made by another version: {exc.message}",
                    "Start afresh with: carpool-tui demo --reset",
                ) from exc
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
        _say(f"  {await _check_after_seed(conn)}")
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
    from carpool_tui.db.embedded import (
        EmbeddedServer,
        default_data_dir,
        running_postmaster,
    )

    # The config file is read before the server starts: a mistake in it stops
    # the demo at once.
    view = _view(args)
    thresholds = (
        _wall_thresholds(args, _config(args), None) if view["wallboard"] else None
    )
    if not getattr(args, "operator", None):
        login_operator()  # a login name the server would refuse stops it here
    data_dir: Path = args.data_dir or default_data_dir()
    # Before saying it starts (or removes) anything.
    EmbeddedServer(data_dir).refuse_unquotable_path()
    if args.reset and data_dir.exists():
        stale = EmbeddedServer(data_dir)
        stale.refuse_reset_in_use()
        stale.start()
        stale.stop()
        shutil.rmtree(data_dir)
        _say(f"Removed the demo data in {data_dir}")
    restore = _install_stop_handlers()
    server = EmbeddedServer(data_dir)
    started = False
    try:
        running = running_postmaster(data_dir)
        if running is not None:
            _say(
                f"Joining the demo server already running in {data_dir} (pid {running})"
            )
        else:
            _say(f"Starting the embedded PostgreSQL server in {data_dir}...")
        admin_dsn = server.start()
        started = True
        demo_dsn = server.dsn(DEMO_DATABASE)
        _run(_prepare_demo(admin_dsn, demo_dsn, args.rides))
        # As the help screen shows it: without the (empty) password.
        shown = describe_target(demo_dsn)
        _say(f"Demo database (for --dsn while the demo runs): {shown}")
        from carpool_tui.ui.app import run_dashboard

        return run_dashboard(_settings(args, demo_dsn), thresholds=thresholds, **view)
    except _Stop as stop:
        _say(f"Stopping on {stop}.")
        return 0
    finally:
        # A server that died under the demo (killed, crashed) is not one it stopped.
        died = started and running_postmaster(data_dir) is None
        server.stop()
        restore()
        if started:
            # Whether the server went with it: another demo may still use it.
            left = running_postmaster(data_dir)
            if died:
                said = (
                    f"The demo server in {data_dir} had already stopped, not by "
                    f"this demo: its log is {data_dir / 'log'}."
                )
            elif left is not None:
                said = (
                    f"The demo server in {data_dir} keeps running (pid {left}) for "
                    "the other demo using it."
                )
            else:
                said = f"Stopped the demo server in {data_dir}."
            _say(said)


def _thresholds(
    args: argparse.Namespace, config: ConfigFile, target: Target | None
) -> CheckThresholds:
    """Defaults, then the config file's [check], the target's, then the options."""
    options = CheckOverrides(
        warn=dict(args.warn),
        critical=dict(args.critical),
        overdue_factor=args.overdue_factor,
    )
    return config.thresholds(target).merged(options).ordered()


def cmd_check(args: argparse.Namespace) -> int:
    from carpool_tui.db.probe import read_health
    from carpool_tui.monitor import evaluate, unknown
    from carpool_tui.ui.text import printable

    database = describe_target(getattr(args, "dsn", None))
    try:
        settings, config, target = _target_settings(args, records=False)
        database = settings.target
        thresholds = _thresholds(args, config, target)
        reading = _run(_within(read_health(settings), args.timeout))
        result = evaluate(reading, thresholds, database)
    except ConfigError as exc:
        result = unknown(OpsError(str(exc)), database)
    except OpsError as exc:
        logging.getLogger(__name__).warning("check: %s", exc)
        result = unknown(exc, database)
    if args.json:
        _out(json.dumps(result.as_json(), indent=2, sort_keys=True))
    else:
        # Check names and error messages are database text: escaped, the line
        # stays one line and cannot reach the terminal as control sequences.
        _out(printable(result.line(), None))
    return result.exit_code


async def _within(reading: Coroutine[Any, Any, _R], seconds: float) -> _R:
    """``reading``, or ConnectionLost once ``seconds`` have passed without it."""
    from carpool_tui.db.errors import ConnectionLost

    try:
        return await asyncio.wait_for(reading, seconds)
    except TimeoutError:
        raise ConnectionLost(
            f"No answer from the database within {seconds:g} s",
            "The server may be stopped, overloaded or behind a network that"
            " drops packets; --timeout gives it longer.",
        ) from None


def cmd_run_job(args: argparse.Namespace) -> int:
    from carpool_tui.db.probe import run_one_job
    from carpool_tui.models import JobResult
    from carpool_tui.ui.text import printable

    name: str = args.job
    try:
        settings, _, target = _target_settings(args)
        if settings.read_only:
            # Refused here, naming why, rather than by the server in words
            # that have to list every way a session becomes read-only.
            why = (
                f"target {target.name!r} is read_only = true"
                if target is not None and target.read_only
                else "--read-only is given"
            )
            raise OpsError(
                f"{why}, and run-job writes to the database (the job's run and"
                " its log row); nothing was run",
                "Use a target without read_only = true, or --dsn without --target.",
            )
        result = _run(run_one_job(settings, name))
    except OpsError as exc:
        if not args.json:
            raise
        result = JobResult(success=False, error=exc.message, hint=exc.hint or None)
    except ConfigError as exc:
        if not args.json:
            raise
        result = JobResult(success=False, error=str(exc))
    if args.json:
        _out(json.dumps(result.model_dump(mode="json", exclude_none=True)))
    elif result.success:
        _out(f"{name}: {printable(result.describe(name), None)}")
    else:
        said = with_hint(result.describe(name), result.hint)
        _say(f"carpool-tui: {name}: {printable(said, None)}")
    return 0 if result.success else 1


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _served_command(
    args: argparse.Namespace,
    settings: Settings,
    read_only: bool,
    thresholds: CheckThresholds,
) -> list[str]:
    """The dashboard process `serve` starts for each browser tab.

    It gets no --target: what `serve` took from the target reaches it as
    options (the DSN in DATABASE_URL), the wallboard's check thresholds as
    --thresholds.
    """
    command = [
        sys.executable,
        "-m",
        "carpool_tui",
        "--refresh",
        f"{settings.refresh_seconds:g}",
        "--operator",
        settings.operator,
    ]
    if read_only:
        command.append("--read-only")
    view = _view(args)
    if view["wallboard"]:
        command += ["--wallboard", "--thresholds", thresholds.to_json()]
    if view["theme"]:
        command += ["--theme", view["theme"]]
    return command


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from textual_serve.server import Server
    except ImportError:
        raise OpsError(
            "carpool-tui serve needs the textual-serve package",
            "Install it with `pip install 'carpool-tui[serve]'`.",
        ) from None
    settings, config, target = _target_settings(args)
    read_only = settings.read_only or not args.allow_writes
    if not _loopback(args.host):
        _say(
            f"Warning: serving on {args.host}, which is not a loopback address. "
            "textual-serve has no authentication: anyone who can reach "
            f"port {args.port} gets the dashboard"
            + ("." if read_only else " and can run jobs and write.")
            + " Put it behind a proxy that authenticates."
        )
    # Each browser tab starts its own dashboard process with this environment.
    # The DSN travels in DATABASE_URL so that it does not show in `ps`.
    if settings.dsn is not None:
        os.environ["DATABASE_URL"] = settings.dsn
    command = _served_command(
        args, settings, read_only, _wall_thresholds(args, config, target)
    )
    _refuse_taken_port(args.host, args.port)
    server = Server(
        shlex.join(command),
        host=args.host,
        port=args.port,
        title=f"carpool-tui: {settings.target}",
        public_url=args.public_url,
    )
    _say(
        f"Serving the dashboard of {settings.target} "
        f"({'read-only' if read_only else 'writes allowed'}) "
        f"on {server.public_url}"
    )
    with tempfile.TemporaryDirectory(prefix="carpool-tui-serve-") as pages:
        server.templates_path = _without_web_fonts(server.templates_path, Path(pages))
        try:
            server.serve()
        except OSError as exc:
            raise OpsError(
                f"Cannot listen on {args.host}:{args.port} ({exc.strerror or exc})",
                "Pick another --port, or a --host address of this machine.",
            ) from exc
    return 0


WEB_FONT_LINK = re.compile(r"<link\b[^>]*//fonts\.googleapis\.com[^>]*>\s*", re.I)


def _without_web_fonts(templates: Path, folder: Path) -> Path:
    """textual-serve's page templates, in ``folder``, with no link to a font host.

    A war-room screen may have no way out of its network, where a font link in
    the page's head holds up the first paint; and a viewer's browser should not
    tell a third party that it is watching. The terminal falls back to the
    browser's own monospace font.
    """
    shutil.copytree(templates, folder, dirs_exist_ok=True)
    for page in folder.glob("*.html"):
        text = page.read_text(encoding="utf-8")
        page.write_text(WEB_FONT_LINK.sub("", text), encoding="utf-8")
    return folder


def _refuse_taken_port(host: str, port: int) -> None:
    """Refuse, before saying it serves, an address it cannot listen on (the
    server binds only once it starts, after its banner)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        for family, kind, proto, _, address in infos[:1]:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
    except OSError as exc:
        raise OpsError(
            f"Cannot listen on {host}:{port} ({exc.strerror or exc})",
            "Pick another --port, or a --host address of this machine.",
        ) from exc


COMMANDS: dict[str | None, Callable[[argparse.Namespace], int]] = {
    None: cmd_dashboard,
    "demo": cmd_demo,
    "migrate": cmd_migrate,
    "seed": cmd_seed,
    "check": cmd_check,
    "run-job": cmd_run_job,
    "serve": cmd_serve,
}


_TOP_VALUE_OPTIONS = frozenset(
    {
        "--dsn",
        "--target",
        "--config",
        "--refresh",
        "--operator",
        "--theme",
        "--thresholds",
    }
)
"""Options before the command that take a value (which is not the command)."""


def _wants_check(argv: Sequence[str]) -> bool:
    """Whether the command line asks for `check` (usage errors exit UNKNOWN):
    its first word that is not an option or an option's value is `check`."""
    words = iter(argv)
    for word in words:
        if word in _TOP_VALUE_OPTIONS:
            next(words, None)
        elif not word.startswith("-"):
            return word == "check"
    return False


# Whether this process's seed has committed (Ctrl-C after that keeps it).
_SEED_WRITTEN = [False]

# What Ctrl-C leaves behind, for the commands where that is not obvious.
INTERRUPTED = {
    "seed": "nothing was written (a seed is one transaction).",
    "migrate": (
        "each migration that finished is recorded; the one in progress is not,"
        " and the next `carpool-tui migrate` runs it again (first dropping an"
        " index it left half-built)."
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``carpool-tui`` console script.

    A reader of stdout that goes away early (``carpool-tui migrate | head -1``)
    ends every command quietly with BROKEN_PIPE_EXIT. Python ignores SIGPIPE, so
    the closed pipe surfaces as BrokenPipeError at the next write or flush; it is
    caught here, once, rather than in each command that prints.
    """
    try:
        try:
            return _main(argv)
        finally:
            # Output still buffered would otherwise fail at interpreter exit,
            # past any handler, with "Exception ignored ... BrokenPipeError".
            # A stdout closed before start (`>&-`) is None: print() skips it.
            if sys.stdout is not None:
                with _writing_stdout():
                    sys.stdout.flush()
    except BrokenPipeError:
        if not _stdout_closed():
            raise  # a socket's, not stdout's: not the reader going away
        _discard_stdout()
        return BROKEN_PIPE_EXIT
    except OutputLost as exc:
        # What the command did is done (a job ran, a migration applied); only
        # its report is lost. A monitor reads anything but 0-3 from check as
        # its own failure, so check says UNKNOWN.
        _say(
            f"carpool-tui: cannot write to standard output ({exc}); the command"
            " ran, but what it printed is lost"
        )
        _discard_stdout()
        words = sys.argv[1:] if argv is None else argv
        return UNKNOWN_EXIT if _wants_check(words) else 1


class OutputLost(Exception):
    """Standard output refused a write for a reason other than a gone reader
    (a full disk, an I/O error)."""


@contextlib.contextmanager
def _writing_stdout() -> Iterator[None]:
    """Turn a refused write to standard output into OutputLost; a reader that
    went away stays BrokenPipeError, which ends the command quietly."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputLost(exc.strerror or str(exc)) from exc


def _out(text: str) -> None:
    """Print a line of a command's result to standard output, now."""
    with _writing_stdout():
        print(text, flush=True)


def _print_going_on(text: str) -> None:
    """Print a line of progress; if the reader has gone (``| head -3``), go on
    without printing: stopping a migration between two files for it would leave
    the rest for a run nobody knows is needed."""
    try:
        _out(text)
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        _discard_stdout()


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reading end is gone (poll says POLLERR)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return True  # stdout cannot even be asked: treat it as gone


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush of what
    is still buffered for the closed pipe goes nowhere instead of failing."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _main(argv: Sequence[str] | None) -> int:
    """Parse the command line and run its command; errors become one line."""
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            args = parser.parse_args(words)
    except SystemExit as exc:
        sys.stderr.write(said.getvalue())
        # A monitor reads exit 2 as CRITICAL: a usage error of `check` is UNKNOWN.
        if exc.code == 2 and _wants_check(words):
            if "--json" in words:
                # A monitor that asked for JSON parses stdout as JSON.
                error = " ".join(said.getvalue().split())
                unknown = {"status": "UNKNOWN", "exit_code": UNKNOWN_EXIT}
                summary = {"summary": "invalid command line", "error": error}
                _out(json.dumps(unknown | summary, sort_keys=True))
            else:
                _out("CARPOOL UNKNOWN - invalid command line (see the error above)")
            return UNKNOWN_EXIT
        raise
    sys.stderr.write(said.getvalue())
    _setup_logging()
    try:
        return COMMANDS[args.command](args)
    except (OpsError, ConfigError) as exc:
        from carpool_tui.ui.text import printable

        # The message may quote the server (an error raised in the database):
        # escaped, it stays one line (in the diagnostics log too, where a
        # newline would forge an entry) and cannot reach the terminal as
        # control sequences, as in check's and run-job's output.
        line = printable(str(exc), None)
        logging.getLogger(__name__).warning("%s", line)
        _say(f"carpool-tui: {line}")
        return 1
    except KeyboardInterrupt:
        left = INTERRUPTED.get(args.command)
        if args.command == "seed" and _SEED_WRITTEN[0]:
            left = (
                "the seed was written; only its closing invariant check was cut"
                " short (run `carpool-tui run-job check_system_invariants`)."
            )
        _say("carpool-tui: interrupted" + (f"; {left}" if left else ""))
        return 130
