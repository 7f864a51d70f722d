"""Each guided procedure end to end with Pilot, on a database with its fault."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from factories import connected, job, make_booking, make_ride
from test_ui_actions import (
    action_log,
    confirm_job,
    dialog_of,
    from_the_terminal,
    select_violation,
    shows,
    type_text,
)
from test_ui_dashboard import failed_run, loaded, notices, seat_mismatch
from test_ui_snapshots import app_for, seeded_dsn  # noqa: F401
from test_ui_support import (
    drawn_lines,
    make_settings,
    pairs_whole,
    screen_text,
    static_text,
    terminal_lines,
    until,
)
from textual import events
from textual.binding import Binding
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import DataTable, Input, Static

from carpool_tui.db.errors import NeverSent
from carpool_tui.db.repo import utc_now
from carpool_tui.db.seed import FAULT_KINDS, seed_platform
from carpool_tui.models import JOBS_BY_NAME
from carpool_tui.runbooks.procedures import CHECK_KINDS, PROCEDURES
from carpool_tui.ui import fmt
from carpool_tui.ui.app import DashboardApp
from carpool_tui.ui.dialogs import (
    BREAK_HINT,
    ExpireRideDialog,
    JobRunDialog,
    RideDialog,
    SeatFixDialog,
)
from carpool_tui.ui.procedures import (
    ProcedureScreen,
    ProceduresScreen,
    RowsLoaded,
    row_id,
)
from carpool_tui.ui.widgets import JobLogTable


async def procedure(pilot: Pilot[Any]) -> ProcedureScreen:
    screen: ProcedureScreen = await dialog_of(pilot, ProcedureScreen)  # type: ignore[assignment]
    await until(pilot, lambda: screen.rowset is not None, "the step's rows")
    return screen


async def settled(pilot: Pilot[Any], screen: ProcedureScreen) -> None:
    """Back on the procedure with the step's rows read (and checked, if asked)."""
    await until(pilot, lambda: pilot.app.screen is screen, "the procedure")
    await until(pilot, lambda: screen.rowset is not None, "the step's rows")
    await pilot.pause()


async def run_job_action(
    pilot: Pilot[Any], screen: ProcedureScreen, read_for: float = 0.0
) -> None:
    """Run the step's job and close its result, after ``read_for`` seconds."""
    await confirm_job(pilot, "a")
    running = await dialog_of(pilot, JobRunDialog)
    await until(pilot, lambda: running.result is not None, "the job's result")  # type: ignore[attr-defined]
    await pilot.pause(read_for)
    await pilot.press("enter")
    await settled(pilot, screen)
    await until(pilot, lambda: screen.run.verdict is not None, "the check")


async def next_step(pilot: Pilot[Any], screen: ProcedureScreen) -> None:
    index = screen.run.index
    await pilot.press("n")
    await until(
        pilot, lambda: screen.run.over or screen.run.index != index, "the next step"
    )
    if not screen.run.over:
        await settled(pilot, screen)


async def skip_step(pilot: Pilot[Any], screen: ProcedureScreen, reason: str) -> None:
    index = screen.run.index
    await pilot.press("k")
    await type_text(pilot, reason)
    await pilot.press("enter")
    await until(pilot, lambda: screen.run.over or screen.run.index != index, "the skip")
    if not screen.run.over:
        await settled(pilot, screen)


async def check(pilot: Pilot[Any], screen: ProcedureScreen) -> bool:
    await pilot.press("c")
    await until(pilot, lambda: screen.run.verdict is not None, "the check")
    verdict = screen.run.verdict
    return bool(verdict and verdict.ok)


async def follow(pilot: Pilot[Any], screen: ProcedureScreen, reason: str) -> None:
    """Do every step as the screen offers it; skip with `reason` where a check fails."""
    while not screen.run.over:
        step = screen.run.step
        ok = True
        if step.action is not None:
            await run_job_action(pilot, screen)
            ok = bool(screen.run.verdict and screen.run.verdict.ok)
        elif step.check is not None:
            ok = await check(pilot, screen)
        if ok:
            await next_step(pilot, screen)
        else:
            await skip_step(pilot, screen, reason)


async def from_the_failed_run(
    pilot: Pilot[Any], app: DashboardApp, runs: int = 1, row: int = 0
) -> ProcedureScreen:
    """`g` on row `row` of a job log of `runs` failed runs: 4.1, that run chosen."""
    await loaded(pilot)
    log = app.dashboard.query_one("#log", JobLogTable)
    log.focus()
    await until(pilot, lambda: log.row_count == runs, "the failed runs")
    log.move_cursor(row=row)
    await pilot.press("g")
    return await procedure(pilot)


@asynccontextmanager
async def failed_run_chosen(
    ops_dsn: str, tmp_path: Path
) -> AsyncIterator[tuple[Pilot[Any], ProcedureScreen]]:
    """A failed run in the job log and 4.1 opened on it from the dashboard at
    80x24, its choice checked: the pilot and the procedure."""
    async with connected(ops_dsn) as conn:
        await failed_run(conn)
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await from_the_failed_run(pilot, app)
        assert await check(pilot, screen)
        yield pilot, screen


async def to_the_rerun(pilot: Pilot[Any], screen: ProcedureScreen) -> None:
    """From 4.1's first step, its run chosen, past what holds locks (no
    check) to the step that runs the job again."""
    await next_step(pilot, screen)
    assert "See what holds locks" in screen_text(screen)
    await next_step(pilot, screen)


async def test_jobs_failing_from_a_failed_run_to_a_verified_rerun(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        await failed_run(conn)
        app = DashboardApp(make_settings(ops_dsn, tmp_path))
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await from_the_failed_run(pilot, app)
            text = screen_text(screen)
            assert "4.1 Jobs are failing · Step 1 of 3: Read the failed runs" in text
            assert "canceling statement due to lock timeout" in text
            assert "55P03" in text and "Lock timeout" in text
            assert "Usually self-resolving" in text
            assert "WHERE status = 'failed'" in text
            assert await check(pilot, screen)
            await to_the_rerun(pilot, screen)
            assert "Step 3 of 3" in screen_text(screen)
            assert "Run reconcile_seat_counts()" in screen_text(screen)
            await run_job_action(pilot, screen)
            assert "PASSED The job completed." in screen_text(screen)
            await next_step(pilot, screen)
            assert screen.run.healthy
            ending = "Finished: every check of this procedure passed."
            assert ending in screen_text(screen)
            await pilot.press("m")
            said = await until(
                pilot,
                lambda: "Timeline written to" in (t := screen_text(screen)) and t,
                "export",
            )
            assert "\\n" not in said  # one line, no escaped line break
            # Back where the run was chosen, not in the procedures list.
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is app.dashboard, "the dashboard")
        exported = list((tmp_path / "state").glob("incident-*.md"))
        assert len(exported) == 1
        md = exported[0].read_text(encoding="utf-8")
        assert md.startswith("# Incident timeline")
        assert "| Time (UTC) | Operator | Procedure | Step | Action | Result |" in md
        assert "| alice@oncall | 4.1 Jobs are failing | 3. Run the job again |" in md
        assert "| run reconcile_seat_counts | Found 0 mismatches" in md
        assert "passed: The job completed." in md
        assert f"| finish | {ending} |" in md
        assert [e["action"] for e in action_log(app)] == ["run_job"]
        assert (
            await conn.fetchval(
                "SELECT status FROM system_job_log WHERE job_name ="
                " 'reconcile_seat_counts' ORDER BY started_at DESC LIMIT 1"
            )
            == "completed"
        )


