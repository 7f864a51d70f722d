"""Deterministic demo, test and benchmark data for the carpool platform.

Everything is generated inside the server with ``generate_series`` and
``INSERT ... SELECT``; Python only decides the sizes and sends a handful of
statements, so a million rides load in under two minutes. Every identifier and
every random choice comes from ``md5`` of the seed and the row's number, so the
same seed and the same ``now`` give byte-identical data on any server.

The platform it builds: drivers with one vehicle each, passengers, a couple of
admins; rides over the past 150 days (completed, some cancelled), 4% in the
next two weeks (active), a few in progress, a tenth of them flexible with an
``available_until``; about three bookings per ride in every state (pending,
confirmed, completed, cancelled by the passenger or declined by the driver);
the booking notifications of the last 60 days (older ones are purged, as the
platform does), about 3% of bookings missing one. All rows have
``is_demo = true``.

Without faults the data passes all eight invariant checks of manual 1.4.
Each requested fault adds a few rows that fail exactly that check, made the
way real incidents make them (see :func:`seed_platform`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from carpool_tui.checks import CHECK_NAMES
from carpool_tui.db.errors import NotMigrated, OpsError

FAULT_KINDS: tuple[str, ...] = CHECK_NAMES
"""One fault kind per invariant check, named after the check it trips."""

# Shares of the generated platform (fractions of rides or bookings).
FUTURE_SHARE = 0.04  # rides departing in the next 14 days, status active
IN_PROGRESS_SHARE = 0.002
CANCELLED_SHARE = 0.05  # past rides the driver cancelled
EXPIRED_ACTIVE_SHARE = 0.01  # with the expired_active_ride fault
DRIFT_SHARE = 0.005  # of active rides, with the seat_mismatch fault
MISSING_NOTIFICATION_SHARE = 0.03  # of bookings
HISTORY_SPAN_DAYS = 150
NOTIFICATION_RETENTION_DAYS = 60
FEW = 3  # instances of a fault that has no share of its own

_TABLES = (
    "profiles",
    "vehicles",
    "rides",
    "ride_bookings",
    "notifications",
    "admin_audit_log",
    "system_job_log",
    "invariant_violations",
)

_CITIES = (
    "Manchester",
    "Leeds",
    "Sheffield",
    "Liverpool",
    "Bristol",
    "Birmingham",
    "Nottingham",
    "Leicester",
    "York",
    "Bath",
    "Oxford",
    "Cambridge",
    "Brighton",
    "Reading",
    "Cardiff",
    "Newcastle",
    "Glasgow",
    "Edinburgh",
    "Norwich",
    "Exeter",
)
_FIRST = (
    "Amara", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Isla",
    "Jon", "Kai", "Lena", "Marek", "Nia", "Omar", "Priya", "Quinn", "Rosa",
    "Sam", "Tariq", "Uma", "Victor", "Wen", "Yara",
)  # fmt: skip
_LAST = (
    "Adams", "Bakr", "Costa", "Dube", "Evans", "Fischer", "Gupta", "Hughes",
    "Ito", "Jones", "Kowalski", "Lopez", "Murphy", "Novak", "Okafor", "Patel",
    "Reid", "Silva", "Taylor", "Walsh",
)  # fmt: skip
_VEHICLES = (
    ("Toyota", "Corolla"),
    ("Volkswagen", "Golf"),
    ("Ford", "Focus"),
    ("Skoda", "Octavia"),
    ("Kia", "Niro"),
    ("Tesla", "Model 3"),
    ("Renault", "Zoe"),
    ("Vauxhall", "Zafira"),
    ("Hyundai", "Ioniq"),
    ("Nissan", "Leaf"),
)
_PASSENGER_REASONS = (
    "plans changed",
    "found another ride",
    "running late",
    "booked by mistake",
    "meeting cancelled",
)
_JOB_ERRORS = (
    ("55P03", "canceling statement due to lock timeout"),
    ("42501", "permission denied for table ride_bookings"),
    ("08006", "connection to client lost"),
    ("57014", "canceling statement due to statement timeout"),
)


@dataclass(frozen=True)
class SeedReport:
    """What :func:`seed_platform` made: rows per table and how each fault was made."""

    counts: dict[str, int]
    faults: list[tuple[str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The report as lines for a terminal."""
        out = [f"{table:<22}{rows:>12,}" for table, rows in self.counts.items()]
        if self.faults:
            out.append("faults:")
            out.extend(f"  {kind}: {how}" for kind, how in self.faults)
        else:
            out.append("faults: none (all eight invariant checks pass)")
        return out


def parse_faults(text: str) -> tuple[str, ...]:
    """Fault kinds from ``"all"``, ``"none"`` or a comma list of kinds.

    Raises ValueError naming the unknown kind and listing the valid ones.
    """
    cleaned = text.strip().lower()
    if cleaned in ("", "none"):
        return ()
    if cleaned == "all":
        return FAULT_KINDS
    kinds: list[str] = []
    for part in cleaned.split(","):
        kind = part.strip()
        if not kind:
            continue
        if kind not in FAULT_KINDS:
            raise ValueError(
                f"unknown fault kind {kind!r}; valid: all, none, "
                + ", ".join(FAULT_KINDS)
            )
        if kind not in kinds:
            kinds.append(kind)
    return tuple(kinds)


def _u(h: str, k: int) -> str:
    """SQL for a uniform value in [0, 1) from the k-th 16 bits (0..7) of md5 h."""
    return f"(('x' || substr({h}, {4 * k + 1}, 4))::bit(16)::int::float8 / 65536)"


def _int(h: str, k: int) -> str:
    """SQL for a non-negative 28-bit integer from md5 h, starting at hex digit k."""
    return f"('x' || substr({h}, {k + 1}, 7))::bit(28)::int"


def _pick(h: str, k: int, choices: tuple[str, ...]) -> str:
    """SQL choosing one of the literal strings with the k-th fraction of h."""
    array = "ARRAY[" + ", ".join("'" + c.replace("'", "''") + "'" for c in choices)
    return f"({array}])[1 + floor({_u(h, k)} * {len(choices)})::int]"


