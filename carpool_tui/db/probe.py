"""One-shot reads for `carpool-tui check`, and one job run for a scheduler.

Both open their own connections, use them once and close them: no pool is
kept between runs, so a monitor calling every minute leaves nothing behind.
The reads run in a read-only session.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TypeVar

import asyncpg

from carpool_tui.config import Settings
from carpool_tui.db.errors import NotMigrated, PermissionMissing
from carpool_tui.db.repo import (
    FAILED_RUNS_SQL,
    FAILED_WINDOW_HOURS,
    HEALTH_FUNCTION,
    JOB_OUTCOME_UNKNOWN,
    Repository,
    function_name,
    utc_now,
)
from carpool_tui.models import (
    Capabilities,
    HealthSummary,
    JobLogEntry,
    JobResult,
    Violation,
)

T = TypeVar("T")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
"""What ends a job run early: a scheduler's kill, a closed terminal, Ctrl-C."""


@dataclass(frozen=True)
class HealthReading:
    """Everything `check` judges, read in one short session."""

    capabilities: Capabilities
    health: HealthSummary
    latest_runs: dict[str, JobLogEntry]
    failed_runs_24h: int | None
    violations: list[Violation]
    server_now: datetime
    has_job_log: bool
    critical_open: int | None = None
    """Every unresolved critical row; ``violations`` holds at most a page."""


class _Probe(Repository):
    """The repository with the counts that only a monitor needs, and a deadline
    on every read."""

    async def _with_conn(
        self, doing: str, work: Callable[[asyncpg.Connection], Awaitable[T]]
    ) -> T:
        """One read, given up on past the statement timeout and a margin.

        Without a deadline of its own, `check` would wait silently on a server
        that stops answering until its monitor killed it; with one it ends as
        UNKNOWN, saying the database did not answer.
        """
        read = super()._with_conn
        return await self._on_deadline(doing, lambda: read(doing, work))

    async def _count(self, doing: str, sql: str, *args: object) -> int:
        async def work(conn: asyncpg.Connection) -> int:
            return int(await conn.fetchval(sql, *args) or 0)

        return await self._with_conn(doing, work)

    async def failed_runs_since(self, hours: int) -> int:
        """Failed system_job_log runs that started in the last ``hours`` hours."""
        return await self._count("Counting failed job runs", FAILED_RUNS_SQL, hours)

    async def critical_open(self) -> int:
        """Unresolved critical violation rows, however many there are."""
        return await self._count(
            "Counting critical violations",
            "SELECT count(*) FROM invariant_violations"
            " WHERE resolved_at IS NULL AND severity = 'critical'",
        )


async def read_health(settings: Settings) -> HealthReading:
    """Read the health summary, the latest runs and the open violations.

    Raises ConnectionLost when the server cannot be reached and NotMigrated
    when the database has no health function; PermissionMissing when the role
    may not execute it.
    """
    probe = _Probe(replace(settings, read_only=True))
    caps = await probe.open()
    try:
        health_name = function_name(HEALTH_FUNCTION)
        if health_name in caps.missing_functions:
            raise NotMigrated(
                f"Database {caps.database} has no {health_name}() function",
                "Point --dsn at the platform database, or apply the ops layer "
                "with `carpool-tui migrate --dsn ...`.",
            )
        if health_name in caps.missing_grants:
            raise PermissionMissing(
                f"Role {caps.user} may not execute {health_name}()",
                "Grant carpool_ops_viewer (or carpool_ops_operator) to this role.",
            )
        health = await probe.health()
        has_log = bool(caps.job_log_columns)
        latest = await probe.latest_runs() if has_log else {}
        failed = await probe.failed_runs_since(FAILED_WINDOW_HOURS) if has_log else None
        violations = (
            await probe.unresolved_violations() if caps.violation_columns else []
        )
        critical = await probe.critical_open() if caps.violation_columns else 0
    finally:
        await probe.close()
    return HealthReading(
        capabilities=caps,
        health=health,
        latest_runs=latest,
        failed_runs_24h=failed,
        violations=violations,
        server_now=health.timestamp or utc_now(),
        has_job_log=has_log,
        critical_open=critical,
    )


async def run_one_job(settings: Settings, name: str) -> JobResult:
    """Run one of the four jobs on its own connection, as ``settings.operator``.

    A job that fails comes back as a result with ``success`` false; a
    read-only session or an unknown name raises OpsError.
    """
    repo = Repository(settings)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    stopped_by: list[str] = []

    def stop(sig: signal.Signals) -> None:
        # A scheduler's kill or a closed SSH session: the job may still finish
        # on the server, so the run ends as "outcome unknown", logged as such.
        stopped_by.append(sig.name)
        if task is not None:
            task.cancel()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop, sig)
    try:
        result = await repo.run_job(name)
    except asyncio.CancelledError:
        if not stopped_by:
            raise
        if not repo.job_connected:
            # Still connecting: the job was never sent, so it did not run.
            result = JobResult(
                success=False,
                error=f"not sent: stopped by {stopped_by[0]} while connecting",
                hint="Nothing ran. Run the job again when you are ready.",
            )
        else:
            result = JobResult(
                success=False,
                outcome_unknown=True,
                error=f"stopped by {stopped_by[0]} while the job ran",
                hint=JOB_OUTCOME_UNKNOWN,
            )
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
        await repo.close()
    if repo.action_log_error:
        print(f"carpool-tui: warning: {repo.action_log_error}", file=sys.stderr)
    return result