async def test_what_holds_locks_names_the_session_another_waits_on(
    ops_dsn: str, tmp_path: Path
) -> None:
    """4.1's second step lists the sessions in a transaction, oldest first:
    one holding a ride's row, and one waiting for it that names the first in
    blocked_by, which is where a lock timeout's cause is found."""
    async with connected(ops_dsn) as conn:
        await failed_run(conn)
        ride = await make_ride(conn, departs_in=timedelta(hours=1))
    async with (
        connected(ops_dsn, purpose="test-holder") as holder,
        connected(ops_dsn, purpose="test-waiter") as waiter,
    ):
        holder_pid = await holder.fetchval("SELECT pg_backend_pid()")
        waiter_pid = await waiter.fetchval("SELECT pg_backend_pid()")
        held = holder.transaction()
        await held.start()
        await holder.execute("SELECT 1 FROM rides WHERE id = $1 FOR UPDATE", ride)
        waiting = asyncio.create_task(
            waiter.execute("UPDATE rides SET updated_at = now() WHERE id = $1", ride)
        )
        try:
            for _ in range(200):
                if await conn_blocked(ops_dsn, waiter_pid):
                    break
                await asyncio.sleep(0.02)
            app = DashboardApp(make_settings(ops_dsn, tmp_path))
            async with app.run_test(size=(120, 40)) as pilot:
                screen = await from_the_failed_run(pilot, app)
                assert await check(pilot, screen)
                await next_step(pilot, screen)
                await until(pilot, lambda: screen.rowset is not None, "the sessions")
                assert screen.rowset is not None
                rows = {r["pid"]: r for r in screen.rowset.rows}
                assert next(iter(rows)) == holder_pid  # the oldest transaction first
                assert rows[waiter_pid]["blocked_by"] == str(holder_pid)
                assert rows[holder_pid]["blocked_by"] is None
                assert rows[holder_pid]["state"] == "idle in transaction"
                assert "FOR UPDATE" in rows[holder_pid]["query"]
                text = screen_text(screen)
                assert "Step 2 of 3: See what holds locks" in text
                assert "No check in this step" in text
        finally:
            await held.rollback()
            await waiting


async def test_what_holds_locks_says_so_when_nothing_does(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with failed_run_chosen(ops_dsn, tmp_path) as (pilot, screen):
        await next_step(pilot, screen)
        said = "0 row(s): no other session is in a transaction now, so none holds"
        await until(pilot, lambda: said in screen_text(screen), "the empty table")


async def conn_blocked(dsn: str, pid: int) -> bool:
    """Whether the backend ``pid`` waits on a lock another session holds."""
    async with connected(dsn) as conn:
        return bool(await conn.fetchval("SELECT pg_blocking_pids($1) <> '{}'", pid))


@pytest.mark.parametrize("kind", CHECK_KINDS)
async def test_each_violation_kind_from_the_dashboard(
    ops_dsn: str, tmp_path: Path, kind: str
) -> None:
    async with connected(ops_dsn) as conn:
        await seed_platform(conn, rides=80, seed=5, faults=[kind])
        await job(conn, "check_system_invariants")
        app = DashboardApp(make_settings(ops_dsn, tmp_path))
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            await select_violation(pilot, app, kind)
            await pilot.press("g")
            screen = await procedure(pilot)
            assert f"4.2 Violation: {kind} · Step 1 of" in screen_text(screen)
            table = screen.query_one("#proc-rows", DataTable)
            assert table.row_count > 0
            if kind == "duplicate_active_bookings":
                # The step asks which booking stays: every id must be readable.
                labels = [column.label.plain for column in table.columns.values()]
                cell = table.get_row_at(0)[labels.index("booking_ids")]
                ids = str(cell).split(", ")
                assert len(ids) >= 2 and all(uuid.UUID(i) for i in ids), ids
            await follow(pilot, screen, "needs a manual fix")
            final = screen_text(screen)
            assert f"{kind:<34}" in final  # the open/now table
            assert f"{'check':<34}{'open':>8}{'now':>8}" in final
            if screen.procedure.can_end_healthy:
                assert screen.run.healthy
                assert "Finished: verified healthy." in final
            else:
                assert not screen.run.healthy
                assert "NOT healthy" in final and "verified healthy" not in final
                assert "needs a manual fix" in [
                    e.result for e in app.timeline.entries if e.action == "skip"
                ]
        still_open = await conn.fetchval(
            "SELECT count(*) FROM invariant_violations"
            " WHERE check_name = $1 AND resolved_at IS NULL",
            kind,
        )
        assert still_open == (0 if screen.procedure.can_end_healthy else 1)


async def test_invalid_status_shows_rows_and_query_and_offers_no_fix(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        await seed_platform(conn, rides=80, seed=5, faults=["invalid_ride_status"])
        await job(conn, "check_system_invariants")
        app = DashboardApp(make_settings(ops_dsn, tmp_path))
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            await select_violation(pilot, app, "invalid_ride_status")
            await pilot.press("g")
            screen = await procedure(pilot)
            text = screen_text(screen)
            assert "expired" in text and "Completed" in text
            assert "NOT IN ('active', 'in-progress', 'completed', 'cancelled')" in text
            await next_step(pilot, screen)
            text = screen_text(screen)
            assert "No automatic fix" in text
            await pilot.press("a")
            await until(pilot, lambda: "no action" in screen_text(screen), "no action")
            assert not await check(pilot, screen)
            await pilot.press("n")
            await until(
                pilot, lambda: "skip it with k" in screen_text(screen), "refusal"
            )
            assert screen.run.index == 1
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM rides WHERE status IN ('expired', 'Completed')"
            )
            == 2
        )