@dataclass(frozen=True)
class _Plan:
    """The sizes of one generated platform."""

    rides: int
    drivers: int
    passengers: int
    future: int
    in_progress: int
    expired: int
    cancelled: int

    @classmethod
    def for_rides(cls, rides: int, expired_active: bool) -> _Plan:
        future = min(rides, max(round(rides * FUTURE_SHARE), min(24, rides // 2)))
        left = rides - future
        in_progress = min(left, max(round(rides * IN_PROGRESS_SHARE), min(3, left)))
        left -= in_progress
        expired = 0
        if expired_active:
            expired = min(left, max(round(rides * EXPIRED_ACTIVE_SHARE), FEW))
        left -= expired
        cancelled = min(left, round(rides * CANCELLED_SHARE))
        return cls(
            rides=rides,
            drivers=max(3, math.ceil(rides / 20)),
            passengers=max(12, math.ceil(rides / 4)),
            future=future,
            in_progress=in_progress,
            expired=expired,
            cancelled=cancelled,
        )


async def seed_platform(
    conn: asyncpg.Connection,
    *,
    rides: int = 200,
    seed: int = 1,
    faults: Iterable[str] = (),
    history_days: int = 0,
    now: datetime | None = None,
) -> SeedReport:
    """Fill an empty platform database with a generated platform, in one transaction.

    ``now`` (default: the server's ``now()``) anchors every time, so tests can pin
    it; the same ``seed``, ``rides`` and ``now`` give identical rows.

    ``faults`` adds, per kind, a few rows failing that invariant check. Two kinds
    scale with the platform, to give the benchmark shape at large sizes:
    ``seat_mismatch`` drifts 0.5% of active rides (at least 3) and
    ``expired_active_ride`` leaves 1% of rides (at least 3) active past their
    expiry. Without that fault no active ride is past its expiry, so a seed
    without faults passes every check. Kinds that a constraint forbids drop
    that constraint first, and the report says so.

    ``history_days`` > 0 adds ``system_job_log`` runs at the manual's
    frequencies over that many days (a few failed, with SQLSTATE) and some
    resolved ``invariant_violations``; it needs those tables (legacy or ops
    layer). Either shape of those tables is handled.

    The seed runs without a statement timeout and refuses a database that
    already has rides.
    """
    if rides < 1:
        raise ValueError("rides must be at least 1")
    if history_days < 0:
        raise ValueError("history_days must not be negative")
    kinds = parse_faults(",".join(faults))
    plan = _Plan.for_rides(rides, "expired_active_ride" in kinds)
    if await conn.fetchval("SELECT to_regclass('rides')") is None:
        raise NotMigrated(
            "This database has no platform tables (rides, ride_bookings)",
            "Create the platform schema first (migrate --base).",
        )
    if (
        history_days
        and await conn.fetchval("SELECT to_regclass('system_job_log')") is None
    ):
        raise NotMigrated(
            "Job history needs the system_job_log table",
            "Apply the ops layer (or the deployed functions) first.",
        )
    async with conn.transaction():
        await conn.execute(
            "SET LOCAL statement_timeout = 0; SET LOCAL work_mem = '256MB';"
            " SET LOCAL maintenance_work_mem = '256MB'"
        )
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM rides)"):
            raise OpsError(
                "This database already has rides",
                "Seed a fresh database (or drop and recreate this one).",
            )
        at: datetime = now or await conn.fetchval("SELECT now()")
        await _bulk_load(conn, plan, seed, at)
        made: list[tuple[str, str]] = []
        for kind in kinds:
            made.append((kind, await _FAULTS[kind](conn, plan, seed, at)))
        if kinds:
            # The seat trigger stamps the server's clock; keep the data on `now`.
            await conn.execute(
                "UPDATE rides SET updated_at = $1 WHERE updated_at = now()", at
            )
        if history_days:
            await _history(conn, plan, seed, at, history_days)
        await conn.execute("ANALYZE profiles, vehicles, rides, ride_bookings")
        await conn.execute("ANALYZE notifications")
        counts = await _counts(conn)
    return SeedReport(counts=counts, faults=made)


async def _counts(conn: asyncpg.Connection) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table in _TABLES:
        if await conn.fetchval("SELECT to_regclass($1)", table) is not None:
            counts[table] = await conn.fetchval(f"SELECT count(*) FROM {table}")
    return counts


async def _bulk_load(
    conn: asyncpg.Connection, plan: _Plan, seed: int, now: datetime
) -> None:
    """Profiles, vehicles, rides, bookings and notifications, set-based.

    Rides, bookings and notifications are written in the order they were
    created, as a table grown by the platform lies on disk: the recent rows,
    which the jobs and the dashboard read most, share the table's last pages.

    Seats are computed directly instead of by the per-row seat trigger, which is
    off for the load and on again afterwards (same transaction). A superuser
    loads in replica mode, which also skips the foreign-key triggers (the rows
    are consistent by construction) and halves the load time; anyone else
    disables the user triggers of ``ride_bookings`` only.
    """
    superuser = await conn.fetchval("SELECT current_setting('is_superuser') = 'on'")
    if superuser:
        await conn.execute("SET LOCAL session_replication_role = replica")
    rebuild = await _set_indexes_aside(conn) if superuser else []
    s = str(seed)
    d, p = plan.drivers, plan.passengers
    h = "h"
    await conn.execute(f"""
        INSERT INTO profiles (id, email, full_name, is_admin, admin_role, is_demo,
                              created_at, updated_at)
        SELECT md5('{s}:profile:' || k)::uuid,
               CASE WHEN k <= {d} THEN 'driver' || k
                    WHEN k <= {d + p} THEN 'rider' || (k - {d})
                    ELSE 'admin' || (k - {d + p}) END || '@demo.carpool.test',
               {_pick(h, 0, _FIRST)} || ' ' || {_pick(h, 1, _LAST)},
               k > {d + p},
               CASE k - {d + p} WHEN 1 THEN 'super_admin'::admin_role
                                WHEN 2 THEN 'admin'::admin_role END,
               true, c, c
          FROM generate_series(1, {d + p + 2}) k,
               LATERAL (SELECT md5('{s}:ph:' || k) AS h OFFSET 0) x,
               LATERAL (SELECT $1::timestamptz - interval '{HISTORY_SPAN_DAYS} days'
                               - {_u(h, 2)} * interval '400 days' AS c) t
    """, now)  # fmt: skip
    await conn.execute(f"""
        CREATE TEMP TABLE _seed_driver ON COMMIT DROP AS
        SELECT k AS n, md5('{s}:profile:' || k)::uuid AS profile_id,
               md5('{s}:vehicle:' || k)::uuid AS vehicle_id,
               4 + floor({_u(h, 0)} * 4)::int AS capacity,
               1 + floor({_u(h, 1)} * {len(_VEHICLES)})::int AS model
          FROM generate_series(1, {d}) k,
               LATERAL (SELECT md5('{s}:vh:' || k) AS h OFFSET 0) x
    """)  # fmt: skip
    makes = "ARRAY[" + ", ".join(f"'{m}'" for m, _ in _VEHICLES) + "]"
    models = "ARRAY[" + ", ".join(f"'{m}'" for _, m in _VEHICLES) + "]"
    await conn.execute(f"""
        INSERT INTO vehicles (id, owner_id, make, model, capacity, created_at)
        SELECT v.vehicle_id, v.profile_id, ({makes})[v.model], ({models})[v.model],
               v.capacity, p.created_at
          FROM _seed_driver v JOIN profiles p ON p.id = v.profile_id
    """)  # fmt: skip
    await _stage_rides(conn, plan, s, now)
    await _stage_bookings(conn, plan, s, now)
    await conn.execute("""
        INSERT INTO rides (id, driver_id, vehicle_id, origin, destination,
                           departure_time, available_until, available_seats,
                           total_seats, status, ride_type, is_demo, created_at,
                           updated_at)
        SELECT r.id, r.driver_id, r.vehicle_id, r.origin, r.destination,
               r.departure, r.available_until,
               r.total_seats - coalesce(held.seats, 0), r.total_seats, r.status,
               r.ride_type, true, r.created_at, r.updated_at
          FROM _seed_ride r
          LEFT JOIN (SELECT ride_n, sum(seats)::int AS seats
                       FROM _seed_booking
                      WHERE status IN ('pending', 'confirmed')
                      GROUP BY ride_n) held ON held.ride_n = r.n
         ORDER BY r.created_at, r.id
    """)
    if not superuser:
        await conn.execute("ALTER TABLE ride_bookings DISABLE TRIGGER USER")
    await conn.execute("""
        INSERT INTO ride_bookings (id, ride_id, passenger_id, seats_requested,
                                   status, cancellation_reason, cancelled_at,
                                   is_demo, created_at, updated_at)
        SELECT id, ride_id, passenger_id, seats, status, reason, cancelled_at,
               true, created_at, updated_at
          FROM _seed_booking
         ORDER BY created_at, id
    """)
    await _notifications(conn, s, now)
    for statement in rebuild:
        await conn.execute(statement)
    if superuser:
        await conn.execute("SET LOCAL session_replication_role = origin")
    else:
        await conn.execute("ALTER TABLE ride_bookings ENABLE TRIGGER USER")


# The indexes of the loaded tables that can be rebuilt after the load exactly
# as they were: valid plain indexes, and primary keys and unique constraints
# that no foreign key, view or other object depends on, in the default
# tablespace, without a comment or a per-column statistics target, on tables
# the seeding role owns in a schema where it may create.
_LOADED = ("profiles", "rides", "ride_bookings", "notifications")
_ASIDE = """
    SELECT CASE WHEN k.oid IS NULL THEN format('DROP INDEX %s', i.indexrelid::regclass)
                ELSE format('ALTER TABLE %s DROP CONSTRAINT %I',
                            i.indrelid::regclass, k.conname) END AS set_aside,
           CASE WHEN k.oid IS NULL THEN pg_get_indexdef(i.indexrelid)
                ELSE format('ALTER TABLE %s ADD CONSTRAINT %I %s',
                            i.indrelid::regclass, k.conname,
                            pg_get_constraintdef(k.oid)) END AS rebuild
      FROM pg_index i
      JOIN pg_class t ON t.oid = i.indrelid
      JOIN pg_class x ON x.oid = i.indexrelid
      LEFT JOIN pg_constraint k
        ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid
       AND k.contype IN ('p', 'u')
     WHERE i.indrelid = ANY ($1::regclass[])
       AND pg_has_role(t.relowner, 'USAGE')
       AND has_schema_privilege(t.relnamespace, 'CREATE')
       AND i.indisvalid AND i.indisready
       AND NOT i.indisreplident AND NOT i.indisclustered
       AND x.reltablespace = 0
       AND obj_description(i.indexrelid, 'pg_class') IS NULL
       AND (k.oid IS NULL OR obj_description(k.oid, 'pg_constraint') IS NULL)
       AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                        WHERE a.attrelid = i.indexrelid
                          AND a.attstattarget IS NOT NULL
                          AND a.attstattarget <> -1)
       AND NOT EXISTS (SELECT 1 FROM pg_depend d
                        WHERE d.deptype = 'n'
                          AND ((d.refclassid = 'pg_class'::regclass
                                AND d.refobjid = i.indexrelid)
                               OR (d.refclassid = 'pg_constraint'::regclass
                                   AND d.refobjid = k.oid)))
       AND NOT EXISTS (SELECT 1 FROM pg_constraint f
                        WHERE f.contype = 'f' AND f.conindid = i.indexrelid)
       AND (k.oid IS NOT NULL
            OR NOT EXISTS (SELECT 1 FROM pg_constraint o
                            WHERE o.conindid = i.indexrelid))
     ORDER BY i.indexrelid
"""


async def _set_indexes_aside(conn: asyncpg.Connection) -> list[str]:
    """Drop the loaded tables' rebuildable indexes; return the SQL rebuilding them.

    Loading 3M bookings into their indexes row by row takes several times as long
    as loading the bare table and building each index once from sorted input.
    Only a superuser's load does this (it runs in replica mode, so no trigger
    of the platform's can need a dropped key mid-load), and only on tables that
    are still empty. Indexes a foreign key relies on stay. Dropping takes each
    table's exclusive lock until the seed commits; if another session holds one
    of the tables, the seed loads through the indexes instead of waiting.
    Everything happens inside the seed's transaction: a failed seed leaves
    every index as it was.
    """
    tables = [
        t
        for t in _LOADED
        if await conn.fetchval("SELECT to_regclass($1)", t) is not None
        and not await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {t})")
    ]
    rows = await conn.fetch(_ASIDE, tables)
    waited = await conn.fetchval("SHOW lock_timeout")
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL lock_timeout = '1s'")
            for row in rows:
                await conn.execute(row["set_aside"])
    except asyncpg.LockNotAvailableError:
        return []
    await conn.execute("SELECT set_config('lock_timeout', $1, true)", waited)
    return [row["rebuild"] for row in rows]


async def _stage_rides(
    conn: asyncpg.Connection, plan: _Plan, s: str, now: datetime
) -> None:
    f, i, e, c = plan.future, plan.in_progress, plan.expired, plan.cancelled
    h, g, f_ = "h", "g", "f"
    n_cities = len(_CITIES)
    cities = "ARRAY[" + ", ".join(f"'{x}'" for x in _CITIES) + "]"
    await conn.execute(f"""
        CREATE TEMP TABLE _seed_ride ON COMMIT DROP AS
        WITH base AS (
            SELECT n, md5('{s}:ride:' || n)::uuid AS id, h, g, f,
                   CASE WHEN n <= {f} THEN 'future'
                        WHEN n <= {f + i} THEN 'in_progress'
                        WHEN n <= {f + i + e} THEN 'expired'
                        WHEN n <= {f + i + e + c} THEN 'cancelled'
                        ELSE 'completed' END AS kind
              FROM generate_series(1, {plan.rides}) n,
                   LATERAL (SELECT md5('{s}:rh:' || n) AS h,
                                   md5('{s}:rg:' || n) AS g,
                                   md5('{s}:rf:' || n) AS f OFFSET 0) x
        ), timed AS (
            SELECT b.*, dr.profile_id AS driver_id, dr.vehicle_id,
                   dr.capacity - 1 - ({_u(h, 1)} < 0.3)::int AS total_seats,
                   (b.kind = 'in_progress' OR {_u(h, 2)} < 0.1) AS flexible,
                   CASE b.kind
                     WHEN 'future' THEN $1::timestamptz + interval '30 minutes'
                          + {_u(h, 3)} * interval '14 days'
                     WHEN 'in_progress' THEN $1::timestamptz
                          - {_u(h, 3)} * interval '50 minutes'
                     WHEN 'expired' THEN $1::timestamptz - interval '10 minutes'
                          - {_u(h, 3)} * interval '2 days'
                     ELSE $1::timestamptz - interval '7 hours'
                          - {_u(h, 3)} * interval '{HISTORY_SPAN_DAYS} days'
                   END AS departure
              FROM base b
              JOIN _seed_driver dr
                ON dr.n = 1 + {_int(g, 0)} % {plan.drivers}
            OFFSET 0
        ), windowed AS (
            SELECT t.*,
                   CASE WHEN t.kind = 'in_progress'
                          THEN $1::timestamptz + interval '30 minutes'
                               + {_u(h, 4)} * interval '2 hours'
                        WHEN t.kind = 'expired' THEN NULL
                        WHEN t.flexible
                          THEN t.departure + interval '1 hour'
                               + {_u(h, 4)} * interval '5 hours'
                   END AS available_until,
                   least(t.departure - interval '1 hour'
                         - {_u(h, 5)} * interval '10 days',
                         $1::timestamptz - interval '1 minute') AS created_at
              FROM timed t
            OFFSET 0
        )
        SELECT w.n, w.id, w.kind, w.driver_id, w.vehicle_id, w.total_seats,
               w.departure, w.available_until, w.created_at,
               CASE w.kind WHEN 'future' THEN 'active'
                           WHEN 'expired' THEN 'active'
                           WHEN 'in_progress' THEN 'in-progress'
                           ELSE w.kind END AS status,
               CASE WHEN w.flexible THEN 'flexible'
                    WHEN {_u(h, 6)} < 0.15 THEN 'recurring'
                    ELSE 'one_time' END AS ride_type,
               ({cities})[1 + o] AS origin,
               ({cities})[1 + (o + 1 + {_int(g, 7)} % {n_cities - 1}) % {n_cities}]
                   AS destination,
               floor({_u(h, 7)} * 7)::int AS bookings,
               ({_u(f_, 1)} < 0.12)::int AS extra_seat,
               {_int(g, 14)} % {plan.passengers} AS passenger_base,
               -- when the ride closed for booking, and when it last changed
               CASE w.kind
                 WHEN 'cancelled' THEN w.created_at
                      + {_u(f_, 2)} * (w.departure - w.created_at)
                 ELSE least(w.departure, $1::timestamptz) END AS book_until,
               CASE w.kind
                 WHEN 'completed' THEN coalesce(w.available_until, w.departure)
                      + {_u(f_, 3)} * interval '5 minutes'
                 WHEN 'cancelled' THEN w.created_at
                      + {_u(f_, 2)} * (w.departure - w.created_at)
                 ELSE w.created_at END AS updated_at
          FROM windowed w,
               LATERAL (SELECT floor({_u(f_, 0)} * {n_cities})::int AS o) oc
    """, now)  # fmt: skip


async def _stage_bookings(
    conn: asyncpg.Connection, plan: _Plan, s: str, now: datetime
) -> None:
    h = "h"
    d = plan.drivers
    reasons = _pick(h, 3, _PASSENGER_REASONS)
    await conn.execute(f"""
        CREATE TEMP TABLE _seed_booking ON COMMIT DROP AS
        WITH base AS (
            SELECT r.n AS ride_n, j, r.id AS ride_id, r.driver_id, r.kind,
                   r.departure, r.book_until, r.updated_at AS ride_closed,
                   md5('{s}:booking:' || r.n || ':' || j)::uuid AS id,
                   md5('{s}:profile:'
                       || ({d} + 1 + (r.passenger_base + j - 1) % {plan.passengers}))
                       ::uuid AS passenger_id,
                   CASE WHEN j = 1 THEN 1 + r.extra_seat ELSE 1 END AS seats,
                   j + r.extra_seat <= r.total_seats AS fits,
                   r.created_at + {_u(h, 1)} * (r.book_until - r.created_at)
                       AS created_at,
                   {_u(h, 0)} AS roll, h
              FROM _seed_ride r,
                   LATERAL generate_series(1, r.bookings) j,
                   LATERAL (SELECT md5('{s}:bh:' || r.n || ':' || j) AS h OFFSET 0) x
            OFFSET 0
        ), decided AS (
            SELECT b.*,
                   CASE
                     WHEN b.kind = 'cancelled' THEN 'ride cancelled by driver'
                     WHEN NOT b.fits THEN 'driver declined: ride full'
                     WHEN b.roll < 0.10 THEN {reasons}
                     WHEN b.roll < 0.14 THEN 'driver declined'
                   END AS reason,
                   CASE
                     WHEN b.kind = 'cancelled' OR NOT b.fits OR b.roll < 0.14
                       THEN 'cancelled'
                     WHEN b.kind = 'completed' THEN 'completed'
                     WHEN b.kind = 'in_progress' OR b.roll >= 0.55
                       THEN 'confirmed'
                     ELSE 'pending'
                   END AS status,
                   b.created_at + {_u(h, 2)}
                       * least(interval '6 hours', b.book_until - b.created_at)
                       AS answered_at
              FROM base b
            OFFSET 0
        )
        SELECT ride_n, j, id, ride_id, driver_id, passenger_id, seats, status,
               CASE WHEN status = 'cancelled' THEN reason END AS reason,
               CASE WHEN status = 'cancelled' THEN
                    CASE WHEN kind = 'cancelled' THEN greatest(ride_closed, created_at)
                         ELSE answered_at END
               END AS cancelled_at,
               created_at,
               CASE status
                 WHEN 'pending' THEN created_at
                 WHEN 'completed' THEN ride_closed
                 WHEN 'cancelled' THEN
                    CASE WHEN kind = 'cancelled' THEN greatest(ride_closed, created_at)
                         ELSE answered_at END
                 ELSE answered_at END AS updated_at,
               answered_at,
               {_u(h, 4)} < {MISSING_NOTIFICATION_SHARE} AS missing_one,
               h
          FROM decided
    """)  # fmt: skip


async def _notifications(conn: asyncpg.Connection, s: str, now: datetime) -> None:
    """BOOKING_REQUEST to the driver, then CONFIRMED/CANCELLED to the passenger.

    A booking marked ``missing_one`` lacks its latest notification (the request
    for a pending booking). Notifications older than the retention are absent.
    """
    h = "b.h"
    await conn.execute(f"""
        INSERT INTO notifications (id, user_id, type, category, data, read_at,
                                   priority, created_at)
        SELECT md5('{s}:notification:' || b.ride_n || ':' || b.j || ':' || v.type)
                   ::uuid,
               v.user_id, v.type, v.type,
               CASE WHEN v.type = 'BOOKING_CANCELLED'
                    THEN jsonb_build_object('booking_id', b.id, 'ride_id', b.ride_id,
                                            'reason', b.reason)
                    ELSE jsonb_build_object('booking_id', b.id, 'ride_id', b.ride_id)
               END,
               CASE WHEN v.at < $1::timestamptz - interval '2 days'
                         OR {_u(h, 5)} < 0.5
                    THEN least(v.at + {_u(h, 6)} * interval '1 day', $1::timestamptz)
               END,
               CASE WHEN v.type = 'BOOKING_CANCELLED' THEN 'high' ELSE 'normal' END,
               v.at
          FROM _seed_booking b,
               LATERAL (VALUES
                   ('BOOKING_REQUEST', b.driver_id, b.created_at,
                    b.missing_one AND b.status = 'pending'),
                   (CASE b.status WHEN 'cancelled' THEN 'BOOKING_CANCELLED'
                                  WHEN 'pending' THEN NULL
                                  ELSE 'BOOKING_CONFIRMED' END,
                    b.passenger_id,
                    CASE b.status WHEN 'cancelled' THEN b.cancelled_at
                                  ELSE b.answered_at END,
                    b.missing_one)
               ) AS v(type, user_id, at, missing)
         WHERE v.type IS NOT NULL
           AND NOT v.missing
           AND v.at > $1::timestamptz
                      - interval '{NOTIFICATION_RETENTION_DAYS} days'
         ORDER BY v.at, 1
    """, now)  # fmt: skip


# Faults. Each picks rides not yet touched by another fault, in an order fixed
# by the seed, and returns a sentence saying how the fault was made.


def _healthy_active(kind: str, seed: int, limit: int, extra: str = "") -> str:
    """SQL selecting ``limit`` untouched, unexpired active rides for a fault."""
    return f"""
        SELECT r.id, r.available_seats, r.total_seats
          FROM rides r
         WHERE r.status = 'active'
           AND coalesce(r.available_until, r.departure_time) > $1::timestamptz
           AND NOT EXISTS (SELECT 1 FROM _seed_used u WHERE u.ride_id = r.id)
           {extra}
         ORDER BY md5(r.id::text || ':{kind}:{seed}')
         LIMIT {limit}
    """


def _walk(select: str, key: str, token: str, limit: int) -> str:
    """The first ``limit`` rows of ``select`` in ``key`` order from a point fixed
    by ``token``, wrapping round to the start.

    ``select`` ends in its WHERE clause and ``key`` is a uuid primary key. Ids
    are hashes, so the rows look random, and the walk reads the key's index
    instead of sorting millions of candidates by a hash.
    """
    start = f"md5('{token}')::uuid"
    return f"""
        SELECT * FROM (
            ({select} AND {key} >= {start} ORDER BY {key} LIMIT {limit})
            UNION ALL
            ({select} AND {key} < {start} ORDER BY {key} LIMIT {limit})
        ) walked
        LIMIT {limit}"""


async def _mark_used(conn: asyncpg.Connection, sql: str, now: datetime) -> int:
    """Run a fault's ``WITH ... changed AS (...)`` and remember its rides."""
    await conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS _seed_used (ride_id uuid PRIMARY KEY)"
        " ON COMMIT DROP"
    )
    args = (now,) if "$1" in sql else ()
    count: int = await conn.fetchval(
        sql
        + """,
        used AS (INSERT INTO _seed_used SELECT DISTINCT id FROM changed
                 ON CONFLICT DO NOTHING RETURNING 1)
        SELECT count(*) FROM changed""",
        *args,
    )
    return count


