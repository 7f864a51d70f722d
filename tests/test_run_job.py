"""`carpool-tui run-job` as an external scheduler calls it (manual 2, option B)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from factories import connected
from test_check import UNREACHABLE, cli, freeze_rides, isolated_env, seed

from carpool_tui.models import JOBS

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


async def test_read_only_target_refuses(
    ops_dsn: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f"[targets.wall]\ndsn = '{ops_dsn}'\nread_only = true\n")
    done = cli(
        cli_env, "run-job", "expire_rides", "--config", str(config), "--target", "wall"
    )
    assert done.returncode == 1
    assert "read-only" in done.stderr
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