async def open_from_list(pilot: Pilot[Any], title: str) -> ProcedureScreen:
    await pilot.press("g")
    listing = await dialog_of(pilot, ProceduresScreen)
    table = listing.query_one("#procedure-list", DataTable)
    row = next(
        i for i in range(table.row_count) if table.get_row_at(i)[1].plain == title
    )
    table.move_cursor(row=row)
    await pilot.press("enter")
    return await procedure(pilot)


@asynccontextmanager
async def procedure_open(
    app: DashboardApp, title: str, size: tuple[int, int] = (120, 40)
) -> AsyncIterator[tuple[Pilot[Any], ProcedureScreen]]:
    """The app at ``size``, loaded, with the procedure ``title`` opened from
    the list: the pilot and the procedure's screen."""
    async with app.run_test(size=size) as pilot:
        await loaded(pilot)
        yield pilot, await open_from_list(pilot, title)


async def expired_and_checked(
    pilot: Pilot[Any], screen: ProcedureScreen, dialog: Screen[Any]
) -> None:
    """Expire the previewed ride with a note, close, and see the step pass."""
    await shows(pilot, dialog, "Expires at")
    await type_text(pilot, "expiry job down")
    await pilot.press("enter")
    await shows(pilot, dialog, "Expired.")
    await pilot.press("escape")
    await settled(pilot, screen)
    await until(pilot, lambda: screen.run.verdict is not None, "the check")
    assert "PASSED The ride is completed with no open bookings." in screen_text(screen)


async def test_the_list_shows_the_highlighted_summary_whole_at_80x24(
    ops_dsn: str, tmp_path: Path
) -> None:
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("g")
        listed = await until(
            pilot, lambda: isinstance(app.screen, ProceduresScreen) and app.screen, "g"
        )
        await pilot.press("down")
        summary = listed.query_one("#proc-summary", Static)
        await until(pilot, lambda: "seat_mismatch" in static_text(summary), "it")
        text = " ".join(static_text(summary).split())
        assert text.endswith("verify with the invariant check.")
        assert summary.region.bottom <= listed.region.bottom


def cut_descriptions(listing: Screen[Any]) -> int:
    """How many descriptions the list shows cut; each one cut ends with "…"."""
    table = listing.query_one("#procedure-list", DataTable)
    assert table.max_scroll_x == 0  # no column runs off the screen
    lines = terminal_lines(listing)
    header = next(line for line in lines if "Procedure" in line)
    start = header.index("What")
    cut = 0
    for proc in PROCEDURES:
        line = next(line for line in lines if f"  {proc.title}  " in line)
        shown = line[start:].rstrip()
        if shown != proc.summary:
            assert shown.endswith("…"), shown
            kept = shown.removesuffix("…")
            assert proc.summary.startswith(kept) and kept == kept.rstrip(), shown
            cut += 1
    return cut


async def test_the_list_ends_a_cut_description_with_an_ellipsis(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Cut at the terminal's edge, a description read as if it were whole."""
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("g")
        listing = await dialog_of(pilot, ProceduresScreen)
        table = listing.query_one("#procedure-list", DataTable)
        await until(pilot, lambda: table.row_count == len(PROCEDURES), "the list")
        await pilot.press("down", "down")
        await pilot.pause()
        assert cut_descriptions(listing) == len(PROCEDURES)

        # At 120 columns the shortest fits whole; the highlighted row stays.
        await pilot.resize_terminal(120, 40)
        await until(pilot, lambda: table.size.width == 118, "the wider list")
        await pilot.pause()
        assert cut_descriptions(listing) == len(PROCEDURES) - 1
        assert table.cursor_row == 2
        summary = static_text(listing.query_one("#proc-summary", Static))
        assert PROCEDURES[2].title in summary

        await pilot.resize_terminal(60, 20)  # the smallest the app allows
        await until(pilot, lambda: table.size.width == 58, "the narrower list")
        await pilot.pause()
        assert cut_descriptions(listing) == len(PROCEDURES)


async def test_a_step_sees_the_connection_come_back_without_a_key(
    ops_dsn: str, tmp_path: Path
) -> None:
    """The dashboard beneath loses its connection and finds it again: the
    step's action follows, as the dashboard's keys do, with no key pressed."""
    async with connected(ops_dsn) as conn:
        ride = await make_ride(conn, departs_in=timedelta(hours=-2))
    app = DashboardApp(make_settings(ops_dsn, tmp_path, refresh=60))
    async with procedure_open(app, "Manual ride expiry") as (pilot, screen):
        await pilot.press("enter")
        await until(pilot, lambda: screen.run.target == str(ride), "the choice")
        await next_step(pilot, screen)
        action = screen.query_one("#proc-action", Static)
        assert static_text(action).startswith("Action (a):")
        caps, app.dashboard.caps = app.dashboard.caps, None  # as in an outage
        await until(
            pilot, lambda: "writes disabled" in static_text(action), "the outage"
        )
        app.dashboard.caps = caps  # as the next good poll sets them
        await until(
            pilot, lambda: static_text(action).startswith("Action (a):"), "the return"
        )
        # A read that failed meanwhile says so; the next one that works clears it.
        lost = NeverSent("Not connected to the database", "Waiting to reconnect.")
        screen.post_message(RowsLoaded(screen.run.index, lost, False))
        message = screen.query_one("#proc-message", Static)
        await until(pilot, lambda: "Not connected" in static_text(message), "error")
        await pilot.press("r")
        await until(pilot, lambda: not message.display, "the message cleared")


async def test_manual_ride_expiry(ops_dsn: str, tmp_path: Path) -> None:
    async with connected(ops_dsn) as conn:
        ride = await make_ride(conn, departs_in=timedelta(hours=-2))
        await make_booking(conn, ride, status="confirmed")
        app = DashboardApp(make_settings(ops_dsn, tmp_path))
        async with procedure_open(app, "Manual ride expiry") as (pilot, screen):
            assert str(ride) in screen_text(screen)
            keys = static_text(screen.query_one("#proc-keys", Static))
            assert " Enter  choose" in keys and " r  reload" in keys
            assert not await check(pilot, screen)
            await pilot.press("enter")  # choose the highlighted ride
            await until(pilot, lambda: screen.run.target == str(ride), "the choice")
            await next_step(pilot, screen)
            assert "open_bookings" in screen_text(screen)
            keys = static_text(screen.query_one("#proc-keys", Static))
            assert "Enter" not in keys and " a  act" in keys
            await pilot.press("a")
            dialog = await dialog_of(pilot, ExpireRideDialog)
            await expired_and_checked(pilot, screen, dialog)
            await next_step(pilot, screen)
            assert screen.run.healthy
        assert await conn.fetchval("SELECT status FROM rides WHERE id = $1", ride) == (
            "completed"
        )
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM admin_audit_log"
                " WHERE action = 'ride_expired_manually'"
            )
            == 1
        )
        assert [e["action"] for e in action_log(app)] == ["expire_ride"]


