"""The dashboard's writes (rule 8): previews, applies that refuse stale input
and empty notes, and the audit rows they leave."""

from __future__ import annotations

import re
from datetime import timedelta

import asyncpg
from factories import call_json, connected, job, make_booking, make_ride

APPLY = "SELECT ops_apply_seat_fix($1, $2, $3, $4, $5)"


async def test_seat_fix_preview_then_apply_with_audit(
    ops_conn: asyncpg.Connection,
) -> None:
    ride = await make_ride(ops_conn, total_seats=4)
    booking = await make_booking(ops_conn, ride, seats=2, status="confirmed")
    await ops_conn.execute("UPDATE rides SET available_seats = 4 WHERE id = $1", ride)

    preview = await call_json(ops_conn, "SELECT ops_preview_seat_fix($1)", ride)

    assert preview["success"] is True
    assert (preview["current"], preview["computed"], preview["counted_seats"]) == (
        4,
        2,
        2,
    )
    assert (preview["needs_fix"], preview["overbooked"]) == (True, False)
    assert [b["booking_id"] for b in preview["bookings"]] == [str(booking)]
    assert await ops_conn.fetchval("SELECT count(*) FROM admin_audit_log") == 0

    applied = await call_json(ops_conn, APPLY, ride, 4, 2, "ann", "  drift after edit ")

    assert applied["success"] is True
    assert (applied["before"], applied["after"]) == (4, 2)
    assert (
        await ops_conn.fetchval("SELECT available_seats FROM rides WHERE id = $1", ride)
        == 2
    )
    audit = await ops_conn.fetchrow(
        "SELECT * FROM admin_audit_log WHERE id = $1", applied["audit_id"]
    )
    assert (audit["operator"], audit["note"], audit["admin_role"]) == (
        "ann",
        "drift after edit",
        "admin",
    )
    assert (audit["action"], audit["target_type"], audit["target_id"]) == (
        "seat_fix",
        "ride",
        ride,
    )
    assert audit["details"]["before"] == {"available_seats": 4}
    assert audit["details"]["after"] == {"available_seats": 2}


async def test_seat_fix_refuses_stale_preview_empty_note_and_overbooking(
    ops_conn: asyncpg.Connection,
) -> None:
    ride = await make_ride(ops_conn, total_seats=3)
    await ops_conn.execute("UPDATE rides SET available_seats = 0 WHERE id = $1", ride)
    preview = await call_json(ops_conn, "SELECT ops_preview_seat_fix($1)", ride)
    assert (preview["current"], preview["computed"]) == (0, 3)

    for operator, note, code in (
        ("ann", "   ", "note_required"),
        ("ann", None, "note_required"),
        (" ", "why", "operator_required"),
    ):
        refused = await call_json(ops_conn, APPLY, ride, 0, 3, operator, note)
        assert (refused["success"], refused["code"]) == (False, code)
        assert refused["error"]

    # A booking arrives between preview and apply.
    await make_booking(ops_conn, ride, status="pending")
    await ops_conn.execute("UPDATE rides SET available_seats = 0 WHERE id = $1", ride)
    stale = await call_json(ops_conn, APPLY, ride, 0, 3, "ann", "fix")
    assert (stale["success"], stale["code"]) == (False, "stale_preview")
    assert stale["preview"]["computed"] == 2
    assert (
        await ops_conn.fetchval("SELECT available_seats FROM rides WHERE id = $1", ride)
        == 0
    )

    await make_booking(ops_conn, ride, seats=3, status="confirmed")
    over = await call_json(ops_conn, "SELECT ops_preview_seat_fix($1)", ride)
    assert (over["computed"], over["overbooked"]) == (-1, True)
    refused = await call_json(ops_conn, APPLY, ride, 0, -1, "ann", "fix")
    assert refused["code"] == "overbooked"

    missing = await call_json(
        ops_conn, "SELECT ops_preview_seat_fix(gen_random_uuid())"
    )
    assert missing["code"] == "not_found"

    right = await make_ride(ops_conn, total_seats=2)
    noop = await call_json(ops_conn, APPLY, right, 2, 2, "ann", "nothing wrong")
    assert (noop["success"], noop["code"]) == (False, "nothing_to_fix")
    assert await ops_conn.fetchval("SELECT count(*) FROM admin_audit_log") == 0


async def test_expire_one_ride_by_hand(ops_conn: asyncpg.Connection) -> None:
    due = await make_ride(ops_conn, departs_in=timedelta(hours=-1))
    booking = await make_booking(ops_conn, due, status="confirmed")
    upcoming = await make_ride(ops_conn, departs_in=timedelta(hours=3))

    preview = await call_json(ops_conn, "SELECT ops_preview_expire_ride($1)", due)
    assert (preview["due"], preview["terminal"]) == (True, False)
    assert [b["booking_id"] for b in preview["bookings"]] == [str(booking)]

    empty = await call_json(ops_conn, "SELECT ops_expire_ride($1, 'ann', '')", due)
    assert empty["code"] == "note_required"
    done = await call_json(
        ops_conn, "SELECT ops_expire_ride($1, 'ann', 'cron is down')", due
    )
    assert (done["bookings_completed"], done["notifications_created"]) == (1, 1)
    assert await ops_conn.fetchval("SELECT status FROM rides WHERE id = $1", due) == (
        "completed"
    )
    note = await ops_conn.fetchrow("SELECT user_id, type, data FROM notifications")
    assert note["type"] == "BOOKING_CONFIRMED"
    assert note["data"]["auto_completed"] is True
    audit = await ops_conn.fetchrow(
        "SELECT * FROM admin_audit_log WHERE id = $1", done["audit_id"]
    )
    assert (audit["operator"], audit["note"]) == ("ann", "cron is down")
    assert audit["details"]["before"]["status"] == "active"
    assert audit["details"]["after"]["status"] == "completed"

    again = await call_json(ops_conn, "SELECT ops_expire_ride($1, 'ann', 'x')", due)
    assert again["code"] == "already_terminal"
    early = await call_json(
        ops_conn, "SELECT ops_expire_ride($1, 'ann', 'x')", upcoming
    )
    assert early["code"] == "not_due"
    forced = await call_json(
        ops_conn, "SELECT ops_expire_ride($1, 'ann', 'driver ill', true)", upcoming
    )
    assert forced["success"] is True


