"""`carpool-tui check` as a monitor calls it: exit codes, one line, and --json."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from factories import connected, once, overlapping_runs, role_without_connect
from relay import relayed
from test_ui_support import make_settings

from carpool_tui import cli as cli_module
from carpool_tui.config import dsn_parts
from carpool_tui.db.repo import POLL_MARGIN_S, Repository
from carpool_tui.db.seed import seed_platform
from carpool_tui.models import CLOCK_MARGIN, JOBS

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/nothing"


def isolated_env(root: Path) -> dict[str, str]:
    """The environment of a CLI run: its own log folder and no user config file."""
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    env.pop("CARPOOL_TUI_CONFIG", None)
    env["XDG_CONFIG_HOME"] = str(root / "config")
    env["CARPOOL_TUI_LOG"] = str(root / "state" / "carpool-tui.log")
    return env


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    return isolated_env(tmp_path)


def cli(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the command line as a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "carpool_tui", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


async def seed(dsn: str, *faults: str, rides: int = 120) -> None:
    """A generated platform with the given faults."""
    async with connected(dsn, plain=True) as conn:
        await seed_platform(conn, rides=rides, faults=faults)


async def on_ride_update(dsn: str, name: str, body: str) -> None:
    """Run the PL/pgSQL `body` before every update of a ride (trigger `name`)."""
    async with connected(dsn, plain=True) as conn:
        await conn.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS"
            f" $$BEGIN {body} END$$; CREATE TRIGGER {name} BEFORE UPDATE ON rides"
            f" FOR EACH ROW EXECUTE FUNCTION {name}()"
        )


async def freeze_rides(dsn: str) -> None:
    """Make every update of a ride fail (SQLSTATE P0042), so expire_rides fails."""
    await on_ride_update(
        dsn,
        "test_refuse",
        "RAISE EXCEPTION 'rides are frozen' USING ERRCODE = 'P0042';",
    )


def run_jobs(env: dict[str, str], dsn: str, *names: str) -> None:
    """Run jobs through `run-job`, as an external scheduler would."""
    for name in names or tuple(job.name for job in JOBS):
        done = cli(env, "run-job", name, "--dsn", dsn)
        assert done.returncode == 0, done.stderr


def check_json(env: dict[str, str], dsn: str, *args: str) -> tuple[int, Any]:
    done = cli(env, "check", "--dsn", dsn, "--json", *args)
    assert "Traceback" not in done.stderr
    return done.returncode, json.loads(done.stdout)


def problems(data: Any) -> dict[str, str]:
    return {p["metric"]: p["level"] for p in data["problems"]}


async def test_healthy_database_is_ok(ops_dsn: str, cli_env: dict[str, str]) -> None:
    await seed(ops_dsn)
    run_jobs(cli_env, ops_dsn)
    done = cli(cli_env, "check", "--dsn", ops_dsn)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("CARPOOL OK - healthy: 0 seat mismatches")
    assert "| seat_mismatches=0;;0;0 " in lines[0]

    code, data = check_json(cli_env, ops_dsn)
    assert code == 0
    assert data["status"] == "OK" and data["exit_code"] == 0
    assert data["problems"] == []
    assert data["metrics"]["overdue_jobs"] == 0
    assert data["metrics"]["failed_runs_24h"] == 0
    assert [j["name"] for j in data["jobs"]] == [job.name for job in JOBS]
    assert all(j["last_status"] == "completed" for j in data["jobs"])
    assert data["ops_layer_version"]
    assert data["health"]["total_rides"] == 120
    assert data["thresholds"]["critical"]["seat_mismatches"] == 0


async def test_expired_rides_and_a_job_never_run_warn(
    ops_dsn: str, cli_env: dict[str, str]
) -> None:
    await seed(ops_dsn, "expired_active_ride")
    run_jobs(
        cli_env,
        ops_dsn,
        "reconcile_seat_counts",
        "repair_missing_notifications",
        "check_system_invariants",
    )
    done = cli(cli_env, "check", "--dsn", ops_dsn)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("CARPOOL WARNING - ")
    assert "expired rides still active (warning above 0)" in done.stdout
    assert "expire_rides never ran" in done.stdout

    code, data = check_json(cli_env, ops_dsn)
    assert code == 1
    assert problems(data) == {
        "expired_active_rides": "WARNING",
        "unresolved_violations": "WARNING",
        "overdue_jobs": "WARNING",
    }
    never = [j for j in data["jobs"] if j["last_status"] is None]
    assert [j["name"] for j in never] == ["expire_rides"]
    assert never[0]["overdue"] is True


async def test_thresholds_from_options(ops_dsn: str, cli_env: dict[str, str]) -> None:
    await seed(ops_dsn, "expired_active_ride")
    run_jobs(cli_env, ops_dsn, "check_system_invariants")
    relaxed = (
        "--warn",
        "expired_active_rides=off",
        "--warn",
        "unresolved_violations=3",
        "--overdue-factor",
        "0",
    )
    code, data = check_json(cli_env, ops_dsn, *relaxed)
    assert (code, data["problems"]) == (0, [])
    assert "overdue_jobs" not in data["metrics"]
    assert data["thresholds"]["warn"]["expired_active_rides"] is None

    code, data = check_json(
        cli_env, ops_dsn, *relaxed, "--critical", "expired_active_rides=1"
    )
    assert code == 2
    assert problems(data) == {"expired_active_rides": "CRITICAL"}


async def test_thresholds_from_the_config_file(
    ops_dsn: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    await seed(ops_dsn, "expired_active_ride")
    run_jobs(cli_env, ops_dsn, "check_system_invariants")
    config = tmp_path / "carpool.toml"
    config.write_text(
        "[check]\noverdue_factor = 0\n"
        "[check.warn]\nunresolved_violations = 3\n"
        f"[targets.calm]\ndsn = '{ops_dsn}'\n"
        "[targets.calm.check.warn]\nexpired_active_rides = 'off'\n"
        f"[targets.strict]\ndsn = '{ops_dsn}'\n"
        "[targets.strict.check.critical]\nexpired_active_rides = 0\n"
    )
    calm = cli(cli_env, "check", "--config", str(config), "--target", "calm")
    assert calm.returncode == 0, calm.stdout + calm.stderr
    strict = cli(cli_env, "check", "--config", str(config), "--target", "strict")
    assert strict.returncode == 2, strict.stdout + strict.stderr
    assert "expired rides still active (critical above 0)" in strict.stdout
    # An option beats the target, which beats the file's [check].
    relaxed = cli(
        cli_env,
        "check",
        "--config",
        str(config),
        "--target",
        "strict",
        "--critical",
        "expired_active_rides=off",
        "--warn",
        "expired_active_rides=off",
    )
    assert relaxed.returncode == 0, relaxed.stdout


async def test_seat_mismatch_is_critical(ops_dsn: str, cli_env: dict[str, str]) -> None:
    await seed(ops_dsn, "seat_mismatch", "duplicate_active_bookings")
    run_jobs(cli_env, ops_dsn, "check_system_invariants")
    done = cli(cli_env, "check", "--dsn", ops_dsn)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.startswith("CARPOOL CRITICAL - ")
    assert "seat mismatches (critical above 0)" in done.stdout
    code, data = check_json(cli_env, ops_dsn)
    assert code == 2 and data["status"] == "CRITICAL"
    found = problems(data)
    assert found["seat_mismatches"] == "CRITICAL"
    assert found["critical_violations"] == "CRITICAL"
    critical = next(p for p in data["problems"] if p["metric"] == "critical_violations")
    assert "duplicate_active_bookings" in critical["text"]
    assert "seat_mismatch" in critical["text"]


async def test_a_failing_job_is_critical(ops_dsn: str, cli_env: dict[str, str]) -> None:
    await seed(ops_dsn, "expired_active_ride")
    await freeze_rides(ops_dsn)
    failed = cli(cli_env, "run-job", "expire_rides", "--dsn", ops_dsn)
    assert failed.returncode == 1
    code, data = check_json(cli_env, ops_dsn, "--overdue-factor", "0")
    assert code == 2
    assert problems(data) == {
        "expired_active_rides": "WARNING",
        "failing_jobs": "CRITICAL",
        "failed_runs_24h": "WARNING",
    }
    failing = next(p for p in data["problems"] if p["metric"] == "failing_jobs")
    assert "expire_rides failed" in failing["text"]


async def test_a_failing_jobs_entry_says_why_it_failed(
    ops_dsn: str, cli_env: dict[str, str]
) -> None:
    """Each entry of jobs[] has its last run's error_message, as the job log
    names it: a monitor reading a failing job need not look for the reason in
    health.recent_job_status. A run that recorded none, or no run, has null."""
    await seed(ops_dsn, "expired_active_ride")
    run_jobs(cli_env, ops_dsn, "reconcile_seat_counts")
    await freeze_rides(ops_dsn)
    failed = cli(cli_env, "run-job", "expire_rides", "--dsn", ops_dsn)
    assert failed.returncode == 1
    _, data = check_json(cli_env, ops_dsn)
    jobs = {j["name"]: j for j in data["jobs"]}
    error = jobs["expire_rides"]["error_message"]
    assert "rides are frozen" in error
    recent = {r["job_name"]: r for r in data["health"]["recent_job_status"]}
    assert error == recent["expire_rides"]["error_message"]
    assert jobs["reconcile_seat_counts"]["last_status"] == "completed"
    assert jobs["reconcile_seat_counts"]["error_message"] is None
    assert jobs["check_system_invariants"]["last_status"] is None
    assert jobs["check_system_invariants"]["error_message"] is None


async def test_a_run_refused_while_an_earlier_run_held_the_lock_is_not_failing(
    ops_dsn: str, cli_env: dict[str, str]
) -> None:
    """An operator starts the invariant check while the scheduler's run of it
    holds the job's lock: the second run fails for it, the first completes.
    The job is not failing (its latest state is the run that completed); the
    refused run still counts among the failed runs of the day."""
    await seed(ops_dsn)
    run_jobs(cli_env, ops_dsn)
    first, refused = await overlapping_runs(ops_dsn, "check_system_invariants")
    assert (first["success"], refused["sqlstate"]) == (True, "55P03")
    code, data = check_json(cli_env, ops_dsn)
    assert problems(data) == {"failed_runs_24h": "WARNING"}
    assert code == 1
    assert data["metrics"]["failing_jobs"] == 0
    assert data["metrics"]["failed_runs_24h"] == 1
    jobs = {j["name"]: j for j in data["jobs"]}
    assert jobs["check_system_invariants"]["last_status"] == "completed"
    assert jobs["check_system_invariants"]["error_message"] is None
    done = cli(cli_env, "check", "--dsn", ops_dsn)
    assert "whose last run failed" not in done.stdout


async def test_a_refused_run_is_not_failing_while_the_run_holding_the_lock_goes_on(
    ops_dsn: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """The run holding the lock writes its log row in its own transaction, so
    while it goes on no other session sees it. The refused run is still not
    the job's last run then: not in `check` (which would page CRITICAL), not
    on the dashboard, not in the health summary; the run before is."""
    name = "check_system_invariants"
    await seed(ops_dsn, "seat_mismatch")
    run_jobs(cli_env, ops_dsn, name)
    async with connected(ops_dsn) as conn:
        before = await conn.fetchval(
            "SELECT id FROM system_job_log WHERE job_name = $1", name
        )
    seen: dict[str, Any] = {}

    async def look() -> None:
        seen["check"] = check_json(cli_env, ops_dsn)
        async with connected(ops_dsn) as conn:
            seen["summary"] = await conn.fetchval("SELECT get_system_health_summary()")
            seen["log"] = await conn.fetch(
                "SELECT id, status FROM system_job_log WHERE job_name = $1", name
            )
        repo = Repository(make_settings(ops_dsn, tmp_path))
        await repo.open()
        try:
            seen["latest"] = await repo.latest_runs()
        finally:
            await repo.close()

    # The run's writes to the violations wait; reading them does not.
    hold = "LOCK TABLE invariant_violations IN EXCLUSIVE MODE"
    first, refused = await overlapping_runs(ops_dsn, name, hold=hold, during=look)
    assert (first["success"], refused["sqlstate"]) == (True, "55P03")
    # While the first run went on, its row could not be seen: only the refusal.
    assert [r["status"] for r in seen["log"]] == ["completed", "failed"]
    _, data = seen["check"]
    assert problems(data)["failed_runs_24h"] == "WARNING"
    assert "failing_jobs" not in problems(data)
    assert data["metrics"]["failing_jobs"] == 0
    jobs = {j["name"]: j for j in data["jobs"]}
    assert jobs[name]["last_status"] == "completed"
    recent = {r["job_name"]: r for r in seen["summary"]["recent_job_status"]}
    assert recent[name]["status"] == "completed"
    assert (seen["latest"][name].id, seen["latest"][name].status) == (
        before,
        "completed",
    )


STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(Z|[+-]\d\d:\d\d)")


def stamps(value: Any) -> list[str]:
    """Every ISO 8601 timestamp anywhere in a JSON value."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in stamps(v)]
    if isinstance(value, list):
        return [s for v in value for s in stamps(v)]
    return [value] if isinstance(value, str) and STAMP.fullmatch(value) else []


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])
async def test_every_time_in_check_json_is_written_one_way(
    ops_dsn: str, cli_env: dict[str, str], zone: str
) -> None:
    """checked_at, jobs[], violations[] and the health summary all write a time
    in UTC with "+00:00", as the exports and PostgreSQL do, whatever the
    session's TimeZone: a script parses one form, and the same run's start
    reads the same in jobs[] and in health.recent_job_status."""
    await seed(ops_dsn, "seat_mismatch")
    run_jobs(cli_env, ops_dsn)
    await once(
        ops_dsn,
        "DO $$BEGIN EXECUTE format('ALTER DATABASE %I SET timezone = %L',"
        f" current_database(), '{zone}'); END$$",
    )
    _, data = check_json(cli_env, ops_dsn)
    found = stamps(data)
    assert data["checked_at"] in found and data["health"]["timestamp"] in found
    assert all(j["last_started_at"] in found for j in data["jobs"])
    assert all(v["detected_at"] in found for v in data["violations"])
    assert len(found) >= 2 + len(JOBS) * 3 + len(data["violations"])
    assert {m.group(1) for s in found if (m := STAMP.fullmatch(s))} == {"+00:00"}
    recent = {r["job_name"]: r for r in data["health"]["recent_job_status"]}
    for job in data["jobs"]:
        assert job["last_started_at"] == recent[job["name"]]["started_at"]