async def test_y_copies_the_selected_rows_id(ops_dsn: str, tmp_path: Path) -> None:
    async with connected(ops_dsn) as conn:
        ride = await make_ride(conn, departs_in=timedelta(hours=-2))
        app = DashboardApp(make_settings(ops_dsn, tmp_path))
        async with procedure_open(app, "Manual ride expiry") as (pilot, screen):
            await pilot.press("y")
            await until(pilot, lambda: notices(app), "a notification")
            assert app.clipboard == str(ride)
            assert f"Copied ride_id {ride}" in notices(app)[-1]
            assert screen.run.target is None  # copying chose nothing


def test_the_copied_id_is_the_rows_own_before_its_rides() -> None:
    booking, ride = str(uuid.uuid4()), str(uuid.uuid4())
    row = {"status": "confirmed", "booking_id": booking, "ride_id": ride}
    assert row_id(row) == ("booking_id", booking)
    assert row_id({"booking_id": None, "ride_id": ride}) == ("ride_id", ride)
    pair = {"ride_id": ride, "passenger_id": "p", "booking_ids": f"{booking}, b2"}
    assert row_id(pair) == ("booking_ids", f"{booking}, b2")
    assert row_id({"id": 7, "job_name": "expire_rides"}) == ("id", "7")
    assert row_id({"check": "seat_mismatch", "open_count": 2}) is None


@asynccontextmanager
async def procedure_on_a_ride(
    ops_dsn: str,
    tmp_path: Path,
    title: str,
    departs_in: timedelta,
    clock: Callable[[], datetime] = utc_now,
) -> AsyncIterator[tuple[Pilot[Any], ProcedureScreen, uuid.UUID, DashboardApp]]:
    """A ride departing ``departs_in`` from now, and the procedure ``title``
    opened on a dashboard: the pilot, the procedure, the ride and the app."""
    async with connected(ops_dsn) as conn:
        ride = await make_ride(conn, departs_in=departs_in)
    app = DashboardApp(make_settings(ops_dsn, tmp_path), clock=clock)
    async with procedure_open(app, title) as (pilot, screen):
        yield pilot, screen, ride, app


async def preview_typed(
    pilot: Pilot[Any], kind: type[RideDialog], ride: uuid.UUID, shown: str
) -> RideDialog:
    """Open the step's dialog (a), type ``ride`` and preview it until ``shown``."""
    await pilot.press("a")
    dialog: RideDialog = await dialog_of(pilot, kind)  # type: ignore[assignment]
    await type_text(pilot, str(ride))
    await pilot.press("enter")
    await shows(pilot, dialog, shown)
    return dialog


async def test_a_ride_typed_in_the_dialog_is_the_one_the_step_checks(
    ops_dsn: str, tmp_path: Path
) -> None:
    """The choice step skipped, the ride typed in the expire dialog instead.

    The timeline dates the write when it was sent, not when its result was
    closed, and says which skipped step the typed ride answers.
    """
    later = [timedelta(0)]
    async with procedure_on_a_ride(
        ops_dsn,
        tmp_path,
        "Manual ride expiry",
        timedelta(hours=-2),
        clock=lambda: utc_now() + later[0],
    ) as (pilot, screen, ride, app):
        await skip_step(pilot, screen, "I know the ride")
        await pilot.press("c")
        await until(pilot, lambda: screen.run.verdict, "the check")
        assert "No ride chosen yet: press a and type its id." in screen_text(screen)
        dialog = await preview_typed(pilot, ExpireRideDialog, ride, "Expires at")
        await type_text(pilot, "expiry job down")
        await pilot.press("enter")
        await shows(pilot, dialog, "Expired.")
        later[0] = timedelta(minutes=10)  # the result read for a while
        await pilot.press("escape")
        await settled(pilot, screen)
        await until(pilot, lambda: screen.run.verdict is not None, "the check")
        assert screen.run.verdict and screen.run.verdict.ok
        entries = app.timeline.entries
        applied = [e for e in entries if "applied" in e.result]
        assert [e.result for e in applied] == [
            f"applied to ride {ride} with the note 'expiry job down' "
            "(see admin_audit_log)"
        ]
        closed = app.clock()
        assert applied[0].at < closed - timedelta(minutes=5)
        answered = [e for e in entries if e.result.endswith("answers step 1")]
        assert [e.at for e in answered] == [applied[0].at]
        await next_step(pilot, screen)
        assert screen.run.ending() == (
            "Finished: every check of this procedure passed."
        )


