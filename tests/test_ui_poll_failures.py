"""Polling when the server hangs, when data ages, and when retrying cannot help."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from factories import connected
from test_resilience import _ops_database, own_server  # noqa: F401
from test_ui_actions import confirm_job
from test_ui_dashboard import loaded, notices, status
from test_ui_support import FIXED_NOW, make_settings, static_text, until
from textual.pilot import Pilot
from textual.widgets import Static

from carpool_tui.db.embedded import EmbeddedServer
from carpool_tui.db.errors import (
    ConnectionLost,
    DatabaseMissing,
    LoginRefused,
    NotMigrated,
    OpsError,
    SettingsInvalid,
    translate,
)
from carpool_tui.models import Snapshot
from carpool_tui.ui import dashboard
from carpool_tui.ui.app import DashboardApp
from carpool_tui.ui.dashboard import RECHECK_S
from carpool_tui.ui.dialogs import CANCEL_GRACE_S, JobRunDialog
from carpool_tui.ui.widgets import JobsTable


def _server_processes(server: EmbeddedServer) -> list[int]:
    """The postmaster and its children (backends and helper processes)."""
    postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
    children: list[int] = []
    for task in Path(f"/proc/{postmaster}/task").iterdir():
        text = (task / "children").read_text().split()
        children.extend(int(pid) for pid in text)
    return [postmaster, *children]


def _signal_all(pids: list[int], signum: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


async def test_a_hung_server_turns_the_status_stale_then_recovers(
    own_server: EmbeddedServer,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    dsn = await _ops_database(own_server)
    settings = dataclasses.replace(
        make_settings(dsn, tmp_path), statement_timeout_ms=1000
    )
    app = DashboardApp(settings)
    stopped: list[int] = []
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            stopped = _server_processes(own_server)
            _signal_all(stopped, signal.SIGSTOP)
            # The statement timeout never fires on a stopped server; the client
            # deadline (1 s + the margin) must, well within this bound.
            await until(
                pilot,
                lambda: "DISCONNECTED" in status(app),
                "the hung poll to count as a lost connection",
                15,
            )
            assert app.dashboard.failures >= 1
            assert "did not answer" in app.dashboard.error.message  # type: ignore[union-attr]
            assert "data" in status(app) and "old" in status(app)
            assert app.dashboard.query_one("#main").display  # the old data stays
            # Each retry waits out its deadline: under way, it is no stop.
            await until(pilot, lambda: "retrying now" in status(app), "a retry", 15)
            assert "not retrying" not in status(app)
            _signal_all(stopped, signal.SIGCONT)
            stopped = []
            await until(pilot, lambda: "updated" in status(app), "the recovery", 60)
            assert app.dashboard.error is None
    finally:
        _signal_all(stopped, signal.SIGCONT)


async def test_a_job_whose_server_stops_answering_can_be_left(
    own_server: EmbeddedServer,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """Neither the job nor the cancel answers: Esc stops waiting, after a grace."""
    dsn = await _ops_database(own_server)
    async with connected(dsn) as conn:
        await conn.execute("ALTER DATABASE carpool SET carpool.lock_timeout = 0")
    blocker = await asyncpg.connect(dsn)
    await blocker.execute("BEGIN; LOCK TABLE rides IN ACCESS EXCLUSIVE MODE")
    now = [FIXED_NOW]
    app = DashboardApp(make_settings(dsn, tmp_path), clock=lambda: now[0])
    stopped: list[int] = []
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            await confirm_job(pilot, "1")
            running = await until(
                pilot,
                lambda: isinstance(app.screen, JobRunDialog) and app.screen,
                "job",
            )
            await until(pilot, lambda: app.repo.job_running, "the job connection")
            stopped = _server_processes(own_server)
            _signal_all(stopped, signal.SIGSTOP)
            await pilot.press("c")
            await pilot.pause(0.2)
            keys = static_text(running.query_one("#job-keys", Static))
            assert "cancel the job" not in keys  # sent once; c again does nothing
            assert "stop waiting, from 10 s after the cancel" in keys
            await pilot.press("escape")  # too soon: the cancel may still answer
            assert app.screen is running
            assert "Esc stops waiting after 10 s" in notices(app)[-1]
            now[0] += timedelta(seconds=CANCEL_GRACE_S + 1)
            await pilot.pause(0.3)
            assert "stop waiting" in static_text(running.query_one("#job-keys", Static))
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is app.dashboard, "the dashboard")
            assert "The job may still complete" in notices(app)[-1]
            await until(pilot, lambda: not app.repo.job_running, "the job let go")
            logged = [
                json.loads(line)
                for line in app.settings.action_log.read_text().splitlines()
            ]
            assert [(e["action"], e["outcome"]) for e in logged] == [
                ("run_job", "unknown")
            ]
            _signal_all(stopped, signal.SIGCONT)
            stopped = []
    finally:
        _signal_all(stopped, signal.SIGCONT)
        await blocker.close()


def hold_polls(app: DashboardApp) -> None:
    """From now on every poll waits for ever: the data on screen only ages."""
    never = asyncio.Event()

    async def stuck(**_: Any) -> Snapshot:
        await never.wait()
        raise AssertionError("unreachable")

    app.repo.poll = stuck  # type: ignore[method-assign]


async def test_the_status_says_stale_when_the_last_poll_is_too_old(
    ops_dsn: str, tmp_path: Path
) -> None:
    now = [FIXED_NOW]
    app = DashboardApp(make_settings(ops_dsn, tmp_path), clock=lambda: now[0])
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        assert "updated 0 s ago" in status(app)
        hold_polls(app)
        now[0] = FIXED_NOW + timedelta(seconds=4)
        await until(pilot, lambda: "STALE" in status(app), "the STALE mark", 5)
        assert "data 4 s old" in status(app)
        assert "updated" not in status(app)


async def test_polling_faster_does_not_call_older_data_stale_at_once(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Data 5 s old at a 10 s rate is fresh; + asks for more, not an alarm."""
    now = [FIXED_NOW]
    settings = make_settings(ops_dsn, tmp_path, refresh=10)
    app = DashboardApp(settings, clock=lambda: now[0])
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        hold_polls(app)
        now[0] = FIXED_NOW + timedelta(seconds=5)
        await pilot.press("plus", "plus", "plus")
        await until(pilot, lambda: app.interval <= 1, "the faster rate")
        await pilot.pause()
        assert "updated 5 s ago" in status(app)
        # A poll at the new rate that still has not come is stale, as before.
        now[0] += timedelta(seconds=4)
        await until(pilot, lambda: "STALE" in status(app), "the STALE mark", 5)
        assert "data 9 s old" in status(app)