async def _drop_constraint(conn: asyncpg.Connection, table: str, name: str) -> str:
    exists = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_constraint"
        " WHERE conrelid = to_regclass($1) AND conname = $2)",
        table,
        name,
    )
    if not exists:
        return f"constraint {name} was already absent;"
    await conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
    return f"dropped constraint {name} to"


async def _seat_mismatch(
    conn: asyncpg.Connection, plan: _Plan, seed: int, now: datetime
) -> str:
    active = plan.future + plan.in_progress
    limit = max(FEW, round(active * DRIFT_SHARE))
    pick = _healthy_active(
        "seat_mismatch",
        seed,
        limit,
        "AND r.available_seats BETWEEN 1 AND r.total_seats - 1",
    )
    n = await _mark_used(conn, f"""
        WITH pick AS ({pick}),
        numbered AS (SELECT p.*, row_number() OVER (ORDER BY p.id) AS k FROM pick p),
        changed AS (
            UPDATE rides r
               SET available_seats = CASE WHEN x.k % 2 = 1
                                          THEN r.available_seats - 1
                                          ELSE r.total_seats END
              FROM numbered x WHERE r.id = x.id
            RETURNING r.id)""", now)  # fmt: skip
    return (
        f"wrote available_seats directly on {n} active rides (odd ones decremented"
        " again after booking, even ones reset to total_seats by a ride edit)"
    )


