"""`carpool-tui run-job` as an external scheduler calls it (manual 2, option B)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from asyncpg.transaction import Transaction
from factories import connected
from relay import relayed
from test_check import (
    UNREACHABLE,
    cli,
    freeze_rides,
    isolated_env,
    on_ride_update,
    seed,
)
from test_ui_support import make_settings

from carpool_tui.config import dsn_parts
from carpool_tui.db.repo import Repository
from carpool_tui.models import JOBS, JobResult

JOB_NAMES = [job.name for job in JOBS]


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    return isolated_env(tmp_path)


@pytest.mark.parametrize("name", JOB_NAMES)
async def test_each_job_runs_and_records_the_operator(
    name: str, ops_dsn: str, cli_env: dict[str, str]
) -> None:
    await seed(ops_dsn, "seat_mismatch", "expired_active_ride")
    done = cli(
        cli_env, "run-job", name, "--dsn", ops_dsn, "--operator", "cron@ops", "--json"
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["success"] is True
    async with connected(ops_dsn, plain=True) as conn:
        row = await conn.fetchrow(
            "SELECT job_name, status, triggered_by FROM system_job_log"
            " WHERE id = $1::uuid",
            result["job_log_id"],
        )
    assert dict(row) == {
        "job_name": name,
        "status": "completed",
        "triggered_by": "cron@ops",
    }


async def test_one_line_in_words(ops_dsn: str, cli_env: dict[str, str]) -> None:
    await seed(ops_dsn, "expired_active_ride")
    done = cli(cli_env, "run-job", "expire_rides", "--dsn", ops_dsn)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("expire_rides: Expired 3 rides, completed ")
    assert len(done.stdout.splitlines()) == 1
    check = cli(cli_env, "run-job", "check_system_invariants", "--dsn", ops_dsn)
    assert check.stdout.strip() == (
        "check_system_invariants: Healthy, 0 violations, 0 opened, 0 auto-resolved."
    )
    # The scheduler's runs are in the local action log as well.
    log = Path(cli_env["CARPOOL_TUI_LOG"]).with_name("actions.log")
    actions = [json.loads(line) for line in log.read_text().splitlines()]
    assert [a["target"] for a in actions] == ["expire_rides", "check_system_invariants"]


async def test_a_failed_job_exits_1_with_its_error(
    ops_dsn: str, cli_env: dict[str, str]
) -> None:
    await seed(ops_dsn, "expired_active_ride")
    await freeze_rides(ops_dsn)
    done = cli(cli_env, "run-job", "expire_rides", "--dsn", ops_dsn, "--json")
    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert result["success"] is False
    assert result["sqlstate"] == "P0042"
    assert "rides are frozen" in result["error"]
    words = cli(cli_env, "run-job", "expire_rides", "--dsn", ops_dsn)
    assert words.returncode == 1
    assert words.stdout == ""
    assert "expire_rides: Failed: rides are frozen (SQLSTATE P0042)" in words.stderr


async def test_a_viewer_is_told_which_role_runs_jobs(
    ops_dsn: str, cli_env: dict[str, str]
) -> None:
    """Not "operator or viewer": this role is a viewer already."""
    role = f"viewer_{uuid.uuid4().hex[:8]}"
    async with connected(ops_dsn) as conn:
        await conn.execute(f"CREATE ROLE {role} LOGIN IN ROLE carpool_ops_viewer")
        try:
            scheme, rest = ops_dsn.split("://", 1)
            as_viewer = f"{scheme}://{role}@{rest.split('@', 1)[1]}"
            done = cli(cli_env, "run-job", "expire_rides", "--dsn", as_viewer)
        finally:
            await conn.execute(f"DROP ROLE {role}")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "permission denied" in done.stderr
    assert "needs the carpool_ops_operator role" in done.stderr
    assert "carpool_ops_viewer" not in done.stderr


def test_unknown_job_lists_the_four(cli_env: dict[str, str]) -> None:
    done = cli(cli_env, "run-job", "expire-everything")
    assert done.returncode == 2
    assert "unknown job 'expire-everything'; the jobs are " + ", ".join(
        JOB_NAMES
    ) in " ".join(done.stderr.split())


def test_unreachable_database(cli_env: dict[str, str]) -> None:
    words = cli(cli_env, "run-job", "expire_rides", "--dsn", UNREACHABLE)
    assert words.returncode == 1
    assert "cannot reach the database" in words.stderr
    assert "Traceback" not in words.stderr
    as_json = cli(cli_env, "run-job", "expire_rides", "--dsn", UNREACHABLE, "--json")
    assert as_json.returncode == 1
    result = json.loads(as_json.stdout)
    assert result["success"] is False
    assert "cannot reach the database" in result["error"]


async def test_database_without_the_job(base_dsn: str, cli_env: dict[str, str]) -> None:
    done = cli(cli_env, "run-job", "reconcile_seat_counts", "--dsn", base_dsn)
    assert done.returncode == 1
    assert "carpool-tui migrate" in done.stderr
    assert "(SQLSTATE 42883)" in done.stderr


async def test_a_missing_database_reads_as_two_sentences(
    ops_dsn: str, cli_env: dict[str, str]
) -> None:
    """What went wrong, a full stop, then what to do."""
    missing = ops_dsn.replace(dsn_parts(ops_dsn)["dbname"], "carpool_not_here", 1)
    done = cli(cli_env, "run-job", "expire_rides", "--dsn", missing)
    assert done.returncode == 1
    assert 'database "carpool_not_here" does not exist. Check' in done.stderr


async def test_read_only_target_refuses(
    ops_dsn: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f"[targets.wall]\ndsn = '{ops_dsn}'\nread_only = true\n")
    done = cli(
        cli_env, "run-job", "expire_rides", "--config", str(config), "--target", "wall"
    )
    assert done.returncode == 1
    assert "target 'wall' is read_only = true, and run-job writes" in done.stderr
    assert "nothing was run" in done.stderr
    as_json = cli(
        cli_env,
        "run-job",
        "expire_rides",
        "--target",
        "wall",
        "--config",
        str(config),
        "--json",
    )
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["success"] is False


async def test_legacy_database(legacy_dsn: str, cli_env: dict[str, str]) -> None:
    await seed(legacy_dsn, "expired_active_ride")
    for name in JOB_NAMES:
        done = cli(cli_env, "run-job", name, "--dsn", legacy_dsn, "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["success"] is True


async def test_an_action_log_that_cannot_be_written_is_said(
    ops_dsn: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "state" / "actions.log").mkdir(parents=True)
    done = cli(cli_env, "run-job", "expire_rides", "--dsn", ops_dsn)
    assert done.returncode == 0, done.stderr
    assert "warning: Could not append to the action log" in done.stderr
    assert "job log or audit log" in done.stderr


# -- a job whose connection drops ------------------------------------------


@dataclass
class LockedJob:
    """expire_rides started by `repo`, waiting on a lock `holder` keeps."""

    repo: Repository
    conn: asyncpg.Connection
    holder: Transaction
    task: asyncio.Task[JobResult]

    def last_action(self) -> dict[str, Any]:
        line = self.repo.settings.action_log.read_text().splitlines()[-1]
        return dict(json.loads(line))


@asynccontextmanager
async def job_behind_a_lock(
    dsn: str, tmp_path: Path, through: str | None = None
) -> AsyncIterator[LockedJob]:
    """Run expire_rides (through another DSN, a relay's, if given) until it
    waits on a table lock held by a transaction of the yielded connection,
    whose view of pg_stat_activity is kept until cleared."""
    await seed(dsn, "expired_active_ride")
    async with connected(dsn) as conn:
        database = await conn.fetchval("SELECT current_database()")
        await conn.execute(
            f"ALTER DATABASE {database} SET carpool.lock_timeout = '60s'"
        )
        repo = Repository(make_settings(through or dsn, tmp_path))
        holder = conn.transaction()
        await holder.start()
        await conn.execute("LOCK TABLE rides IN EXCLUSIVE MODE")
        task = asyncio.create_task(repo.run_job("expire_rides"))
        for _ in range(400):
            await conn.execute("SELECT pg_stat_clear_snapshot()")
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND application_name LIKE 'carpool-tui job%'"
            )
            if waiting:
                break
            if task.done():
                raise AssertionError(f"the job ended first: {task.result()}")
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the job never waited on the lock")
        yield LockedJob(repo, conn, holder, task)


async def test_a_job_whose_connection_drops_is_settled_from_the_job_log(
    ops_dsn: str, tmp_path: Path
) -> None:
    """The job commits after its client is gone: the log, not the drop, says so."""
    async with (
        relayed(ops_dsn) as (relay, through),
        job_behind_a_lock(ops_dsn, tmp_path, through) as job,
    ):
        relay.cut()
        await asyncio.sleep(0.5)
        await job.holder.commit()  # the job goes on, and commits
        result = await asyncio.wait_for(job.task, 30)
        logged = await job.conn.fetchrow(
            "SELECT id, status, records_processed FROM system_job_log"
            " WHERE job_name = 'expire_rides'"
        )
    assert logged["status"] == "completed"
    assert result.success and not result.outcome_unknown
    assert result.job_log_id == str(logged["id"])
    assert result.connection_dropped is not None
    text = result.describe("expire_rides")
    assert "connection dropped" in text and "completed" in text
    assert f"({logged['records_processed']} record" in text
    assert job.last_action()["outcome"] == "ok"


async def test_a_job_whose_server_side_stays_open_is_settled_when_it_is_idle(
    ops_dsn: str, tmp_path: Path
) -> None:
    """The server's end of the connection outlives the client's: the session
    sits idle once the job is done, and that is enough to read its row."""
    async with (
        relayed(ops_dsn) as (relay, through),
        job_behind_a_lock(ops_dsn, tmp_path, through) as job,
    ):
        relay.cut_client_side()
        await asyncio.sleep(0.5)
        await job.holder.commit()
        result = await asyncio.wait_for(job.task, 20)  # not the job timeout
    assert result.success and result.connection_dropped is not None


async def test_a_job_whose_session_ends_with_the_connection_was_rolled_back(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with job_behind_a_lock(ops_dsn, tmp_path) as job:
        await job.conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name LIKE 'carpool-tui job%'"
        )
        result = await asyncio.wait_for(job.task, 30)
        await job.holder.rollback()
        assert await job.conn.fetchval("SELECT count(*) FROM system_job_log") == 0
    assert not result.success and not result.outcome_unknown
    assert "rolled back" in result.describe("expire_rides")
    assert job.last_action()["outcome"] == "failed"


async def test_a_job_whose_server_cannot_be_asked_has_an_unknown_outcome(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with (
        relayed(ops_dsn) as (relay, through),
        job_behind_a_lock(ops_dsn, tmp_path, through) as job,
    ):
        await relay.stop()  # no new connection gets through either
        result = await asyncio.wait_for(job.task, 30)
        await job.holder.rollback()
    assert result.outcome_unknown and not result.success
    assert result.describe("expire_rides").startswith("Outcome unknown: ")
    entry = job.last_action()
    assert (entry["action"], entry["outcome"]) == ("run_job", "unknown")


def expire_in_background(dsn: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """`run-job expire_rides` started, not waited for, its output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "carpool_tui", "run-job", "expire_rides", "--dsn", dsn],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
async def test_a_run_stopped_by_a_signal_says_and_logs_outcome_unknown(
    signum: int, ops_dsn: str, cli_env: dict[str, str]
) -> None:
    await seed(ops_dsn, "expired_active_ride")
    # Every update of a ride sleeps, so expire_rides is still running.
    await on_ride_update(ops_dsn, "test_sleep", "PERFORM pg_sleep(60); RETURN NEW;")
    job = expire_in_background(ops_dsn, cli_env)
    async with connected(ops_dsn, plain=True) as conn:
        try:
            for _ in range(300):
                running = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database()"
                    " AND query = 'SELECT expire_rides()' AND state = 'active'"
                )
                if running:
                    break
                await asyncio.sleep(0.1)
            assert running, "the job never started"
            job.send_signal(signum)
            out, err = await asyncio.to_thread(job.communicate, timeout=20)
            assert out == ""
        finally:
            if job.poll() is None:
                job.kill()
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
    assert job.returncode == 1, err
    name = signal.Signals(signum).name
    assert f"expire_rides: Outcome unknown: stopped by {name} while the job ran" in err
    assert "Traceback" not in err
    log = Path(cli_env["CARPOOL_TUI_LOG"]).with_name("actions.log")
    actions = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(a["target"], a["outcome"]) for a in actions] == [
        ("expire_rides", "unknown")
    ]