async def test_an_expiry_before_the_ride_was_due_says_so_in_the_timeline(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with procedure_on_a_ride(
        ops_dsn, tmp_path, "Manual ride expiry", timedelta(hours=3)
    ) as (pilot, screen, ride, app):
        await skip_step(pilot, screen, "the driver cancelled by phone")
        dialog = await preview_typed(pilot, ExpireRideDialog, ride, "Expires at")
        await type_text(pilot, "driver cancelled")
        await pilot.press("enter")
        await shows(pilot, dialog, "This ride is not due yet.")
        await pilot.press("shift+tab", "space", "tab", "enter")
        await shows(pilot, dialog, "Expired.")
        await pilot.press("escape")
        await settled(pilot, screen)
        applied = [e.result for e in app.timeline.entries if "applied" in e.result]
        assert applied == [
            f"applied to ride {ride} before it was due with the note "
            "'driver cancelled' (see admin_audit_log)"
        ]


async def test_a_dialog_closed_before_writing_leaves_the_step_not_done_yet(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Closed without applying (an Enter refused, then Esc), the step's check
    finds the ride still open: not done yet, not a red FAILED, which would read
    as a write that went wrong. Applied, the same check passes."""
    async with procedure_on_a_ride(
        ops_dsn, tmp_path, "Manual ride expiry", timedelta(hours=-2)
    ) as (pilot, screen, ride, _):
        await pilot.press("enter")  # choose the ride
        await until(pilot, lambda: screen.run.target == str(ride), "the choice")
        await next_step(pilot, screen)
        await pilot.press("a")
        dialog = await dialog_of(pilot, ExpireRideDialog)
        await shows(pilot, dialog, "Expires at")
        await pilot.press("escape")
        await settled(pilot, screen)
        verdict = static_text(screen.query_one("#proc-verdict", Static))
        assert "NOT DONE YET" in verdict, verdict
        assert "FAILED" not in verdict
        assert "Nothing was written: a opens the dialog again." in verdict
        assert screen.run.can_advance() is not None  # still not passed
        await pilot.press("a")
        dialog = await dialog_of(pilot, ExpireRideDialog)
        await expired_and_checked(pilot, screen, dialog)
        verdict = static_text(screen.query_one("#proc-verdict", Static))
        assert "PASSED" in verdict and "NOT DONE" not in verdict


async def test_esc_stops_a_procedure_under_way_only_when_pressed_again(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Operators press Esc to clear a notice: that must not throw away the
    ride they chose, as stopping starts the procedure again at step 1."""
    async with procedure_on_a_ride(
        ops_dsn, tmp_path, "Manual ride expiry", timedelta(hours=-2)
    ) as (pilot, screen, ride, app):
        await pilot.press("enter")  # choose the ride
        await until(pilot, lambda: screen.run.target == str(ride), "the choice")
        app.notify("a notice over the step")
        await pilot.press("escape")
        said = "Esc again stops the procedure at step 1 of 2: its timeline is kept"
        await until(pilot, lambda: said in screen_text(screen), "asked")
        assert "b goes back" not in screen_text(screen)  # no step before this one
        assert app.screen is screen and not screen.run.over
        assert not notices(app)
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is not screen, "the procedure closed")
        assert screen.run.stopped


async def test_question_mark_lists_every_key_of_a_procedure(
    ops_dsn: str, tmp_path: Path
) -> None:
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with procedure_open(app, "Manual ride expiry", size=(80, 24)) as (
        pilot,
        screen,
    ):
        keys = {b.key for b in screen.BINDINGS if isinstance(b, Binding)}
        await pilot.press("question_mark")
        message = screen.query_one("#proc-message", Static)
        await until(pilot, lambda: message.display, "the keys")
        listed = " ".join(static_text(message).split())
        assert "y copy the row's id" in listed
        named = {item.split(" ")[0] for item in listed.split(" · ")}
        for key in keys - {"question_mark", "pageup", "pagedown"}:
            assert ("Esc" if key == "escape" else key) in named, key
        assert {"Enter", "PgUp"} <= named
        # All of it in view at 80x24, where the step's foot has little room.
        assert "Esc stop (twice once under way)" in " ".join(
            " ".join(terminal_lines(screen)).split()
        )


async def test_a_typed_ride_already_right_passes_without_a_write(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with procedure_on_a_ride(
        ops_dsn, tmp_path, "Manual seat fix", timedelta(hours=5)
    ) as (pilot, screen, ride, _):
        await skip_step(pilot, screen, "the ride is not listed")
        await preview_typed(pilot, SeatFixDialog, ride, "Nothing to fix")
        await pilot.press("escape")
        await settled(pilot, screen)
        await until(pilot, lambda: screen.run.verdict is not None, "the check")
        assert screen.run.target == str(ride)
        assert "PASSED available_seats is" in screen_text(screen)
        await next_step(pilot, screen)
        assert screen.run.checks_passed


async def test_manual_seat_fix(ops_dsn: str, tmp_path: Path) -> None:
    async with connected(ops_dsn) as conn:
        ride = await seat_mismatch(conn)
        app = DashboardApp(make_settings(ops_dsn, tmp_path))
        async with procedure_open(app, "Manual seat fix") as (pilot, screen):
            await pilot.press("enter")
            await until(pilot, lambda: screen.run.target == str(ride), "the choice")
            await next_step(pilot, screen)
            assert "should_be" in screen_text(screen)
            assert not await check(pilot, screen)
            await pilot.press("a")
            dialog = await dialog_of(pilot, SeatFixDialog)
            await shows(pilot, dialog, "Computed")
            await type_text(pilot, "drifted")
            await pilot.press("enter")
            await shows(pilot, dialog, "Fixed.")
            await pilot.press("escape")
            await settled(pilot, screen)
            await until(
                pilot,
                lambda: screen.run.verdict is not None and screen.run.verdict.ok,
                "the passing check",
            )
            await next_step(pilot, screen)
            assert screen.run.healthy
        assert (
            await conn.fetchval("SELECT available_seats FROM rides WHERE id = $1", ride)
            == 2
        )
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM admin_audit_log WHERE action = 'seat_fix'"
            )
            == 1
        )