async def _set_on_active(
    conn: asyncpg.Connection,
    kind: str,
    seed: int,
    now: datetime,
    assignment: str,
    extra: str = "",
) -> int:
    """Apply ``SET assignment`` to two untouched active rides; how many changed."""
    return await _mark_used(conn, f"""
        WITH pick AS ({_healthy_active(kind, seed, 2, extra)}),
        changed AS (UPDATE rides r SET {assignment}
                      FROM pick p WHERE r.id = p.id
                    RETURNING r.id)""", now)  # fmt: skip


async def _negative_seats(
    conn: asyncpg.Connection, plan: _Plan, seed: int, now: datetime
) -> str:
    how = await _drop_constraint(conn, "rides", "rides_available_seats_check")
    n = await _set_on_active(conn, "negative_seats", seed, now, "available_seats = -1")
    return f"{how} set available_seats = -1 on {n} rides"


async def _seat_overflow(
    conn: asyncpg.Connection, plan: _Plan, seed: int, now: datetime
) -> str:
    n = await _set_on_active(
        conn, "seat_overflow", seed, now, "available_seats = r.total_seats + 1"
    )
    return (
        f"set available_seats = total_seats + 1 on {n} rides (no constraint forbids it)"
    )


async def _active_booking_on_terminal_ride(
    conn: asyncpg.Connection, plan: _Plan, seed: int, now: datetime
) -> str:
    extra = """AND EXISTS (SELECT 1 FROM ride_bookings b WHERE b.ride_id = r.id
                             AND b.status IN ('pending', 'confirmed'))"""
    n = await _set_on_active(
        conn,
        "active_booking_on_terminal_ride",
        seed,
        now,
        "status = 'completed'",
        extra,
    )
    return (
        f"set status = 'completed' directly on {n} rides that still hold pending or"
        " confirmed bookings"
    )


