"""check_system_invariants (rule 6): real counts, one open row per check,
updated while the fault lasts, auto-resolved when it passes; legacy rows stay.

Faults the platform's constraints forbid are made in the test's own database
after dropping that constraint or index.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import pytest
from factories import call_json, job, make_booking, make_profile, make_ride

from carpool_tui.db.connect import connect
from carpool_tui.db.migrate import migrate

Step = Callable[[asyncpg.Connection, dict[str, object]], Awaitable[None]]


@dataclass(frozen=True)
class Fault:
    check_id: str
    name: str
    make: Step
    fix: Step


async def _seat_mismatch(conn: asyncpg.Connection, ctx: dict[str, object]) -> None:
    ride = await make_ride(conn, total_seats=4)
    await make_booking(conn, ride, status="confirmed")
    await conn.execute("UPDATE rides SET available_seats = 1 WHERE id = $1", ride)


async def _fix_by_reconcile(conn: asyncpg.Connection, ctx: dict[str, object]) -> None:
    assert (await job(conn, "reconcile_seat_counts"))["mismatches_fixed"] >= 1


async def _negative(conn: asyncpg.Connection, ctx: dict[str, object]) -> None:
    await conn.execute("ALTER TABLE rides DROP CONSTRAINT rides_available_seats_check")
    ctx["ride"] = await make_ride(conn, status="completed")
    await conn.execute(
        "UPDATE rides SET available_seats = -1 WHERE id = $1", ctx["ride"]
    )


async def _overflow(conn: asyncpg.Connection, ctx: dict[str, object]) -> None:
    ctx["ride"] = await make_ride(conn, total_seats=2, status="completed")
    await conn.execute(
        "UPDATE rides SET available_seats = 5 WHERE id = $1", ctx["ride"]
    )


async def _restore_seats(conn: asyncpg.Connection, ctx: dict[str, object]) -> None:
    await conn.execute(
        "UPDATE rides SET available_seats = total_seats WHERE id = $1", ctx["ride"]
    )


async def _orphan(conn: asyncpg.Connection, ctx: dict[str, object]) -> None:
    ride = await make_ride(conn)
    await make_booking(conn, ride, status="confirmed")
    await conn.execute("UPDATE rides SET status = 'cancelled' WHERE id = $1", ride)


async def _fix_by_expiry(conn: asyncpg.Connection, ctx: dict[str, object]) -> None:
    assert (await job(conn, "expire_rides"))["success"] is True


async def _bad_ride_status(conn: asyncpg.Connection, ctx: dict[str, object]) -> None:
    await conn.execute("ALTER TABLE rides DROP CONSTRAINT rides_status_check")
    ctx["ride"] = await make_ride(conn, status="paused")


async def _fix_ride_status(conn: asyncpg.Connection, ctx: dict[str, object]) -> None:
    await conn.execute("UPDATE rides SET status = 'active' WHERE id = $1", ctx["ride"])


async def _bad_booking_status(conn: asyncpg.Connection, ctx: dict[str, object]) -> None:
    await conn.execute(
        "ALTER TABLE ride_bookings DROP CONSTRAINT ride_bookings_status_check"
    )
    ride = await make_ride(conn)
    ctx["booking"] = await make_booking(conn, ride, status="waitlisted")


async def _fix_booking_status(conn: asyncpg.Connection, ctx: dict[str, object]) -> None:
    await conn.execute(
        "UPDATE ride_bookings SET status = 'cancelled' WHERE id = $1", ctx["booking"]
    )


async def _duplicate(conn: asyncpg.Connection, ctx: dict[str, object]) -> None:
    await conn.execute("DROP INDEX ride_bookings_one_active_per_passenger")
    ride = await make_ride(conn)
    passenger = await make_profile(conn)
    await make_booking(conn, ride, passenger, status="pending")
    ctx["booking"] = await make_booking(conn, ride, passenger, status="confirmed")


async def _expired(conn: asyncpg.Connection, ctx: dict[str, object]) -> None:
    await make_ride(conn, departs_in=timedelta(hours=-2))


FAULTS = [
    Fault("INV-SEAT-001", "seat_mismatch", _seat_mismatch, _fix_by_reconcile),
    Fault("INV-SEAT-002", "negative_seats", _negative, _restore_seats),
    Fault("INV-SEAT-003", "seat_overflow", _overflow, _restore_seats),
    Fault("INV-STATE-001", "active_booking_on_terminal_ride", _orphan, _fix_by_expiry),
    Fault("INV-STATE-002", "invalid_ride_status", _bad_ride_status, _fix_ride_status),
    Fault(
        "INV-STATE-003",
        "invalid_booking_status",
        _bad_booking_status,
        _fix_booking_status,
    ),
    Fault(
        "INV-UNIQUE-001", "duplicate_active_bookings", _duplicate, _fix_booking_status
    ),
    Fault("INV-TIME-001", "expired_active_ride", _expired, _fix_by_expiry),
]


def _counts(result: dict[str, object]) -> dict[str, int]:
    checks = result["checks"]
    assert isinstance(checks, list)
    return {c["name"]: c["count"] for c in checks}


async def _open_rows(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM invariant_violations WHERE resolved_at IS NULL"
        " ORDER BY check_name"
    )


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
async def test_each_check_fires_persists_and_auto_resolves(
    ops_conn: asyncpg.Connection, fault: Fault
) -> None:
    assert (await job(ops_conn, "check_system_invariants"))["healthy"] is True
    ctx: dict[str, object] = {}
    await fault.make(ops_conn, ctx)

    first = await job(ops_conn, "check_system_invariants")

    assert first["healthy"] is False
    assert _counts(first)[fault.name] == 1
    assert first["violations_opened"] >= 1
    mine = [v for v in first["violations"] if v["name"] == fault.name]
    assert len(mine) == 1 and mine[0]["check"] == fault.check_id
    rows = [r for r in await _open_rows(ops_conn) if r["check_name"] == fault.name]
    assert len(rows) == 1
    row = rows[0]
    assert (row["check_id"], row["violation_count"]) == (fault.check_id, 1)
    assert row["sample_data"][0]["check"] == fault.check_id

    second = await job(ops_conn, "check_system_invariants")
    assert second["violations_opened"] == 0
    again = [r for r in await _open_rows(ops_conn) if r["check_name"] == fault.name]
    assert [r["id"] for r in again] == [row["id"]]
    assert again[0]["last_seen_at"] > row["last_seen_at"]
    assert again[0]["detected_at"] == row["detected_at"]

    await fault.fix(ops_conn, ctx)
    third = await job(ops_conn, "check_system_invariants")
    assert third["healthy"] is True, third["checks"]
    assert third["violations_auto_resolved"] >= 1
    closed = await ops_conn.fetchrow(
        "SELECT * FROM invariant_violations WHERE id = $1", row["id"]
    )
    assert closed["resolved_at"] is not None
    assert closed["auto_resolved"] is True
    assert await _open_rows(ops_conn) == []


async def test_counts_are_real_with_ten_samples_and_follow_the_fault(
    ops_conn: asyncpg.Connection,
) -> None:
    rides = [
        await make_ride(ops_conn, departs_in=timedelta(hours=-3)) for _ in range(13)
    ]

    result = await job(ops_conn, "check_system_invariants")

    assert result["total_violations"] == 13
    assert _counts(result)["expired_active_ride"] == 13
    assert len(result["violations"]) == 10
    row = (await _open_rows(ops_conn))[0]
    assert row["violation_count"] == 13
    assert len(row["sample_data"]) == 10

    # A ride that expired a moment ago is within the grace period.
    await make_ride(ops_conn, departs_in=timedelta(minutes=-1))
    await ops_conn.execute(
        "UPDATE rides SET status = 'completed' WHERE id = ANY($1)", rides[:5]
    )
    later = await job(ops_conn, "check_system_invariants")
    assert later["total_violations"] == 8
    assert (await _open_rows(ops_conn))[0]["violation_count"] == 8
    assert len(await _open_rows(ops_conn)) == 1


async def test_a_seat_count_at_the_integer_limit_stops_no_check(
    ops_conn: asyncpg.Connection,
) -> None:
    """Total minus booked seats past the integer range is held to it, so the
    ride is reported, reconciled and previewed like any other."""
    absurd = await make_ride(ops_conn, total_seats=4)
    await make_booking(ops_conn, absurd, status="confirmed")
    await ops_conn.execute(
        "UPDATE rides SET total_seats = -2147483648 WHERE id = $1", absurd
    )
    await make_ride(ops_conn, departs_in=timedelta(hours=-3))  # expired, active

    result = await job(ops_conn, "check_system_invariants")

    assert result["success"] is True
    counts = _counts(result)
    assert counts["expired_active_ride"] == 1 and counts["seat_mismatch"] == 1
    sample = await ops_conn.fetchval(
        "SELECT sample_data -> 0 FROM invariant_violations"
        " WHERE check_name = 'seat_mismatch'"
    )
    assert sample["expected"] == -2147483647
    preview = await call_json(ops_conn, "SELECT ops_preview_seat_fix($1)", absurd)
    assert (preview["computed"], preview["overbooked"]) == (-2147483647, True)
    assert preview["counted_seats"] == 1
    # No stored value is right where total_seats is below 0: it is set to 0
    # (the rides check refuses less) and reported as overbooked, once.
    reconciled = await job(ops_conn, "reconcile_seat_counts")
    assert reconciled["overbooked_rides"] == [str(absurd)]
    assert (
        await ops_conn.fetchval(
            "SELECT available_seats FROM rides WHERE id = $1", absurd
        )
        == 0
    )
    assert (await job(ops_conn, "reconcile_seat_counts"))["mismatches_fixed"] == 0


async def test_concurrent_checks_keep_one_open_row(
    ops_conn: asyncpg.Connection, ops_dsn: str
) -> None:
    await _seat_mismatch(ops_conn, {})
    conns = [await connect(ops_dsn, purpose="test-check") for _ in range(3)]
    try:
        results = await asyncio.gather(
            *(job(c, "check_system_invariants") for c in conns)
        )
    finally:
        for conn in conns:
            await conn.close()
    assert all(r["success"] for r in results)
    assert sum(int(r["violations_opened"]) for r in results) == 1
    assert len(await _open_rows(ops_conn)) == 1


async def test_legacy_rows_survive_the_upgrade_and_stay_readable(
    legacy_conn: asyncpg.Connection,
) -> None:
    """Findings of the deployed function, then the ops layer on top."""
    await _seat_mismatch(legacy_conn, {})
    legacy = await job(legacy_conn, "check_system_invariants")
    assert legacy["healthy"] is False
    legacy_row = await legacy_conn.fetchrow("SELECT * FROM invariant_violations")
    assert legacy_row["check_name"] == "system_invariant_check"

    await migrate(legacy_conn, ("ops",))

    upgraded = await job(legacy_conn, "check_system_invariants")
    assert upgraded["success"] is True
    assert _counts(upgraded)["seat_mismatch"] == 1
    kept = await legacy_conn.fetchrow(
        "SELECT * FROM invariant_violations WHERE id = $1", legacy_row["id"]
    )
    assert kept["sample_data"] == legacy_row["sample_data"]
    assert kept["resolved_at"] is None and kept["check_id"] is None
    preview = await call_json(
        legacy_conn, "SELECT ops_preview_resolve_violation($1)", legacy_row["id"]
    )
    assert preview["violation"]["check_name"] == "system_invariant_check"
    assert (preview["still_failing"], preview["current_count"]) == (True, 1)

    # Fixing the fault resolves the ops row, not the legacy one.
    await _fix_by_reconcile(legacy_conn, {})
    await job(legacy_conn, "check_system_invariants")
    assert (
        await legacy_conn.fetchval(
            "SELECT resolved_at FROM invariant_violations WHERE id = $1",
            legacy_row["id"],
        )
        is None
    )
    resolved = await call_json(
        legacy_conn,
        "SELECT ops_resolve_violation($1, 'ann', 'fixed by reconciliation')",
        legacy_row["id"],
    )
    assert (resolved["success"], resolved["still_failing"]) == (True, False)
    health = await job(legacy_conn, "get_system_health_summary")
    assert health["unresolved_violations"] == 0
