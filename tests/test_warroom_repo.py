"""The war-room reads against real databases: pg_cron's table and the job trends."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import asyncpg
from factories import connected, overlapping_runs
from test_ui_dashboard import failed_run
from test_ui_support import FIXED_NOW, frozen, make_settings

from carpool_tui.config import CheckThresholds
from carpool_tui.db.probe import read_health
from carpool_tui.db.repo import Repository
from carpool_tui.models import JOBS_BY_NAME, JobLogEntry
from carpool_tui.monitor import Level, evaluate
from carpool_tui.ui.wallboard import board_state, judge
from carpool_tui.warroom import (
    CronEntry,
    CronTable,
    job_trends,
    overdue,
    schedule_rows,
)

T = TypeVar("T")

FAKE_CRON = (
    "CREATE SCHEMA cron;"
    " CREATE TABLE cron.job (jobid bigint, schedule text, command text,"
    " jobname text, active bool);"
)

CRON_ROWS: list[tuple[object, ...]] = [
    (1, "*/5 * * * *", "SELECT expire_rides()", "expire-rides", True),
    (2, "0 5 * * *", "SELECT reconcile_seat_counts()", "reconcile", True),
    (3, "*/15  * * * *", "select check_system_invariants ()", None, True),
]
"""As an operator might leave it: one as the manual, one moved, one missing."""


async def fake_cron(conn: asyncpg.Connection, rows: list[tuple[object, ...]]) -> None:
    """A stand-in for pg_cron: its cron.job table with these rows."""
    await conn.execute(FAKE_CRON)
    await conn.executemany(
        "INSERT INTO cron.job (jobid, schedule, command, jobname, active)"
        " VALUES ($1, $2, $3, $4, $5)",
        rows,
    )


async def log_run(
    conn: asyncpg.Connection,
    job: str,
    hours_ago: float,
    *,
    seconds: float = 2.0,
    records: int = 0,
    status: str = "completed",
) -> None:
    started = FIXED_NOW - timedelta(hours=hours_ago)
    await conn.execute(
        "INSERT INTO system_job_log (job_name, started_at, completed_at, status,"
        " records_processed) VALUES ($1, $2, $3, $4, $5)",
        job,
        started,
        started + timedelta(seconds=seconds),
        status,
        records,
    )


async def read(
    dsn: str, tmp_path: Path, what: Callable[[Repository], Awaitable[T]]
) -> T:
    """Open a repository on `dsn`, read one thing with it, close it."""
    repo = Repository(make_settings(dsn, tmp_path), clock=frozen())
    try:
        await repo.open()
        return await what(repo)
    finally:
        await repo.close()


async def test_no_cron_schema_means_not_installed(ops_dsn: str, tmp_path: Path) -> None:
    table = await read(ops_dsn, tmp_path, lambda r: r.cron_table())
    assert table == CronTable(installed=False)
    rows = schedule_rows(table, None, FIXED_NOW)
    assert {r.verdict for r in rows} == {"unknown"}


async def test_cron_entries_are_read_and_judged(
    ops_conn: asyncpg.Connection, ops_dsn: str, tmp_path: Path
) -> None:
    await fake_cron(ops_conn, CRON_ROWS)
    table = await read(ops_dsn, tmp_path, lambda r: r.cron_table())
    assert table.installed and table.error is None
    assert [e.jobid for e in table.entries] == [1, 2, 3]
    verdicts = {r.job.name: r.verdict for r in schedule_rows(table, None, FIXED_NOW)}
    assert verdicts == {
        "expire_rides": "ok",
        "reconcile_seat_counts": "different",
        "repair_missing_notifications": "missing",
        "check_system_invariants": "ok",
    }


def test_inactive_and_doubled_entries_are_flagged() -> None:
    table = CronTable(
        installed=True,
        entries=[
            CronEntry(jobid=1, schedule="*/5 * * * *", command="SELECT expire_rides()"),
            CronEntry(jobid=2, schedule="*/5 * * * *", command="SELECT expire_rides()"),
            CronEntry(
                jobid=3,
                schedule="0 3 * * *",
                command="SELECT reconcile_seat_counts()",
                active=False,
            ),
        ],
    )
    rows = {r.job.name: r for r in schedule_rows(table, None, FIXED_NOW)}
    assert rows["expire_rides"].verdict == "different"
    assert rows["reconcile_seat_counts"].verdict == "inactive"
    assert rows["reconcile_seat_counts"].problem == "scheduled but inactive"


def test_overdue_follows_the_manual_frequency() -> None:
    job = JOBS_BY_NAME["expire_rides"]
    assert overdue(None, FIXED_NOW, job.frequency)

    def ran(minutes_ago: float) -> JobLogEntry:
        return JobLogEntry(
            id=1,
            job_name=job.name,
            status="completed",
            started_at=FIXED_NOW - timedelta(minutes=minutes_ago),
        )

    # Twice the frequency by default, as `check` and the wallboard judge it:
    # a five-minute job a little late is not yet overdue.
    assert not overdue(ran(7), FIXED_NOW, job.frequency)
    assert overdue(ran(11), FIXED_NOW, job.frequency)
    assert overdue(ran(7), FIXED_NOW, job.frequency, factor=1)
    assert not overdue(None, FIXED_NOW, job.frequency, factor=0)
    # A factor past what a time span holds: no age passes it; never run does.
    assert not overdue(ran(60 * 24 * 365), FIXED_NOW, job.frequency, factor=1e300)
    assert overdue(None, FIXED_NOW, job.frequency, factor=1e300)


async def test_trend_buckets_group_the_last_day_by_hour(
    ops_conn: asyncpg.Connection, ops_dsn: str, tmp_path: Path
) -> None:
    await ops_conn.execute("DELETE FROM system_job_log")
    await log_run(ops_conn, "expire_rides", 0.5, seconds=2, records=3)
    await log_run(ops_conn, "expire_rides", 0.25, seconds=4, records=5)
    await log_run(ops_conn, "expire_rides", 5.5, seconds=1, records=1)
    await log_run(ops_conn, "check_system_invariants", 1.5, records=7)
    await log_run(ops_conn, "check_system_invariants", 1.2, records=9)
    await log_run(ops_conn, "reconcile_seat_counts", 2.5, status="failed")
    await log_run(ops_conn, "expire_rides", 30, records=100)  # older than a day
    await log_run(ops_conn, "expire_rides", -1, records=100)  # after "now"
    buckets = await read(ops_dsn, tmp_path, lambda r: r.trend_buckets())
    trends, violations = job_trends(buckets)
    expire = trends[0]
    assert expire.job == "expire_rides"
    assert expire.runs == 3
    assert expire.records[23] == 8 and expire.records[18] == 1
    assert expire.durations[23] == 3.0
    assert sum(expire.records) == 9
    assert violations[22] == 9
    reconcile = next(t for t in trends if t.job == "reconcile_seat_counts")
    assert (reconcile.runs, reconcile.failed) == (1, 1)


async def test_the_wall_judges_a_deployed_database_as_check_does(
    legacy_dsn: str, tmp_path: Path
) -> None:
    """The deployed summary has no failed-run count; the wall must not say ALL OK."""
    async with connected(legacy_dsn) as conn:
        for name in JOBS_BY_NAME:
            await log_run(conn, name, 0.1)
        await failed_run(conn, ops=False)
    settings = make_settings(legacy_dsn, tmp_path)
    snapshot = await read(legacy_dsn, tmp_path, lambda r: r.snapshot())
    assert snapshot.health is not None
    assert snapshot.health.failed_jobs_24h == 1
    reading = await read_health(settings)
    by_check = evaluate(reading, CheckThresholds(), reading.capabilities.database)
    on_the_wall = judge(snapshot, reading.server_now)
    assert by_check.level is not Level.OK
    assert on_the_wall.level is by_check.level
    assert on_the_wall.summary == by_check.summary


async def test_the_wall_says_how_often_an_overdue_job_runs(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        await conn.execute("DELETE FROM system_job_log")
        for name in JOBS_BY_NAME:
            await log_run(conn, name, 0.0)
        await log_run(conn, "expire_rides", 1.0)
        await conn.execute(
            "DELETE FROM system_job_log WHERE job_name = 'expire_rides'"
            " AND started_at > $1",
            FIXED_NOW - timedelta(minutes=30),
        )
    snapshot = await read(ops_dsn, tmp_path, lambda r: r.snapshot())
    state = board_state(snapshot, FIXED_NOW)
    lines = [p.text for p in state.problems]
    assert "expire_rides overdue (runs every 5 minutes)" in lines, lines


async def test_the_wall_does_not_judge_jobs_whose_runs_it_could_not_read(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Unread, the job log is no proof that a job never ran, nor of how many
    are overdue: the wall says what it could not read instead."""
    async with connected(ops_dsn) as conn:
        for name in JOBS_BY_NAME:
            await log_run(conn, name, 0.0)
        await conn.execute(
            "ALTER TABLE system_job_log RENAME COLUMN details TO details_gone"
        )
    snapshot = await read(ops_dsn, tmp_path, lambda r: r.snapshot())
    assert "jobs" in snapshot.errors and "health" not in snapshot.errors
    state = board_state(snapshot, FIXED_NOW)
    assert state.level is Level.UNKNOWN
    texts = [p.text for p in state.problems]
    assert texts[0].startswith("Reading the latest job runs: column"), texts
    assert state.problems[0].level is Level.UNKNOWN
    assert not [t for t in texts if "never ran" in t or "overdue" in t], texts
    assert dict(state.counts)["overdue"] is None
    assert judge(snapshot, FIXED_NOW).level is Level.UNKNOWN


