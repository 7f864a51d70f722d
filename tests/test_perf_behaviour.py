"""Behaviour the performance work added: exact row counters, the shared health
summary, and expire_rides recomputing seats itself instead of per booking."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
from factories import connected, job, make_booking, make_profile, make_ride

from carpool_tui.config import Settings
from carpool_tui.db.migrate import migrate
from carpool_tui.db.repo import Repository
from carpool_tui.db.seed import seed_platform

PAST = timedelta(hours=-1)


async def _totals(conn: asyncpg.Connection) -> tuple[int, int]:
    await conn.execute("SET carpool.health_cache = 'off'")
    health = await job(conn, "get_system_health_summary")
    return health["total_rides"], health["total_bookings"]


async def _counted(conn: asyncpg.Connection) -> tuple[int, int]:
    return (
        await conn.fetchval("SELECT count(*) FROM rides"),
        await conn.fetchval("SELECT count(*) FROM ride_bookings"),
    )


async def test_totals_are_exact_through_inserts_deletes_and_rollbacks(
    ops_conn: asyncpg.Connection, ops_dsn: str
) -> None:
    ride = await make_ride(ops_conn)
    for _ in range(3):
        await make_booking(ops_conn, ride)
    other = await make_ride(ops_conn)
    await ops_conn.execute(
        "INSERT INTO ride_bookings (ride_id, passenger_id)"
        " SELECT $1, id FROM profiles LIMIT 2",
        other,
    )
    assert await _totals(ops_conn) == await _counted(ops_conn) == (2, 5)

    tx = ops_conn.transaction()
    await tx.start()
    await make_booking(ops_conn, ride)
    assert await _totals(ops_conn) == (2, 6)  # its own insert, seen by itself
    await tx.rollback()
    assert await _totals(ops_conn) == (2, 5)

    await ops_conn.execute("DELETE FROM ride_bookings WHERE ride_id = $1", other)
    assert await _totals(ops_conn) == await _counted(ops_conn) == (2, 3)

    # A writer that has not committed is not counted by anyone else.
    async with connected(ops_dsn, purpose="test-writer", timeout_ms=5_000) as writer:
        async with writer.transaction():
            await make_booking(writer, ride)
            assert await _totals(ops_conn) == (2, 3)
        assert await _totals(ops_conn) == (2, 4)

    # Folding the deltas into the base keeps the totals.
    await job(ops_conn, "expire_rides")
    assert await ops_conn.fetchval("SELECT count(*) FROM ops_row_count_deltas") == 0
    assert await _totals(ops_conn) == await _counted(ops_conn)

    await ops_conn.execute("TRUNCATE ride_bookings")
    assert await _totals(ops_conn) == (2, 0)


async def test_totals_count_rows_that_existed_before_the_upgrade(
    legacy_conn: asyncpg.Connection,
) -> None:
    ride = await make_ride(legacy_conn)
    await make_booking(legacy_conn, ride)
    await make_booking(legacy_conn, ride)
    await migrate(legacy_conn, ("ops",))
    assert await _totals(legacy_conn) == await _counted(legacy_conn) == (1, 2)


async def test_totals_count_a_seed_loaded_in_replica_mode(
    ops_conn: asyncpg.Connection,
) -> None:
    await seed_platform(ops_conn, rides=60, seed=3)
    assert await _totals(ops_conn) == await _counted(ops_conn)


async def test_recount_repairs_totals_after_triggers_were_bypassed(
    ops_conn: asyncpg.Connection,
) -> None:
    await ops_conn.execute("ALTER TABLE rides DISABLE TRIGGER ALL")
    await make_ride(ops_conn)
    await ops_conn.execute("ALTER TABLE rides ENABLE TRIGGER ALL")
    await ops_conn.execute(
        "ALTER TABLE rides ENABLE ALWAYS TRIGGER ops_count_rides_insert"
    )
    assert (await _totals(ops_conn))[0] == 0
    await ops_conn.execute("SELECT ops_recount_rows()")
    assert (await _totals(ops_conn))[0] == 1


async def _share_from_the_first_open_ride(conn: asyncpg.Connection) -> None:
    """Make this small test platform big enough to share its summary."""
    await conn.execute(
        "CREATE OR REPLACE FUNCTION ops_health_cache_min_open() RETURNS bigint"
        " LANGUAGE sql IMMUTABLE AS $$ SELECT 1::bigint $$"
    )


async def test_small_platform_summary_is_never_kept(
    ops_conn: asyncpg.Connection,
) -> None:
    await make_ride(ops_conn)
    first = await job(ops_conn, "get_system_health_summary")
    await make_ride(ops_conn)
    second = await job(ops_conn, "get_system_health_summary")
    assert (first["cached"], second["cached"]) == (False, False)
    assert second["total_rides"] == 2
    assert await ops_conn.fetchval("SELECT count(*) FROM ops_health_cache") == 0


async def test_viewers_share_a_summary_for_the_ttl(
    ops_conn: asyncpg.Connection, ops_dsn: str
) -> None:
    await _share_from_the_first_open_ride(ops_conn)
    await make_ride(ops_conn)
    first = await job(ops_conn, "get_system_health_summary")
    assert first["cached"] is False

    async with connected(
        ops_dsn, purpose="viewer", timeout_ms=5_000, read_only=True
    ) as viewer:
        await make_ride(ops_conn)
        shared = await job(viewer, "get_system_health_summary")
        assert shared["cached"] is True
        assert shared["timestamp"] == first["timestamp"]
        assert shared["total_rides"] == 1  # kept, at most the TTL old

        await viewer.execute("SET carpool.health_cache = 'off'")
        fresh = await job(viewer, "get_system_health_summary")
        assert (fresh["cached"], fresh["total_rides"]) == (False, 2)

    await ops_conn.execute("SET carpool.health_cache_ttl = '0'")
    again = await job(ops_conn, "get_system_health_summary")
    assert (again["cached"], again["total_rides"]) == (False, 2)


async def test_read_only_viewer_never_writes_the_kept_summary(
    ops_conn: asyncpg.Connection, ops_dsn: str
) -> None:
    await _share_from_the_first_open_ride(ops_conn)
    await make_ride(ops_conn)
    async with connected(
        ops_dsn, purpose="viewer", timeout_ms=5_000, read_only=True
    ) as viewer:
        health = await job(viewer, "get_system_health_summary")
    assert health["cached"] is False
    assert await ops_conn.fetchval("SELECT count(*) FROM ops_health_cache") == 0


async def test_expire_sets_seats_of_the_rides_it_touched(
    ops_conn: asyncpg.Connection,
) -> None:
    due = await make_ride(ops_conn, departs_in=PAST, total_seats=4)
    await make_booking(ops_conn, due, seats=2, status="confirmed")
    await make_booking(ops_conn, due, status="pending")
    ended = await make_ride(ops_conn, departs_in=PAST, total_seats=3)
    await make_booking(ops_conn, ended, status="confirmed")
    await ops_conn.execute("UPDATE rides SET status = 'cancelled' WHERE id = $1", ended)
    assert (
        await ops_conn.fetchval("SELECT available_seats FROM rides WHERE id = $1", due)
        == 1
    )

    async with ops_conn.transaction():
        result = await job(ops_conn, "expire_rides")
        assert await ops_conn.fetchval(
            "SELECT current_setting('carpool.seat_sync_deferred', true)"
        ) in ("off", "", None)
    assert (result["rides_expired"], result["bookings_completed"]) == (1, 2)
    assert result["orphan_bookings_closed"] == 1
    seats = dict(
        await ops_conn.fetch(
            "SELECT id, available_seats FROM rides WHERE id = ANY($1)", [due, ended]
        )
    )
    assert seats == {due: 4, ended: 3}
    check = await job(ops_conn, "check_system_invariants")
    assert check["healthy"] is True, check["violations"]


async def test_app_sessions_cannot_switch_the_seat_trigger_off(
    ops_conn: asyncpg.Connection,
) -> None:
    """The bypass holds only inside the ops layer's own jobs."""
    ride = await make_ride(ops_conn, total_seats=4)
    passenger = await make_profile(ops_conn)
    await ops_conn.execute(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles"
        " WHERE rolname = 'carpool_test_app') THEN CREATE ROLE carpool_test_app;"
        " END IF; END $$"
    )
    await ops_conn.execute(
        "GRANT SELECT, INSERT, UPDATE ON rides, ride_bookings, profiles"
        " TO carpool_test_app"
    )
    async with ops_conn.transaction():
        await ops_conn.execute("SET LOCAL ROLE carpool_test_app")
        await ops_conn.execute("SET LOCAL carpool.seat_sync_deferred = 'on'")
        await make_booking(ops_conn, ride, passenger, seats=3)
    assert (
        await ops_conn.fetchval("SELECT available_seats FROM rides WHERE id = $1", ride)
        == 1
    )


