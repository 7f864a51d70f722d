"""repair_missing_notifications checks only what changed since its last run.

A run records how far it has checked; the next one looks at events from there
on, plus the bookings whose notifications were deleted or changed since. The
whole 30 days are checked on the first run, weekly, after a truncate, and on
request.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import asyncpg
from factories import connected, job, make_booking, make_ride

from carpool_tui.models import JobResult

REPAIR = "repair_missing_notifications"


async def _noted(conn: asyncpg.Connection, booking: uuid.UUID, kind: str) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM notifications"
            " WHERE data->>'booking_id' = $1::uuid::text AND type = $2",
            booking,
            kind,
        )
    )


async def _age(conn: asyncpg.Connection, booking: uuid.UUID, days: int) -> None:
    """Date a booking and its notifications ``days`` back, as if made then."""
    await conn.execute(
        "UPDATE ride_bookings SET created_at = now() - make_interval(days => $2),"
        " updated_at = now() - make_interval(days => $2) WHERE id = $1",
        booking,
        days,
    )
    await conn.execute(
        "UPDATE notifications SET created_at = now() - make_interval(days => $2)"
        " WHERE data->>'booking_id' = $1::uuid::text",
        booking,
        days,
    )


async def _settled(conn: asyncpg.Connection) -> dict[str, Any]:
    """A first (whole) run, then nothing is left to repair."""
    first = await job(conn, REPAIR)
    assert first["scope"] == "full", first
    settled = await job(conn, REPAIR)
    assert settled["scope"] == "since_last_run", settled
    assert settled["total_notifications_created"] == 0, settled
    return settled


async def test_the_first_run_checks_the_window_and_records_progress(
    ops_conn: asyncpg.Connection,
) -> None:
    ride = await make_ride(ops_conn)
    old = await make_booking(ops_conn, ride, status="confirmed")
    await _age(ops_conn, old, 10)
    assert await ops_conn.fetchval("SELECT count(*) FROM ops_repair_progress") == 0

    first = await job(ops_conn, REPAIR)

    assert first["scope"] == "full"
    assert first["total_notifications_created"] == 2  # request and confirmation
    behind = await ops_conn.fetchval(
        "SELECT checked_before <= now() - interval '1 hour' FROM ops_repair_progress"
    )
    assert behind is True


async def test_a_later_run_finds_new_events_only_from_where_it_stopped(
    ops_conn: asyncpg.Connection,
) -> None:
    await _settled(ops_conn)
    ride = await make_ride(ops_conn)
    fresh = await make_booking(ops_conn, ride, status="cancelled")
    # An event dated before the checked range is left to the weekly whole check.
    hidden = await make_booking(ops_conn, ride, status="pending")
    await _age(ops_conn, hidden, 5)

    later = await job(ops_conn, REPAIR)

    assert later["scope"] == "since_last_run"
    assert (later["booking_requests_created"], later["cancellations_created"]) == (
        1,
        1,
    )
    assert await _noted(ops_conn, fresh, "BOOKING_CANCELLED") == 1
    assert await _noted(ops_conn, hidden, "BOOKING_REQUEST") == 0

    await ops_conn.execute(
        "UPDATE ops_repair_progress SET full_check_at = now() - interval '8 days'"
    )
    weekly = await job(ops_conn, REPAIR)
    assert weekly["scope"] == "full"
    assert weekly["total_notifications_created"] == 1
    assert await _noted(ops_conn, hidden, "BOOKING_REQUEST") == 1


async def test_a_cancellation_that_left_updated_at_alone_is_found(
    ops_conn: asyncpg.Connection,
) -> None:
    ride = await make_ride(ops_conn)
    booking = await make_booking(ops_conn, ride, status="confirmed")
    await _age(ops_conn, booking, 10)
    await _settled(ops_conn)
    # Only cancelled_at says when it changed; the booking's other times are old.
    await ops_conn.execute(
        "UPDATE ride_bookings SET status = 'cancelled', cancelled_at = now(),"
        " updated_at = now() - interval '10 days' WHERE id = $1",
        booking,
    )

    later = await job(ops_conn, REPAIR)

    assert later["scope"] == "since_last_run"
    assert later["cancellations_created"] == 1, later
    assert later["total_notifications_created"] == 1, later
    assert await _noted(ops_conn, booking, "BOOKING_CANCELLED") == 1


async def test_a_deleted_notification_is_made_again_on_the_next_run(
    ops_conn: asyncpg.Connection,
) -> None:
    ride = await make_ride(ops_conn)
    booking = await make_booking(ops_conn, ride, status="confirmed")
    await _age(ops_conn, booking, 10)
    await _settled(ops_conn)  # the first run made both of its notifications
    assert await _noted(ops_conn, booking, "BOOKING_CONFIRMED") == 1

    await ops_conn.execute(
        "DELETE FROM notifications WHERE data->>'booking_id' = $1::uuid::text"
        " AND type = 'BOOKING_CONFIRMED'",
        booking,
    )
    assert await ops_conn.fetchval("SELECT count(*) FROM ops_repair_recheck") == 1

    again = await job(ops_conn, REPAIR)

    assert again["scope"] == "since_last_run"
    assert again["confirmations_created"] == 1
    assert again["total_notifications_created"] == 1
    assert await _noted(ops_conn, booking, "BOOKING_CONFIRMED") == 1
    assert await ops_conn.fetchval("SELECT count(*) FROM ops_repair_recheck") == 0


async def test_a_notification_moved_to_another_type_counts_as_gone(
    ops_conn: asyncpg.Connection,
) -> None:
    ride = await make_ride(ops_conn)
    booking = await make_booking(ops_conn, ride)
    await _age(ops_conn, booking, 3)
    await _settled(ops_conn)

    # Marking it read is not a change the job cares about.
    await ops_conn.execute(
        "UPDATE notifications SET read_at = now()"
        " WHERE data->>'booking_id' = $1::uuid::text",
        booking,
    )
    assert await ops_conn.fetchval("SELECT count(*) FROM ops_repair_recheck") == 0
    await ops_conn.execute(
        "UPDATE notifications SET type = 'SYSTEM', category = 'SYSTEM'"
        " WHERE data->>'booking_id' = $1::uuid::text",
        booking,
    )

    again = await job(ops_conn, REPAIR)
    assert again["booking_requests_created"] == 1
    assert await _noted(ops_conn, booking, "BOOKING_REQUEST") == 1


async def test_purging_old_notifications_notes_nothing_to_recheck(
    ops_conn: asyncpg.Connection,
) -> None:
    ride = await make_ride(ops_conn)
    booking = await make_booking(ops_conn, ride)
    await _age(ops_conn, booking, 45)
    await ops_conn.execute(
        "INSERT INTO notifications (user_id, type, category, data, created_at)"
        " SELECT passenger_id, 'BOOKING_REQUEST', 'BOOKING_REQUEST',"
        " jsonb_build_object('booking_id', id), created_at"
        " FROM ride_bookings WHERE id = $1",
        booking,
    )
    await ops_conn.execute(
        "DELETE FROM notifications WHERE created_at < now() - interval '40 days'"
    )
    assert await ops_conn.fetchval("SELECT count(*) FROM ops_repair_recheck") == 0


async def test_truncate_and_the_full_setting_bring_back_the_whole_check(
    ops_conn: asyncpg.Connection,
) -> None:
    await _settled(ops_conn)
    await ops_conn.execute("SET carpool.repair_scope = 'full'")
    assert (await job(ops_conn, REPAIR))["scope"] == "full"
    await ops_conn.execute("RESET carpool.repair_scope")
    assert (await job(ops_conn, REPAIR))["scope"] == "since_last_run"

    await ops_conn.execute("TRUNCATE notifications")
    assert await ops_conn.fetchval("SELECT count(*) FROM ops_repair_progress") == 0
    assert (await job(ops_conn, REPAIR))["scope"] == "full"


async def test_an_open_transaction_holds_the_checked_range_back(
    ops_conn: asyncpg.Connection, ops_dsn: str
) -> None:
    """A booking written by a transaction that began before the run but commits
    after it carries a date the run has passed; the next run must still see it."""
    ride = await make_ride(ops_conn)
    async with connected(ops_dsn, purpose="test-writer", timeout_ms=5_000) as writer:
        async with writer.transaction():
            await writer.execute("SELECT txid_current()")  # it holds an xid
            began = await writer.fetchval("SELECT now()")
            await job(ops_conn, REPAIR)
            checked = await ops_conn.fetchval(
                "SELECT checked_before FROM ops_repair_progress"
            )
            # An hour before the writer began, not before the run began.
            assert checked <= began - timedelta(hours=1)
            late = await make_booking(writer, ride)
        again = await job(ops_conn, REPAIR)
    assert again["scope"] == "since_last_run"
    assert again["booking_requests_created"] == 1
    assert await _noted(ops_conn, late, "BOOKING_REQUEST") == 1


async def test_app_roles_deleting_notifications_still_note_the_recheck(
    ops_conn: asyncpg.Connection,
) -> None:
    ride = await make_ride(ops_conn)
    booking = await make_booking(ops_conn, ride)
    await _settled(ops_conn)
    await ops_conn.execute(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles"
        " WHERE rolname = 'carpool_test_app') THEN CREATE ROLE carpool_test_app;"
        " END IF; END $$"
    )
    await ops_conn.execute("GRANT SELECT, DELETE ON notifications TO carpool_test_app")
    async with ops_conn.transaction():
        await ops_conn.execute("SET LOCAL ROLE carpool_test_app")
        await ops_conn.execute(
            "DELETE FROM notifications WHERE data->>'booking_id' = $1::uuid::text",
            booking,
        )
        denied = await ops_conn.fetchval(
            "SELECT has_table_privilege('ops_repair_recheck', 'SELECT')"
        )
    assert denied is False
    assert await ops_conn.fetchval("SELECT count(*) FROM ops_repair_recheck") == 1
    again = await job(ops_conn, REPAIR)
    assert again["booking_requests_created"] == 1


async def test_the_operator_is_told_how_far_a_run_looked(
    ops_conn: asyncpg.Connection,
) -> None:
    first = JobResult.model_validate(await job(ops_conn, REPAIR))
    later = JobResult.model_validate(await job(ops_conn, REPAIR))
    assert first.describe(REPAIR).endswith("checked all 30 days.")
    assert later.describe(REPAIR).endswith("checked since the last run.")
