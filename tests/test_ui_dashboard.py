"""The live screen against real databases: panels, states, keys, selection."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest
from factories import connected, job, make_booking, make_ride
from rich.text import Text
from test_ui_support import (
    FIXED_NOW,
    drawn_lines,
    frozen,
    layout_requests,
    make_settings,
    screen_text,
    static_text,
    table_text,
    terminal_lines,
    until,
)
from textual.coordinate import Coordinate
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static
from textual.widgets.data_table import ColumnKey

from carpool_tui.config import dsn_parts
from carpool_tui.db.connect import connect
from carpool_tui.db.migrate import migrate
from carpool_tui.db.repo import SAMPLES_READ
from carpool_tui.models import HealthSummary
from carpool_tui.ui.app import DashboardApp, TooSmallScreen
from carpool_tui.ui.dashboard import LABEL_MIN_WIDTH
from carpool_tui.ui.dialogs import (
    HelpScreen,
    LogEntryDialog,
    ResolveDialog,
    SeatFixDialog,
    ViolationDialog,
)
from carpool_tui.ui.wallboard import board_state
from carpool_tui.ui.widgets import (
    DialogScroll,
    JobLogTable,
    JobsTable,
    ViolationsTable,
    health_markup,
)


async def seat_mismatch(conn: asyncpg.Connection) -> uuid.UUID:
    """An active ride whose stored seats drifted: 4 total, 2 booked, 1 stored."""
    ride = await make_ride(conn, total_seats=4)
    await make_booking(conn, ride, seats=2, status="confirmed")
    await conn.execute("UPDATE rides SET available_seats = 1 WHERE id = $1", ride)
    return ride


async def failed_run(conn: asyncpg.Connection, *, ops: bool = True) -> None:
    """A failed run in the job log, as the ops layer records one."""
    extra_cols, extra_vals = (", sqlstate", ", '55P03'") if ops else ("", "")
    await conn.execute(
        f"INSERT INTO system_job_log (job_name, started_at, completed_at, status,"
        f" records_processed, details, error_message{extra_cols})"
        f" VALUES ('reconcile_seat_counts', now() - interval '1 hour',"
        f" now() - interval '1 hour' + interval '2 seconds', 'failed', 0,"
        f' \'{{"sqlstate": "55P03"}}\','
        f" 'canceling statement due to lock timeout'{extra_vals})"
    )


async def db(dsn: str) -> asyncpg.Connection:
    return await connect(dsn, purpose="test", statement_timeout_ms=60_000)


async def log_runs(dsn: str, count: int, *, failed_every: int) -> None:
    """`count` expire_rides runs, 5 minutes apart before FIXED_NOW; every
    `failed_every`-th one failed with the message 'boom <n>'."""
    async with connected(dsn) as conn:
        await conn.execute(
            "INSERT INTO system_job_log (job_name, started_at, completed_at, status,"
            " error_message) SELECT 'expire_rides',"
            " $1::timestamptz - n * interval '5 minutes',"
            " $1::timestamptz - n * interval '5 minutes' + interval '1 second',"
            " CASE WHEN n % $3 = 0 THEN 'failed' ELSE 'completed' END,"
            " CASE WHEN n % $3 = 0 THEN 'boom ' || n END"
            " FROM generate_series(1, $2) AS n",
            FIXED_NOW,
            count,
            failed_every,
        )


async def loaded(pilot: Pilot[Any]) -> DashboardApp:
    app: DashboardApp = pilot.app  # type: ignore[assignment]
    await until(pilot, lambda: app.dashboard.snapshot is not None, "first snapshot")
    await pilot.pause()
    return app


def notices(app: DashboardApp) -> list[str]:
    """The messages of the notifications shown so far, oldest first."""
    return [n.message for n in app._notifications]


def status(app: DashboardApp) -> str:
    return static_text(app.dashboard.query_one("#status", Static))


Detail = TypeVar("Detail", bound=Screen[Any])


async def row_detail(
    pilot: Pilot[Any],
    app: DashboardApp,
    table: DataTable[Any],
    row: int,
    dialog: type[Detail],
) -> Detail:
    """Enter on `table`'s row `row`: the detail dialog it opens."""
    table.focus()
    await until(pilot, lambda: table.row_count > row, f"row {row + 1} of the table")
    table.move_cursor(row=row)
    await pilot.press("enter")
    detail: Detail = await until(
        pilot,
        lambda: isinstance(app.screen, dialog) and app.screen,
        dialog.__name__,
    )
    return detail


async def violation_detail(
    pilot: Pilot[Any], app: DashboardApp, row: int
) -> ViolationDialog:
    """Enter on the violations table's row `row`: its detail dialog."""
    table = app.dashboard.query_one("#violations", ViolationsTable)
    return await row_detail(pilot, app, table, row, ViolationDialog)


async def test_ops_database_fills_every_panel(ops_dsn: str, tmp_path: Path) -> None:
    async with connected(ops_dsn) as conn:
        await seat_mismatch(conn)
        await job(conn, "check_system_invariants")
        await job(conn, "expire_rides")
        await failed_run(conn)
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        screen = app.dashboard
        health = static_text(screen.query_one("#health", Static))
        assert "1  seat mismatches" in health
        assert "1  unresolved violations" in health
        jobs = table_text(screen.query_one("#jobs", JobsTable)).splitlines()
        assert jobs[0].startswith("1 expire_rides  completed  ok")
        assert jobs[1].startswith("2 reconcile_seat_counts  FAILED  ok  60 min")
        assert "never run  OVERDUE" in jobs[2]
        log = table_text(screen.query_one("#log", JobLogTable))
        assert "FAILED" in log and "Lock timeout: canceling statement" in log
        violations = table_text(screen.query_one("#violations", ViolationsTable))
        assert "INV-SEAT-001 seat_mismatch" in violations
        assert "ops 1." in status(app) and "updated" in status(app)

        log_table = screen.query_one("#log", JobLogTable)
        log_table.focus()
        failed_row = next(
            i for i, e in enumerate(log_table.entries.values()) if e.failed
        )
        log_table.move_cursor(row=failed_row)
        await pilot.press("enter")
        detail = await until(
            pilot,
            lambda: isinstance(app.screen, LogEntryDialog) and app.screen,
            "job run detail",
        )
        text = screen_text(detail)
        assert "canceling statement due to lock timeout" in text
        assert "55P03" in text
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen, "back on the dashboard")