async def _invalid_ride_status(
    conn: asyncpg.Connection, plan: _Plan, seed: int, now: datetime
) -> str:
    how = await _drop_constraint(conn, "rides", "rides_status_check")
    pick = _walk(
        """SELECT r.id FROM rides r
            WHERE r.status = 'completed'
              AND NOT EXISTS (SELECT 1 FROM _seed_used u WHERE u.ride_id = r.id)""",
        "r.id",
        f"invalid_ride_status:{seed}",
        2,
    )
    n = await _mark_used(conn, f"""
        WITH pick AS ({pick}),
        numbered AS (SELECT p.*, row_number() OVER (ORDER BY p.id) AS k FROM pick p),
        changed AS (
            UPDATE rides r
               SET status = CASE WHEN x.k = 1 THEN 'expired' ELSE 'Completed' END
              FROM numbered x WHERE r.id = x.id RETURNING r.id)""", now)  # fmt: skip
    return f"{how} set status 'expired' / 'Completed' on {n} finished rides"


async def _invalid_booking_status(
    conn: asyncpg.Connection, plan: _Plan, seed: int, now: datetime
) -> str:
    how = await _drop_constraint(conn, "ride_bookings", "ride_bookings_status_check")
    pick = _walk(
        """SELECT b.id AS booking_id, b.ride_id, b.status
             FROM ride_bookings b JOIN rides r ON r.id = b.ride_id
            WHERE r.status = 'completed' AND b.status IN ('cancelled', 'completed')
              AND NOT EXISTS (SELECT 1 FROM _seed_used u WHERE u.ride_id = r.id)""",
        "b.id",
        f"invalid_booking_status:{seed}",
        2,
    )
    n = await _mark_used(conn, f"""
        WITH pick AS ({pick}),
        upd AS (
            UPDATE ride_bookings b
               SET status = CASE p.status WHEN 'cancelled' THEN 'declined'
                                          ELSE 'done' END
              FROM pick p WHERE b.id = p.booking_id RETURNING b.ride_id),
        changed AS (SELECT ride_id AS id FROM upd)""", now)  # fmt: skip
    return (
        f"{how} set status 'declined' (was cancelled) or 'done' (was completed) on"
        f" {n} bookings"
    )