async def test_a_run_refused_by_an_earlier_run_leaves_the_job_as_that_run_ended(
    ops_dsn: str, tmp_path: Path
) -> None:
    """A run of the invariant check refused its lock while the run before it
    was going: the jobs panel, the wall and the procedures' jobs step take
    the run that held the lock (completed), not the refusal, as the job's
    latest run; the refusal is still in the log and counted as a failure."""
    name = "check_system_invariants"
    async with connected(ops_dsn) as conn:
        for job in JOBS_BY_NAME:
            await conn.execute(f"SELECT {job}()")
    first, refused = await overlapping_runs(ops_dsn, name)
    assert (first["success"], refused["success"]) == (True, False)

    snapshot = await read(ops_dsn, tmp_path, lambda r: r.snapshot())
    latest = snapshot.latest_run(name)
    assert isinstance(latest, JobLogEntry)
    assert (latest.status, str(latest.id)) == ("completed", first["job_log_id"])
    assert snapshot.health is not None and snapshot.health.failed_jobs_24h == 1
    assert snapshot.job_log is not None
    assert any(str(e.id) == refused["job_log_id"] for e in snapshot.job_log.entries)
    state = board_state(snapshot, FIXED_NOW)
    assert not [p.text for p in state.problems if f"{name} failed" in p.text]
    assert dict(state.counts)["failed 24 h"] == 1
    assert state.level is Level.WARNING

    rows = await read(ops_dsn, tmp_path, lambda r: r.procedure_rows("latest_runs"))
    row = next(r for r in rows.rows if r["job_name"] == name)
    assert (row["status"], str(row["id"])) == ("completed", first["job_log_id"])
