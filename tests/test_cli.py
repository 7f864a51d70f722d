"""The command line end to end, as a subprocess: exit codes and what it prints."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import pytest
from factories import connected, once

from carpool_tui.cli import build_parser
from carpool_tui.config import LOG_FILE_ENV, dsn_parts
from carpool_tui.db.connect import normalize_dsn
from carpool_tui.db.errors import SettingsInvalid
from carpool_tui.db.migrate import migrate, plan, read_sql


def run_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "carpool_tui", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


async def test_migrate_base_then_again_applies_nothing(empty_dsn: str) -> None:
    dry = run_cli("migrate", "--dsn", empty_dsn, "--base", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would apply base/0001_platform_schema.sql" in dry.stdout
    async with connected(empty_dsn, plain=True) as conn:
        assert await conn.fetchval("SELECT to_regclass('rides')") is None

    first = run_cli("migrate", "--dsn", empty_dsn, "--base")
    assert first.returncode == 0, first.stderr
    assert "applied base/0001_platform_schema.sql" in first.stdout
    second = run_cli("migrate", "--dsn", empty_dsn, "--base")
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip().splitlines()[-1].startswith("0 applied")


async def test_a_failing_migration_says_which_files_went_in_before_it(
    empty_dsn: str,
) -> None:
    """Each file is reported as it is recorded, so a failure part way is clear."""
    async with connected(empty_dsn, plain=True) as conn:
        await migrate(conn, ("base",))
        # A function of the same name and another type, made by someone else.
        await conn.execute(
            "CREATE FUNCTION ops_layer_version() RETURNS integer"
            " LANGUAGE sql AS 'SELECT 1'"
        )
    result = run_cli("migrate", "--dsn", empty_dsn)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "applied ops/0101_ops_tables.sql",
        "applied ops/0102_ops_indexes.sql",
    ], result.stdout
    assert "Applying ops/0103_job_runner.sql" in result.stderr
    assert "return type" in result.stderr
    async with connected(empty_dsn, plain=True) as conn:
        recorded = await conn.fetchval(
            "SELECT count(*) FROM ops_schema_migrations WHERE name LIKE 'ops/%'"
        )
        assert recorded == 2


async def test_a_file_that_meets_a_foreign_object_does_not_say_run_migrate(
    empty_dsn: str,
) -> None:
    """The advice must not be the command that just failed."""
    async with connected(empty_dsn, plain=True) as conn:
        await conn.execute("CREATE TABLE ops_row_counts (other text)")
    result = run_cli("migrate", "--base", "--dsn", empty_dsn)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Applying ops/0151_row_counters.sql" in result.stderr
    assert "made outside carpool-tui" in result.stderr
    assert "Rename or drop it, then run migrate again" in result.stderr


async def test_migrate_base_on_a_platform_database_says_to_drop_base(
    empty_dsn: str,
) -> None:
    """A platform made by its own deploy has the tables but no record of them."""
    async with connected(empty_dsn, plain=True) as conn, conn.transaction():
        await conn.execute(read_sql("base/0001_platform_schema.sql"))
    for args in (("--base",), ("--base", "--dry-run")):
        result = run_cli("migrate", "--dsn", empty_dsn, *args)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        assert "already exists" not in result.stderr
        assert "already has the platform schema" in result.stderr
        assert "--base is only for an empty database" in result.stderr
        assert "rerun without --base" in result.stderr
        assert "applied" not in result.stdout
    async with connected(empty_dsn, plain=True) as conn:
        # Nothing was applied, not even the migration ledger.
        ledger = await conn.fetchval("SELECT to_regclass('ops_schema_migrations')")
        assert ledger is None
        assert await conn.fetchval("SELECT to_regproc('ops_layer_version')") is None
    upgrade = run_cli("migrate", "--dsn", empty_dsn)
    assert upgrade.returncode == 0, upgrade.stderr
    assert "applied ops/0101_ops_tables.sql" in upgrade.stdout


async def test_migrate_base_after_the_ops_layer_alone_changes_nothing(
    ops_dsn: str,
) -> None:
    """A platform that took `migrate` first records only the ops files."""
    forget_base = "DELETE FROM ops_schema_migrations WHERE name LIKE 'base/%'"
    await once(ops_dsn, forget_base)
    ledger = "SELECT count(*) FROM ops_schema_migrations"
    before = await once(ops_dsn, ledger)
    result = run_cli("migrate", "--dsn", ops_dsn, "--base")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "already has the platform schema" in result.stderr, result.stderr
    assert "admin_role" in result.stderr  # what was found, by name
    assert await once(ops_dsn, ledger) == before
    again = run_cli("migrate", "--dsn", ops_dsn)
    assert again.returncode == 0, again.stderr
    assert "0 applied" in again.stdout


async def test_migrate_refuses_when_an_applied_file_changed(ops_dsn: str) -> None:
    await once(
        ops_dsn,
        "UPDATE ops_schema_migrations SET checksum = 'x' "
        "WHERE name = 'base/0001_platform_schema.sql'",
    )
    result = run_cli("migrate", "--dsn", ops_dsn, "--base")
    assert result.returncode == 1
    assert "base/0001_platform_schema.sql has changed" in result.stderr
    assert "Traceback" not in result.stderr


async def test_migrate_says_when_a_newer_version_applied_more(ops_dsn: str) -> None:
    await once(
        ops_dsn,
        "INSERT INTO ops_schema_migrations (name, checksum)"
        " VALUES ('ops/9999_future.sql', 'x')",
    )
    result = run_cli("migrate", "--dsn", ops_dsn)
    assert result.returncode == 0, result.stderr
    assert "also records ops/9999_future.sql" in result.stdout
    assert "upgrade carpool-tui" in result.stdout
    assert "0 applied" in result.stdout


async def test_migrate_says_the_layer_is_incomplete_when_a_function_was_dropped(
    ops_dsn: str,
) -> None:
    """Every file is recorded, so nothing is applied again: migrate must not
    say all is well while the dashboard's keys fail on the missing functions."""
    async with connected(ops_dsn, plain=True) as conn:
        await conn.execute("DROP FUNCTION expire_rides()")
        await conn.execute("DROP FUNCTION ops_preview_seat_fix(uuid)")
    for dry in ((), ("--dry-run",)):
        result = run_cli("migrate", "--dsn", ops_dsn, *dry)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "0 " in result.stdout and "already applied" in result.stdout
        said = result.stderr
        assert "carpool-tui: The ops layer is INCOMPLETE." in said, said
        assert "expire_rides(), ops_preview_seat_fix() are gone (dropped since)" in said
        assert "expire_rides() is defined last in ops/0153_expire_set_based.sql" in said
        assert "Traceback" not in said