async def test_an_outage_keeps_the_job_ages_counting_and_says_why(
    ops_dsn: str, tmp_path: Path
) -> None:
    """The last good data stays, but a job must not look younger than it is."""
    async with connected(ops_dsn) as conn:
        await conn.execute(
            "INSERT INTO system_job_log (job_name, started_at, completed_at, status,"
            " records_processed) VALUES ('expire_rides', $1, $1, 'completed', 0)",
            FIXED_NOW - timedelta(minutes=1),
        )
    now = [FIXED_NOW]
    app = DashboardApp(make_settings(ops_dsn, tmp_path), clock=lambda: now[0])
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        jobs = app.dashboard.query_one("#jobs", JobsTable)

        def expire_row() -> str:
            return " ".join(str(cell) for cell in jobs.get_row("expire_rides"))

        assert " 60 s " in expire_row() and "OVERDUE" not in expire_row()

        async def down(**_: Any) -> Snapshot:
            raise ConnectionLost("Reading the health summary: connection refused", "")

        app.repo.poll = down  # type: ignore[method-assign]
        now[0] = FIXED_NOW + timedelta(minutes=20)
        app.dashboard.start_round()
        await until(pilot, lambda: app.dashboard.failures >= 1, "the failed poll")
        await pilot.pause()
        assert "21 min" in expire_row() and "OVERDUE" in expire_row()
        assert any("connection refused" in n for n in notices(app))
        # Between retries too: the ages follow the clock, not the retries.
        app.dashboard.failures = 5  # the next retry is 30 s away
        app.dashboard.start_round()
        await until(pilot, lambda: app.dashboard.failures == 6, "a long backoff")
        now[0] = FIXED_NOW + timedelta(minutes=30)
        await until(pilot, lambda: "31 min" in expire_row(), "the age to move", 3)
        assert app.dashboard.failures == 6  # no poll came in between