async def _duplicate_active_bookings(
    conn: asyncpg.Connection, plan: _Plan, seed: int, now: datetime
) -> str:
    exists = await conn.fetchval(
        "SELECT to_regclass('ride_bookings_one_active_per_passenger') IS NOT NULL"
    )
    if exists:
        await conn.execute("DROP INDEX ride_bookings_one_active_per_passenger")
        how = "dropped unique index ride_bookings_one_active_per_passenger to"
    else:
        how = "unique index ride_bookings_one_active_per_passenger was already absent;"
    extra = """AND r.available_seats >= 1
               AND EXISTS (SELECT 1 FROM ride_bookings b WHERE b.ride_id = r.id
                             AND b.status IN ('pending', 'confirmed'))"""
    pick = _healthy_active("duplicate_active_bookings", seed, 2, extra)
    n = await _mark_used(conn, f"""
        WITH pick AS ({pick}),
        original AS (
            SELECT DISTINCT ON (b.ride_id) b.*
              FROM ride_bookings b JOIN pick p ON p.id = b.ride_id
             WHERE b.status IN ('pending', 'confirmed')
             ORDER BY b.ride_id, b.created_at, b.id),
        added AS (
            INSERT INTO ride_bookings (id, ride_id, passenger_id, seats_requested,
                                       status, is_demo, created_at, updated_at)
            SELECT md5(o.id::text || ':duplicate:{seed}')::uuid, o.ride_id,
                   o.passenger_id, 1, 'pending', true,
                   o.created_at + interval '2 seconds',
                   o.created_at + interval '2 seconds'
              FROM original o
            RETURNING id, ride_id, created_at),
        notified AS (
            INSERT INTO notifications (id, user_id, type, category, data, created_at)
            SELECT md5(a.id::text || ':request')::uuid, r.driver_id,
                   'BOOKING_REQUEST', 'BOOKING_REQUEST',
                   jsonb_build_object('booking_id', a.id, 'ride_id', a.ride_id),
                   a.created_at
              FROM added a JOIN rides r ON r.id = a.ride_id
            RETURNING 1),
        changed AS (SELECT ride_id AS id FROM added)""", now)  # fmt: skip
    return (
        f"{how} add a second pending booking by the same passenger on {n} active"
        " rides (a double-submitted request)"
    )


