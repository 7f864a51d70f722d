"""Regenerate the README's screenshots from the real app on a seeded demo database.

Run ``python screenshots/make.py``: it starts a throwaway embedded PostgreSQL,
creates, migrates and seeds a demo database as ``carpool-tui demo`` does, drives
the dashboard with Textual's pilot, and writes one SVG per view into this
folder.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from carpool_tui.config import Settings
from carpool_tui.db.connect import connect
from carpool_tui.db.embedded import EmbeddedServer
from carpool_tui.db.migrate import migrate
from carpool_tui.db.seed import FAULT_KINDS, seed_platform
from carpool_tui.ui.app import DashboardApp
from carpool_tui.ui.widgets import JobLogTable, ViolationsTable

HERE = Path(__file__).resolve().parent
DATABASE = "carpool_demo"
Step = Callable[[Pilot[Any], DashboardApp], Awaitable[None]]


async def _until(pilot: Pilot[Any], condition: Callable[[], object], what: str) -> None:
    for _ in range(400):
        if condition():
            return
        await pilot.pause(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def _shows(app: DashboardApp, text: str) -> bool:
    """Whether the screen shows `text` (the SVG writes spaces as &#160;)."""
    return text.replace(" ", "&#160;") in app.export_screenshot()


async def _select_violation(pilot: Pilot[Any], app: DashboardApp, check: str) -> None:
    await pilot.press("t")
    table = app.dashboard.query_one("#violations", ViolationsTable)
    rows = list(table.violations.values())
    index = next(i for i, v in enumerate(rows) if v.check_name == check)
    table.move_cursor(row=index)
    await pilot.pause()


def _dialog(keys: tuple[str, ...], ready: str, check: str = "") -> Step:
    async def step(pilot: Pilot[Any], app: DashboardApp) -> None:
        if check:
            await _select_violation(pilot, app, check)
        await pilot.press(*keys)
        await _until(pilot, lambda: _shows(app, ready), repr(ready))
        await pilot.pause(0.3)

    return step


async def _main(pilot: Pilot[Any], app: DashboardApp) -> None:
    await pilot.pause(0.3)


async def _job_detail(pilot: Pilot[Any], app: DashboardApp) -> None:
    """The newest failed run, opened from the job log filtered to failures."""
    await pilot.press("f")
    log = app.dashboard.query_one("#log", JobLogTable)
    await _until(pilot, lambda: log.row_count > 0, "failed runs")
    log.focus()
    log.move_cursor(row=0)
    await _dialog(("enter",), "SQLSTATE")(pilot, app)


VIEWS: dict[str, tuple[tuple[int, int], Step]] = {
    "main": ((120, 40), _main),
    "main-80x24": ((80, 24), _main),
    "seat-fix": ((120, 40), _dialog(("s",), "Computed", "seat_mismatch")),
    "resolve": ((120, 40), _dialog(("x",), "right now", "seat_mismatch")),
    "job-detail": ((120, 40), _job_detail),
}


async def _shoot(dsn: str, name: str, size: tuple[int, int], step: Step) -> None:
    settings = Settings(
        dsn=dsn,
        operator="oncall@ops-bastion",
        action_log=Path(tempfile.gettempdir()) / "carpool-tui-shots-actions.log",
    )
    app = DashboardApp(settings)
    async with app.run_test(size=size) as pilot:
        await _until(pilot, lambda: app.dashboard.snapshot is not None, "first poll")
        await step(pilot, app)
        app.save_screenshot(filename=f"{name}.svg", path=str(HERE))
    print(f"wrote screenshots/{name}.svg")


async def _prepare(admin_dsn: str, dsn: str) -> None:
    admin = await connect(admin_dsn, purpose="screenshots")
    await admin.execute(f"CREATE DATABASE {DATABASE}")
    await admin.close()
    conn = await connect(dsn, purpose="screenshots", statement_timeout_ms=0)
    try:
        await migrate(conn, ("base", "ops"))
        await seed_platform(conn, rides=400, seed=1, faults=FAULT_KINDS, history_days=3)
        await conn.execute("SELECT check_system_invariants()")
    finally:
        await conn.close()


async def _run(server: EmbeddedServer) -> None:
    admin_dsn = server.start()
    dsn = server.dsn(DATABASE)
    await _prepare(admin_dsn, dsn)
    for name, (size, step) in VIEWS.items():
        await _shoot(dsn, name, size, step)


def main() -> int:
    """Build the demo database, take every screenshot, remove the database."""
    work = Path(tempfile.mkdtemp(prefix="carpool-tui-shots-", dir="/tmp"))
    server = EmbeddedServer(work / "pgdata", delete_on_stop=True)
    try:
        asyncio.run(_run(server))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