def test_unreachable_server_is_unknown(cli_env: dict[str, str]) -> None:
    done = cli(cli_env, "check", "--dsn", UNREACHABLE)
    assert done.returncode == 3
    assert done.stdout.startswith("CARPOOL UNKNOWN - ")
    assert "cannot reach the database" in done.stdout
    assert len(done.stdout.splitlines()) == 1
    code, data = check_json(cli_env, UNREACHABLE)
    assert code == 3
    assert data["status"] == "UNKNOWN"
    assert "cannot reach the database" in data["error"]
    assert data["database"] == "postgresql://nobody@127.0.0.1:1/nothing"


async def test_database_without_the_functions_is_unknown(
    ops_dsn: str, base_dsn: str, cli_env: dict[str, str]
) -> None:
    done = cli(cli_env, "check", "--dsn", base_dsn)
    assert done.returncode == 3
    assert "no carpool health function" in done.stdout
    await once(ops_dsn, "DROP FUNCTION get_system_health_summary()")
    code, data = check_json(cli_env, ops_dsn)
    assert code == 3
    assert "no get_system_health_summary() function" in data["error"]


async def test_a_role_that_may_not_connect_is_unknown_and_told_to_ask_for_connect(
    ops_dsn: str, cli_env: dict[str, str]
) -> None:
    """The line and --json name the CONNECT privilege on the database, not the
    ops roles, which cannot give it."""
    name = dsn_parts(ops_dsn)["dbname"]
    ask = f'Ask for CONNECT on database "{name}" to be granted to this role'
    async with role_without_connect(ops_dsn) as dsn:
        done = cli(cli_env, "check", "--dsn", dsn)
        code, data = check_json(cli_env, dsn)
    assert done.returncode == code == 3
    assert done.stdout.startswith("CARPOOL UNKNOWN - ")
    assert len(done.stdout.splitlines()) == 1
    assert "lacks the CONNECT privilege on it). " + ask in done.stdout
    assert ".." not in done.stdout
    assert "CONNECT privilege" in data["error"]
    assert data["hint"].startswith(ask)