async def test_a_malformed_dsn_is_not_retried(tmp_path: Path) -> None:
    dsn = f"postgresql://postgres@/carpool?host={tmp_path}&sslmode=nonsense"
    app = DashboardApp(make_settings(dsn, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.dashboard
        await until(pilot, lambda: screen.failures >= 1, "the first attempt")
        text = static_text(screen.query_one("#startup-message", Static))
        assert "connection settings are not valid" in text
        assert "Use a DSN like" in text
        assert "Not retrying" in text and "q quits" in text
        assert "NOT CONNECTED  not retrying" in status(app)
        await pilot.pause(2.5)  # past the first backoff (1 s)
        assert screen.failures == 1
        assert screen.retry_at is None
        await pilot.press("q")
        await until(pilot, lambda: app.return_code is not None, "the app to exit")


async def test_a_missing_database_is_looked_for_every_minute(
    pg_server: Any, tmp_path: Path
) -> None:
    """Not a passing fault, so no quick retries; but it may be restored."""
    dsn = pg_server.dsn(f"carpool_missing_{uuid.uuid4().hex[:8]}")
    app = DashboardApp(make_settings(dsn, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.dashboard
        await until(pilot, lambda: screen.failures >= 1, "the first attempt")
        text = static_text(screen.query_one("#startup-message", Static))
        assert "does not exist" in text and "database name" in text
        assert "opens by itself: it looks again every minute (retry in" in text
        assert "r looks now; q quits" in text
        await pilot.pause(2.5)
        assert screen.failures == 1
        assert screen.retry_at is not None
        wait = (screen.retry_at - app.clock()).total_seconds()
        assert RECHECK_S - 5 < wait <= RECHECK_S


async def test_r_tries_again_once_the_missing_database_exists(
    pg_server: Any, tmp_path: Path
) -> None:
    name = f"carpool_later_{uuid.uuid4().hex[:8]}"
    app = DashboardApp(make_settings(pg_server.dsn(name), tmp_path))
    admin = await asyncpg.connect(pg_server.admin_dsn)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            screen = app.dashboard
            await until(pilot, lambda: screen.failures >= 1, "the first attempt")
            assert screen.retry_at is not None  # in a minute; r does not wait
            await admin.execute(
                f"CREATE DATABASE {name} TEMPLATE {pg_server.template('ops')}"
            )
            await pilot.press("r")
            await until(pilot, lambda: screen.snapshot is not None, "the dashboard")
            assert screen.error is None
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


@contextlib.asynccontextmanager
async def dropped_under_the_dashboard(
    pg_server: Any, tmp_path: Path
) -> AsyncIterator[tuple[DashboardApp, Pilot[Any], str]]:
    """A dashboard whose database was dropped under it; dropped again at the end
    (it may have been re-created)."""
    name = await pg_server.create_database(template=pg_server.template("ops"))
    app = DashboardApp(make_settings(pg_server.dsn(name), tmp_path))
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            await pg_server.drop_database(name)
            await until(
                pilot,
                lambda: isinstance(app.dashboard.error, DatabaseMissing),
                "the missing database",
            )
            yield app, pilot, name
    finally:
        await pg_server.drop_database(name)


async def recreate(pg_server: Any, name: str, template: str | None) -> None:
    async with connected(pg_server.admin_dsn, plain=True) as admin:
        like = f" TEMPLATE {pg_server.template(template)}" if template else ""
        await admin.execute(f"CREATE DATABASE {name}{like}")


async def test_a_database_dropped_and_restored_comes_back_by_itself(
    pg_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wall screen has no r key: once the database is back, it polls again."""
    monkeypatch.setattr(dashboard, "RECHECK_S", 3.0)
    async with dropped_under_the_dashboard(pg_server, tmp_path) as (app, pilot, name):
        screen = app.dashboard
        assert screen.caps is None  # the write keys say why they are off
        failures = screen.failures
        await pilot.pause(1.5)  # past the first backoff: no new attempt
        assert screen.failures == failures
        assert "DISCONNECTED" in status(app) and "retry in" in status(app)
        told = [n for n in notices(app) if "Looking again every minute" in n]
        assert len(told) == 1
        await recreate(pg_server, name, "ops")
        await until(pilot, lambda: screen.error is None, "the database back", 10)
        assert screen.caps is not None and screen.failures == 0


async def test_a_database_back_without_its_functions_is_a_new_cause_told(
    pg_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dropped, then re-created empty: the second cause is told as the first."""
    monkeypatch.setattr(dashboard, "RECHECK_S", 1.0)
    async with dropped_under_the_dashboard(pg_server, tmp_path) as (app, pilot, name):
        screen = app.dashboard
        told = len(notices(app))
        await until(pilot, lambda: screen.failures >= 2, "a second look", 10)
        await recreate(pg_server, name, None)
        await until(pilot, lambda: isinstance(screen.error, NotMigrated), "empty")
        # Its attempts are counted afresh, so its backoff starts at 1 s.
        assert screen.failures == 1
        await until(pilot, lambda: len(notices(app)) > told, "the new cause told")
        assert str(screen.error) in notices(app)[-1]


@pytest.mark.parametrize(
    ("exc", "kind", "retryable"),
    [
        (ConnectionRefusedError(111, "refused"), ConnectionLost, True),
        (TimeoutError(), ConnectionLost, True),
        (asyncpg.ConnectionDoesNotExistError("gone"), ConnectionLost, True),
        (asyncpg.ClientConfigurationError("bad sslmode"), SettingsInvalid, False),
        (ValueError("invalid port"), SettingsInvalid, False),
        (asyncpg.InvalidPasswordError("bad password"), LoginRefused, False),
        (
            asyncpg.InvalidAuthorizationSpecificationError("no role"),
            LoginRefused,
            False,
        ),
        (asyncpg.InvalidCatalogNameError("no db"), DatabaseMissing, False),
        (asyncpg.UndefinedFunctionError("no fn"), NotMigrated, True),
        (asyncpg.QueryCanceledError("timeout"), OpsError, True),
    ],
)
def test_errors_say_whether_retrying_can_help(
    exc: BaseException, kind: type[OpsError], retryable: bool
) -> None:
    err = translate(exc, doing="Connecting")
    assert type(err) is kind
    assert err.retryable is retryable


def test_a_login_refusal_still_counts_as_a_lost_connection() -> None:
    err = translate(asyncpg.InvalidPasswordError("x"), doing="Connecting")
    assert isinstance(err, ConnectionLost)