async def test_start_of_shift_on_a_healthy_database(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        await seed_platform(conn, rides=40, seed=2)
        for name in (
            "expire_rides",
            "reconcile_seat_counts",
            "repair_missing_notifications",
            "check_system_invariants",
        ):
            await job(conn, name)
        app = DashboardApp(make_settings(ops_dsn, tmp_path))
        async with procedure_open(app, "Start of shift check") as (pilot, screen):
            first = screen_text(screen)
            assert "failed_jobs_24h" in first
            # A step without a check offers no c.
            assert "No check in this step" in first and "c  check" not in first
            await follow(pilot, screen, "unexpected")
            assert screen.run.healthy
            assert "skip" not in [e.action for e in app.timeline.entries]


async def test_start_of_shift_lists_the_counts_to_watch_first_and_flags_them(
    ops_dsn: str, tmp_path: Path
) -> None:
    """At 80x24 the step shows five rows: the counts that should be 0 come
    first, in view, and one that is not 0 says so."""
    async with connected(ops_dsn) as conn:
        await seat_mismatch(conn)
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        screen = await open_from_list(pilot, "Start of shift check")
        await until(pilot, lambda: screen.rowset is not None, "the rows")
        assert screen.rowset is not None
        rows = screen.rowset.rows
        assert [r["key"] for r in rows[:4]] == [
            "expired_active_rides",
            "seat_mismatches",
            "unresolved_violations",
            "failed_jobs_24h",
        ]
        watch = {r["key"]: r["watch"] for r in rows}
        assert watch["seat_mismatches"] == "should be 0"
        assert watch["expired_active_rides"] is None
        assert watch["active_rides"] is None  # not a count to watch
        shown = screen_text(screen)
        assert "seat_mismatches" in shown and "should be 0" in shown


async def followed(pilot: Pilot[Any], screen: ProcedureScreen) -> ProcedureScreen:
    """Press f on the row under the cursor; the procedure it opened, loaded."""
    await pilot.press("f")
    opened: ProcedureScreen = await until(
        pilot,
        lambda: (
            isinstance(pilot.app.screen, ProcedureScreen)
            and pilot.app.screen is not screen
            and pilot.app.screen
        ),
        "the followed procedure",
    )
    await until(pilot, lambda: opened.rowset is not None, "its rows")
    return opened


async def test_start_of_shift_follows_a_failed_run_and_a_failing_check(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        await job(conn, "expire_rides")
        await failed_run(conn)
        await seat_mismatch(conn)
        await job(conn, "check_system_invariants")
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with procedure_open(app, "Start of shift check") as (pilot, shift):
        await next_step(pilot, shift)
        assert "Step 2 of 3: Jobs" in screen_text(shift)
        assert "f  follow its procedure" in screen_text(shift)
        rows = shift.query_one("#proc-rows", DataTable)
        assert shift.rowset is not None
        jobs = [row["job_name"] for row in shift.rowset.rows]
        assert jobs[0] == "check_system_invariants"

        # A run that did not fail leads nowhere; the screen says what f is for.
        await pilot.press("f")
        await until(
            pilot, lambda: "put the cursor on a failed run" in screen_text(shift), "why"
        )
        assert pilot.app.screen is shift

        rows.move_cursor(row=jobs.index("reconcile_seat_counts"))
        await pilot.pause()
        failing = await followed(pilot, shift)
        text = screen_text(failing)
        assert "4.1 Jobs are failing · Step 1 of 3" in text
        assert "Chosen:" in text and "Lock timeout" in text
        assert await check(pilot, failing)
        await pilot.press("escape")
        await settled(pilot, shift)
        assert "Step 2 of 3: Jobs" in screen_text(shift)
        back_on = jobs.index("reconcile_seat_counts")
        await until(pilot, lambda: rows.cursor_row == back_on, "the cursor's row")

        await skip_step(pilot, shift, "reconcile is handled in 4.1")
        assert "Step 3 of 3" in screen_text(shift)
        assert shift.rowset is not None
        checks = [row["check"] for row in shift.rowset.rows]
        rows.move_cursor(row=checks.index("seat_mismatch"))
        await pilot.pause()
        violation = await followed(pilot, shift)
        assert "4.2 Violation: seat_mismatch · Step 1 of" in screen_text(violation)
        await pilot.press("escape")
        await settled(pilot, shift)

    follows = [e for e in app.timeline.entries if e.action == "follow"]
    assert [(e.step, e.result) for e in follows] == [
        ("2. Jobs", "4.1 Jobs are failing"),
        ("3. Run the invariant check", "4.2 Violation: seat_mismatch"),
    ]


async def test_key_lines_wrap_only_between_whole_pairs(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        await job(conn, "expire_rides")
        await failed_run(conn)
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with procedure_open(app, "Start of shift check", size=(80, 24)) as (
        pilot,
        shift,
    ):
        await next_step(pilot, shift)
        keys = shift.query_one("#proc-keys", Widget)
        pairs = [
            ("c", "check"),
            ("n", "next"),
            ("b", "back"),
            ("k", "skip"),
            ("r", "reload"),
            ("f", "follow its procedure"),
            ("m", "timeline"),
            ("Esc", "stop"),
        ]
        lines = pairs_whole(keys, pairs)
        assert len([line for line in lines if line.strip()]) == 2

        await pilot.resize_terminal(60, 20)
        await until(pilot, lambda: keys.size.width == 60, "the narrower line")
        await pilot.pause()
        pairs_whole(keys, pairs)

        await pilot.resize_terminal(120, 40)
        await until(pilot, lambda: keys.size.width == 120, "the wider line")
        await pilot.pause()
        lines = pairs_whole(keys, pairs)
        assert len([line for line in lines if line.strip()]) == 1

        await pilot.press("escape", "escape")  # under way: the second stops it
        listing = await dialog_of(pilot, ProceduresScreen)
        await pilot.resize_terminal(60, 20)
        await until(pilot, lambda: listing.size.width == 60, "the list at 60")
        await pilot.pause()
        pairs_whole(
            listing.query_one(".keys", Widget),
            [("Enter", "open"), ("m", "export timeline"), ("Esc", "back")],
        )


async def test_reload_checks_the_step_again_on_the_new_rows(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        await failed_run(conn)
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with procedure_open(app, "Start of shift check") as (pilot, shift):
        await next_step(pilot, shift)
        assert not await check(pilot, shift)
        assert "FAILED" in screen_text(shift)
        async with connected(ops_dsn) as conn:
            for name in JOBS_BY_NAME:
                await job(conn, name)
        await pilot.press("r")
        await until(
            pilot,
            lambda: shift.run.verdict is not None and shift.run.verdict.ok,
            "the check on the reloaded rows",
        )
        assert "PASSED Every job ran on time" in screen_text(shift)


async def test_a_step_whose_rows_cannot_be_read_shows_no_other_steps_rows(
    ops_dsn: str, tmp_path: Path
) -> None:
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with procedure_open(app, "Start of shift check") as (pilot, shift):
        assert "get_system_health_summary" in static_text(
            shift.query_one("#proc-query", Static)
        )
        async with connected(ops_dsn) as conn:
            await conn.execute("ALTER TABLE system_job_log RENAME TO job_log_gone")
        await pilot.press("n")
        await until(pilot, lambda: shift.error is not None, "the failed read")
        await pilot.pause()
        assert "Step 2 of 3: Jobs" in screen_text(shift)
        rows = shift.query_one("#proc-rows", DataTable)
        assert rows.row_count == 0 and not rows.columns
        query = static_text(shift.query_one("#proc-query", Static))
        assert query == "-- this step's rows could not be read (see below)"
        assert "system_job_log" in static_text(shift.query_one("#proc-message", Static))


async def test_a_pasted_skip_reason_keeps_every_line(
    ops_dsn: str, tmp_path: Path
) -> None:
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with procedure_open(app, "Start of shift check", size=(80, 24)) as (
        pilot,
        shift,
    ):
        await pilot.press("k")
        reason = shift.query_one("#skip-reason", Input)
        await until(pilot, lambda: reason.has_focus, "the reason field")
        reason.post_message(events.Paste("line one | pipe\nline two `code`\n"))
        await until(pilot, lambda: reason.value, "the paste")
        assert reason.value == "line one | pipe / line two `code`"
        await pilot.press("enter")
        await until(pilot, lambda: shift.run.index == 1, "the skip")
    skipped = [e.result for e in app.timeline.entries if e.action == "skip"]
    assert skipped == ["line one | pipe / line two `code`"]


async def test_a_skip_reason_is_cleaned_as_a_note_is(
    ops_dsn: str, tmp_path: Path
) -> None:
    """The timeline and the exported review get what a note would get: a
    reason that shows nothing is refused, and a coloured paste is written in
    its order, without its escape codes."""
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with procedure_open(app, "Start of shift check") as (pilot, shift):
        reason = shift.query_one("#skip-reason", Input)
        await pilot.press("k")
        await until(pilot, lambda: reason.has_focus, "the reason field")
        reason.value = "\u200b\u2060 "
        await pilot.press("enter")
        message = shift.query_one("#proc-message", Static)
        await until(pilot, lambda: "Say why" in static_text(message), "refusal")
        assert shift.run.index == 0
        # Typed keys that arrive in one burst end in an Enter kept as a line
        # break; the message line says why nothing happened.
        reason.value = ""
        from_the_terminal(app, "why\r")
        await until(pilot, lambda: BREAK_HINT in static_text(message), "the hint")
        assert shift.run.index == 0
        # A paste after it follows that line break, its lines in their order.
        from_the_terminal(app, "\x1b[200~line one\r\x1b[31mred\x1b[0m two\x1b[201~")
        said = "why / line one / red two"
        await until(pilot, lambda: reason.value == said, "the paste")
        await pilot.press("enter")
        await until(pilot, lambda: shift.run.index == 1, "the skip")
    skipped = [e.result for e in app.timeline.entries if e.action == "skip"]
    assert skipped == [said]


async def test_a_skip_reason_put_away_waits_for_its_own_step(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Esc puts the reason away and loses nothing: k on the same step brings it
    back with the cursor after it (typing adds to it); another step starts
    with an empty box, not the reason for a step it is not."""
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with procedure_open(app, "Start of shift check") as (pilot, shift):
        reason = shift.query_one("#skip-reason", Input)
        await pilot.press("k")
        await until(pilot, lambda: reason.has_focus, "the reason field")
        await type_text(pilot, "half")
        await pilot.press("escape")
        await until(pilot, lambda: not reason.display, "the box put away")
        await pilot.press("k")
        await until(pilot, lambda: reason.has_focus, "the reason field again")
        assert reason.value == "half" and reason.selection.is_empty
        await type_text(pilot, " of it")
        assert reason.value == "half of it"
        await pilot.press("escape")
        await until(pilot, lambda: not reason.display, "the box put away")
        await next_step(pilot, shift)
        await pilot.press("k")
        await until(pilot, lambda: reason.has_focus, "the box on step 2")
        assert reason.value == ""


def check_entries(app: DashboardApp, step: str) -> list[str]:
    """The results the timeline holds for the checks of one step."""
    return [
        e.result
        for e in app.timeline.entries
        if e.step == step and e.action.startswith("check: ")
    ]


async def checked_again(pilot: Pilot[Any], screen: ProcedureScreen, key: str) -> None:
    """Press c or r and wait until the step's rows are read and judged again."""
    await pilot.press(key)
    await settled(pilot, screen)
    message = screen.query_one("#proc-message", Static)
    await until(pilot, lambda: static_text(message) != "Checking…", "the check")


async def test_one_invariant_check_run_is_one_timeline_entry(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Checking again after the check that follows the run judges the same
    result: the timeline keeps one entry per run of check_system_invariants,
    and one per reading of a step's live rows. A run's entry has the time the
    job was sent, however long the operator read its result."""
    async with connected(ops_dsn) as conn:
        for name in JOBS_BY_NAME:
            await job(conn, name)
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with procedure_open(app, "Start of shift check") as (pilot, shift):
        await next_step(pilot, shift)
        # The jobs step judges the rows it reads: each c is a check of its own.
        assert await check(pilot, shift)
        await checked_again(pilot, shift, "c")
        assert len(check_entries(app, "2. Jobs")) == 2
        await next_step(pilot, shift)
        step = "3. Run the invariant check"
        sent = app.clock()
        await run_job_action(pilot, shift, read_for=1.5)
        closed = app.clock()
        (run,) = [e for e in app.timeline.entries if e.action.startswith("run ")]
        assert sent <= run.at < closed - timedelta(seconds=1), (sent, run.at, closed)
        passed = ["passed: Every invariant check passes: healthy."]
        assert check_entries(app, step) == passed
        await checked_again(pilot, shift, "c")
        await checked_again(pilot, shift, "r")
        assert shift.run.verdict is not None and shift.run.verdict.ok
        assert check_entries(app, step) == passed
        await run_job_action(pilot, shift)
        assert check_entries(app, step) == passed * 2
        runs = [e for e in app.timeline.entries if e.action.startswith("run ")]
        assert len(runs) == 2


def top_line(app: DashboardApp) -> str:
    """The text of the widget drawn on the terminal's first line."""
    widget, _ = app.screen.get_widget_at(2, 0)
    return static_text(widget) if isinstance(widget, Static) else ""


async def test_step_n_of_m_stays_in_view_at_80x24(ops_dsn: str, tmp_path: Path) -> None:
    async with connected(ops_dsn) as conn:
        await seed_platform(conn, rides=40, seed=3, faults=FAULT_KINDS)
        await job(conn, "check_system_invariants")
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await select_violation(pilot, app, "seat_mismatch")
        await pilot.press("g")
        screen = await procedure(pilot)
        await next_step(pilot, screen)
        await run_job_action(pilot, screen)
        await next_step(pilot, screen)
        await run_job_action(pilot, screen)
        page = screen.query_one("#procedure")
        await until(pilot, lambda: page.scroll_y > 0, "the step scrolled to its end")
        assert "open     now" in screen_text(screen)
        assert "Step 3 of 3" in top_line(app)
        # The rows table has the focus, yet PgUp brings the step's purpose back
        # and PgDn its result.
        assert screen.query_one("#proc-rows").has_focus
        purpose = screen.query_one("#proc-purpose")
        for _ in range(5):
            await pilot.press("pageup")
            await pilot.pause()
        assert page.scroll_y == 0
        assert (
            purpose.region.height > 0
            and screen.get_widget_at(purpose.region.x, purpose.region.y)[0] is purpose
        )
        await pilot.press("pagedown")
        await until(pilot, lambda: page.scroll_y > 0, "the step paged down")
        assert "PgUp PgDn  scroll" in screen_text(screen)


def shown_at_once(screen: ProcedureScreen, *ids: str) -> str:
    """The text of the widgets `ids`, each checked drawn on screen unscrolled."""
    texts = []
    for wid in ids:
        widget = screen.query_one(wid, Static)
        region = widget.region
        assert region.height > 0 and region.bottom <= screen.region.bottom, wid
        assert screen.get_widget_at(region.x, region.y)[0] is widget, wid
        texts.append(static_text(widget))
    return "\n".join(texts)


async def test_a_long_query_leaves_the_action_and_expectation_in_view(
    ops_dsn: str, tmp_path: Path
) -> None:
    """At 80x24 4.1's re-run step reads with a 13-line query; its action, what
    is expected and the keys stay on screen, and the rows come before it."""
    async with failed_run_chosen(ops_dsn, tmp_path) as (pilot, screen):
        await to_the_rerun(pilot, screen)
        await settled(pilot, screen)
        shown = shown_at_once(screen, "#proc-action", "#proc-verdict", "#proc-keys")
        assert "Action (a): Run reconcile_seat_counts(); it asks to confirm." in shown
        assert "Expected: the job completes" in shown
        assert " a  act" in shown
        rows = screen.query_one("#proc-rows", DataTable)
        query = screen.query_one("#proc-query", Static)
        assert rows.region.y < query.region.y
        assert rows.region.height > 2 and rows.region.bottom < screen.region.bottom


async def test_read_only_reads_and_runs_queries_but_writes_say_why(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        await failed_run(conn)
    app = DashboardApp(make_settings(ops_dsn, tmp_path, read_only=True))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await loaded(pilot)
        log = app.dashboard.query_one("#log", JobLogTable)
        log.focus()
        await until(pilot, lambda: log.row_count == 1, "the failed run")
        await pilot.press("g")
        screen = await procedure(pilot)
        assert "Lock timeout" in screen_text(screen)
        await check(pilot, screen)
        await to_the_rerun(pilot, screen)
        assert "writes disabled: Read-only session" in screen_text(screen)
        await pilot.press("a")
        await pilot.pause()
        assert app.screen is screen
        assert "Writes are off" in screen_text(screen)
        # Said once, on the step's message line, not again in a notice on it.
        assert not app._notifications
    assert action_log(app) == []


def test_snapshot_procedure_mid_way(
    snap_compare: Any,
    seeded_dsn: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    async def before(pilot: Pilot[Any]) -> None:
        app: DashboardApp = pilot.app  # type: ignore[assignment]
        await loaded(pilot)
        await select_violation(pilot, app, "seat_mismatch")
        await pilot.press("g")
        screen = await procedure(pilot)
        await next_step(pilot, screen)
        await pilot.pause()

    assert snap_compare(
        app_for(seeded_dsn, tmp_path), terminal_size=(80, 24), run_before=before
    )


async def test_a_fixed_violation_does_not_claim_the_system_healthy(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        await seed_platform(
            conn, rides=80, seed=5, faults=["seat_mismatch", "invalid_ride_status"]
        )
        await job(conn, "check_system_invariants")
        app = DashboardApp(make_settings(ops_dsn, tmp_path))
        async with app.run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            await select_violation(pilot, app, "seat_mismatch")
            await pilot.press("g")
            screen = await procedure(pilot)
            await follow(pilot, screen, "not expected")
            assert screen.run.healthy
            final = screen_text(screen)
            assert "Finished: every check of this procedure passed." in final
            assert "1 other check(s) still find problems (" in final
            assert "verified healthy" not in final
            # At 80x24 the ending stays in view below the rows.
            verdict = screen.query_one("#proc-verdict")
            await until(
                pilot,
                lambda: (
                    verdict.region.height > 0
                    and verdict.region.bottom <= screen.region.bottom
                ),
                "the ending in view",
            )


async def test_a_bad_booking_status_is_in_view_at_80x24(
    ops_dsn: str, tmp_path: Path
) -> None:
    """The corrupt value is the first column, not cut off after two ids."""
    async with connected(ops_dsn) as conn:
        await seed_platform(conn, rides=80, seed=5, faults=["invalid_booking_status"])
        await job(conn, "check_system_invariants")
        bad = {
            r["status"]
            for r in await conn.fetch(
                "SELECT status FROM ride_bookings WHERE status NOT IN"
                " ('pending', 'confirmed', 'completed', 'cancelled')"
            )
        }
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await select_violation(pilot, app, "invalid_booking_status")
        await pilot.press("g")
        screen = await procedure(pilot)
        rows = screen.query_one("#proc-rows", DataTable)
        shown = {rows.get_row_at(i)[0].plain for i in range(rows.row_count)}
        assert bad and shown == bad
        assert rows.region.right <= 80


async def test_the_chosen_run_is_named_and_its_row_under_the_cursor(
    ops_dsn: str, tmp_path: Path
) -> None:
    """At 80x24 the id column is off screen: the chosen run reads by its job and
    start, the cursor starts on its row, and times read to the second."""
    async with connected(ops_dsn) as conn:
        await failed_run(conn)
        await conn.execute(
            "INSERT INTO system_job_log (job_name, started_at, completed_at,"
            " status, records_processed, error_message) VALUES ('expire_rides',"
            " now() - interval '5 minutes', now(), 'failed', 0, 'boom')"
        )
        chosen = await conn.fetchrow(
            "SELECT id, started_at FROM system_job_log"
            " WHERE job_name = 'reconcile_seat_counts'"
        )
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        # The older run, reconcile_seat_counts.
        screen = await from_the_failed_run(pilot, app, runs=2, row=1)
        stamp = fmt.full_stamp(chosen["started_at"])
        purpose = static_text(screen.query_one("#proc-purpose", Static))
        assert f"Chosen: reconcile_seat_counts, started {stamp} ({chosen['id']})" in (
            " ".join(purpose.split())
        )
        rows = screen.query_one("#proc-rows", DataTable)
        assert rows.cursor_row == 1
        assert stamp in " ".join(drawn_lines(rows)[2].split())


async def test_choosing_a_row_answers_the_refusal_to_move_on(
    ops_dsn: str, tmp_path: Path
) -> None:
    """n before a row was chosen says why not; once one is chosen, that
    refusal no longer shows beside the step's PASSED."""
    async with connected(ops_dsn) as conn:
        await failed_run(conn)
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with procedure_open(app, "Jobs are failing") as (pilot, screen):
        await pilot.press("c")
        await until(pilot, lambda: screen.run.verdict is not None, "the check")
        await pilot.press("n")
        message = screen.query_one("#proc-message", Static)
        await until(pilot, lambda: "check failed" in static_text(message), "refusal")
        await pilot.press("enter")
        await until(pilot, lambda: screen.run.target is not None, "the choice")
        await pilot.pause()
        assert screen.run.verdict is not None and screen.run.verdict.ok
        assert not message.display and "check failed" not in screen_text(screen)


async def test_the_rerun_step_starts_on_the_chosen_runs_job_when_it_ran_again(
    ops_dsn: str, tmp_path: Path
) -> None:
    """The chosen failed run is no longer its job's latest: the cursor starts
    on that job's row of the latest runs, not on the first job."""
    async with connected(ops_dsn) as conn:
        await failed_run(conn)
        await conn.execute(
            "INSERT INTO system_job_log (job_name, started_at, completed_at,"
            " status, records_processed) VALUES ('reconcile_seat_counts',"
            " now() - interval '5 minutes', now() - interval '4 minutes',"
            " 'completed', 0)"
        )
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await from_the_failed_run(pilot, app, runs=2, row=1)
        assert await check(pilot, screen)
        await to_the_rerun(pilot, screen)
        assert "Step 3 of 3" in screen_text(screen)
        rows = screen.query_one("#proc-rows", DataTable)
        await until(pilot, lambda: rows.row_count == 4, "the latest runs")
        cells = [str(c) for c in rows.get_row_at(rows.cursor_row)]
        assert cells[:2] == ["reconcile_seat_counts", "completed"]