async def test_a_run_stopped_while_connecting_says_nothing_ran(
    ops_dsn: str, cli_env: dict[str, str]
) -> None:
    """The job was never sent: not "outcome unknown", and nothing to log."""
    async with relayed(ops_dsn) as (relay, through):
        relay.hold()  # the server never answers: connecting waits
        job = expire_in_background(through, cli_env)
        try:
            await asyncio.sleep(2)
            job.send_signal(signal.SIGTERM)
            _, err = await asyncio.to_thread(job.communicate, timeout=20)
        finally:
            if job.poll() is None:
                job.kill()
    assert job.returncode == 1, err
    assert "not sent: stopped by SIGTERM while connecting" in err
    assert "Nothing ran" in err and "Outcome unknown" not in err
    log = Path(cli_env["CARPOOL_TUI_LOG"]).with_name("actions.log")
    assert not log.exists() or log.read_text() == ""


async def test_a_failed_jobs_error_is_said_on_one_line_with_escapes(
    ops_dsn: str, cli_env: dict[str, str]
) -> None:
    """The server's error text is database text: its control characters are
    shown escaped, and --json keeps them as they are."""
    await seed(ops_dsn, "expired_active_ride")
    await on_ride_update(
        ops_dsn,
        "test_refuse",
        "RAISE EXCEPTION '%', E'frozen\\x1b[31mRED\\x07\\nnext'"
        " USING ERRCODE = 'P0042';",
    )
    words = cli(cli_env, "run-job", "expire_rides", "--dsn", ops_dsn)
    assert words.returncode == 1
    (said,) = words.stderr.splitlines()
    assert "expire_rides: Failed: frozen\\x1b[31mRED\\x07\\nnext" in said
    assert "\x1b" not in said and "\x07" not in said
    done = cli(cli_env, "run-job", "expire_rides", "--dsn", ops_dsn, "--json")
    assert json.loads(done.stdout)["error"] == "frozen\x1b[31mRED\x07\nnext"