def test_serve_refuses_a_taken_port_before_saying_it_serves() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            "serve", "--port", str(port), "--dsn", "postgresql://u@127.0.0.1:1/db"
        )
    assert result.returncode == 1, result.stderr
    assert f"Cannot listen on 127.0.0.1:{port} (Address already in use)" in (
        result.stderr
    )
    assert "Serving" not in result.stderr
    bad = run_cli("serve", "--public-url", "not a url", "--dsn", "postgresql://x/y")
    assert bad.returncode == 2
    assert "'not a url' is not an http:// or https:// URL with a host" in bad.stderr


def test_an_empty_path_is_refused_rather_than_read_as_here() -> None:
    """`--config "$UNSET"` read the current directory as the file."""
    for args in (("--config", "", "check"), ("demo", "--data-dir", " ")):
        result = run_cli(*args)
        assert result.returncode in (2, 3), result.stderr
        assert "is empty (an unset shell variable?)" in result.stderr
        assert "Starting" not in result.stderr and "Traceback" not in result.stderr


def test_an_unknown_fault_is_refused_before_anything_starts() -> None:
    result = run_cli(
        "seed", "--dsn", "postgresql://nobody@127.0.0.1:1/x", "--faults", "bogus"
    )
    assert result.returncode == 2  # a usage error, as every other bad option
    assert "--faults: unknown fault kind 'bogus'; valid: all, none," in result.stderr
    assert "Seeding" not in result.stderr  # refused before it said it began


def test_malformed_dsn_is_one_readable_line() -> None:
    result = run_cli("migrate", "--dsn", "not a dsn")
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("carpool")]
    assert len(lines) == 1
    assert "Cannot read the connection string near 'not a dsn'" in lines[0]
    assert "Traceback" not in result.stderr


def test_a_dsn_that_is_not_a_url_is_one_line_and_check_says_unknown() -> None:
    for dsn in ("postgresql://u:pw@[::1/db", "postgresql://u@[zz]:5/db"):
        result = run_cli("migrate", "--dsn", dsn)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr, result.stderr
        assert "not a valid connection URL" in result.stderr
        checked = run_cli("check", "--dsn", dsn)
        assert checked.returncode == 3, checked.stdout + checked.stderr
        assert checked.stdout.startswith("CARPOOL UNKNOWN")
        assert "Traceback" not in checked.stderr


