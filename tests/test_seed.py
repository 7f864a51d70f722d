"""The data generator: deterministic, realistic, clean unless faults are asked for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from factories import connected

from carpool_tui.db.errors import NotMigrated, OpsError
from carpool_tui.db.seed import FAULT_KINDS, parse_faults, seed_platform

# The eight checks of manual 1.4 as plain SQL, each counting offending rows.
CHECKS = {
    "seat_mismatch": """
        SELECT count(*) FROM (
            SELECT r.id FROM rides r LEFT JOIN ride_bookings b ON b.ride_id = r.id
             GROUP BY r.id
            HAVING r.available_seats <> r.total_seats - coalesce(sum(b.seats_requested)
                   FILTER (WHERE b.status IN ('pending', 'confirmed')), 0)) x""",
    "negative_seats": "SELECT count(*) FROM rides WHERE available_seats < 0",
    "seat_overflow": "SELECT count(*) FROM rides WHERE available_seats > total_seats",
    "active_booking_on_terminal_ride": """
        SELECT count(*) FROM ride_bookings b JOIN rides r ON r.id = b.ride_id
         WHERE b.status IN ('pending', 'confirmed')
           AND r.status IN ('completed', 'cancelled')""",
    "invalid_ride_status": """
        SELECT count(*) FROM rides
         WHERE status NOT IN ('active', 'in-progress', 'completed', 'cancelled')""",
    "invalid_booking_status": """
        SELECT count(*) FROM ride_bookings
         WHERE status NOT IN ('pending', 'confirmed', 'completed', 'cancelled')""",
    "duplicate_active_bookings": """
        SELECT count(*) FROM (
            SELECT 1 FROM ride_bookings WHERE status IN ('pending', 'confirmed')
             GROUP BY ride_id, passenger_id HAVING count(*) > 1) x""",
    "expired_active_ride": """
        SELECT count(*) FROM rides
         WHERE status IN ('active', 'in-progress')
           AND coalesce(available_until, departure_time) < now()""",
}
# A fault may also trip these other checks, by its nature.
ALSO_TRIPS = {
    "negative_seats": {"seat_mismatch"},
    "seat_overflow": {"seat_mismatch"},
}
PLATFORM_TABLES = ("profiles", "vehicles", "rides", "ride_bookings", "notifications")


async def _check_counts(conn: asyncpg.Connection) -> dict[str, int]:
    return {name: await conn.fetchval(sql) for name, sql in CHECKS.items()}


async def _digest(conn: asyncpg.Connection, tables: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for table in tables:
        out[table] = await conn.fetchval(
            f"SELECT md5(string_agg(t::text, '|' ORDER BY t.id::text)) FROM {table} t"
        )
    return out


@pytest.fixture
async def base_conn(base_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    async with connected(base_dsn) as conn:
        yield conn


def _pinned_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def test_fault_kinds_are_the_manual_checks_in_order() -> None:
    assert tuple(CHECKS) == FAULT_KINDS


def test_parse_faults_accepts_all_none_and_lists() -> None:
    assert parse_faults("all") == FAULT_KINDS
    assert parse_faults(" none ") == ()
    assert parse_faults("") == ()
    assert parse_faults("seat_overflow, negative_seats,seat_overflow") == (
        "seat_overflow",
        "negative_seats",
    )


def test_parse_faults_names_the_bad_kind_and_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="'seat_drift'") as caught:
        parse_faults("seat_mismatch,seat_drift")
    for kind in FAULT_KINDS:
        assert kind in str(caught.value)


async def test_same_seed_gives_identical_rows_in_two_databases(
    legacy_dsn: str, pg_server: object
) -> None:
    now = _pinned_now()
    other = await pg_server.create_database(pg_server.template("legacy"))  # type: ignore[attr-defined]
    tables = (*PLATFORM_TABLES, "system_job_log", "invariant_violations")
    digests = []
    try:
        for dsn in (legacy_dsn, pg_server.dsn(other)):  # type: ignore[attr-defined]
            async with connected(dsn) as conn:
                await seed_platform(
                    conn,
                    rides=300,
                    seed=7,
                    faults=FAULT_KINDS,
                    history_days=2,
                    now=now,
                )
                digests.append(await _digest(conn, tables))
    finally:
        await pg_server.drop_database(other)  # type: ignore[attr-defined]
    assert digests[0] == digests[1]
    assert all(digests[0].values())


async def test_another_seed_gives_other_rows(base_dsn: str, legacy_dsn: str) -> None:
    now = _pinned_now()
    digests = []
    for dsn, seed in ((base_dsn, 1), (legacy_dsn, 2)):
        async with connected(dsn) as conn:
            await seed_platform(conn, rides=100, seed=seed, now=now)
            digests.append(await _digest(conn, ("rides",)))
    assert digests[0] != digests[1]


async def test_without_faults_every_check_passes(base_conn: asyncpg.Connection) -> None:
    report = await seed_platform(base_conn, rides=1500, seed=3)
    assert report.faults == []
    assert await _check_counts(base_conn) == dict.fromkeys(CHECKS, 0)
    # The trigger's rule holds on every ride, past ones included.
    assert (
        await base_conn.fetchval("""
        SELECT count(*) FROM rides r
         WHERE r.available_seats <> greatest(0, r.total_seats - coalesce((
               SELECT sum(b.seats_requested) FROM ride_bookings b
                WHERE b.ride_id = r.id AND b.status IN ('pending', 'confirmed')), 0))
    """)
        == 0
    )


@pytest.mark.parametrize("kind", FAULT_KINDS)
async def test_each_fault_fails_its_own_check_only(
    base_conn: asyncpg.Connection, kind: str
) -> None:
    report = await seed_platform(base_conn, rides=400, seed=5, faults=[kind])
    counts = await _check_counts(base_conn)
    assert counts[kind] >= 2, counts
    tripped = {name for name, n in counts.items() if n}
    assert tripped - {kind} <= ALSO_TRIPS.get(kind, set())
    assert [k for k, _ in report.faults] == [kind]


async def test_constrained_faults_say_which_constraint_was_dropped(
    base_conn: asyncpg.Connection,
) -> None:
    report = await seed_platform(base_conn, rides=300, faults=FAULT_KINDS)
    how = dict(report.faults)
    assert "dropped constraint rides_available_seats_check" in how["negative_seats"]
    assert "dropped constraint rides_status_check" in how["invalid_ride_status"]
    assert "ride_bookings_status_check" in how["invalid_booking_status"]
    assert "ride_bookings_one_active_per_passenger" in how["duplicate_active_bookings"]
    assert all(await _check_counts(base_conn))
    assert all(n > 0 for n in (await _check_counts(base_conn)).values())
    assert any("faults:" in line for line in report.lines())


async def test_realistic_platform_shape(base_conn: asyncpg.Connection) -> None:
    now = _pinned_now()
    report = await seed_platform(base_conn, rides=3000, seed=11, now=now)
    c = report.counts
    assert c["rides"] == 3000
    assert 2.5 <= c["ride_bookings"] / c["rides"] <= 3.5
    assert 1.8 <= c["notifications"] / c["rides"] <= 3.2
    booking_states = {
        r["status"]: r["n"]
        for r in await base_conn.fetch(
            "SELECT status, count(*) AS n FROM ride_bookings GROUP BY status"
        )
    }
    assert set(booking_states) == {"pending", "confirmed", "completed", "cancelled"}
    ride_states = {
        r["status"] for r in await base_conn.fetch("SELECT DISTINCT status FROM rides")
    }
    assert ride_states == {"active", "in-progress", "completed", "cancelled"}
    future = await base_conn.fetchval(
        "SELECT count(*) FROM rides WHERE departure_time > $1", now
    )
    assert future == 120  # 4%
    assert (
        await base_conn.fetchval(
            "SELECT count(*) FROM ride_bookings WHERE status = 'cancelled'"
            " AND cancellation_reason LIKE 'driver declined%'"
        )
        > 0
    )
    assert (
        await base_conn.fetchval(
            "SELECT count(*) FROM ride_bookings WHERE status = 'cancelled'"
            " AND (cancelled_at IS NULL OR cancellation_reason IS NULL)"
        )
        == 0
    )
    assert (
        await base_conn.fetchval(
            "SELECT count(*) FROM rides WHERE status = 'active'"
            " AND available_until IS NOT NULL AND ride_type = 'flexible'"
        )
        > 0
    )
    for table in ("profiles", "rides", "ride_bookings"):
        assert await base_conn.fetchval(f"SELECT bool_and(is_demo) FROM {table}"), table
    # Times are anchored on the given now.
    assert await base_conn.fetchval(
        "SELECT max(departure_time) <= $1::timestamptz + interval '15 days'"
        " AND max(created_at) <= $1 FROM rides",
        now,
    )
    assert (
        await base_conn.fetchval(
            "SELECT count(*) FROM notifications WHERE category <> type"
            " OR type NOT LIKE 'BOOKING_%' OR created_at > $1",
            now,
        )
        == 0
    )
    # Requests go to the ride's driver, answers to the passenger.
    assert (
        await base_conn.fetchval("""
        SELECT count(*) FROM notifications n
          JOIN ride_bookings b ON b.id = (n.data->>'booking_id')::uuid
          JOIN rides r ON r.id = b.ride_id
         WHERE (n.type = 'BOOKING_REQUEST' AND n.user_id <> r.driver_id)
            OR (n.type <> 'BOOKING_REQUEST' AND n.user_id <> b.passenger_id)
    """)
        == 0
    )


MISSING_RECENT = """
    SELECT count(*) FROM ride_bookings b
     WHERE (b.created_at > now() - interval '30 days'
            AND NOT EXISTS (SELECT 1 FROM notifications n
                             WHERE n.type = 'BOOKING_REQUEST'
                               AND n.data->>'booking_id' = b.id::text))
        OR (b.status IN ('confirmed', 'completed')
            AND b.updated_at > now() - interval '30 days'
            AND NOT EXISTS (SELECT 1 FROM notifications n
                             WHERE n.type = 'BOOKING_CONFIRMED'
                               AND n.data->>'booking_id' = b.id::text))
        OR (b.status = 'cancelled' AND b.cancelled_at > now() - interval '30 days'
            AND NOT EXISTS (SELECT 1 FROM notifications n
                             WHERE n.type = 'BOOKING_CANCELLED'
                               AND n.data->>'booking_id' = b.id::text))
