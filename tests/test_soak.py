"""The concurrency soak at a small size: clients book while the four jobs run.

The first test runs the soak on a seeded ops-layer database and checks every
property twice: from the report, and again from the database itself. The
others break the ops layer the ways a regression would (a booking path that
reads seats without locking the ride, a job that locks bookings before their
rides) and show the soak catches each.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from factories import connected

from benchmarks.soak import JOBS, SoakReport, soak
from carpool_tui.db.seed import seed_platform

CLIENTS = 4
SECONDS = 4.0


@pytest.fixture
async def seeded(ops_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A seeded ops-layer database and a connection to inspect it."""
    async with connected(ops_dsn, purpose="test-soak") as conn:
        await seed_platform(conn, rides=200, seed=7)
        yield conn


async def _duplicate_notifications(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        """
        SELECT type, data ->> 'booking_id' AS booking_id, user_id, count(*) AS n
          FROM notifications
         WHERE data ? 'booking_id'
         GROUP BY 1, 2, 3
        HAVING count(*) > 1
         ORDER BY 1, 2, 3
        """
    )


async def test_soak_holds_every_property(
    seeded: asyncpg.Connection, ops_dsn: str
) -> None:
    conn = seeded
    bookings_before = await conn.fetchval("SELECT count(*) FROM ride_bookings")
    duplicates_before = await _duplicate_notifications(conn)

    report = await soak(ops_dsn, clients=CLIENTS, seconds=SECONDS, seed=7)

    # What the report says.
    assert report.problems() == [], "\n".join(report.lines())
    assert report.held
    assert report.bookings_created > 0
    assert report.confirms > 0
    assert report.cancels > 0
    assert report.refusals.get("no_seats", 0) > 0  # rides really filled up
    assert report.bookings_per_second > 0
    assert report.unexpected_errors == 0
    assert report.deadlocks_seen == report.deadlocks_counted_by_server == 0
    assert report.violations_found == 0
    assert report.duplicate_notifications == 0
    for name in JOBS:
        stats = report.jobs[name]
        assert stats.completed >= 2, name
        assert stats.failed_other == [], name
        assert stats.completed + stats.failed_accepted == stats.runs, name
    reconcile = report.jobs["reconcile_seat_counts"].totals
    assert reconcile["mismatches_found"] == 0
    assert report.final_reconcile_mismatches == 0
    assert report.jobs["check_system_invariants"].totals["total_violations"] == 0
    assert report.jobs["expire_rides"].totals["bookings_completed"] == 0
    lines = "\n".join(report.lines())
    for wanted in ("bookings/s", "job runs", "violations found", "held"):
        assert wanted in lines

    # What the database says.
    seats = await conn.fetch(
        """
        SELECT r.id FROM rides r
          LEFT JOIN ride_bookings b
            ON b.ride_id = r.id AND b.status IN ('pending', 'confirmed')
         WHERE r.status IN ('active', 'in-progress')
         GROUP BY r.id
        HAVING r.available_seats
               <> r.total_seats - COALESCE(sum(b.seats_requested), 0)
        """
    )
    assert seats == []
    assert (
        await conn.fetch(
            "SELECT ride_id, passenger_id FROM ride_bookings"
            " WHERE status IN ('pending', 'confirmed')"
            " GROUP BY 1, 2 HAVING count(*) > 1"
        )
        == []
    )
    rows = await conn.fetch(
        "SELECT id, status FROM ride_bookings WHERE id = ANY($1::uuid[])",
        list(report.bookings),
    )
    assert {r["id"]: r["status"] for r in rows} == report.bookings
    assert await conn.fetchval("SELECT count(*) FROM ride_bookings") == (
        bookings_before + len(report.bookings)
    )
    assert await _duplicate_notifications(conn) == duplicates_before
    per_booking = await conn.fetch(
        """
        SELECT b.id, b.status,
               count(*) FILTER (WHERE n.type = 'BOOKING_REQUEST') AS requests,
               count(*) FILTER (WHERE n.type = 'BOOKING_CANCELLED') AS cancels,
               count(*) FILTER (WHERE n.data ? 'repaired') AS repaired
          FROM ride_bookings b
          LEFT JOIN notifications n ON n.data ->> 'booking_id' = b.id::text
         WHERE b.id = ANY($1::uuid[])
         GROUP BY b.id
        """,
        list(report.bookings),
    )
    for r in per_booking:
        assert r["requests"] == 1, r
        assert r["cancels"] == (1 if r["status"] == "cancelled" else 0), r
        assert r["repaired"] == 0, r
    runs = await conn.fetch(
        """
        SELECT split_part(triggered_by, ':', 2) AS job, status, sqlstate,
               count(*) AS n
          FROM system_job_log
         WHERE triggered_by LIKE 'soak:%' AND triggered_by <> 'soak:audit'
         GROUP BY 1, 2, 3
        """
    )
    assert {r["status"] for r in runs} <= {"completed", "failed"}
    assert {r["sqlstate"] for r in runs if r["status"] == "failed"} <= {"55P03"}
    for name in JOBS:
        logged = sum(r["n"] for r in runs if r["job"] == name)
        assert logged == report.jobs[name].runs, name
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM invariant_violations WHERE resolved_at IS NULL"
        )
        == 0
    )
    assert (
        await conn.fetchval(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        )
        == 0
    )