def test_an_empty_dsn_is_refused_rather_than_falling_back(ops_dsn: str) -> None:
    """`--dsn "$UNSET"` must not reach DATABASE_URL's (or libpq's) database."""
    env = {**os.environ, "DATABASE_URL": ops_dsn}
    for args in (
        ("migrate", "--dsn", ""),
        ("--dsn", " ", "seed", "--rides", "1"),
        # `postgresql://$USER@$HOST/$DB` with the variables unset, and the
        # same with options or as keywords.
        ("migrate", "--dsn", "postgresql://@/"),
        ("run-job", "expire_rides", "--dsn", "postgres://"),
        ("migrate", "--base", "--dsn", "postgresql://:secret@/?sslmode=disable"),
        ("migrate", "--dsn", "host="),
        ("migrate", "--dsn", "dbname=''"),
    ):
        result = run_cli(*args, env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "--dsn: names no server or database" in result.stderr
        assert "secret" not in result.stderr  # the refusal shows no password
        assert "Seeding" not in result.stdout
    checked = run_cli("check", "--dsn", "", env=env)
    assert checked.returncode == 3
    assert checked.stdout.startswith("CARPOOL UNKNOWN - invalid command line")


@pytest.mark.parametrize(
    ("words", "monitor"),
    [
        (["check", "--refresh", "0"], True),
        (["--dsn", "check", "check", "--bogus"], True),
        (["run-job", "check", "--bogus"], False),
        (["--operator", "check", "--refresh", "0"], False),
        (["migrate", "--dsn", "postgresql://h/check", "--bogus"], False),
    ],
)
def test_only_the_check_command_turns_a_usage_error_into_unknown(
    words: list[str], monitor: bool
) -> None:
    result = run_cli(*words)
    assert result.returncode == (3 if monitor else 2), result.stdout + result.stderr
    assert ("CARPOOL UNKNOWN" in result.stdout) == monitor


def test_a_usage_error_of_check_json_is_json() -> None:
    result = run_cli("check", "--json", "--warn", "nonsense")
    assert result.returncode == 3, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert (data["status"], data["exit_code"]) == ("UNKNOWN", 3)
    assert data["summary"] == "invalid command line"
    assert "--warn" in data["error"]
    assert "--warn" in result.stderr  # still said where a person looks


def test_a_command_run_with_stdout_closed_still_reports(ops_dsn: str) -> None:
    """`>&-`: no stdout at all; the command's own outcome decides its exit."""
    job = ["run-job", "expire_rides", "--dsn", ops_dsn]
    done = subprocess.run(
        [sys.executable, "-m", "carpool_tui", *job],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.close(1),
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr


def test_an_empty_database_url_is_refused_rather_than_falling_back(
    ops_dsn: str,
) -> None:
    """A blank DATABASE_URL must not hand over to the PG* variables' database."""
    env = {**os.environ, "PGDATABASE": "carpool_demo", "PGHOST": "/nonexistent"}
    for blank in ("", "  ", "postgresql:///", "postgresql:///?sslmode=require"):
        env["DATABASE_URL"] = blank
        for args in (("run-job", "expire_rides"), ("migrate", "--dry-run")):
            result = run_cli(*args, env=env)
            assert result.returncode == 1, result.stdout + result.stderr
            names_nothing = "DATABASE_URL is set but names no server or database"
            assert names_nothing in result.stderr
            assert "Traceback" not in result.stderr
        checked = run_cli("check", env=env)
        assert checked.returncode == 3, checked.stdout + checked.stderr
        assert checked.stdout.startswith("CARPOOL UNKNOWN")
        assert "DATABASE_URL is set but names no server or database" in checked.stdout
    env["DATABASE_URL"] = ops_dsn
    assert run_cli("migrate", "--dry-run", env=env).returncode == 0


async def test_a_keyword_dsn_with_a_socket_directory_and_a_port(ops_dsn: str) -> None:
    port = await once(ops_dsn, "SELECT current_setting('port')")
    words = _as_keywords(ops_dsn)
    if "port=" not in words:
        words += f" port={port}"
    result = run_cli("migrate", "--dry-run", "--dsn", words)
    assert result.returncode == 0, result.stderr
    assert "0 would apply" in result.stdout


def test_unreachable_host_says_so() -> None:
    result = run_cli("migrate", "--dsn", "postgresql://nobody@127.0.0.1:1/x")
    assert result.returncode == 1
    assert "cannot reach the database" in result.stderr
    assert "Traceback" not in result.stderr


async def test_migrate_ops_on_empty_database_explains_base(empty_dsn: str) -> None:
    result = run_cli("migrate", "--dsn", empty_dsn)
    assert result.returncode == 1
    assert "no platform tables" in result.stderr
    assert "--base" in result.stderr


def _as_keywords(dsn: str) -> str:
    """The same server and database as a libpq key=value string."""
    parts = urlsplit(dsn)
    words = {k: v for k, v in parse_qsl(parts.query)}
    if parts.hostname:
        words["host"] = parts.hostname
    if parts.port:
        words["port"] = str(parts.port)
    if parts.username:
        words["user"] = parts.username
    words["dbname"] = parts.path.lstrip("/")
    return " ".join(f"{k}='{v}'" for k, v in words.items())


async def test_libpq_keyword_dsn_and_connect_timeout_work(ops_dsn: str) -> None:
    result = run_cli("migrate", "--dry-run", "--dsn", _as_keywords(ops_dsn))
    assert result.returncode == 0, result.stderr
    assert "0 would apply" in result.stdout
    sep = "&" if "?" in ops_dsn else "?"
    timed = run_cli("migrate", "--dry-run", "--dsn", f"{ops_dsn}{sep}connect_timeout=3")
    assert timed.returncode == 0, timed.stderr


def _pg_env(dsn: str) -> dict[str, str]:
    """The environment with PGHOST, PGPORT and PGUSER naming the test server and
    no other PG* variable or DATABASE_URL: a DSN that lost its server on the
    way would reach this one, never libpq's default server."""
    named = dsn_parts(dsn)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PG") and key != "DATABASE_URL"
    }
    env["PGHOST"] = named["host"]
    for key, variable in (("port", "PGPORT"), ("user", "PGUSER")):
        if named.get(key):
            env[variable] = named[key]
    return env


@pytest.mark.parametrize(
    "dsn",
    [
        "hostaddr=127.0.0.2 dbname=carpool user=postgres",
        "host=db.internal hostaddr='127.0.0.2' dbname=carpool",
        "postgresql://postgres@db.internal/carpool?hostaddr=127.0.0.2",
    ],
)
def test_a_hostaddr_is_refused_in_either_form(dsn: str) -> None:
    """The driver has no hostaddr: carried or dropped, the connection would go
    to the host, PGHOST or the local socket instead of that address."""
    with pytest.raises(SettingsInvalid) as refused:
        normalize_dsn(dsn)
    assert "hostaddr=127.0.0.2" in str(refused.value)
    assert "Use host= instead (host=127.0.0.2" in str(refused.value)


async def test_a_keyword_dsn_with_hostaddr_reaches_no_other_server(
    ops_dsn: str,
) -> None:
    """With PGHOST naming a server, a dropped hostaddr would report on that
    server's database as if it were the one asked for."""
    named = dsn_parts(ops_dsn)
    words = f"hostaddr=127.0.0.2 dbname={named['dbname']} user={named['user']}"
    env = _pg_env(ops_dsn)
    checked = run_cli("check", "--dsn", words, env=env)
    assert checked.returncode == 3, checked.stdout + checked.stderr
    assert checked.stdout.startswith("CARPOOL UNKNOWN"), checked.stdout
    assert "sets hostaddr=127.0.0.2" in checked.stdout
    assert "Use host= instead" in checked.stdout
    job = run_cli("run-job", "expire_rides", "--dsn", words, env=env)
    assert job.returncode == 1, job.stdout + job.stderr
    assert "sets hostaddr=127.0.0.2" in job.stderr
    assert await once(ops_dsn, "SELECT count(*) FROM system_job_log") == 0


async def test_libpq_options_that_tune_the_client_are_dropped(ops_dsn: str) -> None:
    """A DSN copied from a libpq tool (keepalives, TCP timeouts) connects: the
    driver would have sent those to the server as settings, which it refuses."""
    tuning = "keepalives=1&keepalives_idle=30&tcp_user_timeout=5000&gssencmode=disable"
    sep = "&" if "?" in ops_dsn else "?"
    named = dsn_parts(ops_dsn)
    words = " ".join(f"{key}={value}" for key, value in named.items() if value)
    for dsn in (f"{ops_dsn}{sep}{tuning}", f"{words} keepalives=0 sslsni=1"):
        checked = run_cli("check", "--dsn", dsn)
        # A fresh database warns of jobs that never ran: read, not refused.
        assert checked.returncode == 1, checked.stdout + checked.stderr
        assert "seat_mismatches=0" in checked.stdout


@pytest.mark.parametrize(
    "dsn",
    [
        "host=db.internal dbname=carpool channel_binding=require",
        "postgresql://db.internal/carpool?require_auth=scram-sha-256",
        "postgresql://db.internal/carpool?gssencmode=require",
    ],
)
def test_a_libpq_option_that_restricts_the_connection_is_refused(dsn: str) -> None:
    """The driver would connect without the restriction psql enforces."""
    with pytest.raises(SettingsInvalid) as refused:
        normalize_dsn(dsn)
    key = dsn.split("?")[-1].split()[-1].split("=")[0]
    assert f"The DSN sets {key}=" in str(refused.value)
    assert f"Remove {key} if the connection is acceptable" in str(refused.value)


@pytest.mark.parametrize(
    ("variable", "value", "way_out"),
    [
        # libpq connects to that address whatever the DSN's host: the two
        # would reach different servers.
        ("PGHOSTADDR", "127.0.0.2", "Unset PGHOSTADDR"),
        # psql would refuse a server that does not authenticate that way.
        ("PGREQUIREAUTH", "scram-sha-256", "Unset PGREQUIREAUTH"),
    ],
)
async def test_a_set_variable_the_driver_ignores_is_refused(
    ops_dsn: str, variable: str, value: str, way_out: str
) -> None:
    """The driver ignores the variable libpq (and psql) would act on."""
    env = {**_pg_env(ops_dsn), variable: value}
    for dsn in ((), ("--dsn", ops_dsn)):
        checked = run_cli("check", *dsn, env=env)
        assert checked.returncode == 3, checked.stdout + checked.stderr
        assert f"{variable} is set ({value})" in checked.stdout
        assert way_out in checked.stdout


def _service_file(path: Path, dsn: str, *settings: str) -> Path:
    """A service file defining the service carpool_test: the server and
    database of ``dsn``, then ``settings`` (``key=value`` lines)."""
    named = dsn_parts(dsn)
    lines = ["[carpool_test]", f"host={named['host']}", f"dbname={named['dbname']}"]
    lines += [f"{key}={named[key]}" for key in ("port", "user") if named.get(key)]
    path.write_text("\n".join([*lines, *settings]) + "\n")
    return path


async def test_a_service_names_the_database_in_every_form(
    ops_dsn: str, tmp_path: Path
) -> None:
    """A DSN that names only a service takes the service file's dbname, as
    libpq does: an empty database name in the URL it becomes would override it
    and reach the database named after the user."""
    service = _service_file(tmp_path / "pg_service.conf", ops_dsn)
    env = {**_pg_env(ops_dsn), "PGSERVICEFILE": str(service)}
    forms = (
        "postgresql://?service=carpool_test",  # the driver reads the file
        "postgresql:///?service=carpool_test",
        "service=carpool_test",
        "service='carpool_test' connect_timeout=5",
    )
    for runs, dsn in enumerate(forms, start=1):
        result = run_cli("run-job", "expire_rides", "--dsn", dsn, env=env)
        assert result.returncode == 0, (dsn, result.stdout + result.stderr)
        logged = await once(ops_dsn, "SELECT count(*) FROM system_job_log")
        assert logged == runs, dsn


def test_a_service_the_driver_would_connect_without_is_refused(
    ops_dsn: str, tmp_path: Path
) -> None:
    """libpq fails on a service it cannot find and reads a service's hostaddr;
    the driver ignores both and connects by the PG* variables, here to a
    database that would answer as if it were the one."""
    service = _service_file(tmp_path / "pg_service.conf", ops_dsn)
    env = {
        **_pg_env(ops_dsn),
        "PGDATABASE": dsn_parts(ops_dsn)["dbname"],
        "PGSERVICEFILE": str(service),
    }
    for dsn, said in (
        ("service=nosuch", f"names service 'nosuch', which {service} does not"),
        ("postgresql://?service=nosuch", "names service 'nosuch'"),
    ):
        checked = run_cli("check", "--dsn", dsn, env=env)
        assert checked.returncode == 3, checked.stdout + checked.stderr
        assert said in checked.stdout, checked.stdout
        assert "set PGSERVICEFILE to the file that defines it" in checked.stdout

    checked = run_cli("check", env={**env, "PGSERVICE": "nosuch"})
    assert checked.returncode == 3, checked.stdout + checked.stderr
    assert "PGSERVICE (nosuch) names service 'nosuch'" in checked.stdout

    by_address = _service_file(tmp_path / "by-address.conf", ops_dsn, "hostaddr=::2")
    env["PGSERVICEFILE"] = str(by_address)
    checked = run_cli("check", "--dsn", "service=carpool_test", env=env)
    assert checked.returncode == 3, checked.stdout + checked.stderr
    assert "sets hostaddr=::2" in checked.stdout, checked.stdout
    assert "Use host= instead" in checked.stdout


def test_pgservice_names_the_service_as_for_libpq(ops_dsn: str, tmp_path: Path) -> None:
    """libpq takes the service from PGSERVICE when the DSN names none; so does
    carpool-tui, though its driver ignores the variable. PGDATABASE names a
    database that does not exist: only the service's dbname reaches ours."""
    service = _service_file(tmp_path / "pg_service.conf", ops_dsn)
    env = {
        **_pg_env(ops_dsn),
        "PGDATABASE": "no_such_database",
        "PGSERVICEFILE": str(service),
    }
    without = run_cli("check", env=env)
    assert without.returncode == 3, without.stdout + without.stderr
    env["PGSERVICE"] = "carpool_test"
    for dsn in ((), ("--dsn", f"host={dsn_parts(ops_dsn)['host']}")):
        checked = run_cli("check", *dsn, env=env)
        # A fresh database warns of jobs that never ran: read, not refused.
        assert checked.returncode == 1, checked.stdout + checked.stderr
        assert "seat_mismatches=0" in checked.stdout


def test_port_out_of_range_is_one_line_without_the_password() -> None:
    result = run_cli("migrate", "--dsn", "postgresql://u:secret@127.0.0.1:99999/x")
    assert result.returncode == 1
    assert "not a port number (1-65535): 127.0.0.1:99999" in result.stderr
    assert "secret" not in result.stderr
    assert "Traceback" not in result.stderr


def _into_closed_pipe(*args: str, buffered: bool) -> subprocess.CompletedProcess[str]:
    """Run the command with stdout a pipe whose reader is gone, as `| head -1`
    leaves it once it has its line. ``buffered``: stdout flushed only at exit,
    as without PYTHONUNBUFFERED; else every print writes at once."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    reader, writer = os.pipe()
    os.close(reader)
    try:
        return subprocess.run(
            [sys.executable, "-m", "carpool_tui", *args],
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            env=env,
        )
    finally:
        os.close(writer)


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize(
    "args",
    [("migrate", "--dry-run"), ("migrate",), ("check",), ("check", "--json")],
    ids=" ".join,
)
def test_a_closed_pipe_ends_the_command_quietly(
    ops_dsn: str, args: tuple[str, ...], buffered: bool
) -> None:
    result = _into_closed_pipe(*args, "--dsn", ops_dsn, buffered=buffered)
    assert "Traceback" not in result.stderr, result.stderr
    assert "BrokenPipeError" not in result.stderr, result.stderr
    assert result.returncode == 141, result.stderr


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("check",), 3),
        (("check", "--json"), 3),
        (("run-job", "check_system_invariants"), 1),
        (("migrate", "--dry-run"), 1),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else str(value),
)
def test_stdout_on_a_full_disk_is_one_line_and_check_says_unknown(
    ops_dsn: str, args: tuple[str, ...], code: int
) -> None:
    """`carpool-tui check > /dev/full`: a monitor reads exit 1 as WARNING and a
    scheduler reads a traceback as the job failing; the job itself ran."""
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "carpool_tui", *args, "--dsn", ops_dsn],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == code, result.stderr
    assert (
        "carpool-tui: cannot write to standard output (No space left on device);"
        " the command ran, but what it printed is lost"
    ) in result.stderr


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
async def test_a_reader_gone_mid_migration_does_not_stop_it(
    empty_dsn: str, buffered: bool
) -> None:
    """`migrate | head -3`: the files still go in, every one of them."""
    result = _into_closed_pipe(
        "migrate", "--base", "--dsn", empty_dsn, buffered=buffered
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    async with connected(empty_dsn, plain=True) as conn:
        pending = [
            i.migration.name
            for i in await plan(conn, ("base", "ops"))
            if i.state != "applied"
        ]
    assert pending == []


def test_only_a_closed_stdout_counts_as_the_reader_gone() -> None:
    """A broken pipe elsewhere (a socket) must not end a command as quietly."""
    probe = (
        "import sys; from carpool_tui.cli import _stdout_closed;"
        " sys.stderr.write(str(_stdout_closed()))"
    )
    live = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert live.stderr == "False"
    reader, writer = os.pipe()
    os.close(reader)
    try:
        gone = subprocess.run(
            [sys.executable, "-c", probe],
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(writer)
    assert gone.stderr == "True"


async def test_an_operator_name_that_is_not_utf8_is_refused_before_connecting(
    ops_dsn: str,
) -> None:
    """A byte that is not UTF-8 in --operator or in the login name ($USER)
    reached the server, which refused every job and write with an encoding
    error that the job log recorded as a failed run. It is refused up front;
    check, which records no operator, still checks."""
    env = {**os.environ, "DATABASE_URL": ops_dsn}
    given = run_cli("run-job", "expire_rides", "--operator", "ok\udcff", env=env)
    assert given.returncode == 2, given.stdout + given.stderr
    assert "--operator: is not UTF-8 text (it holds the byte \\xff)" in given.stderr
    login = {**env, "USER": "br\udcffk", "LOGNAME": "br\udcffk"}
    for command in (
        ("run-job", "expire_rides"),
        ("demo", "--data-dir", "/nonexistent"),
    ):
        refused = run_cli(*command, env=login)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert refused.stderr.startswith(
            "carpool-tui: the operator name from the login, 'br\\udcffk@"
        ), refused.stderr
        assert "is not UTF-8 text (it holds the byte \\xff)" in refused.stderr
        assert "--operator NAME" in refused.stderr
    assert await once(ops_dsn, "SELECT count(*) FROM system_job_log") == 0
    checked = run_cli("check", env=login)
    assert checked.returncode in (0, 1, 2), checked.stdout + checked.stderr
    chosen = run_cli("run-job", "expire_rides", "--operator", "ann", env=login)
    assert chosen.returncode == 0, chosen.stdout + chosen.stderr


def test_a_librarys_warning_is_one_line_of_ours(ops_dsn: str, tmp_path: Path) -> None:
    """asyncpg warns of a password file others may read: said as one line,
    not as Python's warning with the line of asyncpg's source below it."""
    passfile = tmp_path / "pgpass"
    passfile.write_text("nowhere:1:*:*:x\n")
    passfile.chmod(0o644)
    dsn = f"{ops_dsn}{'&' if '?' in ops_dsn else '?'}passfile={passfile}"
    done = run_cli("check", "--dsn", dsn)
    lines = [line for line in done.stderr.splitlines() if "warning" in line.lower()]
    assert lines and all(line.startswith("carpool-tui: warning: ") for line in lines)
    assert any("has group or world access" in line for line in lines), done.stderr
    assert "warnings.warn(" not in done.stderr


async def test_a_blank_operator_is_refused_before_connecting(ops_dsn: str) -> None:
    """`--operator "$UNSET"` must not be recorded as the default user@host."""
    env = {**os.environ, "DATABASE_URL": ops_dsn}
    for blank in ("", "   "):
        result = run_cli("run-job", "expire_rides", "--operator", blank, env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "--operator: is blank" in lines[0]
        assert "leave --operator out" in lines[0]
    assert await once(ops_dsn, "SELECT count(*) FROM system_job_log") == 0


@pytest.mark.parametrize(
    "args",
    [
        ("--operator", " "),
        ("--operator", " ", "check"),
        ("demo", "--operator", "\t"),
        ("serve", "--operator", ""),
        ("run-job", "expire_rides", "--operator", "  "),
    ],
)
def test_every_operator_option_refuses_a_blank_name(
    args: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(list(args))
    assert stopped.value.code == 2
    assert "--operator: is blank" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "shown"),
    [("ann\x1b[2J", "\\x1b"), ("ann\u200b", "\\u200b"), ("an\nn", "\\n")],
)
def test_an_operator_name_with_unseen_characters_is_refused(
    name: str, shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Audit rows are read by people: an invisible character would hide part
    of the name or make two names look the same."""
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["--operator", name])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "--operator: contains a control or invisible character" in err
    assert f"({shown})" in err