async def _expired_active_ride(
    conn: asyncpg.Connection, plan: _Plan, seed: int, now: datetime
) -> str:
    return (
        f"left {plan.expired} rides 'active' up to two days past their departure, "
        "as when expire_rides stops running"
    )


_FAULTS = {
    "seat_mismatch": _seat_mismatch,
    "negative_seats": _negative_seats,
    "seat_overflow": _seat_overflow,
    "active_booking_on_terminal_ride": _active_booking_on_terminal_ride,
    "invalid_ride_status": _invalid_ride_status,
    "invalid_booking_status": _invalid_booking_status,
    "duplicate_active_bookings": _duplicate_active_bookings,
    "expired_active_ride": _expired_active_ride,
}


# Job history: runs at the manual's recommended frequencies, in UTC.
_SCHEDULES = (
    # job, first slot within an hour or day, step, shortest and longest run
    ("expire_rides", "hour", "0", "5 minutes", 0.02, 0.4),
    ("check_system_invariants", "hour", "0", "15 minutes", 0.3, 3.0),
    ("reconcile_seat_counts", "day", "3 hours", "1 day", 1.0, 20.0),
    ("repair_missing_notifications", "day", "4 hours", "1 day", 2.0, 40.0),
)
FAILED_RUN_SHARE = 0.015
HISTORY_TRIGGERED_BY = "scheduler"
"""Who the generated runs say started them, where the log records it.

The seed schedules nothing in pg_cron (the demo's server has no pg_cron at
all, and the schedule view says so), so its runs are those of an external
scheduler (manual 2, option B): `carpool-tui run-job` under the operator name
of the example config's `prod-jobs` target.
"""


async def _columns(conn: asyncpg.Connection, table: str) -> dict[str, str]:
    """The table's columns and their types."""
    rows = await conn.fetch(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = $1",
        table,
    )
    return {r["column_name"]: r["data_type"] for r in rows}


