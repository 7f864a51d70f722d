"""Every write the dashboard makes, by keys, checked on screen and in the database."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from factories import connected, job, make_booking, make_ride
from relay import relayed
from test_ui_dashboard import db, loaded, notices, seat_mismatch
from test_ui_support import (
    OPERATOR,
    drawn_lines,
    make_settings,
    pairs_whole,
    screen_text,
    static_text,
    terminal_lines,
    until,
)
from textual import events
from textual.containers import VerticalScroll
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Checkbox, DataTable, Input, Static

from carpool_tui.db.errors import ConnectionLost
from carpool_tui.db.seed import seed_platform
from carpool_tui.models import Violation
from carpool_tui.ui import fmt
from carpool_tui.ui.actions import ACTIONS_BY_ID
from carpool_tui.ui.app import DashboardApp
from carpool_tui.ui.dialogs import (
    BREAK_HINT,
    CONFIRM_ARMS_AFTER_S,
    NOTE_IS_AN_ID,
    NOTE_REQUIRED,
    ConfirmJobDialog,
    ExpireRideDialog,
    HelpScreen,
    JobRunDialog,
    KeysLine,
    ResolveDialog,
    SeatFixDialog,
    ViolationDialog,
    violation_keys,
)
from carpool_tui.ui.paste import CleanPasteParser
from carpool_tui.ui.widgets import ViolationsTable


async def dialog_of(pilot: Pilot[Any], kind: type[Screen[Any]]) -> Screen[Any]:
    app = pilot.app
    return await until(
        pilot, lambda: isinstance(app.screen, kind) and app.screen, kind.__name__
    )


async def confirm_job(pilot: Pilot[Any], key: str) -> None:
    """Open a job's confirmation with ``key`` and run it, after the pause that
    tells a read dialog from typing meant for somewhere else."""
    await pilot.press(key)
    await dialog_of(pilot, ConfirmJobDialog)
    await pilot.pause(CONFIRM_ARMS_AFTER_S)
    await pilot.press("enter")


async def shows(pilot: Pilot[Any], screen: Screen[Any], text: str) -> str:
    """Wait until the dialog shows `text`; return everything it shows."""
    return await until(
        pilot,
        lambda: text in (shown := screen_text(screen)) and shown,
        f"{text!r} on {type(screen).__name__}",
    )


async def type_text(pilot: Pilot[Any], text: str) -> None:
    await pilot.press(*[("space" if c == " " else c) for c in text])


async def preview_ride(
    pilot: Pilot[Any], key: str, kind: type[Screen[Any]], ride: object, expect: str
) -> tuple[Screen[Any], str]:
    """Open a ride dialog with `key`, type the ride's id, wait for `expect`."""
    await pilot.press(key)
    dialog = await dialog_of(pilot, kind)
    await type_text(pilot, str(ride))
    await pilot.press("enter")
    return dialog, await shows(pilot, dialog, expect)


def action_log(app: DashboardApp) -> list[dict[str, Any]]:
    path = app.settings.action_log
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [json.loads(line) for line in lines]


async def edited_after_preview(
    pilot: Pilot[Any],
    dialog: Screen[Any],
    conn: asyncpg.Connection,
    ride: uuid.UUID,
    *,
    seats: int,
) -> str:
    """Preview a seat fix of `ride` (stored 1), set its seats behind the
    dialog's back, then apply: what the dialog shows about the refusal."""
    await type_text(pilot, str(ride))
    await pilot.press("enter")
    await shows(pilot, dialog, "Available now  1")
    await conn.execute(
        "UPDATE rides SET available_seats = $2 WHERE id = $1", ride, seats
    )
    await type_text(pilot, "fix after edit")
    await pilot.press("enter")
    return await shows(pilot, dialog, "The ride changed since the preview")


async def select_violation(pilot: Pilot[Any], app: DashboardApp, check: str) -> None:
    await pilot.press("t")
    table = app.dashboard.query_one("#violations", ViolationsTable)
    await until(pilot, lambda: table.has_focus, "the violations table")
    row = next(
        i for i, v in enumerate(table.violations.values()) if v.check_name == check
    )
    table.move_cursor(row=row)
    await pilot.pause()


async def seat_fix_of_the_mismatch(
    pilot: Pilot[Any], app: DashboardApp
) -> tuple[SeatFixDialog, str]:
    """Open `s` on the seat_mismatch violation; the dialog and its preview."""
    return await on_the_mismatch(pilot, app, "s", SeatFixDialog, "Computed")


async def resolve_of_the_mismatch(
    pilot: Pilot[Any], app: DashboardApp
) -> tuple[ResolveDialog, str]:
    """Open `x` on the seat_mismatch violation, once it says whether it fails."""
    return await on_the_mismatch(pilot, app, "x", ResolveDialog, "right now")


async def on_the_mismatch(
    pilot: Pilot[Any], app: DashboardApp, key: str, kind: type[Screen[Any]], ready: str
) -> tuple[Any, str]:
    """Press `key` on the seat_mismatch violation; its dialog once it shows
    `ready`, and all it shows."""
    await select_violation(pilot, app, "seat_mismatch")
    await pilot.press(key)
    dialog = await dialog_of(pilot, kind)
    return dialog, await shows(pilot, dialog, ready)