def test_an_operator_name_is_recorded_without_surrounding_spaces() -> None:
    parser = build_parser()
    for args in (
        ("--operator", " ann "),
        ("serve", "--operator", " ann "),
        ("run-job", "expire_rides", "--operator", " ann "),
    ):
        assert parser.parse_args(list(args)).operator == "ann"


def test_argument_errors_are_one_line() -> None:
    for args in (
        ("--refresh", "0"),
        ("seed", "--rides", "-5"),
        ("seed", "--rides", "99999999999999999999"),
        ("seed", "--history-days", "100000"),
        ("--bogus",),
    ):
        result = run_cli(*args)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("carpool-tui")
        assert "--help" in lines[0]


def test_passwords_never_reach_the_screen() -> None:
    from carpool_tui.config import describe_target

    for dsn in (
        "host=h user=u password='s e\\'cret' dbname=x",
        "postgresql://u:secret@h/x?sslmode=require",
        "postgresql://u@h/x?password=secret&sslmode=require",
        "postgresql://u@h/x?sslmode=require&passw%6Frd=secret",
    ):
        shown = describe_target(dsn)
        assert "secret" not in shown and "cret" not in shown, shown
        assert "h" in shown


async def test_seed_runs_the_invariant_check_so_faults_show(ops_dsn: str) -> None:
    result = run_cli(
        "seed", "--dsn", ops_dsn, "--rides", "60", "--faults", "seat_mismatch"
    )
    assert result.returncode == 0, result.stderr
    assert "invariant check:" in result.stdout
    open_rows = await once(
        ops_dsn,
        "SELECT count(*) FROM invariant_violations"
        " WHERE resolved_at IS NULL AND check_name = 'seat_mismatch'",
    )
    assert open_rows == 1