async def _history(
    conn: asyncpg.Connection, plan: _Plan, seed: int, now: datetime, days: int
) -> None:
    """Past job runs and resolved violations, shaped for the tables present."""
    job_cols = await _columns(conn, "system_job_log")
    schedules = ", ".join(
        f"('{job}', '{unit}', interval '{first}', interval '{step}', {lo}, {hi})"
        for job, unit, first, step, lo, hi in _SCHEDULES
    )
    errors = ", ".join(f"('{state}', '{text}')" for state, text in _JOB_ERRORS)
    extra_cols = ""
    extra_vals = ""
    if job_cols.get("id") == "uuid":
        extra_cols += ", id"
        extra_vals += (
            f", md5('{seed}:run:' || job || ':' || extract(epoch FROM started_at))"
            "::uuid"
        )
    if "sqlstate" in job_cols:
        extra_cols += ", sqlstate"
        extra_vals += ", CASE WHEN failed THEN err_state END"
    if "triggered_by" in job_cols:
        extra_cols += ", triggered_by"
        extra_vals += f", '{HISTORY_TRIGGERED_BY}'"
    h = "h"
    await conn.execute(f"""
        WITH schedule(job, unit, first, step, lo, hi) AS (VALUES {schedules}),
        errs AS (SELECT row_number() OVER () AS k, st, msg
                   FROM (VALUES {errors}) e(st, msg)),
        slots AS (
            SELECT sc.job, sc.lo, sc.hi, slot,
                   md5('{seed}:job:' || sc.job || ':' || extract(epoch FROM slot))
                       AS h
              FROM schedule sc,
                   LATERAL generate_series(
                       (date_trunc(sc.unit, ($1::timestamptz - interval '{days} days')
                                    AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')
                           + sc.first,
                       $1::timestamptz - interval '1 minute', sc.step) slot
             WHERE slot > $1::timestamptz - interval '{days} days'
        ),
        runs AS (
            SELECT s.job, s.slot + {_u(h, 0)} * interval '2 seconds' AS started_at,
                   (s.lo + {_u(h, 1)} * (s.hi - s.lo)) * interval '1 second'
                       AS took,
                   {_u(h, 2)} < {FAILED_RUN_SHARE} AS failed,
                   e.st AS err_state, e.msg AS err_text,
                   CASE s.job
                     WHEN 'expire_rides' THEN floor({_u(h, 4)} ^ 3 * 6)::int
                     WHEN 'check_system_invariants'
                       THEN (({_u(h, 4)} < 0.05)::int
                             * (1 + floor({_u(h, 5)} * 3)))::int
                     WHEN 'reconcile_seat_counts' THEN floor({_u(h, 4)} ^ 2 * 4)::int
                     ELSE floor({_u(h, 4)} ^ 2 * 9)::int END AS n
              FROM slots s
              JOIN errs e ON e.k = 1 + floor({_u(h, 3)} * 4)::int
        )
        INSERT INTO system_job_log (job_name, started_at, completed_at, status,
                                    records_processed, errors_encountered, details,
                                    error_message{extra_cols})
        SELECT job, started_at, started_at + took,
               CASE WHEN failed THEN 'failed' ELSE 'completed' END,
               CASE WHEN failed THEN 0 ELSE n END,
               failed::int,
               jsonb_build_object('started_at', started_at) || CASE
                 WHEN failed THEN jsonb_build_object('sqlstate', err_state,
                                                     'error', err_text)
                 WHEN job = 'expire_rides' THEN jsonb_build_object(
                     'rides_expired', n, 'bookings_completed', 2 * n,
                     'notifications_created', 2 * n)
                 WHEN job = 'check_system_invariants' THEN jsonb_build_object(
                     'healthy', n = 0, 'total_violations', n)
                 WHEN job = 'reconcile_seat_counts' THEN jsonb_build_object(
                     'mismatches_found', n, 'mismatches_fixed', n)
                 ELSE jsonb_build_object(
                     'booking_requests_created', n / 3,
                     'confirmations_created', n - n / 3,
                     'cancellations_created', 0,
                     'total_notifications_created', n) END,
               CASE WHEN failed THEN err_text END{extra_vals}
          FROM runs
         ORDER BY started_at, job
    """, now)  # fmt: skip
    await _violation_history(conn, plan, seed, now, days)


async def _violation_history(
    conn: asyncpg.Connection, plan: _Plan, seed: int, now: datetime, days: int
) -> None:
    """Resolved findings, about one every three days, in the table's own shape."""
    cols = await _columns(conn, "invariant_violations")
    ops_shape = "check_id" in cols
    extra_cols = ""
    extra_vals = ""
    if cols.get("id") == "uuid":
        extra_cols += ", id"
        extra_vals += ", md5(h || ':row')::uuid"
    if "last_seen_at" in cols:
        extra_cols += ", last_seen_at"
        extra_vals += ", greatest(detected_at, resolved_at - interval '15 minutes')"
    if "resolved_by" in cols:
        extra_cols += ", resolved_by"
        extra_vals += ", CASE WHEN auto THEN NULL ELSE 'ops-admin' END"
    if ops_shape:
        extra_cols += ", check_id"
        extra_vals += ", chk"
    check_name = "name" if ops_shape else "'system_invariant_check'"
    h = "h"
    await conn.execute(f"""
        WITH days AS (
            SELECT d, md5('{seed}:violation:' || d) AS h
              FROM generate_series(1, {days}) d
        ),
        found AS (
            SELECT d, h,
                   $1::timestamptz - d * interval '1 day'
                       + {_u(h, 1)} * interval '20 hours' AS detected_at,
                   {_u(h, 2)} < 0.7 AS seats,
                   1 + floor({_u(h, 3)} * 3)::int AS n,
                   {_u(h, 4)} < 0.6 AS auto
              FROM days
             WHERE d = 1 OR {_u(h, 0)} < 0.34
        ),
        shaped AS (
            SELECT f.*,
                   CASE WHEN seats THEN 'INV-SEAT-001' ELSE 'INV-TIME-001' END
                       AS chk,
                   CASE WHEN seats THEN 'seat_mismatch'
                        ELSE 'expired_active_ride' END AS name,
                   CASE WHEN seats THEN 'critical' ELSE 'warning' END AS severity,
                   least(f.detected_at
                             + (0.25 + {_u(h, 5)} * 20) * interval '1 hour',
                         $1::timestamptz - interval '1 minute') AS resolved_at,
                   (SELECT jsonb_agg(CASE WHEN f.seats THEN jsonb_build_object(
                               'check', 'INV-SEAT-001', 'name', 'seat_mismatch',
                               'severity', 'critical',
                               'ride_id', md5('{seed}:ride:' || (1 + ('x' ||
                                   substr(md5(f.h || i), 1, 7))::bit(28)::int
                                   % {plan.rides}))::uuid,
                               'current', 1, 'expected', 2)
                          ELSE jsonb_build_object(
                               'check', 'INV-TIME-001',
                               'name', 'expired_active_ride',
                               'severity', 'warning',
                               'ride_id', md5('{seed}:ride:' || (1 + ('x' ||
                                   substr(md5(f.h || i), 1, 7))::bit(28)::int
                                   % {plan.rides}))::uuid,
                               'status', 'active',
                               'expired_at', f.detected_at - interval '7 minutes')
                          END ORDER BY i)
                      FROM generate_series(1, f.n) i) AS samples
              FROM found f
        )
        INSERT INTO invariant_violations (check_name, severity, violation_count,
                                          sample_data, detected_at, resolved_at,
                                          auto_resolved, notes{extra_cols})
        SELECT {check_name}, severity, n, samples, detected_at, resolved_at, auto,
               CASE WHEN auto THEN 'cleared by the next scheduled job'
                    WHEN seats THEN 'Fixed manually by admin: ran reconcile_seat_counts'
                    ELSE 'Fixed manually by admin: expired the ride' END
               {extra_vals}
          FROM shaped
         ORDER BY detected_at
    """, now)  # fmt: skip
