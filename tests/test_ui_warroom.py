"""The war-room views on real databases: wallboard, schedule, trends, themes,
copy and export, driven by keys as an operator would."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from factories import connected, job
from test_check import cli, isolated_env
from test_ui_dashboard import (
    failed_run,
    loaded,
    newest_run_detail,
    notices,
    seat_mismatch,
)
from test_ui_support import (
    drawn_lines,
    frozen,
    layout_requests,
    make_settings,
    screen_text,
    static_text,
    until,
)
from test_warroom_repo import CRON_ROWS, fake_cron, log_run
from textual.pilot import Pilot
from textual.widgets import Digits, Static

from carpool_tui.cli import THEME_CHOICES, build_parser, cmd_dashboard
from carpool_tui.config import Settings
from carpool_tui.db.errors import OpsError
from carpool_tui.db.probe import read_health
from carpool_tui.db.seed import seed_platform
from carpool_tui.models import JOBS_BY_NAME
from carpool_tui.ui import app as app_module
from carpool_tui.ui.actions import ACTIONS, ACTIONS_BY_ID, blocked_reason
from carpool_tui.ui.app import DashboardApp
from carpool_tui.ui.dialogs import ConfirmJobDialog
from carpool_tui.ui.schedule import ScheduleScreen
from carpool_tui.ui.tools import THEMES
from carpool_tui.ui.trends import GAP, HourSparkline, TimeAxis, TrendsScreen
from carpool_tui.ui.wallboard import WallboardScreen
from carpool_tui.ui.widgets import JobLogTable, JobsTable, ViolationsTable

WAR_ROOM = ("schedule", "trends", "theme", "copy-id", "export-csv", "export-json")


async def problems_db(dsn: str) -> None:
    """A critical seat mismatch found by the check, and a failed reconcile run."""
    async with connected(dsn) as conn:
        await seat_mismatch(conn)
        await conn.fetchval("SELECT check_system_invariants()")
        await failed_run(conn)


# -- wallboard -------------------------------------------------------------


async def test_wallboard_shows_state_what_is_wrong_and_since_when(
    ops_dsn: str, tmp_path: Path
) -> None:
    await problems_db(ops_dsn)
    app = DashboardApp(make_settings(ops_dsn, tmp_path), wallboard=True)
    async with app.run_test(size=(120, 40)) as pilot:
        board = await until(
            pilot, lambda: isinstance(app.screen, WallboardScreen) and app.screen, "wb"
        )
        text = await until(
            pilot,
            lambda: "seat_mismatch" in (t := screen_text(board)) and t,
            "the wall names the violation",
        )
        assert "CRITICAL" in text
        seat = next(ln for ln in text.splitlines() if "seat_mismatch" in ln)
        assert seat.startswith(" CRITICAL") and "· since " in seat
        failed = next(ln for ln in text.splitlines() if "reconcile_seat" in ln)
        assert "60 min  reconcile_seat_counts failed: canceling statement" in failed
        assert "· since " in failed
        assert board.has_class("-critical")
        assert text.splitlines()[-1].endswith(" · Ctrl+Q quits")  # the only key


async def test_the_wall_redrawn_with_nothing_new_lays_nothing_out(
    ops_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wall redraws every second for hours: text that did not change must
    not cost a layout pass of the whole screen."""
    await problems_db(ops_dsn)
    app = DashboardApp(make_settings(ops_dsn, tmp_path), clock=frozen(), wallboard=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        board = app.screen
        assert isinstance(board, WallboardScreen)
        await until(pilot, lambda: "seat_mismatch" in screen_text(board), "the wall")
        # The first polls may still bring something new (a panel read late).
        for _ in range(2):
            rounds = app.dashboard.snapshot
            await until(
                pilot,
                lambda before=rounds: app.dashboard.snapshot is not before,
                "a poll",
            )
        laid_out = layout_requests(monkeypatch)
        rounds = app.dashboard.snapshot
        await until(pilot, lambda: app.dashboard.snapshot is not rounds, "a poll")
        for _ in range(3):
            board.redraw()
            await pilot.pause()
        assert laid_out == []
        assert "seat_mismatch" in screen_text(board)


@pytest.mark.parametrize(("size", "listed"), [((120, 40), 15), ((80, 24), 12)])
async def test_wallboard_lists_as_many_problems_as_fit(
    ops_dsn: str, tmp_path: Path, size: tuple[int, int], listed: int
) -> None:
    async with connected(ops_dsn) as conn:
        await conn.execute(
            "INSERT INTO invariant_violations (check_name, check_id, severity,"
            " violation_count, sample_data, detected_at, last_seen_at)"
            " SELECT 'check_' || n, 'INV-X-' || n, 'warning', 1, '[]'::jsonb,"
            " now() - n * interval '1 minute', now() FROM generate_series(1, 15) n"
        )
    app = DashboardApp(make_settings(ops_dsn, tmp_path), wallboard=True)
    async with app.run_test(size=size) as pilot:
        board = await until(
            pilot, lambda: isinstance(app.screen, WallboardScreen) and app.screen, "wb"
        )
        text = await until(
            pilot,
            lambda: "violation check_" in (t := screen_text(board)) and t,
            "the wall lists the violations",
        )
        named = {n for n in range(1, 16) if f"violation check_{n} " in text}
        assert len(named) == listed, text
        # Four jobs that never ran are problems too: 19 in all.
        lines = text.splitlines()
        assert ("… and 7 more" in lines) == (listed < 15), text


async def test_wallboard_takes_no_keys_and_polls_through_the_dashboard(
    ops_dsn: str, tmp_path: Path
) -> None:
    app = DashboardApp(make_settings(ops_dsn, tmp_path), wallboard=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        board = app.screen
        assert isinstance(board, WallboardScreen)
        actions = {b.binding.action for b in app.active_bindings.values()}
        registry = {spec.action for spec in ACTIONS if spec.id != "quit"}
        assert not actions & registry, actions
        assert not {a.removeprefix("app.") for a in actions} & registry
        assert not app.use_command_palette
        await pilot.press("1", "s", "x", "ctrl+p", "question_mark", "r")
        await pilot.pause()
        assert app.screen is board and not isinstance(app.screen, ConfirmJobDialog)
        # New data reaches the wall by the dashboard's own poll.
        await problems_db(ops_dsn)
        app.dashboard.start_round()
        await until(
            pilot, lambda: "seat_mismatch" in screen_text(board), "violation on wall"
        )
        assert len(app.workers) <= 1


async def test_wallboard_says_disconnected_and_since_when(tmp_path: Path) -> None:
    dsn = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"
    app = DashboardApp(make_settings(dsn, tmp_path), clock=frozen(), wallboard=True)
    async with app.run_test(size=(80, 24)) as pilot:
        board = app.screen
        text = await until(
            pilot,
            lambda: "UNKNOWN" in (t := screen_text(board)) and "since" in t and t,
            "unknown state with a since",
        )
        assert "NO DATA" in text


def figures(board: WallboardScreen) -> dict[str, str]:
    """The big figures of the wall, by their label."""
    found: dict[str, str] = {}
    for box in board.query(".wb-count"):
        if box.display:
            label = static_text(box.query_one(".wb-label", Static))
            found[label] = box.query_one(Digits).value
    return found


def failed_panels(app: DashboardApp) -> set[str]:
    """The panels that failed in the dashboard's latest snapshot."""
    snapshot = app.dashboard.snapshot
    return set() if snapshot is None else set(snapshot.errors)


async def wall(pilot: Pilot[Any], app: DashboardApp) -> WallboardScreen:
    """The wallboard, once the first snapshot is on it."""
    board: WallboardScreen = await until(
        pilot, lambda: isinstance(app.screen, WallboardScreen) and app.screen, "wb"
    )
    await loaded(pilot)
    board.redraw()
    return board


async def test_the_wall_is_unknown_while_the_health_summary_cannot_be_read(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Only the summary's seat-mismatch count says something is wrong: while a
    lock keeps the summary unread, the wall must not turn green."""
    async with connected(ops_dsn) as conn:
        for name in JOBS_BY_NAME:
            await job(conn, name)
        await seat_mismatch(conn)
    app = DashboardApp(make_settings(ops_dsn, tmp_path), wallboard=True)
    async with app.run_test(size=(120, 40)) as pilot:
        board = await wall(pilot, app)
        await until(pilot, lambda: board.has_class("-critical"), "the mismatch")
        assert figures(board)["mismatches"] == "1"
        blocker = await asyncpg.connect(ops_dsn)
        try:
            await blocker.execute("BEGIN; LOCK TABLE rides IN ACCESS EXCLUSIVE MODE")
            await until(
                pilot,
                lambda: "health" in failed_panels(app),
                "a poll that cannot read the health summary",
            )
            board.redraw()
            text = screen_text(board)
            with pytest.raises(OpsError) as by_check:
                await read_health(make_settings(ops_dsn, tmp_path))
        finally:
            await blocker.close()
        assert "ALL OK" not in text and "Nothing is wrong" not in text
        assert text.startswith("UNKNOWN") and board.has_class("-unknown"), text
        unread = next(ln for ln in text.splitlines() if "health summary" in ln)
        assert unread.startswith(" UNKNOWN") and "· since " in unread
        locked = "Reading the health summary: a row it needs is locked"
        assert locked in unread and by_check.value.message.startswith(locked)
        shown = figures(board)
        assert (shown["failed 24 h"], shown["mismatches"]) == ("-", "-")
        assert (shown["critical"], shown["violations"]) == ("0", "0")
        await until(pilot, lambda: board.has_class("-critical"), "the recovery")
        assert "health summary" not in screen_text(board)


async def test_the_wall_is_unknown_while_the_violations_cannot_be_read(
    ops_dsn: str, tmp_path: Path
) -> None:
    """A critical row is open but unread: no big zeros, and the count the
    health summary did give is on the wall instead."""
    await problems_db(ops_dsn)
    async with connected(ops_dsn) as conn:
        await conn.execute(
            "ALTER TABLE invariant_violations RENAME COLUMN notes TO notes_gone"
        )
    app = DashboardApp(make_settings(ops_dsn, tmp_path), wallboard=True)
    async with app.run_test(size=(120, 40)) as pilot:
        board = await wall(pilot, app)
        assert "violations" in failed_panels(app)
        text = screen_text(board)
        assert board.has_class("-unknown"), text
        assert text.startswith("UNKNOWN")
        unread = next(ln for ln in text.splitlines() if "violations:" in ln)
        assert unread.startswith(" UNKNOWN"), unread
        assert "Reading unresolved violations: column" in unread
        shown = figures(board)
        assert (shown["critical"], shown["violations"]) == ("-", "-")
        assert shown["mismatches"] == "1"
        assert "1 unresolved violations (warning above 0)" in text
        assert "reconcile_seat_counts failed" in text


async def test_the_wall_judges_with_the_thresholds_check_uses_for_the_target(
    ops_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A critical violation is open and the target turns critical violations
    off: `check --target` says WARNING, and so must the wall of that target."""
    async with connected(ops_dsn) as conn:
        for name in JOBS_BY_NAME:
            await job(conn, name)
        ride = await seat_mismatch(conn)
        await conn.fetchval("SELECT check_system_invariants()")
        await conn.execute("UPDATE rides SET available_seats = 2 WHERE id = $1", ride)
    config = tmp_path / "carpool.toml"
    config.write_text(
        f"[targets.demo]\ndsn = '{ops_dsn}'\n"
        "[targets.demo.check.critical]\ncritical_violations = 'off'\n"
    )
    env = isolated_env(tmp_path)
    by_check = cli(env, "check", "--config", str(config), "--target", "demo")
    assert by_check.returncode == 1, by_check.stdout + by_check.stderr
    assert by_check.stdout.startswith("CARPOOL WARNING - 1 unresolved violations")
    # The dashboard command, as `carpool-tui --target demo --wallboard` runs it.
    monkeypatch.setenv("CARPOOL_TUI_LOG", env["CARPOOL_TUI_LOG"])
    started: dict[str, Any] = {}

    def run_dashboard(settings: Settings, **options: Any) -> int:
        started.update(options, settings=settings)
        return 0

    monkeypatch.setattr(app_module, "run_dashboard", run_dashboard)
    argv = ["--config", str(config), "--target", "demo", "--wallboard"]
    assert cmd_dashboard(build_parser().parse_args(argv)) == 0
    app = DashboardApp(**started)
    async with app.run_test(size=(120, 40)) as pilot:
        board = await wall(pilot, app)
        text = screen_text(board)
        assert text.startswith("WARNING"), text
        assert board.has_class("-warning")
        seat = next(ln for ln in text.splitlines() if "seat_mismatch" in ln)
        assert seat.startswith(" WARNING"), seat
        assert "CRITICAL" not in text
        assert figures(board)["critical"] == "1"


# -- schedule --------------------------------------------------------------


async def open_schedule(pilot: Pilot[Any]) -> ScheduleScreen:
    app = await loaded(pilot)
    await pilot.press("c")
    screen: ScheduleScreen = await until(
        pilot, lambda: isinstance(app.screen, ScheduleScreen) and app.screen, "view"
    )
    await until(pilot, lambda: screen.loaded, "cron read")
    await pilot.pause()
    return screen


async def test_schedule_without_pg_cron_says_so_and_marks_overdue(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        await conn.execute("DELETE FROM system_job_log")
        await conn.fetchval("SELECT expire_rides()")
    app = DashboardApp(make_settings(ops_dsn, tmp_path, read_only=True))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_schedule(pilot)
        text = screen_text(screen)
        assert "pg_cron is not installed here" in text
        assert "MISSING" not in text
        lines = {line.split()[0]: line for line in text.splitlines() if line}
        assert "OVERDUE" not in lines["expire_rides"]
        assert "OVERDUE" in lines["check_system_invariants"]
        assert (
            "check_system_invariants: overdue, no run in the last 30 minutes"
            " (twice its interval, every 15 minutes)"
        ) in " ".join(text.split())
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.dashboard, "back")


async def test_the_seeded_history_names_no_pg_cron_where_there_is_none(
    ops_dsn: str, tmp_path: Path
) -> None:
    """The demo's runs say an external scheduler started them, as its schedule
    view says one must: the database has no pg_cron."""
    async with connected(ops_dsn, timeout_ms=120_000) as conn:
        await seed_platform(conn, rides=60, history_days=1)
    app = DashboardApp(make_settings(ops_dsn, tmp_path, read_only=True))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_schedule(pilot)
        assert "pg_cron is not installed here" in screen_text(screen)
        assert "external scheduler" in screen_text(screen)
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.dashboard, "back")
        detail = await newest_run_detail(pilot, app)
        text = screen_text(detail)
        assert "Triggered by  scheduler" in text, text
        assert "pg_cron" not in text
    async with connected(ops_dsn) as conn:
        said = await conn.fetch("SELECT DISTINCT triggered_by FROM system_job_log")
    assert [row["triggered_by"] for row in said] == ["scheduler"]


async def test_schedule_flags_missing_and_different_cron_entries(
    ops_conn: asyncpg.Connection, ops_dsn: str, tmp_path: Path
) -> None:
    await fake_cron(ops_conn, CRON_ROWS)
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_schedule(pilot)
        text = screen_text(screen)
        assert "pg_cron is installed: 3 entries" in text
        lines = {line.split()[0]: line for line in text.splitlines() if line}
        assert "as manual" in lines["expire_rides"]
        assert "DIFFERENT" in lines["reconcile_seat_counts"]
        assert "0 5 * * *" in lines["reconcile_seat_counts"]
        assert "MISSING" in lines["repair_missing_notifications"]
        assert "scheduled differently from 0 3 * * *" in text
        assert "repair_missing_notifications: not scheduled in pg_cron" in text


# -- trends ----------------------------------------------------------------


async def trends_view(pilot: Pilot[Any], app: DashboardApp) -> TrendsScreen:
    """`h` from the loaded dashboard, once the trends are read and drawn."""
    await loaded(pilot)
    await pilot.press("h")
    screen: TrendsScreen = await until(
        pilot, lambda: isinstance(app.screen, TrendsScreen) and app.screen, "view"
    )
    await until(pilot, lambda: screen.buckets is not None, "trends read")
    await pilot.pause()
    return screen


async def test_trends_draw_the_job_log_of_the_last_day(
    ops_conn: asyncpg.Connection, ops_dsn: str, tmp_path: Path
) -> None:
    await ops_conn.execute("DELETE FROM system_job_log")
    await log_run(ops_conn, "expire_rides", 0.5, seconds=3, records=4)
    await log_run(ops_conn, "expire_rides", 3.5, seconds=1, records=2)
    await log_run(ops_conn, "check_system_invariants", 0.2, records=6)
    await log_run(ops_conn, "reconcile_seat_counts", 2.5, status="failed")
    app = DashboardApp(make_settings(ops_dsn, tmp_path), clock=frozen())
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await trends_view(pilot, app)
        durations = screen.query_one(
            "#trend-duration-expire_rides", HourSparkline
        ).hours
        records = screen.query_one("#trend-records-expire_rides", HourSparkline).hours
        violations = screen.query_one("#trend-violations", HourSparkline).hours
        assert len(durations) == 24
        assert (durations[23], durations[20]) == (3.0, 1.0)
        assert (records[23], records[20]) == (4.0, 2.0)
        assert violations[23] == 6.0
        text = screen_text(screen)
        assert "2 runs" in text and "1 run, 1 failed" in text
        assert "6 rec, peak" in text
        assert "this hour 6, peak 6" in text
        # Each sparkline has the hours' direction under it, as wide as it is.
        axes = list(screen.query(TimeAxis))
        sparks = [
            screen.query_one(f"#trend-{name}")
            for name in ("duration-expire_rides", "records-expire_rides", "violations")
        ]
        assert [(a.region.x, a.region.width) for a in axes] == [
            (s.region.x, s.region.width) for s in sparks
        ]
        for axis in axes:
            drawn = str(axis.render())
            assert drawn.startswith("└ 24 h ago") and drawn.endswith("now ┘")
        # Apart, a job's two sparklines do not run together.
        assert sparks[0].region.right + GAP == sparks[1].region.x
        # One cell an hour at 120 columns; two at 130.
        assert [s.region.width for s in sparks] == [24, 24, 96]
        await pilot.resize_terminal(130, 40)
        await until(pilot, lambda: sparks[0].region.width == 48, "wider hours")
        assert [s.region.width for s in sparks] == [48, 48, 120]


async def test_trends_give_every_hour_a_cell_at_80_columns(
    ops_conn: asyncpg.Connection, ops_dsn: str, tmp_path: Path
) -> None:
    """Narrower than 24 cells, a sparkline merged hours, "this hour" included."""
    await log_run(ops_conn, "repair_missing_notifications", 0.5, records=3)
    app = DashboardApp(make_settings(ops_dsn, tmp_path), clock=frozen())
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await trends_view(pilot, app)
        spark = screen.query_one("#trend-records-repair_missing_notifications")
        assert spark.region.width == 24 and spark.region.right <= 80
        assert drawn_lines(spark)[-1][-1] == "█"  # this hour's run, alone
        label = screen.query_one("#trend-label-repair_missing_notifications", Static)
        assert drawn_lines(label)[0].rstrip() == "repair_missing_notifications"
        wide = screen.query_one("#trend-violations")
        assert wide.region.width == 72
        # Three cells an hour, each hour's own: this hour's run fills the last
        # three and nothing of it spills into the hour before.
        await log_run(ops_conn, "check_system_invariants", 0.2, records=6)
        await pilot.press("r")
        await until(pilot, lambda: drawn_lines(wide)[-1][-3:] == "███", "this hour")
        assert drawn_lines(wide)[-1][-4] != "█"
        # Narrower still, the two sparklines share what is left (at the
        # smallest size the app takes, 14 cells each, not 24 and 4).
        await pilot.resize_terminal(60, 24)
        await until(pilot, lambda: spark.region.width < 24, "a narrower sparkline")
        duration = screen.query_one("#trend-duration-repair_missing_notifications")
        assert (duration.region.width, spark.region.width) == (14, 14)
        assert spark.region.right <= 60
        assert drawn_lines(spark)[-1][-1] == "█"


# -- themes and NO_COLOR ---------------------------------------------------


def test_theme_names_match_the_cli() -> None:
    assert tuple(THEMES) == THEME_CHOICES
    for words in (["--theme", "light"], ["demo", "--theme", "ansi"]):
        args = build_parser().parse_args([*words, "--wallboard"])
        assert args.theme == words[-1] and args.wallboard
    args = build_parser().parse_args(["serve", "--wallboard", "--theme", "light"])
    assert (args.wallboard, args.theme) == (True, "light")


async def test_theme_option_and_switch_key(ops_dsn: str, tmp_path: Path) -> None:
    app = DashboardApp(make_settings(ops_dsn, tmp_path), theme="light")
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        assert app.theme == "textual-light"
        await pilot.press("v")
        await pilot.pause()
        assert app.theme == "ansi-dark"
        assert app.native_ansi_color
        await pilot.press("v")
        await pilot.pause()
        assert app.theme == "textual-dark"
        assert "Theme: dark (textual-dark)." in notices(app)


def hues_on_screen(app: DashboardApp) -> set[tuple[int, int, int]]:
    """The non-grey colours of the screen as the terminal would get them."""
    strips = app.screen._compositor.render_strips()
    for line_filter in app._filters:
        strips = [line_filter.apply(s, app.screen.styles.background) for s in strips]
    found: set[tuple[int, int, int]] = set()
    for strip in strips:
        for segment in strip:
            style = segment.style
            for colour in (style.color, style.bgcolor) if style else ():
                if colour is not None and colour.triplet is not None:
                    r, g, b = colour.triplet
                    if not r == g == b:
                        found.add((r, g, b))
    return found


@pytest.mark.parametrize("no_color", [False, True])
async def test_no_color_turns_colour_off(
    ops_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_color: bool
) -> None:
    await problems_db(ops_dsn)
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    else:
        monkeypatch.delenv("NO_COLOR", raising=False)
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        assert app.no_color is no_color
        assert bool(hues_on_screen(app)) is not no_color


# -- copy and export -------------------------------------------------------


async def focus_log(pilot: Pilot[Any]) -> JobLogTable:
    """Wait for the data, then put the focus on the job log."""
    app = await loaded(pilot)
    log = app.dashboard.query_one("#log", JobLogTable)
    log.focus()
    await pilot.pause()
    return log


async def test_copy_sends_the_selected_id(ops_dsn: str, tmp_path: Path) -> None:
    await problems_db(ops_dsn)
    app = DashboardApp(make_settings(ops_dsn, tmp_path, read_only=True))
    async with app.run_test(size=(120, 40)) as pilot:
        log = await focus_log(pilot)
        await pilot.press("y")
        await pilot.pause()
        assert app.clipboard == log.selected_key
        await pilot.press("t")
        await pilot.pause()
        table = app.dashboard.query_one("#violations", ViolationsTable)
        await pilot.press("y")
        await pilot.pause()
        assert app.clipboard == table.selected_key
        assert f"Copied {table.selected_key}" in notices(app)[-1]


async def test_a_key_that_brings_the_log_back_brings_the_keys_with_it(
    ops_dsn: str, tmp_path: Path
) -> None:
    """At 80x24 one pane shows: y must copy from it, not from the hidden one."""
    await problems_db(ops_dsn)
    async with connected(ops_dsn) as conn:
        await job(conn, "expire_rides")
    app = DashboardApp(make_settings(ops_dsn, tmp_path, read_only=True))
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("t")
        await pilot.pause()
        violations = app.dashboard.query_one("#violations", ViolationsTable)
        assert app.focused is violations
        await pilot.press("f")  # failed runs only: the log comes back in view
        log = app.dashboard.query_one("#log", JobLogTable)
        await until(pilot, lambda: log.row_count == 1, "the failed run")
        assert not violations.region  # hidden
        assert app.focused is log
        await pilot.press("y")
        await pilot.pause()
        failed = next(iter(log.entries.values()))
        assert failed.status == "failed"
        assert app.clipboard == str(failed.id)


@pytest.mark.parametrize("form", ["csv", "json"])
async def test_export_writes_the_table_in_view(
    ops_dsn: str, tmp_path: Path, form: str
) -> None:
    await problems_db(ops_dsn)
    app = DashboardApp(make_settings(ops_dsn, tmp_path, read_only=True))
    async with app.run_test(size=(120, 40)) as pilot:
        log = await focus_log(pilot)
        await pilot.press("o" if form == "csv" else "j")
        path = await until(pilot, lambda: app.last_export, "export")
        assert path.parent == app.settings.action_log.parent
        assert path.suffix == f".{form}"
        assert notices(app)[-1].splitlines()[-2:] == [path.name, f"in {path.parent}"]
        text = path.read_text(encoding="utf-8")
        if form == "csv":
            rows = list(csv.DictReader(text.splitlines()))
        else:
            rows = json.loads(text)
        shown = list(log.entries.values())
        assert [r["id"] for r in rows] == [str(e.id) for e in shown]
        assert [r["status"] for r in rows] == [e.status for e in shown]
        failed = next(r for r in rows if r["status"] == "failed")
        assert failed["error_message"] == "canceling statement due to lock timeout"
        await pilot.press("t", "o" if form == "csv" else "j")
        second = await until(
            pilot, lambda: app.last_export != path and app.last_export, "second"
        )
        assert "violations" in second.name
        text = second.read_text(encoding="utf-8")
        rows = (
            list(csv.DictReader(text.splitlines()))
            if form == "csv"
            else json.loads(text)
        )
        assert [r["check_name"] for r in rows] == ["seat_mismatch"]
        app.dashboard.query_one("#jobs", JobsTable).focus()
        await pilot.press("j")
        jobs_file = await until(
            pilot, lambda: "jobs" in app.last_export.name and app.last_export, "jobs"
        )
        runs = {str(e.id): e for e in shown}
        timed = [
            (row["duration_s"], runs[row["last_run_id"]].duration)
            for row in json.loads(jobs_file.read_text())
            if row["last_run_id"] in runs
        ]
        assert timed and all(
            took is None or seconds == round(took.total_seconds(), 3)
            for seconds, took in timed
        ), timed
        assert any(seconds is not None for seconds, _ in timed), timed


FORMULAS = (
    '=HYPERLINK("http://example.invalid","open")',
    "+1+2",
    "-2+3",
    "@SUM(A1:A2)",
    "\tcmd",
    "\rcmd",
)
"""Error messages a spreadsheet would take as formulas, one per leading character."""


async def test_an_exports_file_name_is_drawn_whole_at_80x24(
    ops_dsn: str, tmp_path: Path
) -> None:
    await problems_db(ops_dsn)
    app = DashboardApp(make_settings(ops_dsn, tmp_path, read_only=True))
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await until(pilot, lambda: app.dashboard.snapshot, "the first poll")
        await pilot.press("t", "j")
        path = await until(pilot, lambda: app.last_export, "export")
        assert path.name.startswith("carpool-violations-")
        toast = await until(
            pilot, lambda: next(iter(app.screen.query("Toast")), None), "notice"
        )
        await pilot.pause()
        drawn = drawn_lines(toast)
        assert any(path.name in line for line in drawn), drawn


async def test_csv_export_guards_text_a_spreadsheet_would_run(
    ops_dsn: str, tmp_path: Path
) -> None:
    huge = "deadlock detected; " * 2_500  # 47,500 characters: more than a cell
    messages = [
        *FORMULAS,
        "lock timeout",
        "boom\r=1+1 mid-cell stays in the cell",
        huge,
    ]
    async with connected(ops_dsn) as conn:
        await conn.executemany(
            "INSERT INTO system_job_log (job_name, started_at, completed_at, status,"
            " records_processed, error_message) VALUES ('expire_rides',"
            " now() - $1 * interval '1 minute', now() - $1 * interval '1 minute',"
            " 'failed', -3, $2)",
            [(n, m) for n, m in enumerate(messages, start=1)],
        )
    app = DashboardApp(make_settings(ops_dsn, tmp_path, read_only=True))
    async with app.run_test(size=(120, 40)) as pilot:
        await focus_log(pilot)
        await pilot.press("o")
        csv_path = await until(pilot, lambda: app.last_export, "CSV export")
        # The file name is one line of the notice, whole, then its folder.
        lines = notices(app)[-1].splitlines()
        assert lines[-2:] == [csv_path.name, f"in {csv_path.parent}"], lines
        assert lines[0] == "9 rows of the log table written to"
        await pilot.press("j")
        json_path = await until(
            pilot, lambda: app.last_export != csv_path and app.last_export, "JSON"
        )
    with csv_path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    guarded = [f"'{m}" for m in FORMULAS]
    *shown, cut = [r["error_message"] for r in rows]
    assert shown == [*guarded, *messages[-3:-1]]
    assert len(cut) <= 32_767 and huge.startswith(cut[:32_000])
    assert cut.endswith("more characters; the JSON export (j) has the whole text]")
    assert f"[cut: {len(huge) - 32_667:,} more" in cut
    assert {r["records_processed"] for r in rows} == {"-3"}
    assert {r["status"] for r in rows} == {"failed"}
    data = json.loads(json_path.read_text(encoding="utf-8"))
    assert [r["error_message"] for r in data] == messages
    assert {r["records_processed"] for r in data} == {-3}


# -- the registry ----------------------------------------------------------


def test_war_room_actions_write_nothing_and_stay_in_read_only() -> None:
    from carpool_tui.models import Capabilities

    caps = Capabilities(ops_layer_version="1", read_only=True)
    for spec_id in WAR_ROOM:
        spec = ACTIONS_BY_ID[spec_id]
        assert not spec.writes
        assert blocked_reason(spec, caps, selected={"row"}) is None
    assert len({a.key for a in ACTIONS}) == len(ACTIONS)


async def test_war_room_keys_work_in_a_read_only_session(
    ops_dsn: str, tmp_path: Path
) -> None:
    app = DashboardApp(make_settings(ops_dsn, tmp_path, read_only=True))
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        for key, kind in (("c", ScheduleScreen), ("h", TrendsScreen)):
            await pilot.press(key)
            await until(pilot, lambda k=kind: isinstance(app.screen, k), kind.__name__)
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is app.dashboard, "back")
        assert app.check_action("export", ("csv",))