async def test_a_seed_the_database_refuses_is_one_line(ops_dsn: str) -> None:
    assert run_cli("seed", "--dsn", ops_dsn, "--rides", "20").returncode == 0
    await once(ops_dsn, "TRUNCATE rides CASCADE")
    # The same seed's profiles are still there.
    result = run_cli("seed", "--dsn", ops_dsn, "--rides", "20")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    out = result.stdout + result.stderr
    assert "Seeding (nothing was written)" in out and "profiles" in out, out
    assert "seed a fresh database" in out, out


async def test_database_text_in_the_error_line_is_escaped(
    ops_dsn: str, tmp_path: Path
) -> None:
    """The `carpool-tui: <error>` line escapes control and format characters
    of an error raised in the database, as check and run-job do: an escape
    sequence, a bell or a direction override reaches the terminal as visible
    text and the error stays one line, here and in the diagnostics log."""
    message = (
        "'refused' || chr(27) || '[31mRED' || chr(7) || chr(10) || 'next'"
        " || chr(8238) || 'reversed'"
    )
    async with connected(ops_dsn, plain=True) as conn:
        await conn.execute(
            "CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS"
            f" $$BEGIN RAISE EXCEPTION USING MESSAGE = {message}; END$$;"
            " CREATE TRIGGER test_refuse BEFORE INSERT ON profiles"
            " FOR EACH ROW EXECUTE FUNCTION test_refuse();"
            # The seed loads in replica mode, which skips other triggers.
            " ALTER TABLE profiles ENABLE ALWAYS TRIGGER test_refuse"
        )
    log = tmp_path / "diagnostics.log"
    env = {**os.environ, LOG_FILE_ENV: str(log)}
    result = run_cli("seed", "--dsn", ops_dsn, "--rides", "20", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    logged = log.read_text().splitlines()
    assert "refused\\x1b[31mRED\\x07" in logged[-1], logged
    assert not any(c in log.read_text() for c in "\x1b\x07\r\u202e")
    said = result.stderr.splitlines()
    errors = [line for line in said if line.startswith("carpool-tui: ")]
    assert len(errors) == 1 and errors[0] == said[-1], said
    assert "refused\\x1b[31mRED\\x07" in errors[0], errors[0]
    assert "\\u202ereversed" in errors[0], errors[0]
    assert not any(c in result.stderr for c in "\x1b\x07\r\u202e")


def _default_sigint() -> None:
    """Let Ctrl-C reach the child even when the suite runs as a background job."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def ctrl_c_when(
    conn: asyncpg.Connection, ready: str, what: str, *args: str
) -> tuple[str, str]:
    """Run the command, press Ctrl-C once ``ready`` (a SQL count) is non-zero.

    Returns what it printed; it must have exited 130 without a traceback.
    """
    command = subprocess.Popen(
        [sys.executable, "-m", "carpool_tui", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    try:
        deadline = time.monotonic() + 60
        while not await conn.fetchval(ready):
            assert command.poll() is None, command.communicate()
            assert time.monotonic() < deadline, f"never reached: {what}"
            await asyncio.sleep(0.05)
        command.send_signal(signal.SIGINT)
        out, err = command.communicate(timeout=60)
    finally:
        if command.poll() is None:
            command.kill()
    assert command.returncode == 130, (out, err)
    assert "Traceback" not in err, err
    return out, err


SEEDING = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE application_name = 'carpool-tui seed' AND state = 'active'"
)


async def test_ctrl_c_during_a_seed_says_nothing_was_written(ops_dsn: str) -> None:
    async with connected(ops_dsn, plain=True) as conn:
        _, err = await ctrl_c_when(
            conn, SEEDING, "the seed", "seed", "--dsn", ops_dsn, "--rides", "200000"
        )
        assert "interrupted; nothing was written" in err, err
        deadline = time.monotonic() + 60
        while await conn.fetchval(SEEDING):  # the server ends the statement
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert await conn.fetchval("SELECT count(*) FROM profiles") == 0


async def test_a_killed_seed_does_not_run_on_in_the_server(ops_dsn: str) -> None:
    """SIGKILL leaves no time to cancel: the server must notice by itself that
    the client is gone, or the seed runs on holding its locks."""
    async with connected(ops_dsn, plain=True) as conn:
        seed = ["seed", "--dsn", ops_dsn, "--rides", "1000000"]
        command = subprocess.Popen(
            [sys.executable, "-m", "carpool_tui", *seed],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not await conn.fetchval(SEEDING):
                assert command.poll() is None
                assert time.monotonic() < deadline, "the seed never started"
                await asyncio.sleep(0.05)
            command.kill()
            command.wait(timeout=30)
            deadline = time.monotonic() + 10
            while await conn.fetchval(SEEDING):
                assert time.monotonic() < deadline, "the seed ran on without its client"
                await asyncio.sleep(0.1)
        finally:
            if command.poll() is None:
                command.kill()
        assert await conn.fetchval("SELECT count(*) FROM profiles") == 0


async def test_ctrl_c_during_migrate_says_the_next_run_finishes_it(
    empty_dsn: str,
) -> None:
    async with (
        connected(empty_dsn, plain=True) as conn,
        connected(empty_dsn, plain=True) as observer,
    ):
        await migrate(conn, ("base",))
        # A report's open snapshot keeps the ops layer's first concurrent index
        # build waiting, half-built, until the operator gives up.
        report = conn.transaction(isolation="repeatable_read")
        await report.start()
        await conn.fetchval("SELECT count(*) FROM rides")
        _, err = await ctrl_c_when(
            observer,
            "SELECT count(*) FROM pg_index WHERE NOT indisvalid",
            "an index build",
            "migrate",
            "--dsn",
            empty_dsn,
        )
        assert "interrupted; each migration that finished is recorded" in err, err
        await report.rollback()

        again = run_cli("migrate", "--dsn", empty_dsn)
        assert again.returncode == 0, again.stderr
        assert "applied ops/0102_ops_indexes.sql" in again.stdout
        assert (
            await conn.fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid")
            == 0
        )


async def test_ctrl_c_during_the_closing_check_says_the_seed_was_kept(
    ops_dsn: str,
) -> None:
    async with connected(ops_dsn, plain=True) as holder:
        await holder.execute(
            "SELECT pg_advisory_lock(ops_job_lock_key('check_system_invariants'))"
        )
        _, err = await ctrl_c_when(
            holder,
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND application_name = 'carpool-tui seed'",
            "the check waiting",
            "seed",
            "--dsn",
            ops_dsn,
            "--rides",
            "50",
        )
        assert "interrupted; the seed was written" in err, err
        assert "nothing was written" not in err
        assert await holder.fetchval("SELECT count(*) FROM rides") == 50