async def test_repair_checks_old_bookings_against_all_notifications(
    ops_conn: asyncpg.Connection,
) -> None:
    """A booking made before the window but confirmed inside it: its notification
    may be older than the window, and must still count."""
    ride = await make_ride(ops_conn)
    noted = await make_booking(ops_conn, ride, status="confirmed")
    bare = await make_booking(ops_conn, ride, status="confirmed")
    await ops_conn.execute(
        "UPDATE ride_bookings SET created_at = now() - interval '50 days',"
        " updated_at = now() - interval '1 day' WHERE id = ANY($1)",
        [noted, bare],
    )
    await ops_conn.execute(
        "INSERT INTO notifications (user_id, type, category, data, created_at)"
        " SELECT passenger_id, 'BOOKING_CONFIRMED', 'BOOKING_CONFIRMED',"
        " jsonb_build_object('booking_id', id, 'ride_id', ride_id),"
        " now() - interval '45 days' FROM ride_bookings WHERE id = $1",
        noted,
    )
    first = await job(ops_conn, "repair_missing_notifications")
    assert first["confirmations_created"] == 1
    assert first["booking_requests_created"] == 0  # both requests are older
    made = await ops_conn.fetch(
        "SELECT data ->> 'booking_id' AS booking FROM notifications"
        " WHERE type = 'BOOKING_CONFIRMED' AND (data ->> 'repaired')::boolean"
    )
    assert [r["booking"] for r in made] == [str(bare)]
    again = await job(ops_conn, "repair_missing_notifications")
    assert again["total_notifications_created"] == 0


async def test_a_poll_round_trip_is_its_reads_only(
    ops_conn: asyncpg.Connection, ops_dsn: str
) -> None:
    """Giving a pooled connection back sends nothing: no reset query per read."""
    repo = Repository(Settings(dsn=ops_dsn))
    await repo.open()
    try:
        await repo.snapshot()
        await repo.snapshot()
        last = await ops_conn.fetch(
            "SELECT query FROM pg_stat_activity"
            " WHERE application_name = 'carpool-tui dashboard'"
            " AND datname = current_database()"
        )
    finally:
        await repo.close()
    assert last, "the dashboard's pooled connections were not found"
    queries = [r["query"] for r in last]
    assert not [q for q in queries if "RESET ALL" in q], queries