async def test_run_a_job_shows_what_it_does_then_the_result(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        ride = await make_ride(conn, departs_in=timedelta(hours=-2))
        await make_booking(conn, ride, status="confirmed")
        app = DashboardApp(make_settings(ops_dsn, tmp_path))
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            await pilot.press("1")
            confirm = await dialog_of(pilot, ConfirmJobDialog)
            text = screen_text(confirm)
            assert "Run Ride expiry: expire_rides()" in text
            assert "departure_time or available_until has passed" in text
            assert "every 5 minutes" in text
            assert "Enter  run the job" in text and "Esc  cancel" in text
            await pilot.pause(CONFIRM_ARMS_AFTER_S)
            await pilot.press("enter")
            running = await dialog_of(pilot, JobRunDialog)
            shown = await shows(pilot, running, "Done")
            assert (
                "Expired 1 ride, completed 1 booking, created 1 notification" in shown
            )
            # The wait the operator saw and the server's time, as the log has it.
            took = await conn.fetchval(
                "SELECT extract(epoch FROM completed_at - started_at)::float8"
                " FROM system_job_log WHERE job_name = 'expire_rides'"
            )
            assert f"; the job itself took {fmt.duration(took)}." in shown
            await pilot.press("enter")
            await until(pilot, lambda: app.screen is app.dashboard, "the dashboard")

        row = await conn.fetchrow(
            "SELECT status, triggered_by, records_processed FROM system_job_log"
            " WHERE job_name = 'expire_rides'"
        )
        assert row["status"] == "completed"
        assert row["triggered_by"] == OPERATOR
        assert await conn.fetchval("SELECT status FROM rides WHERE id = $1", ride) == (
            "completed"
        )
        logged = action_log(app)
        assert [(e["action"], e["target"], e["outcome"]) for e in logged] == [
            ("run_job", "expire_rides", "ok")
        ]
        assert logged[0]["operator"] == OPERATOR


@asynccontextmanager
async def rides_locked(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """Jobs wait for ever on the rides table, locked by another session; the
    yielded connection watches."""
    conn = await db(dsn)
    name = await conn.fetchval("SELECT current_database()")
    await conn.execute(f'ALTER DATABASE "{name}" SET carpool.lock_timeout = 0')
    blocker = await db(dsn)
    try:
        await blocker.execute("BEGIN; LOCK TABLE rides IN ACCESS EXCLUSIVE MODE")
        yield conn
    finally:
        await blocker.close()
        await conn.close()


async def test_an_id_typed_into_the_dashboard_runs_no_job(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Typing a ride id with the dashboard in focus: its 3 opens the job's
    confirmation, and the Enter that ends the id must not run the job."""
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press(*"93a1a098-2c51", "enter")
        confirm = await dialog_of(pilot, ConfirmJobDialog)
        await shows(pilot, confirm, "Not run: that key came too soon")
        await pilot.press("y")
        await pilot.pause()
        assert app.screen is confirm
        await pilot.pause(CONFIRM_ARMS_AFTER_S)
        await pilot.press("enter")
        running = await dialog_of(pilot, JobRunDialog)
        await shows(pilot, running, "Done")
    async with connected(ops_dsn) as conn:
        runs = await conn.fetchval("SELECT count(*) FROM system_job_log")
    assert runs == 1


async def test_a_job_whose_server_is_lost_says_its_outcome_is_unknown(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with rides_locked(ops_dsn), relayed(ops_dsn) as (relay, through):
        app = DashboardApp(make_settings(through, tmp_path))
        async with app.run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            await confirm_job(pilot, "1")
            running = await dialog_of(pilot, JobRunDialog)
            await until(pilot, lambda: app.repo.job_running, "the job")
            await asyncio.sleep(0.5)
            await relay.stop()  # the network is gone, for every connection
            shown = await shows(pilot, running, "Outcome unknown")
            assert "The job may have completed or failed on the server" in shown
            assert shown.count("Outcome unknown") == 1  # said once, not twice
            assert "Running the job again is safe" in shown
    assert [(e["action"], e["outcome"]) for e in action_log(app)] == [
        ("run_job", "unknown")
    ]


async def test_cancel_reaches_the_server_and_the_failure_is_shown(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with rides_locked(ops_dsn) as conn:
        app = DashboardApp(make_settings(ops_dsn, tmp_path))
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            await confirm_job(pilot, "1")
            running = await dialog_of(pilot, JobRunDialog)
            await shows(pilot, running, "Running")
            await shows(pilot, running, "c  cancel the job on the server")
            await until(
                pilot,
                lambda: app.repo.job_running,
                "the job connection",
            )
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND application_name = 'carpool-tui job expire_rides'"
            )
            assert waiting == 1
            for key in ("escape", "q"):  # neither closes it while it runs
                await pilot.press(key)
                assert app.screen is running
            await pilot.press("c")
            shown = await shows(pilot, running, "Failed")
            assert "57014" in shown
            # What to do next, as procedure 4.1 says it.
            assert "Cancelled: Someone cancelled the run" in shown
            await pilot.press("q")  # closes the finished run, not the app
            await until(pilot, lambda: app.screen is app.dashboard, "the dashboard")
            assert app.is_running
        row = await conn.fetchrow(
            "SELECT status, sqlstate FROM system_job_log"
            " WHERE job_name = 'expire_rides'"
        )
        assert (row["status"], row["sqlstate"]) == ("failed", "57014")
        assert action_log(app)[-1]["outcome"] == "failed"


async def test_a_lost_poll_connection_leaves_a_running_job_alone(
    ops_dsn: str, tmp_path: Path
) -> None:
    conn = await db(ops_dsn)
    name = await conn.fetchval("SELECT current_database()")
    await conn.execute(f'ALTER DATABASE "{name}" SET carpool.lock_timeout = 0')
    ride = await make_ride(conn, departs_in=timedelta(hours=-3))
    await make_booking(conn, ride, status="confirmed")
    blocker = await db(ops_dsn)
    try:
        # The job waits to write its notification; the panels never read there.
        await blocker.execute("BEGIN; LOCK TABLE notifications IN SHARE MODE")
        app = DashboardApp(make_settings(ops_dsn, tmp_path))
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            await confirm_job(pilot, "1")
            running = await dialog_of(pilot, JobRunDialog)
            await until(pilot, lambda: app.repo.job_running, "the job connection")
            # A poll round times out, as over a link that stalls for a while.
            polls = app.repo.poll

            async def stalled(**_: Any) -> Any:
                app.repo.poll = polls  # type: ignore[method-assign]
                raise ConnectionLost("Reading the health summary: timed out", "")

            app.repo.poll = stalled  # type: ignore[method-assign]
            app.dashboard.start_round()
            await until(pilot, lambda: app.dashboard.failures >= 1, "the poll to fail")
            await pilot.pause(0.5)
            assert app.repo.job_running
            await blocker.execute("ROLLBACK")
            await shows(pilot, running, "Done")
        status = await conn.fetchval(
            "SELECT status FROM system_job_log WHERE job_name = 'expire_rides'"
        )
        assert status == "completed"
        assert await conn.fetchval("SELECT status FROM rides WHERE id = $1", ride) == (
            "completed"
        )
    finally:
        await blocker.close()
        await conn.close()


async def seat_fix_audit(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT operator, note, target_id FROM admin_audit_log"
        " WHERE operator IS NOT NULL ORDER BY created_at"
    )


async def test_seat_fix_from_a_violation_needs_a_note_then_applies(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        ride = await seat_mismatch(conn)
        await job(conn, "check_system_invariants")
        app = DashboardApp(make_settings(ops_dsn, tmp_path))
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            dialog, shown = await seat_fix_of_the_mismatch(pilot, app)
            assert str(ride) in shown
            assert "Total seats    4" in shown
            assert "Available now  1" in shown
            assert "Computed       2 = 4 total - 2 seats held by 1" in shown
            assert "available_seats 1 → 2" in shown

            await pilot.press("enter")  # empty note
            await shows(pilot, dialog, NOTE_REQUIRED)
            assert await seat_fix_audit(conn) == []

            # Another ride's id typed into the note: refused, not applied to
            # the ride in the preview.
            # ... whole, or the 8-character start the tables show.
            for other in ("0b7d5a3e-2f44-4c4e-9a55-3d2b8f0e9c11", "0b7d5a3e"):
                dialog.query_one("#note", Input).value = ""
                await type_text(pilot, other)
                await pilot.press("enter")
                shown = await shows(pilot, dialog, NOTE_IS_AN_ID)
                assert "type its id in the ride field above" in shown
                assert await seat_fix_audit(conn) == []
                dialog.query_one("#message", Static).update("")
            dialog.query_one("#note", Input).value = ""

            await type_text(pilot, "drift after double decrement")
            await pilot.press("enter")
            await shows(pilot, dialog, "Fixed.")
            # The preview is read again: the ride as it is now.
            shown = await shows(pilot, dialog, "Nothing to fix")
            assert "available_seats 1 → 2" not in shown and "Fixed." in shown
            assert dialog.query_one("#note", Input).disabled
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is app.dashboard, "the dashboard")

        seats = await conn.fetchval(
            "SELECT available_seats FROM rides WHERE id = $1", ride
        )
        assert seats == 2
        audit = await seat_fix_audit(conn)
        assert [(a["operator"], a["note"], a["target_id"]) for a in audit] == [
            (OPERATOR, "drift after double decrement", ride)
        ]
        logged = action_log(app)
        assert [(e["action"], e["target"], e["note"]) for e in logged] == [
            ("seat_fix", str(ride), "drift after double decrement")
        ]


async def test_esc_keeps_what_was_typed_until_it_is_written(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Esc pressed to clear a notice closes the dialog: what was typed comes
    back when the same dialog opens on the same thing, and only there."""
    (ride,) = await checked_mismatches(ops_dsn, 1)
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        # A ride id typed into the seat fix opened with nothing chosen.
        await pilot.press("s")
        typed = await dialog_of(pilot, SeatFixDialog)
        await type_text(pilot, str(ride)[:20])
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.dashboard, "the dashboard")
        await pilot.press("s")
        typed = await dialog_of(pilot, SeatFixDialog)
        await shows(pilot, typed, "What you typed when this dialog was last closed")
        assert typed.query_one("#ride", Input).value == str(ride)[:20]
        await pilot.press("escape")

        # A note typed into the resolve of a violation.
        resolve, _ = await resolve_of_the_mismatch(pilot, app)
        await type_text(pilot, "drift from the double decrement")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.dashboard, "the dashboard")
        await pilot.press("s")  # the mismatch is still the chosen row
        seat_fix = await dialog_of(pilot, SeatFixDialog)
        await shows(pilot, seat_fix, "Computed")
        assert seat_fix.query_one("#note", Input).value == ""  # another dialog
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.dashboard, "the dashboard")
        await pilot.press("x")
        resolve = await dialog_of(pilot, ResolveDialog)
        await shows(pilot, resolve, "right now")
        note = resolve.query_one("#note", Input)
        assert note.value == "drift from the double decrement"
        await pilot.press("enter")
        await shows(pilot, resolve, "Resolved.")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.dashboard, "the dashboard")
        assert app.drafts == {("SeatFixDialog", ""): {"#ride": str(ride)[:20]}}
    async with connected(ops_dsn) as conn:
        notes = await conn.fetch(
            "SELECT notes FROM invariant_violations WHERE resolved_at IS NOT NULL"
        )
    assert [r["notes"] for r in notes] == ["drift from the double decrement"]


async def test_a_note_typed_for_another_ride_is_not_put_back_on_the_first(
    ops_dsn: str, tmp_path: Path
) -> None:
    """A seat fix opened on one ride, turned to another, and closed: its note
    was for the other ride, so it comes back with that ride's id, never under
    the ride the dialog opens on, where one Enter would write it."""
    rides = [str(r) for r in await checked_mismatches(ops_dsn, 2)]
    app = DashboardApp(make_settings(ops_dsn, tmp_path, refresh=60))
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        dialog, _ = await seat_fix_of_the_mismatch(pilot, app)
        first = dialog.initial
        other = next(r for r in rides if r != first)
        ride = dialog.query_one("#ride", Input)
        ride.value = other
        ride.focus()
        await pilot.press("enter")
        await until(pilot, lambda: dialog.previewed() == uuid.UUID(other), "other")
        dialog.query_one("#note", Input).value = "meant for the other ride"
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.dashboard, "the dashboard")
        assert app.drafts == {
            ("SeatFixDialog", ""): {
                "#ride": other,
                "#note": "meant for the other ride",
            }
        }
        # On its own ride, a note kept is put back and said, after the preview.
        for note in ("", "meant for this one"):
            await pilot.press("s")  # the mismatch is still the chosen row
            dialog = await dialog_of(pilot, SeatFixDialog)
            await shows(pilot, dialog, "Computed")
            assert dialog.initial == first
            assert dialog.query_one("#note", Input).value == note
            if note:
                await shows(pilot, dialog, "What you typed when this dialog was")
            dialog.query_one("#note", Input).value = "meant for this one"
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is app.dashboard, "the dashboard")