async def test_legacy_database(legacy_dsn: str, cli_env: dict[str, str]) -> None:
    await seed(legacy_dsn)
    code, data = check_json(cli_env, legacy_dsn)
    # The deployed summary gives recent_job_status null before any run.
    assert data["health"]["recent_job_status"] == []
    assert data["ops_layer_version"] is None
    assert code == 1
    assert problems(data) == {"overdue_jobs": "WARNING"}
    assert data["metrics"]["failed_runs_24h"] == 0

    run_jobs(cli_env, legacy_dsn)
    code, data = check_json(cli_env, legacy_dsn)
    assert (code, data["problems"]) == (0, []), data["problems"]
    assert all(j["last_status"] == "completed" for j in data["jobs"])


def test_usage_errors_are_unknown(cli_env: dict[str, str]) -> None:
    done = cli(cli_env, "check", "--warn", "no_such_metric=1")
    assert done.returncode == 3
    assert "no_such_metric" in done.stderr
    assert done.stdout.startswith("CARPOOL UNKNOWN - ")
    negative = cli(cli_env, "check", "--critical", "seat_mismatches=-1")
    assert negative.returncode == 3
    assert "below 0" in negative.stderr
    # Plain digits only: not Python's "1_000" or "+3", nor other scripts' digits.
    for odd_number in ("1_000", "+3", "\u0663"):
        odd = cli(cli_env, "check", "--warn", f"seat_mismatches={odd_number}")
        assert odd.returncode == 3, odd.stdout
        assert "is not a whole number or 'off'" in odd.stderr
    for factor in ("nan", "inf"):
        odd = cli(cli_env, "check", "--overdue-factor", factor)
        assert odd.returncode == 3, odd.stdout
        assert "finite number" in odd.stderr