"""


async def test_some_notifications_are_missing_for_the_repair_job(
    legacy_conn: asyncpg.Connection,
) -> None:
    await seed_platform(legacy_conn, rides=2000, seed=2)
    missing = await legacy_conn.fetchval(MISSING_RECENT)
    recent = await legacy_conn.fetchval(
        "SELECT count(*) FROM ride_bookings"
        " WHERE greatest(created_at, updated_at) > now() - interval '30 days'"
    )
    assert 0.01 * recent <= missing <= 0.06 * recent
    result = await legacy_conn.fetchval("SELECT repair_missing_notifications()")
    assert result["total_notifications_created"] == missing
    assert await legacy_conn.fetchval(MISSING_RECENT) == 0


async def test_history_on_a_legacy_database(legacy_conn: asyncpg.Connection) -> None:
    report = await seed_platform(legacy_conn, rides=200, history_days=3)
    runs = {
        r["job_name"]: r["n"]
        for r in await legacy_conn.fetch(
            "SELECT job_name, count(*) AS n FROM system_job_log GROUP BY 1"
        )
    }
    assert 3 * 288 - 12 <= runs["expire_rides"] <= 3 * 288
    assert 3 * 96 - 4 <= runs["check_system_invariants"] <= 3 * 96
    assert 2 <= runs["reconcile_seat_counts"] <= 3
    assert 2 <= runs["repair_missing_notifications"] <= 3
    assert report.counts["system_job_log"] == sum(runs.values())
    assert (
        await legacy_conn.fetchval("""
        SELECT count(*) FROM system_job_log
         WHERE extract(hour FROM started_at AT TIME ZONE 'UTC') <> 3
           AND job_name = 'reconcile_seat_counts'""")
        == 0
    )
    failed = await legacy_conn.fetch(
        "SELECT error_message, details FROM system_job_log WHERE status = 'failed'"
    )
    assert failed
    for row in failed:
        assert row["details"]["sqlstate"] in {"55P03", "42501", "08006", "57014"}
        assert row["error_message"]
    assert (
        await legacy_conn.fetchval(
            "SELECT count(*) FROM system_job_log WHERE completed_at > now()"
            " OR status NOT IN ('completed', 'failed')"
            " OR NOT details ? 'started_at'"
        )
        == 0
    )
    violations = await legacy_conn.fetch("SELECT * FROM invariant_violations")
    assert violations
    for v in violations:
        assert v["resolved_at"] is not None and v["resolved_at"] > v["detected_at"]
        assert v["check_name"] == "system_invariant_check"
        assert len(v["sample_data"]) == v["violation_count"]
    health = await legacy_conn.fetchval("SELECT get_system_health_summary()")
    assert health["unresolved_violations"] == 0
    assert {j["job_name"] for j in health["recent_job_status"]} == set(runs)


async def test_history_fills_the_ops_layer_columns_when_present(
    legacy_conn: asyncpg.Connection,
) -> None:
    await legacy_conn.execute("""
        ALTER TABLE system_job_log ADD COLUMN sqlstate text,
                                   ADD COLUMN triggered_by text;
        ALTER TABLE invariant_violations ADD COLUMN check_id text,
                                         ADD COLUMN last_seen_at timestamptz,
                                         ADD COLUMN resolved_by text;
    """)
    await seed_platform(legacy_conn, rides=100, history_days=10)
    assert (
        await legacy_conn.fetchval(
            "SELECT count(*) FROM system_job_log WHERE status = 'failed'"
            " AND sqlstate = details->>'sqlstate'"
        )
        > 0
    )
    assert (
        await legacy_conn.fetchval(
            "SELECT count(*) FROM system_job_log WHERE triggered_by IS DISTINCT FROM"
            " 'scheduler' OR (status = 'completed' AND sqlstate IS NOT NULL)"
        )
        == 0
    )
    rows = await legacy_conn.fetch(
        "SELECT check_name, check_id, detected_at, last_seen_at, resolved_at,"
        " now() AS now FROM invariant_violations"
    )
    assert rows
    for row in rows:
        assert (row["check_name"], row["check_id"]) in {
            ("seat_mismatch", "INV-SEAT-001"),
            ("expired_active_ride", "INV-TIME-001"),
        }
        # Seen between detection and resolution, and never in the future.
        assert row["detected_at"] <= row["last_seen_at"] <= row["resolved_at"]
        assert row["resolved_at"] < row["now"]


async def test_history_needs_the_job_table(base_conn: asyncpg.Connection) -> None:
    with pytest.raises(NotMigrated, match="system_job_log"):
        await seed_platform(base_conn, rides=10, history_days=1)
    assert await base_conn.fetchval("SELECT count(*) FROM rides") == 0


async def test_refuses_a_database_that_has_rides(base_conn: asyncpg.Connection) -> None:
    await seed_platform(base_conn, rides=20)
    with pytest.raises(OpsError, match="already has rides"):
        await seed_platform(base_conn, rides=20, seed=2)


async def test_expired_active_scales_with_the_platform(
    base_conn: asyncpg.Connection,
) -> None:
    now = _pinned_now() - timedelta(seconds=1)
    await seed_platform(base_conn, rides=2000, faults=["expired_active_ride"], now=now)
    assert await base_conn.fetchval(CHECKS["expired_active_ride"]) == 20


async def test_ops_layer_sees_each_fault_and_gets_its_history_columns(
    ops_conn: asyncpg.Connection,
) -> None:
    await seed_platform(ops_conn, rides=300, faults=FAULT_KINDS, history_days=3)
    result = await ops_conn.fetchval("SELECT check_system_invariants()")
    counts = {c["name"]: c["count"] for c in result["checks"]}
    assert set(counts) == set(FAULT_KINDS)
    assert all(n >= 2 for n in counts.values()), counts
    assert (
        await ops_conn.fetchval(
            "SELECT count(*) FROM system_job_log WHERE status = 'failed'"
            " AND sqlstate IS NOT NULL AND triggered_by = 'scheduler'"
        )
        > 0
    )
    assert (
        await ops_conn.fetchval(
            "SELECT count(*) FROM invariant_violations"
            " WHERE check_id IS NOT NULL AND resolved_at IS NOT NULL"
        )
        > 0
    )


_SHAPE = """
    SELECT string_agg(d, E'\\n' ORDER BY d) FROM (
        SELECT format('%s %s valid=%s', i.indrelid::regclass,
                      pg_get_indexdef(i.indexrelid), i.indisvalid) AS d
          FROM pg_index i
         WHERE i.indrelid = ANY ($1::regclass[])
        UNION ALL
        SELECT format('%s %s %s validated=%s', c.conrelid::regclass, c.conname,
                      pg_get_constraintdef(c.oid), c.convalidated)
          FROM pg_constraint c
         WHERE c.conrelid = ANY ($1::regclass[])) x
