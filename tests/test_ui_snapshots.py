"""Screenshots of the dashboard and every dialog on seeded data with a frozen clock.

The data is generated from a fixed seed relative to FIXED_NOW, violations are
pinned to fixed times, and the app's clock is frozen at FIXED_NOW, so nothing
on screen depends on the wall clock, the server or a random id. FIXED_NOW lies
in the past, so counts the server computes against its own now() are stable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from factories import connected
from test_ui_support import FIXED_NOW, frozen, make_settings, screen_text, until
from test_warroom_repo import CRON_ROWS, fake_cron
from textual.pilot import Pilot

from carpool_tui.db.seed import FAULT_KINDS, seed_platform
from carpool_tui.ui.app import DashboardApp
from carpool_tui.ui.dialogs import (
    ConfirmJobDialog,
    ExpireRideDialog,
    HelpScreen,
    LogEntryDialog,
    ResolveDialog,
    SeatFixDialog,
    ViolationDialog,
)
from carpool_tui.ui.schedule import ScheduleScreen
from carpool_tui.ui.wallboard import WallboardScreen
from carpool_tui.ui.widgets import ViolationsTable

SIZES = [(80, 24), (120, 40)]
Before = Callable[[Pilot[Any]], Awaitable[None]]


@pytest.fixture
async def seeded_dsn(ops_dsn: str) -> AsyncIterator[str]:
    """An ops database with a seeded platform, every fault, history and violations."""
    async with connected(ops_dsn, timeout_ms=120_000) as conn:
        await seed_platform(
            conn, rides=300, seed=7, faults=FAULT_KINDS, history_days=2, now=FIXED_NOW
        )
        await conn.fetchval("SELECT check_system_invariants()")
        await conn.execute(
            "DELETE FROM system_job_log WHERE started_at > $1::timestamptz",
            FIXED_NOW,
        )
        # Pin the open rows to distinct fixed times, in check order, so their
        # order on screen (critical first, then newest) never depends on ids.
        await conn.execute(
            "UPDATE invariant_violations AS v"
            " SET detected_at = $1::timestamptz - interval '40 minutes'"
            "     - o.n * interval '1 minute',"
            "     last_seen_at = $1::timestamptz - interval '10 minutes'"
            " FROM (SELECT id, row_number() OVER (ORDER BY check_name) AS n"
            "       FROM invariant_violations WHERE resolved_at IS NULL) AS o"
            " WHERE v.id = o.id",
            FIXED_NOW,
        )
    yield ops_dsn


def app_for(dsn: str, tmp_path: Path, *, wallboard: bool = False) -> DashboardApp:
    return DashboardApp(
        make_settings(dsn, tmp_path, refresh=300.0),
        clock=frozen(),
        label="demo",
        target="postgresql://postgres:@/carpool_demo?host=/var/lib/carpool-demo",
        wallboard=wallboard,
    )


async def _loaded(pilot: Pilot[Any]) -> None:
    app: DashboardApp = pilot.app  # type: ignore[assignment]
    await until(pilot, lambda: app.dashboard.snapshot is not None, "first snapshot")
    await pilot.pause()


def opens(kind: type, keys: tuple[str, ...], ready: str, check: str = "") -> Before:
    """Load, optionally select a violation of `check`, press keys, wait for `ready`."""

    async def before(pilot: Pilot[Any]) -> None:
        app: DashboardApp = pilot.app  # type: ignore[assignment]
        await _loaded(pilot)
        if check:
            await pilot.press("t")
            table = app.dashboard.query_one("#violations", ViolationsTable)
            row = next(
                i
                for i, v in enumerate(table.violations.values())
                if v.check_name == check
            )
            table.move_cursor(row=row)
            await pilot.pause()
        await pilot.press(*keys)
        screen = await until(
            pilot, lambda: isinstance(app.screen, kind) and app.screen, kind.__name__
        )
        await until(pilot, lambda: ready in screen_text(screen), ready)
        await pilot.pause()

    return before


CASES: dict[str, Before] = {
    "confirm_job": opens(ConfirmJobDialog, ("1",), "Run Ride expiry"),
    "help": opens(HelpScreen, ("question_mark",), "Keys"),
    "job_run_detail": opens(LogEntryDialog, ("enter",), "Job run"),
    "violation_detail": opens(
        ViolationDialog, ("enter",), "Samples", check="seat_mismatch"
    ),
    "seat_fix": opens(SeatFixDialog, ("s",), "Computed", check="seat_mismatch"),
    "resolve": opens(ResolveDialog, ("x",), "right now", check="seat_mismatch"),
    "expire_ride": opens(
        ExpireRideDialog, ("e",), "Expires at", check="expired_active_ride"
    ),
}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_main_screen(
    snap_compare: Any, seeded_dsn: str, tmp_path: Path, size: tuple[int, int]
) -> None:
    assert snap_compare(
        app_for(seeded_dsn, tmp_path), terminal_size=size, run_before=_loaded
    )


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("case", sorted(CASES))
def test_dialog(
    snap_compare: Any,
    seeded_dsn: str,
    tmp_path: Path,
    case: str,
    size: tuple[int, int],
) -> None:
    assert snap_compare(
        app_for(seeded_dsn, tmp_path), terminal_size=size, run_before=CASES[case]
    )


@pytest.fixture
async def cron_dsn(seeded_dsn: str) -> str:
    """The seeded database with a stand-in pg_cron: one entry moved, one missing."""
    async with connected(seeded_dsn) as conn:
        await fake_cron(conn, CRON_ROWS)
    return seeded_dsn


async def _wallboard(pilot: Pilot[Any]) -> None:
    app: DashboardApp = pilot.app  # type: ignore[assignment]
    await _loaded(pilot)
    board = app.screen
    assert isinstance(board, WallboardScreen)
    board.redraw()
    await pilot.pause()


async def _schedule(pilot: Pilot[Any]) -> None:
    app: DashboardApp = pilot.app  # type: ignore[assignment]
    await _loaded(pilot)
    await pilot.press("c")
    screen = await until(
        pilot, lambda: isinstance(app.screen, ScheduleScreen) and app.screen, "view"
    )
    await until(pilot, lambda: screen.loaded, "cron read")
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_wallboard(
    snap_compare: Any, seeded_dsn: str, tmp_path: Path, size: tuple[int, int]
) -> None:
    app = app_for(seeded_dsn, tmp_path, wallboard=True)
    assert snap_compare(app, terminal_size=size, run_before=_wallboard)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_schedule(
    snap_compare: Any, cron_dsn: str, tmp_path: Path, size: tuple[int, int]
) -> None:
    assert snap_compare(
        app_for(cron_dsn, tmp_path), terminal_size=size, run_before=_schedule
    )