@asynccontextmanager
async def seat_fix_typed(
    ops_dsn: str, tmp_path: Path
) -> AsyncIterator[
    tuple[asyncpg.Connection, uuid.UUID, DashboardApp, Pilot[Any], SeatFixDialog]
]:
    """A ride with a seat mismatch, and the seat-fix dialog opened empty (s) on
    the dashboard: a connection, the ride, the app, the pilot and the dialog."""
    async with connected(ops_dsn) as conn:
        ride = await seat_mismatch(conn)
        app = DashboardApp(make_settings(ops_dsn, tmp_path))
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            await pilot.press("s")
            yield conn, ride, app, pilot, await dialog_of(pilot, SeatFixDialog)


async def test_seat_fix_by_typed_id_validates_and_handles_a_stale_preview(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with seat_fix_typed(ops_dsn, tmp_path) as (conn, ride, app, pilot, dialog):
        await type_text(pilot, "ride-42")
        await pilot.press("enter")
        await shows(pilot, dialog, "'ride-42' is not a valid ride id")

        await pilot.press(*["backspace"] * 7)
        await type_text(pilot, str(uuid.UUID(int=7)))
        await pilot.press("enter")
        await shows(pilot, dialog, "Refused (not_found)")

        await pilot.press(*["backspace"] * 36)
        shown = await edited_after_preview(pilot, dialog, conn, ride, seats=3)
        assert "Available now  3" in shown
        assert "available_seats 3 → 2" in shown
        assert await seat_fix_audit(conn) == []

        await pilot.press("enter")
        await shows(pilot, dialog, "Fixed.")
        seats = await conn.fetchval(
            "SELECT available_seats FROM rides WHERE id = $1", ride
        )
        assert seats == 2
        assert [a["note"] for a in await seat_fix_audit(conn)] == ["fix after edit"]
        assert [e["outcome"] for e in action_log(app)] == ["stale_preview", "ok"]


async def test_tab_from_a_typed_ride_id_previews_it_and_opens_the_note(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Tab after the ride id does what Enter does: before the preview the note
    is closed, so a note typed after a Tab that went nowhere landed in the id."""
    async with seat_fix_typed(ops_dsn, tmp_path) as (conn, ride, _app, pilot, dialog):
        await type_text(pilot, str(ride))
        await pilot.press("tab")
        await shows(pilot, dialog, "Available now")
        note = dialog.query_one("#note", Input)
        assert dialog.focused is note
        await type_text(pilot, "tabbed to the note")
        await pilot.press("enter")
        await shows(pilot, dialog, "Fixed.")
        assert dialog.query_one("#ride", Input).value == str(ride)
        assert [a["note"] for a in await seat_fix_audit(conn)] == ["tabbed to the note"]


@pytest.mark.parametrize(
    ("total", "said"),
    [
        (-2147483648, "-2147483647 (-2147483648 total - 1 seats held by 1"),
        (-1, "-2 = -1 total - 1 seats held by 1"),
    ],
)
async def test_a_seat_fix_of_a_ride_with_a_total_below_zero_says_so(
    ops_dsn: str, tmp_path: Path, total: int, said: str
) -> None:
    """The seats held come from the bookings, not from the computed value,
    which the server holds to the integer range; no stored value is right."""
    async with connected(ops_dsn) as conn:
        ride = await make_ride(conn, total_seats=4)
        await make_booking(conn, ride, status="confirmed")
        await conn.execute(
            "UPDATE rides SET total_seats = $2 WHERE id = $1", ride, total
        )
    app = DashboardApp(make_settings(ops_dsn, tmp_path, refresh=60))
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("s")
        dialog = await dialog_of(pilot, SeatFixDialog)
        await type_text(pilot, str(ride))
        await pilot.press("enter")
        shown = await shows(pilot, dialog, "below 0")
        assert said in " ".join(shown.split())
        assert "correct the ride's total by hand" in " ".join(shown.split())
        assert "bookings hold more seats than exist" not in shown


async def test_a_finished_ride_leaves_the_keys_on_the_ride_id(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Opened on a sample's ride that is already finished: typing goes to the
    ride field, for another ride, instead of nowhere."""
    async with connected(ops_dsn) as conn:
        await seed_platform(
            conn, rides=60, seed=3, faults=["active_booking_on_terminal_ride"]
        )
        await job(conn, "check_system_invariants")
        other = await make_ride(conn, departs_in=timedelta(hours=-2))
        app = DashboardApp(make_settings(ops_dsn, tmp_path))
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            await select_violation(pilot, app, "active_booking_on_terminal_ride")
            await pilot.press("e")
            dialog = await dialog_of(pilot, ExpireRideDialog)
            await shows(pilot, dialog, "Already finished")
            ride_field = dialog.query_one("#ride", Input)
            assert app.focused is ride_field
            ride_field.value = ""
            await type_text(pilot, str(other))
            await pilot.press("enter")
            await shows(pilot, dialog, "Due              yes")


async def test_resolve_shows_if_the_check_still_fails_and_needs_a_note(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        await seat_mismatch(conn)
        await job(conn, "check_system_invariants")
        violation = await conn.fetchval(
            "SELECT id FROM invariant_violations WHERE check_name = 'seat_mismatch'"
        )
        app = DashboardApp(make_settings(ops_dsn, tmp_path))
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            dialog, shown = await resolve_of_the_mismatch(pilot, app)
            assert "Its check still fails right now (1 now)" in shown
            await pilot.press("enter")
            await shows(pilot, dialog, NOTE_REQUIRED)
            await type_text(pilot, str(violation))
            await pilot.press("enter")
            shown = await shows(pilot, dialog, NOTE_IS_AN_ID)
            assert "ride field" not in shown  # this dialog has none
            dialog.query_one("#note", Input).value = ""
            await type_text(pilot, "known drift, queue ticket 42")
            await pilot.press("enter")
            await shows(pilot, dialog, "Resolved.")
            await pilot.press("escape")
            table = app.dashboard.query_one("#violations", ViolationsTable)
            await until(pilot, lambda: table.row_count == 0, "the row to go")
        row = await conn.fetchrow(
            "SELECT resolved_at, notes, resolved_by FROM invariant_violations"
            " WHERE id = $1",
            violation,
        )
        assert row["resolved_at"] is not None
        assert (row["notes"], row["resolved_by"]) == (
            "known drift, queue ticket 42",
            OPERATOR,
        )
        audit = await seat_fix_audit(conn)
        assert [(a["operator"], a["note"]) for a in audit] == [
            (OPERATOR, "known drift, queue ticket 42")
        ]
        assert action_log(app)[0]["action"] == "resolve_violation"
        # Done from the dashboard, it is in the incident timeline as well.
        assert [(e.procedure, e.action, e.result) for e in app.timeline.entries] == [
            (
                "dashboard",
                f"resolve_violation {violation}",
                "ok; note: known drift, queue ticket 42",
            )
        ]


async def test_a_violation_resolved_by_someone_else_first_says_who_and_why(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        await seat_mismatch(conn)
        await job(conn, "check_system_invariants")
        resolve = (
            "SELECT ops_resolve_violation(id, 'bob', $1) FROM invariant_violations"
        )
        app = DashboardApp(make_settings(ops_dsn, tmp_path))
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            # Resolved while this dialog is open: the resolve is refused.
            dialog, _ = await resolve_of_the_mismatch(pilot, app)
            await conn.execute(resolve, "fixed by INC-9")
            await type_text(pilot, "my note")
            await pilot.press("enter")
            shown = await shows(pilot, dialog, "Nothing was written.")
            assert (
                "Already resolved at 20" in shown and " UTC by bob: fixed by" in shown
            )
            assert dialog.query_one(".keys", KeysLine).pairs == (("Esc", "close"),)
            await pilot.press("escape")
            table = app.dashboard.query_one("#violations", ViolationsTable)
            await until(pilot, lambda: table.row_count == 0, "the row to go")
            # Resolved after the list was read: the dialog says so at once.
            await job(conn, "check_system_invariants")
            app.dashboard.action_refresh()
            await until(pilot, lambda: table.row_count == 1, "the new row")
            await conn.execute(resolve, "second time")
            assert table.has_focus
            await pilot.press("x")
            dialog = await dialog_of(pilot, ResolveDialog)
            shown = await shows(pilot, dialog, "Nothing to resolve.")
            assert " UTC by bob: second time" in shown
            assert "safe to resolve" not in shown
            assert dialog.query_one(".keys", KeysLine).pairs == (("Esc", "close"),)
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM admin_audit_log WHERE operator = $1", OPERATOR
            )
            == 0
        )


@asynccontextmanager
async def resolving(
    dsn: str, tmp_path: Path, size: tuple[int, int]
) -> AsyncIterator[tuple[DashboardApp, Pilot[Any], ResolveDialog]]:
    """The resolve dialog open on a seat_mismatch violation, at ``size``."""
    async with connected(dsn) as conn:
        await seat_mismatch(conn)
        await job(conn, "check_system_invariants")
    app = DashboardApp(make_settings(dsn, tmp_path, refresh=60))
    async with app.run_test(size=size) as pilot:
        await loaded(pilot)
        dialog, _ = await resolve_of_the_mismatch(pilot, app)
        yield app, pilot, dialog


async def stored_note(dsn: str) -> str:
    """The note the seat_mismatch violation was resolved with."""
    async with connected(dsn) as conn:
        note: str = await conn.fetchval(
            "SELECT notes FROM invariant_violations WHERE check_name = 'seat_mismatch'"
        )
    return note


def from_the_terminal(app: DashboardApp, data: str) -> None:
    """`data` as the terminal sends it, read by the parser the app's drivers
    use: the events it makes reach the app in one burst, as from a driver."""
    for event in CleanPasteParser().feed(data):
        app.post_message(event)


@pytest.mark.parametrize(
    ("data", "written"),
    [
        # A bracketed paste that holds colour codes: Textual's parser alone
        # would send 32 characters from an escape on as keys, and the rest as
        # a paste after them.
        (
            "\x1b[200~first line\rsecond \x1b[1mbold\x1b[0m line\rthird\x1b[201~",
            "first line / second bold line / third",
        ),
        (
            "\x1b[200~deploy \x1b[1mfailed\x1b[0m on web-3 restarted pgbouncer"
            " seats fixed by reconcile\x1b[201~",
            "deploy failed on web-3 restarted pgbouncer seats fixed by reconcile",
        ),
        (
            "\x1b[200~line one\tTAB\x1b[31mred\x1b[0m \u202eRLO end\nline two"
            "\x07bell\nline three\x1b[201~",
            "line one TABred RLO end / line twobell / line three",
        ),
        (
            "\x1b[200~a [bold]x[/] \x1b[31m red\rsecond\r\x1b[201~",
            "a [bold]x[/]  red / second",
        ),
        ("\x1b[200~first line\r\x1b[31msecond\x1b[201~", "first line / second"),
        # A line that is only an escape code is dropped, as a blank line is.
        ("\x1b[200~first\r\x1b[31m\rthird\r\x1b[201~", "first / third"),
        # A link: an operating-system command, ended by ESC backslash.
        (
            "\x1b[200~see \x1b]8;;http://x\x1b\\text\x1b]8;;\x1b\\ end\x1b[201~",
            "see text end",
        ),
        # A paste where the terminal does not bracket it: keys, one per line.
        ("first line\rsecond line\r", "first line / second line"),
        # An Enter read with a paste is its last line break, not a write.
        ("\x1b[200~exp \x1b[1mnote\x1b[0m tail\x1b[201~\r", "exp note tail"),
        # Only CR and LF break lines; other spacing controls become spaces.
        ("\x1b[200~ff\x0cvt\x0bfs\x1cgs\x1drs\x1eend\x1b[201~", "ff vt fs gs rs end"),
    ],
    ids=[
        "escape-mid-line",
        "escape-past-32-characters",
        "escape-tab-bell-override",
        "escape-after-space",
        "escape-at-line-start",
        "escape-only-line",
        "link",
        "keys",
        "enter-read-with-the-paste",
        "controls-that-are-no-line-breaks",
    ],
)
async def test_a_paste_whose_line_breaks_arrive_as_keys_writes_nothing_until_enter(
    ops_dsn: str, tmp_path: Path, data: str, written: str
) -> None:
    """Enter keys that came in the same burst as the text before them are a
    pasted line break, not someone pressing Enter: they join the lines, and
    only an Enter pressed on its own resolves. The note is written in the
    order it was pasted, without the escape codes' text."""
    async with resolving(ops_dsn, tmp_path, (120, 40)) as (app, pilot, dialog):
        note = dialog.query_one("#note", Input)
        from_the_terminal(app, data)
        await pilot.pause(0.3)
        assert not dialog.done and not dialog.applying
        assert note.value == written
        await pilot.press("enter")
        await shows(pilot, dialog, "Resolved.")
    assert await stored_note(ops_dsn) == written


async def test_a_coloured_paste_read_in_pieces_keeps_its_order(
    ops_dsn: str, tmp_path: Path
) -> None:
    """A busy app reads a long paste in pieces, with gaps longer than keys
    typed together, and a piece may end inside an escape code."""
    lines = [f"line{n} \x1b[1mbold{n}\x1b[0m" for n in range(12)]
    data = "\x1b[200~start \x1b[31mred\x1b[0m\r" + "\r".join(lines) + "\x1b[201~"
    written = " / ".join(["start red", *(f"line{n} bold{n}" for n in range(12))])
    async with resolving(ops_dsn, tmp_path, (120, 40)) as (app, pilot, dialog):
        note = dialog.query_one("#note", Input)
        parser = CleanPasteParser()
        # Each piece ends inside an escape code, long before the next comes.
        pieces = data.split("[1m")
        for n, piece in enumerate(pieces):
            for event in parser.feed(piece if n == 0 else "[1m" + piece):
                app.post_message(event)
            await pilot.pause(0.03)
        await until(pilot, lambda: note.value == written, "the whole paste")
        await pilot.pause(0.6)  # past the hint: nothing was written meanwhile
        assert not dialog.done and not dialog.applying
        await pilot.press("enter")
        await shows(pilot, dialog, "Resolved.")
    assert await stored_note(ops_dsn) == written


async def test_an_enter_taken_for_a_line_break_says_so_when_nothing_follows(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Typed keys that reach the app in one packet (a laggy link, a script)
    end in an Enter that is kept as a line break: the operator is told why
    nothing was written, and the next Enter writes."""
    async with resolving(ops_dsn, tmp_path, (80, 24)) as (app, pilot, dialog):
        from_the_terminal(app, "checked with the driver\r")
        # On the dialog's message line: a notice would lie over the result.
        await shows(pilot, dialog, BREAK_HINT)
        assert not dialog.done and not dialog.applying
        assert not any(BREAK_HINT in n for n in notices(app))
        await pilot.press("enter")
        shown = await shows(pilot, dialog, "Resolved.")
        assert BREAK_HINT not in shown
    assert await stored_note(ops_dsn) == "checked with the driver"


async def test_an_enter_bounced_after_the_write_leaves_its_result(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Two Enters in one read (a key bounce, a laggy link): the first writes,
    and the second must not say that nothing was written."""
    async with resolving(ops_dsn, tmp_path, (80, 24)) as (app, pilot, dialog):
        await type_text(pilot, "bounced enter")
        await pilot.pause(0.1)
        from_the_terminal(app, "\r\r")
        await shows(pilot, dialog, "Resolved.")
        await pilot.pause(0.6)  # past the line-break hint's delay
        shown = screen_text(dialog)
        assert "Resolved." in shown and BREAK_HINT not in shown
    assert await stored_note(ops_dsn) == "bounced enter"


async def test_a_pasted_note_keeps_every_line_and_a_blank_one_is_refused(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with resolving(ops_dsn, tmp_path, (80, 24)) as (_, pilot, dialog):
        note = dialog.query_one("#note", Input)
        # Drawn blank, but not empty: braille blank, Hangul filler, ZWSP.
        note.value = "\u2800\u3164\u200b"
        await pilot.press("enter")
        await shows(pilot, dialog, NOTE_REQUIRED)
        note.value = ""
        note.post_message(events.Paste("\u200b\n\u2800\n\u034f\ufe0f\n"))
        await pilot.pause()
        assert note.value == ""  # nothing in it would show
        note.post_message(
            events.Paste(
                "\nDuplicate cancelled\tby support\r\n\u200b\nINC-4711: ok\x07\n"
            )
        )
        await until(pilot, lambda: note.value, "the paste")
        assert note.value == "Duplicate cancelled by support / INC-4711: ok"
        await pilot.press("enter")
        await shows(pilot, dialog, "Resolved.")
    assert await stored_note(ops_dsn) == "Duplicate cancelled by support / INC-4711: ok"


async def test_expire_one_ride_previews_then_expires(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        ride = await make_ride(conn, departs_in=timedelta(hours=-3))
        booking = await make_booking(conn, ride, status="confirmed")
        app = DashboardApp(make_settings(ops_dsn, tmp_path))
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            dialog, shown = await preview_ride(
                pilot, "e", ExpireRideDialog, ride, "Due              yes"
            )
            assert "1 pending/confirmed booking below" in shown
            assert str(booking) in shown
            await pilot.press("enter")
            await shows(pilot, dialog, NOTE_REQUIRED)
            await type_text(pilot, "expiry job down")
            await pilot.press("enter")
            await shows(pilot, dialog, "Expired.")
            # The preview is read again: the ride as it is now, nothing to do.
            shown = await shows(pilot, dialog, "Already finished")
            assert f"{ride} (completed)" in shown
            assert "(active)" not in shown
            assert "Due              no (finished)" in shown
            assert "Expired." in shown
        assert await conn.fetchval("SELECT status FROM rides WHERE id = $1", ride) == (
            "completed"
        )
        status = await conn.fetchval(
            "SELECT status FROM ride_bookings WHERE id = $1", booking
        )
        assert status == "completed"
        audit = await seat_fix_audit(conn)
        assert [(a["operator"], a["note"]) for a in audit] == [
            (OPERATOR, "expiry job down")
        ]


async def test_a_finished_ride_with_open_bookings_points_to_expire_rides(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Expiring cannot close the open bookings of a ride that already ended
    (INV-STATE-001); the dialog says what does."""
    async with connected(ops_dsn) as conn:
        ride = await make_ride(conn, departs_in=timedelta(hours=-3))
        await make_booking(conn, ride, status="confirmed")
        await conn.execute("UPDATE rides SET status = 'completed' WHERE id = $1", ride)
        app = DashboardApp(make_settings(ops_dsn, tmp_path))
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            dialog, shown = await preview_ride(
                pilot, "e", ExpireRideDialog, ride, "Already finished"
            )
            assert "with 1 booking(s) below still open" in shown
            assert "The expire_rides job does" in shown
            assert dialog.query_one("#note", Input).disabled
            # Beside the fields too, where an 80x24 terminal shows it.
            await shows(pilot, dialog, "the expire_rides job (1) closes them")


async def expire_after_change(
    pilot: Pilot[Any], conn: asyncpg.Connection, ride: uuid.UUID, change: str
) -> Screen[Any]:
    """Preview expiring `ride`, run `change` on it ($1), then press Enter."""
    dialog, _ = await preview_ride(
        pilot, "e", ExpireRideDialog, ride, "Due              yes"
    )
    await conn.execute(change, ride)
    await type_text(pilot, "expiry job down")
    await pilot.press("enter")
    return dialog


async def test_a_ride_finished_after_the_preview_is_shown_finished(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        ride = await make_ride(conn, departs_in=timedelta(hours=-3))
        app = DashboardApp(make_settings(ops_dsn, tmp_path))
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            # The driver completes the ride between the preview and Enter.
            dialog = await expire_after_change(
                pilot, conn, ride, "UPDATE rides SET status = 'completed' WHERE id = $1"
            )
            shown = await shows(pilot, dialog, "Already finished")
            assert "Refused (already_terminal)" in shown
            assert "Nothing was written." in shown
            assert f"{ride} (completed)" in shown and "(active)" not in shown
            assert dialog.query_one("#note", Input).disabled
            assert dialog.query_one("#ride", Input).has_focus
        assert await seat_fix_audit(conn) == []


async def test_a_ride_deleted_after_the_preview_leaves_no_preview(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        ride = await make_ride(conn, departs_in=timedelta(hours=-3))
        app = DashboardApp(make_settings(ops_dsn, tmp_path))
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            dialog = await expire_after_change(
                pilot, conn, ride, "DELETE FROM rides WHERE id = $1"
            )
            shown = await shows(pilot, dialog, "Refused (not_found)")
            assert "Due" not in shown and str(ride) in shown
            assert isinstance(dialog, ExpireRideDialog)
            assert dialog.preview is None
            assert dialog.query_one("#note", Input).disabled


async def test_a_stale_preview_that_needs_no_fix_offers_no_apply(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with seat_fix_typed(ops_dsn, tmp_path) as (conn, ride, _app, pilot, dialog):
        # Someone fixes the ride by hand: the fresh preview needs no fix.
        shown = await edited_after_preview(pilot, dialog, conn, ride, seats=2)
        assert "Nothing to fix: the stored value is right." in shown
        assert "nothing is left to fix" in shown
        assert "press Enter on the note to apply" not in shown
        assert await seat_fix_audit(conn) == []


HOSTILE_RIDE_ID = "6fdf766f\n[b red]boom[/]\x1b[2J"


async def test_a_sample_ride_id_that_is_not_a_uuid_is_not_prefilled(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        await conn.execute(
            "INSERT INTO invariant_violations (check_name, check_id, severity,"
            " violation_count, sample_data, detected_at, last_seen_at)"
            " VALUES ('seat_mismatch', 'INV-SEAT-001', 'critical', 1,"
            " jsonb_build_array(jsonb_build_object('name', 'seat_mismatch',"
            " 'ride_id', $1::text)), now(), now()),"
            " ('expired_active_ride', 'INV-RIDE-003', 'warning', 1,"
            " jsonb_build_array(jsonb_build_object('name', 'expired_active_ride',"
            " 'ride_id', $1::text)), now(), now())",
            HOSTILE_RIDE_ID,
        )
        app = DashboardApp(make_settings(ops_dsn, tmp_path))
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            await select_violation(pilot, app, "seat_mismatch")
            table = app.dashboard.query_one("#violations", ViolationsTable)
            for check, key, kind in (
                ("seat_mismatch", "s", SeatFixDialog),
                ("expired_active_ride", "e", ExpireRideDialog),
            ):
                table.focus()
                rows = [v.check_name for v in table.violations.values()]
                table.move_cursor(row=rows.index(check))
                await pilot.pause()
                await pilot.press(key)
                dialog = await dialog_of(pilot, kind)
                shown = await shows(pilot, dialog, "not a valid id")
                assert "The sample's ride id is not a valid id" in shown
                assert "\x1b" not in shown  # the escape character itself
                assert "('6fdf766f\\n\\[b red]boom" not in shown
                assert "'6fdf766f\\n[b red]boom[/]\\x1b[2J'" in shown
                assert dialog.query_one("#ride", Input).value == ""
                assert dialog.query_one("#ride", Input).has_focus
                await pilot.press("escape")
                await until(pilot, lambda: app.screen is app.dashboard, "dashboard")


async def test_help_shows_bracket_keys_literally(ops_dsn: str, tmp_path: Path) -> None:
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("question_mark")
        help_screen = await dialog_of(pilot, HelpScreen)
        assert "[[/]" not in screen_text(help_screen)
        rows = {
            static_text(row.query_one(".key", Static)): static_text(
                row.query_one(".what", Static)
            )
            for row in help_screen.query(".help-key")
        }
        assert rows["      ["].startswith("Newer runs")
        assert rows["      ]"].startswith("Older runs")


async def test_resolve_says_when_a_check_cannot_be_run(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        await conn.execute(
            "INSERT INTO invariant_violations (check_name, severity,"
            " violation_count, sample_data) VALUES ('system_invariant_check',"
            " 'critical', 1, '[{\"check\": \"INV-NOPE-999\"}]')"
        )
    app = DashboardApp(make_settings(ops_dsn, tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await select_violation(pilot, app, "system_invariant_check")
        await pilot.press("x")
        dialog = await dialog_of(pilot, ResolveDialog)
        shown = await shows(pilot, dialog, "cannot be run")
        assert "safe to resolve" not in shown


async def test_the_gist_names_pgdn_only_while_the_preview_is_cut(
    ops_dsn: str, tmp_path: Path
) -> None:
    """At 120x40 the whole preview shows, so no key is named; at 80x24 its
    bookings are below the fold until PgDn, and the line follows the resize."""
    async with connected(ops_dsn) as conn:
        ride = await make_ride(conn, total_seats=6)
        for _ in range(3):
            await make_booking(conn, ride, status="confirmed")
        await conn.execute("UPDATE rides SET available_seats = 5 WHERE id = $1", ride)
    app = DashboardApp(make_settings(ops_dsn, tmp_path, refresh=60))
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        dialog, _ = await preview_ride(pilot, "s", SeatFixDialog, ride, "Computed")
        page = dialog.query_one(".dialog", VerticalScroll)
        message = dialog.query_one("#message", Static)

        async def says(text: str) -> str:
            return await until(
                pilot,
                lambda: text in (said := static_text(message)) and said,
                f"{text!r} in the message",
            )

        await says("Apply sets available_seats 5 → 3")
        await until(pilot, lambda: page.max_scroll_y == 0, "the whole preview")
        await pilot.pause()
        said = static_text(message)
        assert "PgDn" not in said and "PgUp" not in said, said

        await pilot.resize_terminal(80, 24)
        await says("PgDn shows the rest of the preview.")
        assert page.max_scroll_y > 0
        for _ in range(page.max_scroll_y):
            await pilot.press("pagedown")
        await until(pilot, lambda: page.scroll_y == page.max_scroll_y, "the bottom")
        said = await says("PgUp shows the top of the preview.")
        assert "PgDn" not in said

        await pilot.resize_terminal(120, 40)
        await until(
            pilot,
            lambda: "Pg" not in static_text(message) and page.max_scroll_y == 0,
            "no key named once the whole preview shows",
        )
        assert "Apply sets available_seats 5 → 3" in static_text(message)


async def test_expiring_a_ride_not_yet_due_at_80x24(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        ride = await make_ride(conn, departs_in=timedelta(hours=3), total_seats=6)
        for _ in range(4):
            await make_booking(conn, ride, status="confirmed")
        app = DashboardApp(make_settings(ops_dsn, tmp_path))
        async with app.run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            dialog, _ = await preview_ride(
                pilot, "e", ExpireRideDialog, ride, "Due              no"
            )
            # Its gist sits by the note, where 80x24 shows it.
            gist = await shows(pilot, dialog, "PgDn shows the rest of the preview")
            assert "Not due yet. Expiring completes the ride and 4 pending" in gist
            # The preview is taller than the dialog: PgDn scrolls it from the note.
            page = dialog.query_one(".dialog", VerticalScroll)
            assert page.max_scroll_y > 0
            await pilot.press("pagedown")
            await until(pilot, lambda: page.scroll_y > 0, "the preview to scroll")
            await type_text(pilot, "driver cancelled by phone")
            await pilot.press("enter")
            await shows(pilot, dialog, "This ride is not due yet.")
            # The box the message names is on screen, above the note.
            allow = dialog.query_one("#allow", Checkbox)
            note = dialog.query_one("#note", Input)
            assert allow.display
            assert 0 <= allow.region.y < note.region.y
            assert allow.region.bottom <= page.region.bottom
            assert "(not ticked; Shift+Tab, Space)" in str(allow.label)
            await pilot.press("shift+tab", "space")
            assert allow.value
            assert "(TICKED)" in str(allow.label)  # not by colour alone
            shown = await shows(pilot, dialog, "Ticked: Enter on the note")
            assert "not due yet" not in shown  # the ask is answered
            await pilot.press("tab", "enter")
            await shows(pilot, dialog, "Expired.")
        assert await conn.fetchval("SELECT status FROM rides WHERE id = $1", ride) == (
            "completed"
        )


async def test_expiring_a_ride_without_bookings_names_no_passengers(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        ride = await make_ride(conn, departs_in=timedelta(hours=-2))
    app = DashboardApp(make_settings(ops_dsn, tmp_path, refresh=60))
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        said = "Expiring completes the ride; it has no pending or confirmed booking."
        dialog, shown = await preview_ride(pilot, "e", ExpireRideDialog, ride, said)
        assert "0 pending" not in shown and "passengers" not in shown
        assert dialog.gist() == f"Due now. {said}"  # type: ignore[attr-defined]


async def test_the_allow_box_is_empty_until_ticked(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Its X is drawn only when ticked, not told apart by colour alone."""
    async with connected(ops_dsn) as conn:
        ride = await make_ride(conn, departs_in=timedelta(hours=3))
    app = DashboardApp(make_settings(ops_dsn, tmp_path, refresh=60))
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        dialog, _ = await preview_ride(
            pilot, "e", ExpireRideDialog, ride, "Due              no"
        )
        allow = dialog.query_one("#allow", Checkbox)
        await until(pilot, lambda: allow.region.height > 0, "the box drawn")

        def drawn() -> str:
            return "".join(drawn_lines(allow))

        assert "▐ ▌ Expire before it is due (not ticked; Shift+Tab, Space)" in drawn()
        assert "X" not in drawn()
        await pilot.press("shift+tab", "space")
        await until(pilot, lambda: "▐X▌" in drawn(), "the X once ticked")
        assert allow.value and "(TICKED)" in drawn()
        await pilot.press("space")
        await until(pilot, lambda: "X" not in drawn(), "an empty box again")
        assert not allow.value and "(not ticked;" in drawn()


async def test_a_write_never_goes_to_a_ride_the_id_field_no_longer_names(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        shown = await seat_mismatch(conn)
        typed = await seat_mismatch(conn)
        app = DashboardApp(make_settings(ops_dsn, tmp_path))
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            await pilot.press("s")
            dialog = await dialog_of(pilot, SeatFixDialog)
            ride_field = dialog.query_one("#ride", Input)
            note = dialog.query_one("#note", Input)
            await type_text(pilot, str(shown))
            await pilot.press("enter")
            await shows(pilot, dialog, "available_seats 1 → 2")
            assert not note.disabled

            # Another id typed over it, not previewed: nothing can be applied.
            ride_field.focus()
            ride_field.value = ""
            await type_text(pilot, str(typed))
            await shows(pilot, dialog, "The ride id changed")
            assert note.disabled and dialog.preview is None
            assert str(shown) not in screen_text(dialog)

            # A typo previews nothing and leaves nothing to apply to either.
            ride_field.value = str(uuid.uuid4())
            await pilot.press("enter")
            await shows(pilot, dialog, "Refused (not_found)")
            assert note.disabled and dialog.preview is None

            ride_field.value = str(typed)
            await pilot.press("enter")
            await shows(pilot, dialog, f"{typed} (active)")
            await type_text(pilot, "fix the typed ride")
            await pilot.press("enter")
            await shows(pilot, dialog, "Fixed.")
            assert ride_field.disabled  # one dialog, one write
        seats = dict(
            await conn.fetch(
                "SELECT id, available_seats FROM rides WHERE id = ANY($1::uuid[])",
                [shown, typed],
            )
        )
        assert seats == {shown: 1, typed: 2}
        audit = await seat_fix_audit(conn)
        assert [(a["target_id"], a["note"]) for a in audit] == [
            (typed, "fix the typed ride")
        ]


async def test_an_expiry_whose_bookings_changed_since_the_preview_is_refused(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with connected(ops_dsn) as conn:
        ride = await make_ride(conn, departs_in=timedelta(hours=-3))
        await make_booking(conn, ride, status="confirmed")
        app = DashboardApp(make_settings(ops_dsn, tmp_path))
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            dialog, _ = await preview_ride(
                pilot, "e", ExpireRideDialog, ride, "1 pending/confirmed booking below"
            )
            late = await make_booking(conn, ride, status="pending")
            await type_text(pilot, "expiry job down")
            await pilot.press("enter")
            shown = await shows(pilot, dialog, "changed since the preview")
            assert "Nothing was written" in shown
            assert "2 pending/confirmed bookings below" in shown and str(late) in shown
            assert await conn.fetchval(
                "SELECT status FROM rides WHERE id = $1", ride
            ) == ("active")
            await pilot.press("enter")
            await shows(pilot, dialog, "Expired. Completed 2 booking(s)")


async def test_an_action_log_that_cannot_be_written_is_said_once(
    ops_dsn: str, tmp_path: Path
) -> None:
    settings = make_settings(ops_dsn, tmp_path)
    settings.action_log.mkdir(parents=True)  # a folder where the file should be
    app = DashboardApp(settings)
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await confirm_job(pilot, "1")
        running = await dialog_of(pilot, JobRunDialog)
        await shows(pilot, running, "Done")
        await pilot.press("escape")
        await until(
            pilot,
            lambda: any(
                "Could not append to the action log" in n for n in notices(app)
            ),
            "the warning",
        )
        app.dashboard.start_round()
        await pilot.pause(1)
        said = [n for n in notices(app) if "Could not append to the action log" in n]
        assert len(said) == 1


@asynccontextmanager
async def a_mismatch_on_screen(
    dsn: str, tmp_path: Path
) -> AsyncIterator[tuple[DashboardApp, Pilot[Any]]]:
    """A seat-mismatch violation, and the dashboard at 80x24 with it loaded."""
    async with connected(dsn) as conn:
        await seat_mismatch(conn)
        await job(conn, "check_system_invariants")
    app = DashboardApp(make_settings(dsn, tmp_path, refresh=60))
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        yield app, pilot


def footer_keys(app: DashboardApp) -> dict[str, Widget]:
    """The footer's keys drawn now, by action, each with its region."""
    return {
        str(getattr(key, "action", "")): key
        for key in app.dashboard.query("FooterKey")
        if key.display
    }


async def test_the_footer_fits_its_write_keys_in_80_columns(
    ops_dsn: str, tmp_path: Path
) -> None:
    """The spare keys (refresh, pause) give way; help still lists them."""
    needed = {ACTIONS_BY_ID[i].action for i in ("seat-fix", "resolve", "expire-ride")}
    needed |= {ACTIONS_BY_ID[i].action for i in ("help", "quit", "switch-pane")}
    spare = {ACTIONS_BY_ID[i].action for i in ("refresh", "pause")}
    async with a_mismatch_on_screen(ops_dsn, tmp_path) as (app, pilot):
        await select_violation(pilot, app, "seat_mismatch")
        keys = footer_keys(app)
        assert needed <= keys.keys() and not spare & keys.keys()
        assert max(k.region.right for k in keys.values()) <= 80
        polled = app.dashboard.last_ok
        await pilot.press("r")  # a spare key still works
        await until(pilot, lambda: app.dashboard.last_ok != polled, "the refresh")
        await pilot.resize_terminal(120, 40)
        await pilot.pause()
        keys = footer_keys(app)
        assert needed | spare <= keys.keys()
        assert max(k.region.right for k in keys.values()) <= 120


async def checked_mismatches(dsn: str, rides: int) -> list[uuid.UUID]:
    """``rides`` rides with drifted seats, found by one invariant check."""
    async with connected(dsn) as conn:
        made = [await seat_mismatch(conn) for _ in range(rides)]
        await job(conn, "check_system_invariants")
    return made


async def mismatch_detail(pilot: Pilot[Any], app: DashboardApp) -> ViolationDialog:
    """Once loaded, the seat_mismatch violation's detail with its samples."""
    await loaded(pilot)
    await select_violation(pilot, app, "seat_mismatch")
    await pilot.press("enter")
    return await dialog_of(pilot, ViolationDialog)  # type: ignore[return-value]


@asynccontextmanager
async def mismatch_detail_open(
    dsn: str, tmp_path: Path, rides: int, size: tuple[int, int]
) -> AsyncIterator[tuple[DashboardApp, Pilot[Any], ViolationDialog]]:
    """``rides`` checked seat mismatches, the app at ``size`` without polls of
    its own, and the violation's detail open: (app, pilot, detail)."""
    await checked_mismatches(dsn, rides)
    app = DashboardApp(make_settings(dsn, tmp_path, refresh=60))
    async with app.run_test(size=size) as pilot:
        yield app, pilot, await mismatch_detail(pilot, app)


async def test_resolving_from_a_violations_detail_closes_it(
    ops_dsn: str, tmp_path: Path
) -> None:
    """The detail showed a violation just resolved, as if still open."""
    async with mismatch_detail_open(ops_dsn, tmp_path, 1, (80, 24)) as (app, pilot, _):
        await pilot.press("x")
        resolve = await dialog_of(pilot, ResolveDialog)
        await shows(pilot, resolve, "right now")
        await fix_with_note(pilot, resolve, "fixed by reconcile", "Resolved.")
        await until(pilot, lambda: app.screen is app.dashboard, "the dashboard")
        table = app.dashboard.query_one("#violations", ViolationsTable)
        await until(pilot, lambda: not table.violations, "the list read again")


async def test_y_copies_the_selected_samples_ride_id(
    ops_dsn: str, tmp_path: Path
) -> None:
    """At 80x24 the samples' Ride column shows only the start of the id; y
    copies the selected sample's whole, and says which."""
    async with mismatch_detail_open(ops_dsn, tmp_path, 2, (80, 24)) as (
        app,
        pilot,
        dialog,
    ):
        assert "y copy ride id" in " ".join(
            static_text(dialog.query_one(".keys", Static)).split()
        )
        samples = dialog.violation.sample_data
        await pilot.press("down")
        await pilot.press("y")
        await until(pilot, lambda: notices(app), "a notification")
        ride = str(samples[1].ride_id)
        assert app.clipboard == ride
        assert f"Copied ride_id {ride}" in notices(app)[-1]


async def test_every_sample_is_reached_at_80x24(ops_dsn: str, tmp_path: Path) -> None:
    """The samples table fits the dialog and scrolls; s acts on the row shown."""
    async with mismatch_detail_open(ops_dsn, tmp_path, 8, (80, 24)) as (
        _,
        pilot,
        dialog,
    ):
        await pilot.pause()
        samples = dialog.violation.sample_data
        box = dialog.query_one("#violation")
        table = dialog.query_one("#samples", DataTable)
        keys = box.children[-1]
        # More samples than lines: the table must scroll, not run off the box.
        assert len(samples) >= table.size.height
        assert table.region.bottom <= keys.region.y
        assert keys.region.bottom < box.region.bottom <= 24
        for _ in samples[1:]:
            await pilot.press("down")
        await pilot.pause()
        assert table.cursor_row == len(samples) - 1
        assert table.scroll_y > 0  # scrolled to the highlighted row
        await pilot.press("s")
        fix = await dialog_of(pilot, SeatFixDialog)
        assert samples[-1].ride_id in screen_text(fix)


async def fix_with_note(
    pilot: Pilot[Any], dialog: Screen[Any], note: str, done: str = "Fixed."
) -> None:
    """Type the note on a previewed write, apply it, see ``done`` and close."""
    await until(pilot, lambda: not dialog.query_one("#note", Input).disabled, "note")
    await type_text(pilot, note)
    await pilot.press("enter")
    await shows(pilot, dialog, done)
    await pilot.press("escape")


async def test_samples_fixed_in_this_session_are_marked_and_passed_over(
    ops_dsn: str, tmp_path: Path
) -> None:
    """The samples are the check's findings: a ride fixed since still shows
    there. It is marked ✓, the cursor moves on to the next sample, and s on
    the dashboard previews the first ride not fixed yet."""
    async with mismatch_detail_open(ops_dsn, tmp_path, 3, (120, 40)) as (
        app,
        pilot,
        detail,
    ):
        rides = [s.ride_id for s in detail.violation.sample_data]
        table = detail.query_one("#samples", DataTable)
        handled = detail.query_one("#handled", Static)
        assert not handled.display and "✓" not in screen_text(detail)
        await pilot.press("s")
        await fix_with_note(pilot, await dialog_of(pilot, SeatFixDialog), "first")
        await until(pilot, lambda: app.screen is detail, "back on the violation")
        await until(pilot, lambda: table.cursor_row == 1, "the cursor moved on")
        await pilot.pause()
        drawn = drawn_lines(table)
        assert any(line.startswith(" 1 ✓  seat_mismatch  ") for line in drawn), drawn
        assert any(line.startswith(" 2    seat_mismatch  ") for line in drawn), drawn
        assert handled.display and "fixed or expired this session" in (
            static_text(handled)
        )
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.dashboard, "the dashboard")

        # From the dashboard, s goes past the fixed ride to the next one.
        await pilot.press("s")
        fix = await dialog_of(pilot, SeatFixDialog)
        await shows(pilot, fix, "Computed")
        assert rides[1] in screen_text(fix) and rides[0] not in screen_text(fix)
        await fix_with_note(pilot, fix, "second")
        await until(pilot, lambda: app.screen is app.dashboard, "the dashboard")
    assert app.handled == {uuid.UUID(rides[0]), uuid.UUID(rides[1])}


async def test_after_the_last_sample_the_cursor_goes_back_to_one_not_done(
    ops_dsn: str, tmp_path: Path
) -> None:
    async with mismatch_detail_open(ops_dsn, tmp_path, 3, (120, 40)) as (
        app,
        pilot,
        detail,
    ):
        table = detail.query_one("#samples", DataTable)
        await pilot.press("down", "down")
        await pilot.press("s")
        await fix_with_note(pilot, await dialog_of(pilot, SeatFixDialog), "last")
        await until(pilot, lambda: app.screen is detail, "back on the violation")
        await until(pilot, lambda: table.cursor_row == 0, "the cursor at the top")


async def test_the_next_sample_stays_in_view_at_80x24_after_a_fix(
    ops_dsn: str, tmp_path: Path
) -> None:
    """The line explaining the mark takes room from the samples: the table is
    fitted again, and the row the cursor moved on to is scrolled into view."""
    async with mismatch_detail_open(ops_dsn, tmp_path, 8, (80, 24)) as (
        app,
        pilot,
        detail,
    ):
        table = detail.query_one("#samples", DataTable)
        await pilot.press("down", "down", "down", "down")
        await pilot.press("s")
        await fix_with_note(pilot, await dialog_of(pilot, SeatFixDialog), "fifth")
        await until(pilot, lambda: table.cursor_row == 5, "the cursor on row 6")
        await pilot.pause(0.3)
        # On the terminal, not only in the table's own (clipped) lines.
        shown = terminal_lines(app.screen)
        assert any("  6    seat_mismatch  " in line for line in shown), shown


async def test_a_violations_detail_offers_the_fix_its_check_takes(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Manual 4.2: a seat check is fixed with seats, an expiry check by
    expiring; the keys line offers that one, not both."""
    async with connected(ops_dsn) as conn:
        await seat_mismatch(conn)
        await make_ride(conn, departs_in=timedelta(hours=-2))
        await job(conn, "check_system_invariants")
    app = DashboardApp(make_settings(ops_dsn, tmp_path, refresh=60))
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await select_violation(pilot, app, "seat_mismatch")
        table = app.dashboard.query_one("#violations", ViolationsTable)
        offered = {}
        for row, violation in enumerate(list(table.violations.values())):
            table.move_cursor(row=row)
            await pilot.press("enter")
            dialog = await dialog_of(pilot, ViolationDialog)
            offered[violation.check_name] = [
                key for key, _ in dialog.query_one(".keys", KeysLine).pairs
            ]
            # The key not offered opens nothing and says why.
            told = sum("not fixed that way" in n for n in notices(app))
            await pilot.press("e" if "s" in offered[violation.check_name] else "s")
            await until(
                pilot,
                lambda t=told: sum("not fixed that way" in n for n in notices(app)) > t,
                "the reason",
            )
            assert app.screen is dialog
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is app.dashboard, "the dashboard")
    assert offered == {
        "seat_mismatch": ["s", "x", "y", "Esc"],
        "expired_active_ride": ["e", "x", "y", "Esc"],
    }


def test_a_check_fixed_by_hand_offers_no_fix_and_an_unknown_one_both() -> None:
    keys = {
        name: [
            key
            for key, _ in violation_keys(
                Violation(check_name=name, severity="critical", id=1)
            )
        ]
        for name in ("invalid_ride_status", "duplicate_active_bookings", "custom")
    }
    assert keys == {
        "invalid_ride_status": ["x", "y", "Esc"],
        "duplicate_active_bookings": ["x", "y", "Esc"],
        "custom": ["s", "e", "x", "y", "Esc"],
    }


async def test_a_violations_keys_wrap_only_between_whole_pairs(
    ops_dsn: str, tmp_path: Path
) -> None:
    pairs = [
        ("s", "fix seats of sample's ride"),
        ("x", "resolve"),
        ("y", "copy ride id"),
        ("Esc", "close"),
    ]
    async with a_mismatch_on_screen(ops_dsn, tmp_path) as (app, pilot):
        await select_violation(pilot, app, "seat_mismatch")
        await pilot.press("enter")
        dialog = await dialog_of(pilot, ViolationDialog)
        keys = dialog.query_one(".keys", Widget)
        box = dialog.query_one("#violation", Widget)

        def drawn() -> list[str]:
            return [line for line in drawn_lines(keys) if line.strip()]

        for width, height, count in ((80, 24, 2), (40, 20, 3), (120, 40, 1)):
            await pilot.resize_terminal(width, height)
            await until(
                pilot, lambda n=count: len(drawn()) == n, f"{count} lines at {width}"
            )
            pairs_whole(keys, pairs)
            # Every line of them is drawn, inside the dialog.
            assert keys.region.bottom <= box.region.bottom - 1


async def test_tab_goes_between_the_fields_of_a_write_dialog(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Never onto the body or the bookings, where typed text went nowhere."""
    async with connected(ops_dsn) as conn:
        ride = await seat_mismatch(conn)
        await job(conn, "check_system_invariants")
    app = DashboardApp(make_settings(ops_dsn, tmp_path, refresh=60))

    async def tabs_through(*fields: str) -> None:
        await until(pilot, lambda: app.focused and app.focused.id == "note", "note")
        for field in fields:
            await pilot.press("tab")
            assert app.focused is not None and app.focused.id == field

    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        fix, _ = await on_the_mismatch(pilot, app, "s", SeatFixDialog, "Computed")
        await tabs_through("ride", "note")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is not fix, "closed")
        await pilot.press("e")
        expire = await dialog_of(pilot, ExpireRideDialog)
        await type_text(pilot, str(ride))
        await pilot.press("enter")
        await shows(pilot, expire, "Not due yet")
        await tabs_through("ride", "allow", "note")


async def test_a_refusal_of_the_note_goes_once_the_note_changes(
    ops_dsn: str, tmp_path: Path
) -> None:
    """A pasted or typed note is not left under "A note is required"."""
    async with a_mismatch_on_screen(ops_dsn, tmp_path) as (app, pilot):
        dialog, _ = await seat_fix_of_the_mismatch(pilot, app)
        await pilot.press("enter")  # no note yet
        await shows(pilot, dialog, NOTE_REQUIRED)
        await type_text(pilot, "drift")
        message = static_text(dialog.query_one("#message", Static))
        assert NOTE_REQUIRED not in message
        assert "Apply sets available_seats 1 → 2" in message  # the gist is back


async def test_control_characters_never_reach_the_audit_or_action_log(
    ops_dsn: str, tmp_path: Path
) -> None:
    """A note holding an escape sequence, a bell and a tab (typed or pasted
    without bracketed paste) is written without them; one that is nothing but
    such characters is refused as no note."""
    async with a_mismatch_on_screen(ops_dsn, tmp_path) as (app, pilot):
        dialog, _ = await resolve_of_the_mismatch(pilot, app)
        note = dialog.query_one("#note", Input)
        note.value = "\x1b\x07\t\x00\u202e"
        await pilot.press("enter")
        await shows(pilot, dialog, NOTE_REQUIRED)
        note.value = "drift\x1b[31m fixed\x07\tby hand\u202e ok"
        await pilot.press("enter")
        await shows(pilot, dialog, "Resolved.")
    wanted = "drift[31m fixed by hand ok"
    async with connected(ops_dsn) as conn:
        audit = await seat_fix_audit(conn)
        assert [a["note"] for a in audit] == [wanted]
        stored = await conn.fetchval(
            "SELECT notes FROM invariant_violations WHERE check_name = 'seat_mismatch'"
        )
        assert stored == wanted
        assert [e["note"] for e in action_log(app)] == [wanted]


async def test_resolve_acts_only_on_a_violation_in_view(
    ops_dsn: str, tmp_path: Path
) -> None:
    """At 80x24 the Job log tab hides the violations; `x` there resolves none."""
    async with a_mismatch_on_screen(ops_dsn, tmp_path) as (app, pilot):
        await select_violation(pilot, app, "seat_mismatch")
        assert app.dashboard.selected_violation() is not None
        await pilot.press("t")  # back to the job log; the selection stays
        await until(pilot, lambda: app.dashboard.active_pane == "log", "the log")
        await pilot.press("x")
        wanted = "Select a violation first (t shows the violations)."
        await until(pilot, lambda: wanted in notices(app), "the refusal")
        assert not isinstance(app.screen, ResolveDialog)
        await pilot.press("t", "x")
        await dialog_of(pilot, ResolveDialog)


async def test_the_seat_fix_shows_what_holds_seats_at_80x24(
    ops_dsn: str, tmp_path: Path
) -> None:
    """Each booking's status and seats are in view; the passenger may be cut."""
    async with a_mismatch_on_screen(ops_dsn, tmp_path) as (app, pilot):
        dialog, _ = await seat_fix_of_the_mismatch(pilot, app)
        bookings = dialog.query_one("#bookings", DataTable)
        await until(pilot, lambda: bookings.row_count > 0, "the bookings")
        head, *rows = drawn_lines(bookings)
        assert head.split()[:4] == ["Status", "Seats", "Booking", "Created"]
        assert rows[0].split()[0] in ("pending", "confirmed")
        assert rows[0].split()[1].isdigit()


async def test_enter_again_while_a_write_is_out_sends_nothing_more(
    ops_dsn: str, tmp_path: Path
) -> None:
    """A second Enter (or a note pasted with its line breaks) while the seat fix
    waits on a locked ride: one write, and the screen says it was made."""
    async with a_mismatch_on_screen(ops_dsn, tmp_path) as (app, pilot):
        dialog, _ = await seat_fix_of_the_mismatch(pilot, app)
        ride = dialog.preview.ride_id  # type: ignore[attr-defined]
        async with connected(ops_dsn) as holder, connected(ops_dsn) as conn:
            locked = holder.transaction()
            await locked.start()
            await holder.execute("SELECT 1 FROM rides WHERE id = $1 FOR UPDATE", ride)
            await type_text(pilot, "drift")
            await pilot.press("enter")
            await shows(pilot, dialog, "Applying")
            note = dialog.query_one("#note", Input)
            assert note.disabled
            keys = static_text(dialog.query_one(".keys", Static))
            assert "Esc  stop waiting" in keys and "Enter" not in keys
            await pilot.press("enter", "x", "enter")
            await locked.rollback()
            await shows(pilot, dialog, "Fixed.")
            await pilot.pause(0.5)
            assert "Fixed." in static_text(dialog.query_one("#message", Static))
            assert [a["note"] for a in await seat_fix_audit(conn)] == ["drift"]
        assert [e["outcome"] for e in action_log(app)] == ["ok"]


async def test_a_write_held_up_by_a_locked_row_says_the_row_may_be_locked(
    ops_dsn: str, tmp_path: Path
) -> None:
    """The statement timeout fires before the function's lock timeout, so the
    message of a timeout names a locked row as well as load."""
    async with connected(ops_dsn) as conn:
        ride = await seat_mismatch(conn)
    settings = replace(make_settings(ops_dsn, tmp_path), statement_timeout_ms=1000)
    app = DashboardApp(settings)
    async with connected(ops_dsn) as holder, holder.transaction():
        await holder.execute("SELECT 1 FROM rides WHERE id = $1 FOR UPDATE", ride)
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            dialog, _ = await preview_ride(pilot, "s", SeatFixDialog, ride, "Computed")
            await type_text(pilot, "drift")
            await pilot.press("enter")
            shown = await shows(pilot, dialog, "timed out")
            assert "locked by another session" in " ".join(shown.split())