"""


async def _shape(conn: asyncpg.Connection) -> str:
    """Every index and constraint of the platform tables, as definitions."""
    shape: str = await conn.fetchval(_SHAPE, list(PLATFORM_TABLES))
    return shape


async def test_seed_rebuilds_every_index_and_constraint_it_set_aside(
    ops_conn: asyncpg.Connection,
) -> None:
    before = await _shape(ops_conn)
    assert "rides_ops_open_seats_idx" in before and "notifications_pkey" in before
    await seed_platform(ops_conn, rides=300, history_days=1)
    assert await _shape(ops_conn) == before
    # The rebuilt unique index still refuses a second open booking.
    ride, passenger = await ops_conn.fetchrow(
        "SELECT ride_id, passenger_id FROM ride_bookings"
        " WHERE status = 'pending' LIMIT 1"
    )
    with pytest.raises(asyncpg.UniqueViolationError):
        await ops_conn.execute(
            "INSERT INTO ride_bookings (ride_id, passenger_id, seats_requested, status)"
            " VALUES ($1, $2, 1, 'pending')",
            ride,
            passenger,
        )


async def test_a_table_owner_without_superuser_seeds_too(
    base_conn: asyncpg.Connection,
) -> None:
    before = await _shape(base_conn)
    role = "carpool_test_seeder"
    await base_conn.execute(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}')"
        f" THEN CREATE ROLE {role} NOLOGIN; END IF; END $$"
    )
    for table in await base_conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    ):
        await base_conn.execute(f"ALTER TABLE {table[0]} OWNER TO {role}")
    try:
        await base_conn.execute(f"SET ROLE {role}")
        assert await base_conn.fetchval("SHOW is_superuser") == "off"
        await seed_platform(base_conn, rides=200)
        await base_conn.execute("RESET ROLE")
        assert await _shape(base_conn) == before
        assert await _check_counts(base_conn) == dict.fromkeys(CHECKS, 0)
        assert await base_conn.fetchval("SELECT count(*) FROM ride_bookings") > 200
    finally:
        await base_conn.execute("RESET ROLE")
        await base_conn.execute(f"REASSIGN OWNED BY {role} TO CURRENT_USER")
        await base_conn.execute(f"DROP ROLE {role}")


async def test_seed_leaves_alone_what_it_could_not_rebuild_exactly(
    ops_conn: asyncpg.Connection,
) -> None:
    await ops_conn.execute(
        "CREATE VIEW notification_ids AS"
        " SELECT n.id, n.type, count(*) FROM notifications n GROUP BY n.id;"
        " COMMENT ON INDEX rides_driver_id_idx IS 'kept';"
        " ALTER INDEX notifications_ops_booking_idx ALTER COLUMN 1"
        " SET STATISTICS 500"
    )
    before = await _shape(ops_conn)
    await seed_platform(ops_conn, rides=100)
    assert await _shape(ops_conn) == before
    assert (
        await ops_conn.fetchval(
            "SELECT obj_description('rides_driver_id_idx'::regclass, 'pg_class')"
        )
        == "kept"
    )
    assert (
        await ops_conn.fetchval(
            "SELECT attstattarget FROM pg_attribute"
            " WHERE attrelid = 'notifications_ops_booking_idx'::regclass"
            " AND attnum = 1"
        )
        == 500
    )
    assert await ops_conn.fetchval("SELECT count(*) FROM notification_ids") > 0


async def test_seed_loads_through_the_indexes_when_a_table_is_in_use(
    ops_dsn: str, ops_conn: asyncpg.Connection
) -> None:
    before = await _shape(ops_conn)
    async with connected(ops_dsn, timeout_ms=5_000) as other:
        reader = other.transaction()
        await reader.start()
        await other.fetchval("SELECT count(*) FROM notifications")
        await seed_platform(ops_conn, rides=100)
        await reader.rollback()
    assert await _shape(ops_conn) == before
    assert await ops_conn.fetchval("SELECT count(*) FROM notifications") > 0


async def test_seed_command_says_why_its_closing_check_did_not_run(
    ops_conn: asyncpg.Connection,
) -> None:
    from carpool_tui.cli import _check_after_seed

    role = "carpool_test_nocheck"
    await ops_conn.execute(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}')"
        f" THEN CREATE ROLE {role} NOLOGIN; END IF; END $$"
    )
    try:
        await ops_conn.execute(f"SET ROLE {role}")
        line = await _check_after_seed(ops_conn)
    finally:
        await ops_conn.execute("RESET ROLE")
        await ops_conn.execute(f"DROP ROLE {role}")
    assert line.startswith("invariant check: not run ("), line
    assert "check_system_invariants" in line, line


async def test_seed_command_says_when_its_closing_check_failed(
    ops_conn: asyncpg.Connection, ops_dsn: str
) -> None:
    from carpool_tui.cli import _check_after_seed

    holder = await asyncpg.connect(ops_dsn)
    try:
        # Another check is running: this one gives up on the job's lock.
        await holder.execute(
            "SELECT pg_advisory_lock(ops_job_lock_key('check_system_invariants'))"
        )
        await ops_conn.execute("SET carpool.lock_timeout = '200ms'")
        line = await _check_after_seed(ops_conn)
    finally:
        await ops_conn.execute("RESET carpool.lock_timeout")
        await holder.close()
    assert line.startswith("invariant check: failed ("), line
    assert "lock timeout" in line and "run-job check_system_invariants" in line
    assert "0 violation" not in line


async def test_seed_command_counts_the_rows_its_check_left(
    ops_conn: asyncpg.Connection,
) -> None:
    from carpool_tui.cli import _check_after_seed

    await seed_platform(ops_conn, rides=60, faults=["seat_mismatch"])
    line = await _check_after_seed(ops_conn)
    rows, still_open = await ops_conn.fetchrow(
        "SELECT count(*), count(*) FILTER (WHERE resolved_at IS NULL)"
        " FROM invariant_violations"
    )
    found = await ops_conn.fetchval(
        "SELECT sum(violation_count) FROM invariant_violations"
        " WHERE resolved_at IS NULL"
    )
    assert still_open >= 1
    assert line == (
        f"invariant check: {found} violation(s) found; invariant_violations now"
        f" holds {rows} row(s), {still_open} open"
    )