def test_a_warning_limit_above_the_critical_one_is_refused(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """WARNING could never show for such a metric: refused before any reading,
    from the options and from the config file, by check and by the wall."""
    said = "warning limit of unresolved_violations (9) is above its critical limit (5)"
    done = cli(cli_env, "check", "--warn", "unresolved_violations=9")
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stdout.startswith("CARPOOL UNKNOWN - ") and said in done.stdout
    equal = cli(cli_env, "check", "--critical", "unresolved_violations=0", "--json")
    assert "above its critical limit" not in equal.stdout  # equal limits are kept

    config = tmp_path / "carpool.toml"
    config.write_text("[check.warn]\nunresolved_violations = 9\n")
    from_file = cli(cli_env, "check", "--config", str(config))
    assert from_file.returncode == 3 and said in from_file.stdout
    # The dashboard judges its wall with the same limits: it says so and stops.
    wall = cli(
        cli_env, "--config", str(config), "--dsn", "postgresql://127.0.0.1:1/none"
    )
    assert wall.returncode == 1 and said in wall.stderr, wall.stderr


def test_a_bad_config_file_is_unknown(cli_env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[check.warn]\nseat_mismatches = many\n")
    done = cli(cli_env, "check", "--config", str(bad))
    assert done.returncode == 3
    assert f"config file {bad}, line 2, column 19: Invalid value" in done.stdout


async def test_hand_written_rows_of_any_json_shape_still_count(
    ops_dsn: str, cli_env: dict[str, str]
) -> None:
    await seed(ops_dsn)
    run_jobs(cli_env, ops_dsn)
    async with connected(ops_dsn, plain=True) as conn:
        # What a hand-written check or script might leave behind.
        await conn.execute(
            "INSERT INTO invariant_violations"
            " (check_name, severity, violation_count, sample_data)"
            " VALUES ('custom_check', 'critical', 1, '[\"just a string sample\"]')"
        )
        await conn.execute(
            "UPDATE system_job_log SET details = '\"ok\"'"
            " WHERE id = (SELECT id FROM system_job_log ORDER BY started_at DESC"
            " LIMIT 1)"
        )
    code, data = check_json(cli_env, ops_dsn)
    assert code == 2, data
    assert data["metrics"]["critical_violations"] == 1
    assert problems(data).get("critical_violations") == "CRITICAL"
    assert "settings are not valid" not in json.dumps(data)


def test_an_unwritable_diagnostics_log_is_said_once_and_logs_nowhere(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    env = dict(cli_env, CARPOOL_TUI_LOG=str(blocker / "sub" / "x.log"))
    done = cli(env, "check", "--dsn", UNREACHABLE)
    assert done.returncode == 3
    assert done.stderr.count("diagnostics are off: cannot write") == 1, done.stderr
    assert "Traceback" not in done.stderr


async def test_critical_violations_are_counted_past_the_dashboards_page(
    ops_dsn: str, cli_env: dict[str, str]
) -> None:
    await once(
        ops_dsn,
        "INSERT INTO invariant_violations"
        " (check_name, severity, violation_count, sample_data)"
        " SELECT 'custom_check_' || n, 'critical', 1, '[]'"
        "   FROM generate_series(1, 510) n",
    )
    code, data = check_json(cli_env, ops_dsn)
    assert code == 2
    assert data["metrics"]["critical_violations"] == 510
    # The list stops at the page, and says rows were left off.
    assert len(data["violations"]) == 500
    assert data["violations_truncated"] is True


async def test_a_run_dated_in_the_future_hides_no_newer_failure(
    ops_dsn: str, cli_env: dict[str, str]
) -> None:
    """A clock set wrong once must not keep a failing job looking fine."""
    await seed(ops_dsn, "expired_active_ride")
    await freeze_rides(ops_dsn)
    failed = cli(cli_env, "run-job", "expire_rides", "--dsn", ops_dsn)
    assert failed.returncode == 1
    async with connected(ops_dsn) as conn:
        await conn.execute(
            "INSERT INTO system_job_log (job_name, started_at, completed_at, status,"
            " records_processed) VALUES ('expire_rides', now() + interval '2 days',"
            " now() + interval '2 days', 'completed', 0)"
        )
    code, data = check_json(cli_env, ops_dsn, "--overdue-factor", "0")
    assert code == 2
    assert problems(data)["failing_jobs"] == "CRITICAL"
    expire = next(j for j in data["jobs"] if j["name"] == "expire_rides")
    assert (expire["last_status"], expire["failing"]) == ("failed", True)


async def failures_around_the_margin(dsn: str, env: dict[str, str]) -> Any:
    """`check --json` after failures stamped 1 h ago, and a minute inside and a
    minute outside CLOCK_MARGIN ahead of the server's clock."""
    await seed(dsn)
    minute = timedelta(minutes=1)
    async with connected(dsn) as conn:
        await conn.executemany(
            "INSERT INTO system_job_log (job_name, started_at, completed_at, status,"
            " records_processed, error_message) VALUES"
            " ('expire_rides', now() + $1, now() + $1, 'failed', 0, $2)",
            [
                (-timedelta(hours=1), "really failed"),
                (CLOCK_MARGIN - minute, "clock a little fast"),
                (CLOCK_MARGIN + minute, "clock set wrong"),
            ],
        )
    _, data = check_json(env, dsn)
    return data


async def test_a_failure_dated_ahead_is_not_counted_by_the_summary(
    ops_dsn: str, cli_env: dict[str, str]
) -> None:
    data = await failures_around_the_margin(ops_dsn, cli_env)
    assert data["metrics"]["failed_runs_24h"] == 2
    assert data["health"]["failed_jobs_24h"] == 2
    recent = json.dumps(data["health"]["recent_job_status"])
    assert "clock a little fast" in recent and "clock set wrong" not in recent


async def test_a_failure_dated_ahead_is_not_counted_from_the_legacy_log(
    legacy_dsn: str, cli_env: dict[str, str]
) -> None:
    data = await failures_around_the_margin(legacy_dsn, cli_env)
    assert data["metrics"]["failed_runs_24h"] == 2


async def test_a_job_whose_only_runs_are_dated_ahead_never_ran(
    ops_dsn: str, cli_env: dict[str, str]
) -> None:
    """Neither the health summary's runs nor a row without a start get past."""
    async with connected(ops_dsn) as conn:
        await conn.execute("DELETE FROM system_job_log")
        await conn.execute("ALTER TABLE system_job_log ALTER started_at DROP NOT NULL")
        await conn.execute(
            "INSERT INTO system_job_log (job_name, started_at, completed_at, status,"
            " records_processed) VALUES"
            " ('expire_rides', now() + interval '3 hours',"
            "  now() + interval '3 hours', 'completed', 0),"
            " ('reconcile_seat_counts', NULL, now() + interval '2 days',"
            "  'completed', 0)"
        )
    code, data = check_json(cli_env, ops_dsn)
    jobs = {j["name"]: j for j in data["jobs"]}
    for name in ("expire_rides", "reconcile_seat_counts"):
        assert (jobs[name]["last_status"], jobs[name]["overdue"]) == (None, True)
    assert code == 1 and problems(data)["overdue_jobs"] == "WARNING"


async def test_a_malformed_violation_row_hides_no_other(
    ops_dsn: str, cli_env: dict[str, str]
) -> None:
    """Samples of any JSON type are read; a row whose samples still cannot be
    read is counted by its severity without them, and the rest judged as usual."""
    await seed(ops_dsn, "seat_mismatch")
    run_jobs(cli_env, ops_dsn, "check_system_invariants")
    await once(
        ops_dsn,
        "INSERT INTO invariant_violations"
        " (check_name, severity, violation_count, sample_data) VALUES"
        " ('weird_ride_id', 'warning', 1, '[{\"ride_id\": 12345}]'),"
        " ('weird_check', 'warning', 1, '[{\"check\": 5, \"status\": {\"a\": 1}}]'),"
        " ('weird_count', 'critical', 1, '[{\"current\": \"many\"}]')",
    )
    done = cli(cli_env, "check", "--dsn", ops_dsn)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.startswith("CARPOOL CRITICAL - ")
    assert "cannot read" not in done.stdout
    code, data = check_json(cli_env, ops_dsn)
    assert code == 2
    found = problems(data)
    assert found["seat_mismatches"] == "CRITICAL"
    assert found["critical_violations"] == "CRITICAL"
    assert data["metrics"]["critical_violations"] == 2
    critical = next(p for p in data["problems"] if p["metric"] == "critical_violations")
    assert "seat_mismatch" in critical["text"] and "weird_count" in critical["text"]


async def test_a_violation_row_it_cannot_read_is_listed_with_the_others(
    ops_dsn: str, cli_env: dict[str, str]
) -> None:
    """--json lists every open row it counted: one it could not read whole
    keeps its check name, severity and count and says why in `unreadable`."""
    await seed(ops_dsn, "seat_mismatch")
    run_jobs(cli_env, ops_dsn, "check_system_invariants")
    await once(
        ops_dsn,
        "INSERT INTO invariant_violations"
        " (check_name, severity, violation_count, sample_data) VALUES"
        " ('weird_count', 'warning', 3, '[{\"current\": \"many\"}]')",
    )
    code, data = check_json(cli_env, ops_dsn)
    assert code == 2
    listed = {v["check_name"]: v for v in data["violations"]}
    assert sorted(listed) == ["seat_mismatch", "weird_count"]
    assert len(listed) == data["metrics"]["unresolved_violations"]
    assert data["violations_truncated"] is False
    weird = listed["weird_count"]
    assert (weird["severity"], weird["violation_count"]) == ("warning", 3)
    assert weird["unreadable"].startswith("samples could not be read (")
    assert "sample_data.0.current" in weird["unreadable"]
    ordinary = listed["seat_mismatch"]
    assert "unreadable" not in ordinary
    assert set(ordinary) == {
        "id",
        "check_name",
        "severity",
        "violation_count",
        "detected_at",
    }
    assert ordinary["severity"] == "critical" and ordinary["violation_count"] >= 1


async def test_a_result_it_cannot_read_is_unknown_without_the_dashboards_words(
    ops_dsn: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """`check` has no other panels to fall back on; the dashboard has."""
    odd = '{"total_rides": "lots"}'
    async with connected(ops_dsn, plain=True) as conn:
        await conn.execute(
            "ALTER FUNCTION get_system_health_summary() RENAME TO health_real;"
            " CREATE FUNCTION get_system_health_summary() RETURNS jsonb"
            f" LANGUAGE sql AS $$ SELECT health_real() || '{odd}' $$"
        )
    code, data = check_json(cli_env, ops_dsn)
    assert code == 3 and data["status"] == "UNKNOWN"
    assert "a row has a shape this version cannot read" in data["error"]
    assert data["hint"] == "Look at that row in the database."
    assert "other panels" not in data["summary"]

    repo = Repository(make_settings(ops_dsn, tmp_path))
    try:
        await repo.open()
        snapshot = await repo.snapshot()
    finally:
        await repo.close()
    assert snapshot.health is None and snapshot.job_log is not None
    assert "the other panels are unaffected" in snapshot.errors["health"].hint


@pytest.mark.parametrize("as_json", [False, True])
async def test_a_server_that_stops_answering_is_unknown_in_bounded_time(
    ops_dsn: str,
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    as_json: bool,
) -> None:
    """Connected, then silence (a stopped server, a network that drops
    everything): the server's statement timeout cannot end the wait, so the
    client's own deadline must, and `check` says so as UNKNOWN."""
    # In process, in a thread of its own: the command line has no option for
    # the statement timeout, and the default (5 s) would make this test slow.
    short_ms = 1000
    for name in ("XDG_CONFIG_HOME", "CARPOOL_TUI_LOG"):
        monkeypatch.setenv(name, cli_env[name])
    for name in ("DATABASE_URL", "CARPOOL_TUI_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    settings = cli_module._settings
    monkeypatch.setattr(
        cli_module,
        "_settings",
        lambda *a, **k: dataclasses.replace(
            settings(*a, **k), statement_timeout_ms=short_ms
        ),
    )
    async with (
        connected(ops_dsn, purpose="test-blocker") as blocker,
        connected(ops_dsn) as watcher,
        relayed(ops_dsn) as (relay, through),
    ):
        await blocker.execute("BEGIN")
        await blocker.execute("LOCK invariant_violations IN ACCESS EXCLUSIVE MODE")
        args = cli_module.build_parser().parse_args(
            ["check", "--json"] if as_json else ["check"]
        )
        args.dsn = through
        started = time.monotonic()
        checking = asyncio.ensure_future(asyncio.to_thread(cli_module.cmd_check, args))
        for _ in range(250):  # until a read of `check` waits on the lock
            if await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND application_name LIKE 'carpool-tui %'"
            ):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("check never waited on the lock")
        relay.hold()
        code = await asyncio.wait_for(checking, 20)
        took = time.monotonic() - started
        await blocker.execute("ROLLBACK")
    assert took < short_ms / 1000 + POLL_MARGIN_S + 2
    assert code == 3
    said = "Reading the health summary: the database did not answer within 4 s"
    hint = "The server may be hung or the network down."
    out = capsys.readouterr().out
    if as_json:
        data = json.loads(out)
        assert (data["status"], data["exit_code"]) == ("UNKNOWN", 3)
        assert (data["error"], data["hint"]) == (said, hint)
    else:
        assert out == f"CARPOOL UNKNOWN - {said}. {hint}\n"


async def test_a_server_that_never_answers_the_login_is_unknown_by_the_timeout(
    cli_env: dict[str, str],
) -> None:
    """A stopped server still accepts connections (the kernel does), then says
    nothing: the login waits for the connect timeout (10 s), past the 10 s a
    monitor such as NRPE allows. --timeout ends the whole check in time."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    dsn = f"postgresql://nobody@127.0.0.1:{port}/carpool"
    try:
        for args, said in (
            (("--timeout", "1"), "within 1 s"),
            ((), f"within {cli_module.CHECK_TIMEOUT_S:g} s"),
        ):
            started = time.monotonic()
            result = await asyncio.to_thread(cli, cli_env, "check", *args, "--dsn", dsn)
            took = time.monotonic() - started
            assert result.returncode == 3, result.stdout + result.stderr
            assert result.stdout.startswith(
                f"CARPOOL UNKNOWN - No answer from the database {said}. The server"
                " may be stopped"
            ), result.stdout
            assert accepted, "check never reached the silent server"
            if args:
                assert took < cli_module.CHECK_TIMEOUT_S, took
    finally:
        server.close()
    bad = cli(cli_env, "check", "--timeout", "0", "--dsn", dsn)
    assert bad.returncode == 3 and "--timeout: must be a number of seconds" in (
        bad.stderr
    )


async def test_a_dsn_asking_for_a_read_write_server_is_checked(
    ops_dsn: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """check reads in a read-only session; the server is still a read-write
    one, and target_session_attrs=read-write must find it so, by --dsn and by a
    read_only target alike."""
    sep = "&" if "?" in ops_dsn else "?"
    dsn = f"{ops_dsn}{sep}target_session_attrs=read-write"
    run_jobs(cli_env, dsn)
    config = tmp_path / "rw.toml"
    config.write_text(f"[targets.wall]\ndsn = '{dsn}'\nread_only = true\n")
    cli_env["CARPOOL_TUI_CONFIG"] = str(config)
    for args in (("--dsn", dsn), ("--target", "wall")):
        done = cli(cli_env, "check", *args)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith("CARPOOL OK - "), done.stdout


async def test_infinite_timestamps_are_written_as_postgresql_writes_them(
    ops_dsn: str, cli_env: dict[str, str]
) -> None:
    """A violation or run stamped ±infinity is judged like any other; the line
    and --json say '-infinity' / 'infinity', not year 1 without a timezone."""
    await once(
        ops_dsn,
        "INSERT INTO invariant_violations (check_name, severity, violation_count,"
        " sample_data, detected_at) VALUES ('x', 'critical', 1, '[]', '-infinity'),"
        " ('y', 'warning', 1, '[]', 'infinity')",
    )
    await once(
        ops_dsn,
        "INSERT INTO system_job_log (job_name, started_at, completed_at, status,"
        " records_processed) VALUES"
        " ('reconcile_seat_counts', '-infinity', '-infinity', 'failed', 0)",
    )
    done = cli(cli_env, "check", "--dsn", ops_dsn)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "reconcile_seat_counts failed at -infinity" in done.stdout
    code, data = check_json(cli_env, ops_dsn)
    assert code == 2
    detected = {v["check_name"]: v["detected_at"] for v in data["violations"]}
    assert detected == {"x": "-infinity", "y": "infinity"}
    job = next(j for j in data["jobs"] if j["name"] == "reconcile_seat_counts")
    assert (job["last_started_at"], job["age_seconds"]) == ("-infinity", None)
    assert job["failing"] and job["overdue"]


async def test_database_text_in_the_line_is_escaped_and_stays_one_line(
    ops_dsn: str, cli_env: dict[str, str]
) -> None:
    """A check name holding an escape sequence, a bell and a newline reaches
    the monitor as visible escapes on one line; --json keeps it as it is."""
    name = "ctrl\x1b[31mRED\x07\nnewline"
    await once(
        ops_dsn,
        "INSERT INTO invariant_violations (check_name, severity, violation_count,"
        " sample_data) VALUES ($1, 'critical', 1, '[]')",
        name,
    )
    done = cli(cli_env, "check", "--dsn", ops_dsn)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stdout.splitlines()
    assert "ctrl\\x1b[31mRED\\x07\\nnewline" in line
    assert not any(c in line for c in "\x1b\x07\r")
    _, data = check_json(cli_env, ops_dsn)
    assert [v["check_name"] for v in data["violations"]] == [name]
