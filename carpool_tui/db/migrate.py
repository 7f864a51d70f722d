"""Applies the numbered SQL migrations, each once, each in its own transaction."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import asyncpg

from carpool_tui.db.errors import NotMigrated, OpsError, translate

Group = Literal["base", "ops"]
GROUPS: tuple[Group, ...] = ("base", "ops")
LEGACY_FILE = "legacy/deployed_functions.sql"
_LOCK_KEY = 0x0CA2_9001  # advisory lock that serialises concurrent migrate runs
LOCK_WAIT_S = 600.0  # how long a second migrate waits for the first
# How long a concurrent index build waits for the transactions older than it.
CONCURRENT_WAIT_MIN = 10
_CONCURRENT = re.compile(r"\bCREATE\s+(UNIQUE\s+)?INDEX\s+CONCURRENTLY\b", re.I)

_LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS ops_schema_migrations (
    name        text PRIMARY KEY,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    applied_by  text NOT NULL DEFAULT current_user
)
"""


class MigrationChanged(OpsError):
    """A file applied before differs from the one shipped now."""


class PlatformPresent(OpsError):
    """The base group was asked for on a database that already has the platform.

    The base files create the platform's tables; on a platform database they
    fail on their first object, so migrate refuses before changing anything.
    """

    retryable = False


# The types and tables a base file creates, found by name in its SQL.
_CREATES = re.compile(
    r"^\s*CREATE\s+(?:TYPE|TABLE)\s+(?:IF\s+NOT\s+EXISTS\s+)?([\w.]+)", re.I | re.M
)


@dataclass(frozen=True)
class Migration:
    """One SQL file of a group, named like ``ops/0003_jobs.sql``."""

    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def transactional(self) -> bool:
        """False for files whose first line asks to run outside a transaction."""
        first = self.sql.lstrip().splitlines()[0] if self.sql.strip() else ""
        return "migrate: no-transaction" not in first


@dataclass(frozen=True)
class PlanItem:
    """What migrate will do, or did, with one file."""

    migration: Migration
    state: Literal["applied", "pending", "changed", "newer"]
    """``newer``: recorded in the database but not shipped with this version
    (a newer carpool-tui applied it); its ``sql`` is empty."""


def read_sql(relative: str) -> str:
    """The text of a shipped SQL file, by its path under ``sql/``."""
    root = resources.files("carpool_tui.sql")
    return root.joinpath(relative).read_text(encoding="utf-8")


def load(groups: tuple[Group, ...]) -> list[Migration]:
    """The migration files of the given groups, in order."""
    root = resources.files("carpool_tui.sql")
    found: list[Migration] = []
    for group in groups:
        folder = root.joinpath(group)
        names = sorted(
            entry.name for entry in folder.iterdir() if entry.name.endswith(".sql")
        )
        for name in names:
            text = folder.joinpath(name).read_text(encoding="utf-8")
            found.append(Migration(f"{group}/{name}", text))
    return found


@functools.cache
def defining_file(function: str) -> tuple[str, str] | None:
    """The last shipped ops file that creates ``function``, as its name and
    its path on this machine: where the function's current definition is.

    Kept once found: the help and every key's blocked reason ask for it, and
    the shipped files do not change while the program runs.
    """
    pattern = re.compile(rf"\bFUNCTION\s+{re.escape(function)}\s*\(", re.IGNORECASE)
    found = [m.name for m in load(("ops",)) if pattern.search(m.sql)]
    if not found:
        return None
    return found[-1], str(resources.files("carpool_tui.sql").joinpath(found[-1]))


async def _applied(conn: asyncpg.Connection) -> dict[str, str]:
    exists = await conn.fetchval("SELECT to_regclass('ops_schema_migrations')")
    if exists is None:
        return {}
    rows = await conn.fetch("SELECT name, checksum FROM ops_schema_migrations")
    return {r["name"]: r["checksum"] for r in rows}


async def plan(conn: asyncpg.Connection, groups: tuple[Group, ...]) -> list[PlanItem]:
    """Each file of the groups with whether it is applied, pending or changed."""
    applied = await _applied(conn)
    items = []
    shipped = load(groups)
    for migration in shipped:
        recorded = applied.get(migration.name)
        if recorded is None:
            items.append(PlanItem(migration, "pending"))
        elif recorded != migration.checksum:
            items.append(PlanItem(migration, "changed"))
        else:
            items.append(PlanItem(migration, "applied"))
    known = {m.name for m in shipped}
    for name in sorted(applied):
        if name.split("/", 1)[0] in groups and name not in known:
            items.append(PlanItem(Migration(name, ""), "newer"))
    return items