async def _small_soak(dsn: str) -> SoakReport:
    """A short soak on three rides, so that clients collide often."""
    return await soak(dsn, clients=CLIENTS, seconds=3.0, seed=7, rides_to_book=3)


async def test_soak_fails_when_a_booking_reads_seats_without_the_ride_lock(
    seeded: asyncpg.Connection, ops_dsn: str
) -> None:
    # The seat check and the insert, without FOR UPDATE on the ride in between:
    # two clients both see the last seat and both take it.
    await seeded.execute(
        """
        CREATE OR REPLACE FUNCTION request_booking(p_ride_id uuid, p_passenger_id uuid,
                                                   p_seats integer DEFAULT 1)
        RETURNS uuid LANGUAGE plpgsql AS $$
        DECLARE
            v_ride rides%ROWTYPE;
            v_booking_id uuid;
        BEGIN
            SELECT * INTO v_ride FROM rides WHERE id = p_ride_id;
            IF v_ride.available_seats < p_seats THEN
                RAISE EXCEPTION 'ride % has % seats left, % requested',
                    p_ride_id, v_ride.available_seats, p_seats
                    USING ERRCODE = 'check_violation';
            END IF;
            PERFORM pg_sleep(0.01);
            INSERT INTO ride_bookings (ride_id, passenger_id, seats_requested)
            VALUES (p_ride_id, p_passenger_id, p_seats)
            RETURNING id INTO v_booking_id;
            INSERT INTO notifications (user_id, type, category, data)
            VALUES (v_ride.driver_id, 'BOOKING_REQUEST', 'BOOKING_REQUEST',
                    jsonb_build_object('booking_id', v_booking_id,
                                       'ride_id', p_ride_id));
            RETURN v_booking_id;
        END
        $$
        """
    )
    report = await _small_soak(ops_dsn)
    assert not report.held
    assert report.violations_found > 0, "\n".join(report.lines())
    assert any("invariant violations" in p for p in report.problems())


async def test_soak_fails_when_a_job_locks_bookings_before_their_rides(
    seeded: asyncpg.Connection, ops_dsn: str
) -> None:
    # Reconciliation taking the booking rows first and the rides second: the
    # opposite order to the booking functions, which hold the ride while they
    # wait for the booking.
    await seeded.execute(
        """
        ALTER FUNCTION ops_reconcile_seat_counts_work()
            RENAME TO ops_reconcile_seat_counts_work_sound;
        CREATE FUNCTION ops_reconcile_seat_counts_work()
        RETURNS jsonb LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM 1 FROM ride_bookings
             WHERE status IN ('pending', 'confirmed') ORDER BY id FOR UPDATE;
            PERFORM pg_sleep(0.05);
            PERFORM 1 FROM rides WHERE status = 'active' ORDER BY id FOR UPDATE;
            RETURN ops_reconcile_seat_counts_work_sound();
        END
        $$
        """
    )
    report = await _small_soak(ops_dsn)
    assert not report.held
    assert report.deadlocks_seen > 0, "\n".join(report.lines())
    assert any("deadlocks" in p for p in report.problems())