async def test_expire_refuses_when_the_open_bookings_changed_since_the_preview(
    ops_conn: asyncpg.Connection,
) -> None:
    ride = await make_ride(ops_conn, departs_in=timedelta(hours=-1), total_seats=4)
    seen = await make_booking(ops_conn, ride, status="confirmed")
    expire = "SELECT ops_expire_ride($1, 'ann', 'stuck ride', false, $2::uuid[])"

    late = await make_booking(ops_conn, ride, status="pending")
    stale = await call_json(ops_conn, expire, ride, [seen])
    assert stale["code"] == "stale_preview", stale
    assert "now 2, you saw 1" in stale["error"]
    fresh = stale["preview"]
    assert sorted(b["booking_id"] for b in fresh["bookings"]) == sorted(
        [str(seen), str(late)]
    )
    assert await ops_conn.fetchval("SELECT status FROM rides WHERE id = $1", ride) == (
        "active"
    )
    assert await ops_conn.fetchval("SELECT count(*) FROM notifications") == 0

    done = await call_json(ops_conn, expire, ride, [late, seen])
    assert done["success"] is True and done["bookings_completed"] == 2


async def test_resolve_violation_with_preview_and_audit(
    ops_conn: asyncpg.Connection,
) -> None:
    ride = await make_ride(ops_conn, departs_in=timedelta(hours=-2))
    await job(ops_conn, "check_system_invariants")
    violation = await ops_conn.fetchval("SELECT id FROM invariant_violations")

    preview = await call_json(
        ops_conn, "SELECT ops_preview_resolve_violation($1)", violation
    )
    assert preview["violation"]["check_id"] == "INV-TIME-001"
    assert (preview["still_failing"], preview["current_count"]) == (True, 1)

    await ops_conn.execute("UPDATE rides SET status = 'completed' WHERE id = $1", ride)
    fixed = await call_json(
        ops_conn, "SELECT ops_preview_resolve_violation($1)", violation
    )
    assert (fixed["still_failing"], fixed["current_count"]) == (False, 0)

    blank = await call_json(
        ops_conn, "SELECT ops_resolve_violation($1, 'ann', ' ')", violation
    )
    assert blank["code"] == "note_required"
    done = await call_json(
        ops_conn, "SELECT ops_resolve_violation($1, 'ann', 'ride ended')", violation
    )
    assert (done["success"], done["still_failing"]) == (True, False)
    row = await ops_conn.fetchrow(
        "SELECT * FROM invariant_violations WHERE id = $1", violation
    )
    assert (row["notes"], row["resolved_by"]) == ("ride ended", "ann")
    assert row["resolved_at"] is not None
    audit = await ops_conn.fetchrow(
        "SELECT * FROM admin_audit_log WHERE id = $1", done["audit_id"]
    )
    assert audit["action"] == "violation_resolved"
    assert audit["details"]["before"]["resolved_at"] is None
    assert audit["details"]["after"]["notes"] == "ride ended"
    twice = await call_json(
        ops_conn, "SELECT ops_resolve_violation($1, 'bob', 'again')", violation
    )
    assert twice["code"] == "already_resolved"
    # It names the earlier resolution, in UTC to the second, with its note.
    assert re.fullmatch(
        r"The violation was already resolved at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"
        r" by ann\.",
        twice["error"],
    )
    assert (twice["violation"]["resolved_by"], twice["violation"]["notes"]) == (
        "ann",
        "ride ended",
    )
    assert audit["details"]["after"]["resolved_by"] == "ann"


async def test_previews_run_on_a_read_only_connection(
    ops_conn: asyncpg.Connection, ops_dsn: str
) -> None:
    ride = await make_ride(ops_conn)
    async with connected(
        ops_dsn, purpose="viewer", timeout_ms=5_000, read_only=True
    ) as viewer:
        assert (await job(viewer, "get_system_health_summary"))["total_rides"] == 1
        seat = await call_json(viewer, "SELECT ops_preview_seat_fix($1)", ride)
        assert seat["needs_fix"] is False
        expiry = await call_json(viewer, "SELECT ops_preview_expire_ride($1)", ride)
        assert expiry["due"] is False


async def test_a_violation_naming_an_unknown_check_is_not_called_passing(
    ops_conn: asyncpg.Connection,
) -> None:
    row = await ops_conn.fetchval(
        "INSERT INTO invariant_violations (check_name, severity, violation_count,"
        " sample_data) VALUES ('system_invariant_check', 'critical', 1,"
        ' \'[{"check": "INV-NOPE-999", "name": "mystery"}]\') RETURNING id'
    )
    preview = await call_json(ops_conn, "SELECT ops_preview_resolve_violation($1)", row)
    assert preview["success"] is True
    assert (preview["still_failing"], preview["current_count"]) == (None, None)
    done = await call_json(
        ops_conn,
        "SELECT ops_resolve_violation($1, 'ann', 'checked by hand')",
        row,
    )
    assert done["success"] is True
    assert done["still_failing"] is None