async def migrate(
    conn: asyncpg.Connection,
    groups: tuple[Group, ...] = ("ops",),
    *,
    dry_run: bool = False,
    applied: Callable[[str], None] | None = None,
) -> list[PlanItem]:
    """Apply every pending file of the groups; return the plan it followed.

    ``applied`` is told each file's name as soon as it is recorded, so a
    long run (an index built on a large table) shows how far it got, and a
    run that fails says which files it applied before.

    Refuses to run when an applied file has changed since it was applied,
    refuses the ops group on a database without the platform's tables, and
    refuses the base group on one that has them without a record of base.
    """
    await _take_lock(conn)
    try:
        items = await plan(conn, groups)
        changed = [i.migration.name for i in items if i.state == "changed"]
        if changed:
            raise MigrationChanged(
                f"Applied migration {', '.join(changed)} has changed since it was "
                "applied",
                "Restore the file as it was and put the change in a new numbered file.",
            )
        await _refuse_base_over_platform(conn, items)
        if (
            "base" not in groups
            and await conn.fetchval("SELECT to_regclass('rides')") is None
        ):
            raise NotMigrated(
                "This database has no platform tables (rides, ride_bookings)",
                "Point --dsn at the platform database, or add --base to create the "
                "platform schema in a fresh database.",
            )
        if dry_run:
            return items
        await conn.execute(_LEDGER_DDL)
        for item in items:
            if item.state != "pending":
                continue
            await _apply_one(conn, item.migration)
            if applied is not None:
                applied(item.migration.name)
        return items
    finally:
        # A session that is gone has released its advisory lock with it; trying
        # to unlock there would hide the error that ended it.
        if not conn.is_closed():
            with contextlib.suppress(
                asyncpg.InterfaceError, asyncpg.PostgresConnectionError
            ):
                await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def _refuse_base_over_platform(
    conn: asyncpg.Connection, items: list[PlanItem]
) -> None:
    """Refuse the base group where the platform's tables exist but base is unrecorded.

    That is a platform deployed by other means (a production database), or one
    that took only the ops layer: the base files would stop at their first
    ``CREATE`` with "already exists". Checked before anything is written, the
    migration ledger included, so the database is left exactly as it was. A
    base group recorded here is this tool's own, and its later files apply.
    """
    base = [i for i in items if i.migration.name.startswith("base/")]
    if not base or any(i.state != "pending" for i in base):
        return
    names = list(
        dict.fromkeys(n for i in base for n in _CREATES.findall(i.migration.sql))
    )
    found = set(
        await conn.fetchval(
            "SELECT coalesce(array_agg(n), '{}') FROM unnest($1::text[]) AS n"
            " WHERE to_regtype(n) IS NOT NULL",
            names,
        )
    )
    if not found:
        return
    raise PlatformPresent(
        "This database already has the platform schema ("
        + ", ".join(n for n in names if n in found)
        + " exist, and no base migration is recorded); nothing was changed",
        "--base is only for an empty database: rerun without --base to install"
        " or upgrade only the ops layer.",
    )


async def _take_lock(conn: asyncpg.Connection) -> None:
    """Wait for the migration lock without holding a transaction open meanwhile.

    A session blocked in pg_advisory_lock is itself a transaction that
    CREATE INDEX CONCURRENTLY in the other run must wait for, which deadlocks;
    polling with the try variant leaves nothing open between attempts.
    """
    deadline = asyncio.get_running_loop().time() + LOCK_WAIT_S
    while True:
        try:
            got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_KEY)
        except Exception as exc:
            raise translate(exc, doing="Taking the migration lock") from exc
        if got:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise OpsError(
                f"Another migrate has held the migration lock for over "
                f"{LOCK_WAIT_S:.0f} s",
                "Wait for it to finish, then run migrate again.",
            )
        await asyncio.sleep(0.5)


async def _apply_one(conn: asyncpg.Connection, migration: Migration) -> None:
    record = "INSERT INTO ops_schema_migrations (name, checksum) VALUES ($1, $2)"
    try:
        if migration.transactional:
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(record, migration.name, migration.checksum)
        else:
            for statement in _split_statements(migration.sql):
                if _CONCURRENT.search(statement):
                    await _build_concurrently(conn, statement, migration.name)
                else:
                    await conn.execute(statement)
            await conn.execute(record, migration.name, migration.checksum)
    except OpsError:
        raise
    except Exception as exc:
        err = translate(exc, doing=f"Applying {migration.name}")
        if isinstance(err, NotMigrated):
            # "Run migrate" is what just failed: the way out is the object
            # this file did not expect.
            err = NotMigrated(
                err.message,
                "The database holds an object of that name made outside "
                "carpool-tui (or left from another version). Rename or drop it, "
                "then run migrate again: it goes on from this file.",
                err.sqlstate,
            )
        raise err from exc


async def _build_concurrently(
    conn: asyncpg.Connection, statement: str, name: str
) -> None:
    """Build an index concurrently, waiting minutes rather than seconds.

    The build waits for every transaction that was open when it started (a
    report, a backup), which the session's short lock timeout would turn into
    a failure after two seconds that looks like a locked row.
    """
    await conn.execute(f"SET lock_timeout = '{CONCURRENT_WAIT_MIN}min'")
    try:
        await conn.execute(statement)
    except asyncpg.LockNotAvailableError as exc:
        raise OpsError(
            f"Applying {name}: building an index concurrently waited"
            f" {CONCURRENT_WAIT_MIN} minutes for transactions that were open"
            " when it started",
            "End the long-running transactions (pg_stat_activity shows their"
            " xact_start), then run migrate again; it drops the unfinished"
            " index first.",
            sqlstate=exc.sqlstate,
        ) from exc
    finally:
        if not conn.is_closed():
            await conn.execute("RESET lock_timeout")


def _split_statements(sql: str) -> list[str]:
    """Split a no-transaction file on lines that hold only ``-- statement``."""
    parts = [p.strip() for p in sql.split("\n-- statement\n")]
    return [p for p in parts if p and not _only_comments(p)]


def _only_comments(text: str) -> bool:
    return all(
        not line.strip() or line.strip().startswith("--") for line in text.splitlines()
    )


async def apply_legacy(conn: asyncpg.Connection) -> None:
    """Install the deployed (legacy) functions, as production runs them today.

    Used by tests and benchmarks to build a database in the legacy shape; never
    applied by ``migrate``.
    """
    async with conn.transaction():
        await conn.execute(read_sql(LEGACY_FILE))


async def ops_layer_present(conn: asyncpg.Connection) -> bool:
    """Whether this database runs our ops layer rather than only the deployed SQL."""
    return bool(
        await conn.fetchval("SELECT to_regprocedure('ops_layer_version()') IS NOT NULL")
    )