async def test_legacy_database_fills_panels_and_ops_actions_say_why(
    legacy_dsn: str, tmp_path: Path
) -> None:
    async with connected(legacy_dsn) as conn:
        await seat_mismatch(conn)
        assert (await job(conn, "get_system_health_summary"))[
            "recent_job_status"
        ] is None
        await job(conn, "check_system_invariants")
        await job(conn, "expire_rides")
    app = DashboardApp(make_settings(legacy_dsn, tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        screen = app.dashboard
        assert "LEGACY" in status(app)
        violations = table_text(screen.query_one("#violations", ViolationsTable))
        assert "legacy: seat_mismatch" in violations
        jobs = table_text(screen.query_one("#jobs", JobsTable))
        assert "1 expire_rides  completed" in jobs
        assert screen.check_action("seat_fix", ()) is False
        assert screen.check_action("run_job", ("expire_rides",)) is True

        await pilot.press("s")
        await until(pilot, lambda: notices(app), "a notification")
        said = " ".join(notices(app))
        assert "ops layer" in said and "carpool-tui migrate" in said
        assert app.screen is screen  # nothing opened

        screen.query_one("#violations", ViolationsTable).focus()
        await pilot.press("enter")
        detail = await until(
            pilot,
            lambda: isinstance(app.screen, ViolationDialog) and app.screen,
            "violation detail",
        )
        assert "seat_mismatch" in screen_text(detail)
        await pilot.press("escape")

        await pilot.press("question_mark")
        help_screen = await until(
            pilot, lambda: isinstance(app.screen, HelpScreen) and app.screen, "help"
        )
        text = screen_text(help_screen)
        assert "Legacy database" in text and "carpool-tui migrate" in text
        # The DSN to reach the same database from another terminal.
        assert static_text(help_screen.query_one("#dsn", Static)) == app.target
        assert "unavailable: Needs the ops layer" in text


async def test_a_read_only_footer_at_80_columns_keeps_refresh_and_pause(
    ops_dsn: str, tmp_path: Path
) -> None:
    """A writable footer at 80 columns drops its spare keys to keep the write
    keys; a read-only one hides the write keys, so the spare ones fit."""
    for read_only in (True, False):
        app = DashboardApp(make_settings(ops_dsn, tmp_path, read_only=read_only))
        async with app.run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            await pilot.pause()
            footer = terminal_lines(app.screen)[-1]
            assert "q Quit" in footer and "t Log/Violations" in footer, footer
            assert ("r Refresh" in footer) is read_only, footer
            assert ("p Pause" in footer) is read_only, footer
            assert ("s Fix seats" in footer) is not read_only, footer


async def test_read_only_session_greys_out_writes_and_the_database_refuses(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        ride = await seat_mismatch(conn)
    app = DashboardApp(make_settings(ops_dsn, tmp_path, read_only=True))
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        screen = app.dashboard
        assert "READ-ONLY" in status(app)
        for action, params in (
            ("run_job", ("expire_rides",)),
            ("seat_fix", ()),
            ("expire_ride", ()),
        ):
            assert screen.check_action(action, params) is False, action
        assert screen.check_action("refresh", ()) is True
        await pilot.press("1")
        await until(pilot, lambda: notices(app), "a notification")
        assert "Read-only session" in notices(app)[-1]
        assert app.screen is screen

    async with connected(ops_dsn, timeout_ms=5_000, read_only=True) as ro:
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await ro.fetchval(
                "SELECT ops_apply_seat_fix($1, 1, 2, 'alice', 'note')", ride
            )
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await ro.execute("UPDATE rides SET available_seats = 2 WHERE id = $1", ride)
    assert not app.settings.action_log.exists()


async def test_unreachable_server_shows_why_and_keeps_retrying(tmp_path: Path) -> None:
    missing = tmp_path / "no-server-here"
    dsn = f"postgresql://postgres@/carpool?host={missing}"
    app = DashboardApp(make_settings(dsn, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.dashboard
        await until(pilot, lambda: screen.failures >= 2, "a second attempt", 15)
        text = static_text(screen.query_one("#startup-message", Static))
        assert "Cannot open the dashboard" in text
        assert "cannot reach the database" in text
        assert "Check that the server is running" in text
        assert "Attempt 2" in text and "q to quit" in text
        assert not screen.query_one("#main").display
        await pilot.press("q")
        await until(pilot, lambda: app.return_code is not None, "the app to exit")
    assert app.return_code == 0


async def test_database_without_the_functions_says_to_migrate(
    empty_dsn: str, tmp_path: Path
) -> None:
    app = DashboardApp(make_settings(empty_dsn, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.dashboard
        await until(pilot, lambda: screen.failures >= 1, "the first attempt")
        text = static_text(screen.query_one("#startup-message", Static))
        assert "no carpool health function" in text
        assert "carpool-tui migrate" in text
        assert "NOT MIGRATED" in status(app)


async def test_a_half_migrated_ops_layer_says_to_finish_the_migration(
    ops_dsn: str, tmp_path: Path
) -> None:
    """A migrate that stopped part way: files the ledger lacks."""
    async with connected(ops_dsn) as conn:
        await conn.execute("DELETE FROM ops_schema_migrations WHERE name > 'ops/0160'")
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        assert "INCOMPLETE" in status_line(app)  # kept whole at 80 columns
        await pilot.press("question_mark")
        help_screen = await until(
            pilot, lambda: isinstance(app.screen, HelpScreen) and app.screen, "help"
        )
        said = screen_text(help_screen)
        ops = Path(__file__).resolve().parents[1] / "sql" / "ops"
        unapplied = sum(1 for f in ops.glob("*.sql") if f"ops/{f.stem}" > "ops/0160")
        assert unapplied >= 8
        assert f"incomplete: {unapplied} of its files are not applied" in said
        assert "run `carpool-tui migrate --dsn ...` to apply them" in said


async def test_a_dropped_ops_function_says_what_is_gone(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Every file applied, one function dropped since: migrate cannot help."""
    async with connected(ops_dsn) as conn:
        await conn.execute(
            "DROP FUNCTION ops_apply_seat_fix(uuid, integer, integer, text, text)"
        )
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        assert "INCOMPLETE" in status(app)
        reason = app.blocked("seat-fix")
        assert reason is not None
        assert "no ops_apply_seat_fix() function" in reason
        assert "is gone (dropped since)" in reason
        assert "run `carpool-tui migrate" not in reason  # it cannot bring it back
        # Where its definition is, on this machine, to run it again.
        assert "defined last in ops/0109_admin_functions.sql (on this" in reason
        assert "sql/ops/0109_admin_functions.sql)" in reason


async def test_a_migrate_stopped_before_the_version_file_is_incomplete(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Not LEGACY: its first files went in, the rest is still to apply."""
    async with connected(ops_dsn) as conn:
        await conn.execute("DELETE FROM ops_schema_migrations WHERE name > 'ops/0102'")
        await conn.execute("DROP FUNCTION ops_layer_version()")
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        assert "INCOMPLETE" in status(app) and "LEGACY" not in status(app)
        reason = app.blocked("seat-fix")
        assert reason is not None and "which is incomplete" in reason
        assert "run `carpool-tui migrate --dsn ...` to apply them" in reason
        await pilot.press("question_mark")
        help_screen = await until(
            pilot, lambda: isinstance(app.screen, HelpScreen) and app.screen, "help"
        )
        said = " ".join(screen_text(help_screen).split())
        assert "Ops layer, incomplete: " in said and "Legacy" not in said


async def test_selected_row_survives_refreshes_and_new_rows(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        for _ in range(3):
            await job(conn, "expire_rides")
        app = DashboardApp(make_settings(ops_dsn, tmp_path), clock=frozen())
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            table = app.dashboard.query_one("#log", JobLogTable)
            table.focus()
            table.move_cursor(row=1)
            chosen = table.selected_key
            rounds = app.dashboard.snapshot

            await pilot.press("r")
            await until(
                pilot, lambda: app.dashboard.snapshot is not rounds, "a refresh"
            )
            assert table.selected_key == chosen
            assert table.row_count == 3

            await job(conn, "reconcile_seat_counts")
            await pilot.press("r")
            await until(pilot, lambda: table.row_count == 4, "the new run")
            assert table.selected_key == chosen
            assert table.cursor_row == 2


async def test_a_poll_that_brings_the_same_data_lays_nothing_out_again(
    ops_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A layout pass is the costliest part of an idle dashboard's poll: a panel
    whose text did not change must not ask for one."""
    async with connected(ops_dsn) as conn:
        await seat_mismatch(conn)
        await failed_run(conn)
        await job(conn, "check_system_invariants")
    app = DashboardApp(make_settings(ops_dsn, tmp_path), clock=frozen())
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        laid_out = layout_requests(monkeypatch)
        for _ in range(2):
            rounds = app.dashboard.snapshot
            await pilot.press("r")
            await until(
                pilot,
                lambda before=rounds: app.dashboard.snapshot is not before,
                "a refresh",
            )
            await pilot.pause()
        assert laid_out == []
        assert "1 unresolved" in static_text(
            app.dashboard.query_one("#violations-info", Static)
        )


async def test_pause_resume_and_interval_keys(ops_dsn: str, tmp_path: Path) -> None:
    app = DashboardApp(make_settings(ops_dsn, tmp_path, refresh=5.0), clock=frozen())
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("p")
        assert "PAUSED" in status(app)
        await pilot.press("p")
        assert "PAUSED" not in status(app)
        await pilot.press("plus")
        assert app.interval == 2.0
        await pilot.press("minus", "minus")
        assert app.interval == 10.0
        await until(pilot, lambda: "every 10.0 s" in status(app), "the new interval")


async def test_failed_only_filter_and_paging(ops_dsn: str, tmp_path: Path) -> None:
    await log_runs(ops_dsn, 230, failed_every=50)
    app = DashboardApp(make_settings(ops_dsn, tmp_path), clock=frozen())
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        screen = app.dashboard
        table = screen.query_one("#log", JobLogTable)
        assert table.row_count == 100
        info = screen.query_one("#log-info", Static)
        assert "rows 1-100" in static_text(info)

        await pilot.press("right_square_bracket")
        await until(pilot, lambda: "rows 101-200" in static_text(info), "page 2")
        await pilot.press("right_square_bracket")
        await until(pilot, lambda: "rows 201-230" in static_text(info), "page 3")
        await pilot.press("right_square_bracket")
        await until(pilot, lambda: notices(app), "a notification")
        assert notices(app)[-1] == "No older runs."

        await pilot.press("f")
        await until(pilot, lambda: table.row_count == 4, "failed runs only")
        assert "FAILED ONLY" in static_text(info)
        assert all(e.failed for e in table.entries.values())
        assert "boom 50" in table_text(table)


async def test_lost_connection_shows_disconnected_then_recovers(
    ops_dsn: str, pg_server: Any, tmp_path: Path
) -> None:
    probe = await db(ops_dsn)
    name = await probe.fetchval("SELECT current_database()")
    await probe.close()
    conn = await db(pg_server.admin_dsn)
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND application_name LIKE 'carpool-tui%'",
                name,
            )
            await until(
                pilot, lambda: "DISCONNECTED" in status(app), "the lost connection"
            )
            assert "retry in" in status(app)
            assert app.dashboard.query_one("#main").display  # stale data stays
            assert app.dashboard.check_action("seat_fix", ()) is False
            await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await until(pilot, lambda: "updated" in status(app), "the reconnection", 40)
    finally:
        await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await conn.close()


async def test_one_failing_panel_does_not_blank_the_others(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        await job(conn, "expire_rides")
        await conn.execute(
            "ALTER FUNCTION get_system_health_summary() RENAME TO health_gone"
        )
    app = DashboardApp(make_settings(ops_dsn, tmp_path), clock=frozen())
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        screen = app.dashboard
        assert "Health unavailable" in static_text(screen.query_one("#health", Static))
        assert "migrate" in static_text(screen.query_one("#health", Static))
        assert screen.query_one("#log", JobLogTable).row_count == 1
        assert "1 panel(s) failed" in status(app)


async def test_command_palette_runs_registry_actions_and_says_why_not(
    legacy_dsn: str, tmp_path: Path
) -> None:
    app = DashboardApp(make_settings(legacy_dsn, tmp_path), clock=frozen())
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("ctrl+p")
        await until(pilot, lambda: app.screen is not app.dashboard, "the palette")
        await pilot.press(*"Fix", "space", *"seats", "enter")
        await until(pilot, lambda: notices(app), "a notification")
        assert "carpool-tui migrate" in notices(app)[-1]
        await until(pilot, lambda: app.screen is app.dashboard, "the dashboard")

        await pilot.press("ctrl+p")
        await until(pilot, lambda: app.screen is not app.dashboard, "the palette")
        await pilot.press(*"Help", "enter")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
        # Textual's own Theme and Quit would shadow the registry's v and q.
        system = [c.title for c in app.get_system_commands(app.dashboard)]
        assert "Theme" not in system and "Quit" not in system
        assert "Keys" in system


async def test_help_pages_down_without_skipping_lines_at_80x24(
    ops_dsn: str, tmp_path: Path
) -> None:
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("question_mark")
        help_screen = await until(
            pilot, lambda: isinstance(app.screen, HelpScreen) and app.screen, "help"
        )
        body = help_screen.query_one(DialogScroll)
        keys = body.query_one(".keys")
        # What shows between the top and the docked keys line.
        shown = body.scrollable_content_region.height - keys.outer_size.height
        assert body.max_scroll_y > shown  # more than one page
        while body.scroll_y < body.max_scroll_y:
            before = body.scroll_y
            await pilot.press("pagedown")
            await until(pilot, lambda b=before: body.scroll_y > b, "a page down")
            assert body.scroll_y - before <= shown - 1  # a line kept, none skipped


# The demo's DSN as it prints it, with a six-letter user's data directory: 74
# characters, as many as the help screen shows whole at 80 columns (README).
DEMO_DSN = "postgresql://postgres:@/carpool_demo?host=/var/tmp/carpool-tui-oncall/demo"


async def open_help(pilot: Pilot[Any]) -> HelpScreen:
    await pilot.press("question_mark")
    app = pilot.app
    return await until(  # type: ignore[no-any-return]
        pilot, lambda: isinstance(app.screen, HelpScreen) and app.screen, "help"
    )


async def test_help_shows_the_demo_dsn_whole_on_one_line_at_80x24(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Copied from the terminal, a DSN broken over two lines is two pieces."""
    assert len(DEMO_DSN) == 74
    app = DashboardApp(make_settings(ops_dsn, tmp_path), target=DEMO_DSN)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        help_screen = await open_help(pilot)
        await pilot.pause()
        rows = [line for line in terminal_lines(help_screen) if DEMO_DSN in line]
        assert len(rows) == 1, terminal_lines(help_screen)
        # Nothing is glued to it, so a selection from its first to its last
        # character (or a double click) takes the DSN and only the DSN.
        assert f" {DEMO_DSN} " in rows[0]
        keys = static_text(help_screen.query_one(".keys", Static))
        assert "y  copy the DSN" in keys and "scroll" not in keys  # all in view


async def test_help_scrolls_a_long_dsn_sideways_and_copies_it_whole(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Wider than the dialog at 80 columns, the DSN is cut, never wrapped: the
    rest is a scroll away, and y (or a double click and ctrl+c) copies it whole."""
    dsn = f"{ops_dsn}{'&' if '?' in ops_dsn else '?'}application_name=carpool-oncall"
    app = DashboardApp(make_settings(dsn, tmp_path))
    target = app.target
    assert len(target) > 80 and "application_name=carpool-oncall" in target
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        help_screen = await open_help(pilot)
        await pilot.pause()
        lines = terminal_lines(help_screen)
        row = next(i for i, line in enumerate(lines) if target[:30] in line)
        start = lines[row].index(target[:30])
        shown = lines[row][start:].split(" ", 1)[0]
        assert len(shown) >= 60 and target.startswith(shown)
        # The rest is on no other line: not wrapped onto the next one.
        assert not any(target[-12:] in line for line in lines)
        keys = static_text(help_screen.query_one(".keys", Static))
        assert "←→  scroll the DSN" in keys

        await pilot.press("right", "right", "right")
        await pilot.pause()
        lines = terminal_lines(help_screen)
        assert lines[row].rstrip(" █▂▃▄▅▆▇").endswith(target[-60:]), lines[row]

        await pilot.press("y")
        await pilot.pause()
        assert app.clipboard == target
        assert "Copied the DSN" in notices(app)[-1]

        app.copy_to_clipboard("")
        await pilot.click("#dsn-line", times=2)
        await pilot.pause()
        assert help_screen.get_selected_text() == target
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert app.clipboard == target
        assert isinstance(app.screen, HelpScreen)


async def test_help_without_a_dsn_says_there_is_none_to_copy(
    ops_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session on the PG* variables has no DSN: y must not copy the words
    that stand for one."""
    parts = dsn_parts(ops_dsn)
    for name in [n for n in os.environ if n.startswith("PG")]:
        monkeypatch.delenv(name)
    for key, variable in [
        ("host", "PGHOST"),
        ("port", "PGPORT"),
        ("user", "PGUSER"),
        ("dbname", "PGDATABASE"),
    ]:
        if parts.get(key):
            monkeypatch.setenv(variable, parts[key])
    password = parts.get("password") or unquote(urlsplit(ops_dsn).password or "")
    if password:  # a test server that needs one: PGPASSWORD carries it
        monkeypatch.setenv("PGPASSWORD", password)
    app = DashboardApp(replace(make_settings(ops_dsn, tmp_path), dsn=None))
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        help_screen = await open_help(pilot)
        said = screen_text(help_screen)
        assert "Database (from the PG* variables):" in said
        assert "(PG* environment)" in static_text(help_screen.query_one("#dsn", Static))
        assert "copy the DSN" not in static_text(help_screen.query_one(".keys", Static))
        await pilot.press("y")
        await until(pilot, lambda: notices(app), "a notification")
        assert "No DSN to copy" in notices(app)[-1]
        assert not app.clipboard


def status_line(app: DashboardApp) -> str:
    """The status line as the terminal shows it, cut at the screen's width."""
    widget = app.dashboard.query_one("#status", Static)
    return "".join(segment.text for segment in widget.render_line(0))


async def test_the_database_and_freshness_stay_visible_at_80_columns(
    ops_dsn: str, tmp_path: Path
) -> None:
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        caps = app.dashboard.caps
        assert caps is not None
        assert app.label.startswith(caps.database)
        assert "://" not in app.label
        line = status_line(app)
        assert len(line) <= 80
        assert line.lstrip().startswith(app.label)
        assert "updated" in line


async def test_the_filter_or_page_moves_the_cursor_to_the_newest_row(
    ops_dsn: str, tmp_path: Path
) -> None:
    await log_runs(ops_dsn, 12, failed_every=2)
    app = DashboardApp(make_settings(ops_dsn, tmp_path), clock=frozen())
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        table = app.dashboard.query_one("#log", JobLogTable)
        table.focus()
        table.move_cursor(row=4)
        await pilot.pause()
        await pilot.press("f")
        await until(pilot, lambda: table.row_count == 6, "failed runs only")
        newest = next(iter(table.entries.values()))
        assert table.cursor_row == 0
        assert table.selected_key == str(newest.id)
        assert "boom 2" in (newest.error_message or "")

        table.move_cursor(row=3)
        await pilot.press("f")
        await until(pilot, lambda: table.row_count == 12, "all runs again")
        assert table.cursor_row == 0


async def test_a_log_that_shrank_under_an_older_page_shows_the_newest(
    ops_dsn: str, tmp_path: Path
) -> None:
    await log_runs(ops_dsn, 150, failed_every=1000)
    app = DashboardApp(make_settings(ops_dsn, tmp_path), clock=frozen())
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        table = app.dashboard.query_one("#log", JobLogTable)
        await pilot.press("]")
        await until(pilot, lambda: table.row_count == 50, "the older page")
        async with connected(ops_dsn) as conn:
            await conn.execute(
                "DELETE FROM system_job_log WHERE id NOT IN (SELECT id FROM"
                " system_job_log ORDER BY started_at DESC LIMIT 30)"
            )
        await pilot.press("r")
        await until(pilot, lambda: table.row_count == 30, "the newest rows")
        assert app.dashboard.log_offset == 0
        info = static_text(app.dashboard.query_one("#log-info", Static))
        assert "rows 1-30" in info
        assert any("fewer rows now" in n for n in notices(app))


def test_an_open_critical_violation_makes_the_count_red() -> None:
    health = HealthSummary(unresolved_violations=2)
    assert "[b $warning] 2 [/] unresolved violations" in health_markup(health, None)
    red = health_markup(health, None, critical=True)
    assert "[b reverse $error] 2 [/] unresolved violations" in red
    none = health_markup(HealthSummary(unresolved_violations=0), None, critical=True)
    assert "[b] 0 [/] unresolved violations" in none


async def test_a_critical_violation_on_screen_colours_the_health_strip(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        await seat_mismatch(conn)
        await job(conn, "check_system_invariants")
    app = DashboardApp(make_settings(ops_dsn, tmp_path), clock=frozen())
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        snap = app.dashboard.snapshot
        assert snap is not None
        assert any(v.severity == "critical" for v in snap.violations)
        markup = str(app.dashboard.query_one("#health", Static).content)
        assert "[b reverse $error] 1 [/] unresolved violations" in markup


async def test_read_only_jobs_panel_does_not_offer_the_run_keys(
    ops_dsn: str, tmp_path: Path
) -> None:
    app = DashboardApp(make_settings(ops_dsn, tmp_path, read_only=True))
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        title = str(app.dashboard.query_one("#jobs", JobsTable).border_title)
        assert title == "Jobs · read-only"
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        title = str(app.dashboard.query_one("#jobs", JobsTable).border_title)
        assert "keys 1-4 run one" in title


async def test_jobs_columns_grow_so_later_values_are_never_cut(
    ops_dsn: str, tmp_path: Path
) -> None:
    app = DashboardApp(make_settings(ops_dsn, tmp_path), clock=frozen())
    async with app.run_test(size=(160, 40)) as pilot:
        await loaded(pilot)
        jobs = app.dashboard.query_one("#jobs", JobsTable)
        assert "never run" in table_text(jobs)
        async with connected(ops_dsn) as conn:
            await conn.execute(
                "INSERT INTO system_job_log (job_name, started_at, completed_at,"
                " status, records_processed) VALUES ('expire_rides',"
                " $1::timestamptz - interval '20 seconds',"
                " $1::timestamptz - interval '20 seconds' + interval '66 seconds',"
                " 'completed', 1234567)",
                FIXED_NOW,
            )
        await pilot.press("r")
        await until(pilot, lambda: "1 min 6 s" in table_text(jobs), "the new run")
        await pilot.pause()
        for key, column in jobs.columns.items():
            for row in range(jobs.row_count):
                cell = jobs.get_cell_at(Coordinate(row, jobs.get_column_index(key)))
                width = cell.cell_len if isinstance(cell, Text) else len(str(cell))
                assert column.content_width >= width, (key.value, str(cell))


def test_the_health_strip_never_parts_a_count_from_its_label() -> None:
    health = HealthSummary(
        seat_mismatches=7,
        unresolved_violations=8,
        expired_active_rides=4,
        failed_jobs_24h=6,
        active_rides=26,
        in_progress_rides=3,
        pending_bookings=30,
        confirmed_bookings=43,
        total_rides=400,
        total_bookings=1_200,
    )
    for width in (78, 60, 40):
        lines = Text.from_markup(health_markup(health, None, width=width)).plain
        for line in lines.splitlines():
            assert len(line) <= width, (width, line)
            words = line.split()
            assert not words[-1].isdigit(), f"a count without its label: {line!r}"
    assert "\n" not in health_markup(health, None)


async def test_r_after_a_migrate_finds_the_ops_layer_without_a_restart(
    legacy_dsn: str, tmp_path: Path
) -> None:
    app = DashboardApp(make_settings(legacy_dsn, tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        screen = app.dashboard
        assert "LEGACY" in status(app)
        assert screen.check_action("seat_fix", ()) is False
        async with connected(legacy_dsn) as conn:
            await migrate(conn, ("ops",))
        await pilot.press("r")
        await until(pilot, lambda: "LEGACY" not in status(app), "the ops layer")
        assert screen.caps is not None and screen.caps.ops_layer
        assert screen.check_action("seat_fix", ()) is True


async def test_a_wide_screen_shows_check_names_whole_and_a_narrow_one_cuts_them(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        ride = await make_ride(conn)
        await make_booking(conn, ride, status="confirmed")
        await conn.execute("UPDATE rides SET status = 'cancelled' WHERE id = $1", ride)
        await job(conn, "check_system_invariants")
    whole = "INV-STATE-001 active_booking_on_terminal_ride"
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        table = app.dashboard.query_one("#violations", ViolationsTable)
        table.focus()
        await until(pilot, lambda: whole in table_text(table), "the whole name")

        def check_width() -> int:
            return table.columns[ColumnKey("check")].content_width

        assert check_width() == len(whole)

        await pilot.resize_terminal(80, 24)
        await until(pilot, lambda: whole not in table_text(table), "a cut name")
        assert "INV-STATE-001 active_booking_on_t…" in table_text(table)
        assert check_width() < len(whole)
        assert table.selected_key == next(iter(table.violations))

        await pilot.resize_terminal(120, 40)
        await until(pilot, lambda: whole in table_text(table), "the whole name again")


async def test_a_log_left_at_its_newest_run_keeps_showing_the_newest(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        for _ in range(30):
            await job(conn, "expire_rides")
        app = DashboardApp(make_settings(ops_dsn, tmp_path), clock=frozen())
        async with app.run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            table = app.dashboard.query_one("#log", JobLogTable)
            await until(pilot, lambda: table.row_count == 30, "the runs")
            assert table.cursor_row == 0
            await pilot.press("t")
            for _ in range(12):
                await job(conn, "reconcile_seat_counts")
            await pilot.press("r")
            await until(pilot, lambda: table.row_count == 42, "the new runs")
            await pilot.press("t")
            await pilot.pause()
            newest = next(iter(table.entries.values()))
            assert newest.job_name == "reconcile_seat_counts"
            assert table.cursor_row == 0
            assert table.selected_key == str(newest.id)
            assert table.scroll_y == 0


async def test_paused_and_read_only_stay_visible_at_80_columns(
    ops_dsn: str, tmp_path: Path
) -> None:
    """A paused wall shows old data: that must never be cut off the line."""
    label = "carpool_production_eu_west @ db-primary.internal:5432"[:40]
    app = DashboardApp(make_settings(ops_dsn, tmp_path, read_only=True), label=label)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("p")
        line = status_line(app)
        # The name gives way (cut, marked …), the state does not.
        assert line.lstrip().startswith(label[: LABEL_MIN_WIDTH - 1])
        assert "…" in line
        assert "PAUSED" in line and "READ-ONLY" in line and "updated" in line, line
        await pilot.press("p")
        line = status_line(app)
        assert line.lstrip().startswith(label)  # room again for the whole name
        assert "PAUSED" not in line and "READ-ONLY" in line, line


async def test_the_violations_hint_offers_x_only_where_it_works(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        await seat_mismatch(conn)
        await job(conn, "check_system_invariants")
    for read_only in (False, True):
        app = DashboardApp(make_settings(ops_dsn, tmp_path, read_only=read_only))
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            info = static_text(app.dashboard.query_one("#violations-info", Static))
            assert "1 unresolved" in info and "Enter: samples" in info
            assert ("x: resolve" in info) is not read_only, info


async def test_an_empty_job_log_says_so(ops_dsn: str, tmp_path: Path) -> None:
    async with connected(ops_dsn) as conn:
        await conn.execute("DELETE FROM system_job_log")
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        info = app.dashboard.query_one("#log-info", Static)
        assert "no runs yet" in static_text(info)
        assert "rows 0-0" not in static_text(info)
        await pilot.press("f")
        await until(pilot, lambda: "no failed runs" in static_text(info), "filter")


async def test_a_violation_row_that_cannot_be_read_hides_no_other(
    ops_dsn: str, tmp_path: Path
) -> None:
    """The malformed row is listed without its samples, saying why; the rest
    show as usual, and the wall counts them all."""
    async with connected(ops_dsn) as conn:
        await seat_mismatch(conn)
        await job(conn, "check_system_invariants")
        await conn.execute(
            "INSERT INTO invariant_violations"
            " (check_name, severity, violation_count, sample_data) VALUES"
            " ('weird_ride_id', 'warning', 1, '[{\"ride_id\": 12345}]'),"
            " ('weird_count', 'critical', 3, '[{\"current\": \"many\"}]')"
        )
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        screen = app.dashboard
        assert screen.snapshot is not None and not screen.snapshot.errors
        info = static_text(screen.query_one("#violations-info", Static))
        assert "3 unresolved (2 critical)" in info, info
        table = screen.query_one("#violations", ViolationsTable)
        rows = table_text(table).splitlines()
        assert len(rows) == 3
        weird = next(r for r in rows if "weird_count" in r)
        assert "critical" in weird and "samples could not be read" in weird
        assert "ride_id=12345" in next(r for r in rows if "weird_ride_id" in r)
        counts = dict(board_state(screen.snapshot, FIXED_NOW).counts)
        assert (counts["critical"], counts["violations"]) == (2, 3)

        detail = await violation_detail(pilot, app, rows.index(weird))
        shown = " ".join(screen_text(detail).split())
        assert "weird_count (critical)" in shown
        assert "Unreadable samples could not be read (sample_data.0.current:" in shown
        assert "Samples (0)" in shown
        await pilot.press("escape")

        # It can be resolved like any other row.
        await pilot.press("x")
        resolve = await until(
            pilot,
            lambda: isinstance(app.screen, ResolveDialog) and app.screen,
            "the resolve dialog",
        )
        await until(pilot, lambda: "cannot be run" in screen_text(resolve), "preview")
        resolve.query_one("#note", Input).value = "hand-written row, checked"
        await pilot.press("enter")
        await until(pilot, lambda: "Resolved." in screen_text(resolve), "resolved")
        await pilot.press("escape")
        await until(pilot, lambda: table.row_count == 2, "the row to go")
        assert "weird_count" not in table_text(table)


async def newest_run_detail(pilot: Pilot[Any], app: DashboardApp) -> LogEntryDialog:
    """Enter on the job log's newest run: its detail dialog."""
    log = app.dashboard.query_one("#log", JobLogTable)
    return await row_detail(pilot, app, log, 0, LogEntryDialog)


async def test_a_run_detail_shows_a_multi_line_error_as_lines(
    ops_dsn: str, tmp_path: Path
) -> None:
    """A server error's DETAIL and CONTEXT lines, not one line with '\\n' in it."""
    message = "deadlock detected\nDETAIL: Process 4242 waits for ShareLock."
    async with connected(ops_dsn) as conn:
        await conn.execute(
            "INSERT INTO system_job_log (job_name, started_at, completed_at,"
            " status, records_processed, error_message) VALUES"
            " ('expire_rides', now() - interval '1 minute', now(), 'failed', 0, $1)",
            message,
        )
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        detail = await newest_run_detail(pilot, app)
        lines = screen_text(detail).splitlines()
        assert "deadlock detected" in lines
        assert "DETAIL: Process 4242 waits for ShareLock." in lines
        assert "\\n" not in screen_text(detail)


async def test_a_terminal_too_small_for_the_fields_is_covered_until_it_grows(
    ops_dsn: str, tmp_path: Path
) -> None:
    """No write can be made blind at 40x12; what was open comes back as it was."""
    async with connected(ops_dsn) as conn:
        ride = await seat_mismatch(conn)
    app = DashboardApp(make_settings(ops_dsn, tmp_path, refresh=60))
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("s")
        fix = await until(
            pilot, lambda: isinstance(app.screen, SeatFixDialog) and app.screen, "s"
        )
        await pilot.press(*str(ride))
        await pilot.resize_terminal(40, 12)
        cover = await until(
            pilot, lambda: isinstance(app.screen, TooSmallScreen) and app.screen, "c"
        )
        said = " ".join(screen_text(cover).split())
        assert "The terminal is 40x12: too small" in said and "60x18" in said
        await pilot.press("enter")  # nothing reaches the dialog beneath
        assert fix.preview is None
        await pilot.resize_terminal(80, 24)
        await until(pilot, lambda: app.screen is fix, "the dialog back")
        assert fix.query_one("#ride", Input).value == str(ride)
        await pilot.resize_terminal(50, 30)
        await until(pilot, lambda: isinstance(app.screen, TooSmallScreen), "cover")
        await pilot.press("q")  # a letter meant for the note: it does not quit
        await pilot.pause()
        assert app.return_code is None and isinstance(app.screen, TooSmallScreen)
        await pilot.press("ctrl+q")
        await until(pilot, lambda: app.return_code is not None, "the app to exit")


@pytest.mark.parametrize("sizes", [[(59, 17), (1, 1)], [(59, 17), (20, 5)]])
async def test_shrinking_step_by_step_under_a_dialog_keeps_the_app_and_the_note(
    ops_dsn: str, tmp_path: Path, sizes: list[tuple[int, int]]
) -> None:
    """Down to a single cell with a dialog open: covered, never a crash that
    loses the note typed; it comes back when the terminal grows."""
    async with connected(ops_dsn) as conn:
        await seat_mismatch(conn)
    app = DashboardApp(make_settings(ops_dsn, tmp_path, refresh=60))
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("s")
        fix = await until(
            pilot, lambda: isinstance(app.screen, SeatFixDialog) and app.screen, "s"
        )
        note = fix.query_one("#note", Input)
        note.value = "half a note"
        for width, height in sizes:
            await pilot.resize_terminal(width, height)
            await pilot.pause()
        cover = await until(
            pilot, lambda: isinstance(app.screen, TooSmallScreen) and app.screen, "c"
        )
        # Its text wraps over more lines than fit, and it still shows no
        # scrollbar, which would narrow the text and rewrap it without end.
        assert not cover.show_vertical_scrollbar
        await pilot.resize_terminal(120, 40)
        await until(pilot, lambda: app.screen is fix, "the dialog back")
        assert app.return_code is None and note.value == "half a note"


async def test_infinite_timestamps_show_as_infinity_everywhere(
    ops_dsn: str, tmp_path: Path
) -> None:
    """PostgreSQL's ±infinity stamps, which asyncpg reads as naive datetime.min
    and datetime.max, are listed, detailed and exported in words, never a crash."""
    async with connected(ops_dsn) as conn:
        await conn.execute(
            "INSERT INTO invariant_violations (check_name, severity,"
            " violation_count, sample_data, detected_at) VALUES"
            " ('from_the_dawn', 'critical', 1, '[]', '-infinity'),"
            " ('from_the_end', 'warning', 1, '[]', 'infinity')"
        )
        await conn.execute(
            "INSERT INTO system_job_log (job_name, started_at, completed_at,"
            " status, records_processed) VALUES"
            " ('expire_rides', '-infinity', 'infinity', 'failed', 0)"
        )
    app = DashboardApp(make_settings(ops_dsn, tmp_path, read_only=True))
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        screen = app.dashboard
        assert screen.snapshot is not None and not screen.snapshot.errors
        table = screen.query_one("#violations", ViolationsTable)
        rows = table_text(table).splitlines()
        assert "-infinity" in next(r for r in rows if "from_the_dawn" in r)
        end = next(r for r in rows if "from_the_end" in r)
        assert "infinity" in end and "-infinity" not in end
        (run,) = table_text(screen.query_one("#log", JobLogTable)).splitlines()
        assert "-infinity" in run
        jobs = table_text(screen.query_one("#jobs", JobsTable))
        expire = next(r for r in jobs.splitlines() if "expire_rides" in r)
        assert "-infinity" in expire and "OVERDUE" in expire

        detail = await newest_run_detail(pilot, app)
        shown = " ".join(screen_text(detail).split())
        assert "Started -infinity" in shown and "Completed infinity" in shown
        await pilot.press("escape")
        await pilot.press("j")
        log_file = await until(pilot, lambda: app.last_export, "the log's export")

        violation = await violation_detail(pilot, app, rows.index(end))
        assert "Detected infinity" in " ".join(screen_text(violation).split())
        await pilot.press("escape")
        await pilot.press("j")
        found = await until(
            pilot,
            lambda: app.last_export != log_file and app.last_export,
            "the violations' export",
        )
    (logged,) = json.loads(log_file.read_text(encoding="utf-8"))
    assert (logged["started_at"], logged["completed_at"]) == ("-infinity", "infinity")
    assert logged["duration_s"] is None
    detected = {
        v["check_name"]: v["detected_at"]
        for v in json.loads(found.read_text(encoding="utf-8"))
    }
    assert detected == {"from_the_dawn": "-infinity", "from_the_end": "infinity"}


async def test_a_row_of_many_samples_is_read_a_page_at_a_time(
    ops_dsn: str, tmp_path: Path
) -> None:
    """A row written by another tool may hold thousands of samples, which every
    poll would read again: the first SAMPLES_READ are read and the dialog says
    of how many."""
    async with connected(ops_dsn) as conn:
        await conn.execute(
            "INSERT INTO invariant_violations (check_name, severity,"
            " violation_count, sample_data) SELECT 'bulk_import', 'warning', 5000,"
            " jsonb_agg(jsonb_build_object('ride_id', gen_random_uuid()))"
            " FROM generate_series(1, 5000)"
        )
    app = DashboardApp(make_settings(ops_dsn, tmp_path, read_only=True))
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        snapshot = app.dashboard.snapshot
        assert snapshot is not None
        (bulk,) = snapshot.violations
        assert (len(bulk.sample_data), bulk.sample_total) == (SAMPLES_READ, 5000)
        detail = await violation_detail(pilot, app, 0)
        assert f"Samples (first {SAMPLES_READ} of 5,000)" in screen_text(detail)


@asynccontextmanager
async def log_at_80x24(
    dsn: str, tmp_path: Path, completed: int
) -> AsyncIterator[tuple[Pilot[Any], JobLogTable]]:
    """`completed` runs of expire_rides and a failed run, the log in focus."""
    async with connected(dsn) as conn:
        for _ in range(completed):
            await job(conn, "expire_rides")
        await failed_run(conn)
    app = DashboardApp(make_settings(dsn, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        table = app.dashboard.query_one("#log", JobLogTable)
        table.focus()
        await until(pilot, lambda: table.row_count == completed + 1, "the runs")
        yield pilot, table


async def test_home_and_end_go_to_the_first_and_last_row(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Not sideways: the job log at 80x24 is wider than the screen."""
    async with log_at_80x24(ops_dsn, tmp_path, 3) as (pilot, table):
        assert table.max_scroll_x > 0
        await pilot.press("end")
        assert (table.cursor_row, table.scroll_x) == (3, 0)
        await pilot.press("home")
        assert (table.cursor_row, table.scroll_x) == (0, 0)


async def test_esc_clears_the_notifications_that_cover_the_tables(
    ops_dsn: str, tmp_path: Path
) -> None:
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("+")  # "Refreshing every ...", shown for a while
        await until(pilot, lambda: app._notifications, "a notification")
        await pilot.press("escape")
        await pilot.pause()  # well before the notification's own timeout
        assert not app._notifications
        assert app.screen is app.dashboard


async def test_a_failed_runs_cause_shows_in_the_job_log_at_80x24(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Cut to a few letters, a lock timeout and a cancel both read "cancelin"."""
    async with log_at_80x24(ops_dsn, tmp_path, 1) as (_, table):
        failed = next(line for line in drawn_lines(table) if "FAILED" in line)
        assert "Lock timeout" in failed, failed


async def test_the_cause_shows_beside_the_longest_job_name(
    ops_dsn: str, tmp_path: Path
) -> None:
    """repair_missing_notifications fills the job column; a statement timeout
    must still read whole at 80 columns, and at 120 the time it took too."""
    async with connected(ops_dsn) as conn:
        await conn.execute(
            "INSERT INTO system_job_log (job_name, started_at, completed_at, status,"
            " records_processed, error_message, sqlstate)"
            " VALUES ('repair_missing_notifications', now() - interval '1 hour',"
            " now() - interval '1 hour' + interval '30 seconds', 'failed', 0,"
            " 'canceling statement due to statement timeout', '57014')"
        )
        await job(conn, "expire_rides")  # a "completed" widens the status column
    for size, wanted in (((80, 24), "Statement timeout"), ((120, 40), "30.0 s")):
        app = DashboardApp(make_settings(ops_dsn, tmp_path))
        async with app.run_test(size=size) as pilot:
            await loaded(pilot)
            table = app.dashboard.query_one("#log", JobLogTable)
            await until(pilot, lambda: table.row_count == 2, "the runs")  # noqa: B023
            await pilot.pause()
            line = next(line for line in drawn_lines(table) if "FAILED" in line)
            assert "repair_missing_notifications" in line and wanted in line, line


async def test_tab_goes_from_the_jobs_to_the_rows_in_view(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Not to the pane tabs at 80x24, where Enter would open nothing."""
    async with connected(ops_dsn) as conn:
        await failed_run(conn)
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        assert isinstance(app.focused, JobsTable)
        await pilot.press("tab")
        assert isinstance(app.focused, JobLogTable)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, LogEntryDialog), "detail")


async def test_help_names_the_table_keys_too(ops_dsn: str, tmp_path: Path) -> None:
    """Not actions of their own, but keys a new operator looks for there."""
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("question_mark")
        help_screen = await until(
            pilot, lambda: isinstance(app.screen, HelpScreen) and app.screen, "help"
        )
        shown = " ".join(screen_text(help_screen).split())
        assert "Home End go to the first and last row" in shown
