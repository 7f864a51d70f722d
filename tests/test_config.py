"""The config file: named targets, where it is found, and clear errors."""

from __future__ import annotations

import json
import os
import shlex
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import textual_serve.server
from factories import once
from test_check import cli, isolated_env

from carpool_tui import config as config_module
from carpool_tui.cli import _target_settings, _wall_thresholds, build_parser, cmd_serve
from carpool_tui.config import (
    CHECK_METRICS,
    MAX_CONFIG_BYTES,
    CheckThresholds,
    ConfigError,
    default_action_log,
    default_config_file,
    default_log_file,
    load_config,
    parse_config,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "config.example.toml"
WHERE = Path("/etc/carpool/c.toml")


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    return isolated_env(tmp_path)


def error_of(text: str) -> str:
    """The error of a file, or of its first broken target once it is used."""
    with pytest.raises(ConfigError) as caught:
        config = parse_config(text, WHERE)
        for name in config.broken:
            config.target(name)
    return str(caught.value)


def test_a_file_that_starts_with_a_byte_order_mark_reads(tmp_path: Path) -> None:
    saved = tmp_path / "bom.toml"
    saved.write_bytes("[targets.prod]\ndsn = 'postgresql://h/db'\n".encode("utf-8-sig"))
    assert load_config(saved).target("prod").dsn == "postgresql://h/db"


def test_a_broken_target_stops_only_the_commands_that_use_it() -> None:
    config = parse_config(
        "[targets.bad]\nrefresh = 'fast'\n[targets.good]\ndsn = 'postgresql://h/db'\n",
        WHERE,
    )
    assert config.target("good").dsn == "postgresql://h/db"
    with pytest.raises(ConfigError) as caught:
        config.target("bad")
    assert str(caught.value).startswith(
        "config file /etc/carpool/c.toml, line 2: targets.bad.refresh must be"
    )
    # A mistyped name lists the broken target too: it is there, with a mistake.
    with pytest.raises(ConfigError) as caught:
        config.target("bda")
    assert "(targets: bad (has a mistake), good)" in str(caught.value)


def test_the_example_file_parses() -> None:
    config = load_config(EXAMPLE)
    assert sorted(config.targets) == ["prod", "prod-jobs", "staging"]
    prod = config.targets["prod"]
    assert prod.read_only is True
    assert prod.refresh_seconds == 10.0
    assert prod.dsn == "postgresql://oncall@db.internal:5432/carpool"
    assert config.targets["prod-jobs"].operator == "scheduler"
    limits = config.thresholds(prod)
    assert limits.critical["expired_active_rides"] == 50
    assert limits.warn["expired_active_rides"] == 5
    assert limits.critical["seat_mismatches"] == 0
    assert config.thresholds(config.targets["staging"]).overdue_factor == 0.0
    # The example's [check] spells out the defaults.
    defaults = config.thresholds()
    assert {k: (defaults.warn[k], defaults.critical[k]) for k in CHECK_METRICS} == {
        k: (w, c) for k, (_, w, c) in CHECK_METRICS.items()
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[targets.prod]\ndsn = 'postgresql://x'\nrefresh = 5\n[targets.qa\n",
            "config file /etc/carpool/c.toml, line 4, column 12: Expected ']'",
        ),
        (
            "[targets.prod]\ndsn = 'postgresql://x'\nrefesh = 5\n",
            "config file /etc/carpool/c.toml, line 3: unknown key 'refesh' in "
            "[targets.prod] (known: dsn, read_only, refresh, operator, check)",
        ),
        (
            "[targets.prod]\n\nrefresh = 0.5\n",
            "config file /etc/carpool/c.toml, line 3: targets.prod.refresh must be "
            "a number of seconds between 1 and 300, not 0.5",
        ),
        (
            "[targets.prod]\nrefresh = true\n",
            "config file /etc/carpool/c.toml, line 2: targets.prod.refresh must be "
            "a number of seconds between 1 and 300, not true",
        ),
        (
            "[targets.prod]\nrefresh = " + "9" * 60 + "\n",
            "config file /etc/carpool/c.toml, line 2: targets.prod.refresh must be "
            "a number of seconds between 1 and 300, not " + "9" * 39 + "…",
        ),
        (
            "[targets.wall]\nread_only = 'yes'\n",
            "config file /etc/carpool/c.toml, line 2: targets.wall.read_only must "
            "be true or false",
        ),
        (
            "[check.critical]\nseat_mismatches = -1\n",
            "config file /etc/carpool/c.toml, line 2: check.critical.seat_mismatches:"
            " -1 is below 0 (use 'off' to turn it off)",
        ),
        (
            "[targets.x.check.warn]\nlag = 3\n",
            "config file /etc/carpool/c.toml, line 2: unknown key 'lag' in "
            "[targets.x.check.warn]",
        ),
        (
            "targets = {prod = {operator = ''}}\n",
            "config file /etc/carpool/c.toml, line 1: targets.prod.operator must be "
            "a non-empty string",
        ),
        (
            '[targets.prod]\noperator = "ann\\u200b"\n',
            "config file /etc/carpool/c.toml, line 2: targets.prod.operator "
            "contains a control or invisible character (\\u200b); write the name",
        ),
        (
            '[targets.prod]\noperator = "' + "a" * 5000 + '"\n',
            "config file /etc/carpool/c.toml, line 2: targets.prod.operator is 5,000"
            " characters long, more than the 200 a name takes; write the name",
        ),
        (
            "[check]\noverdue_factor = 'often'\n",
            "config file /etc/carpool/c.toml, line 2: check.overdue_factor must be "
            "a number",
        ),
        (
            "[check]\noverdue_factor = nan\n",
            "config file /etc/carpool/c.toml, line 2: check.overdue_factor must be "
            "a number",
        ),
    ],
)
def test_errors_name_the_file_the_line_and_the_problem(
    text: str, expected: str
) -> None:
    message = error_of(text)
    assert message.startswith(expected), message
    assert "\n" not in message


def test_thresholds_accept_off_and_numbers_in_strings() -> None:
    config = parse_config(
        "[check.warn]\nunresolved_violations = 'off'\n"
        "[check.critical]\nunresolved_violations = '9'\n",
        WHERE,
    )
    limits = config.thresholds()
    assert limits.warn["unresolved_violations"] is None
    assert limits.critical["unresolved_violations"] == 9


def test_where_the_file_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CARPOOL_TUI_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_config_file() == tmp_path / "carpool-tui" / "config.toml"
    # A missing default file means no targets; a named one must exist.
    assert load_config().targets == {}
    with pytest.raises(ConfigError, match=r"config file .*nope\.toml does not exist"):
        load_config(tmp_path / "nope.toml")
    own = tmp_path / "own.toml"
    own.write_text("[targets.a]\ndsn = 'postgresql://a@h/db'\n")
    monkeypatch.setenv("CARPOOL_TUI_CONFIG", str(own))
    assert default_config_file() == own
    assert list(load_config().targets) == ["a"]
    monkeypatch.setenv("CARPOOL_TUI_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError, match=r"gone\.toml does not exist"):
        load_config()


def test_a_file_no_setting_could_fill_is_one_sentence(tmp_path: Path) -> None:
    """tomllib raises ValueError past Python's digit limit and RecursionError on
    deep nesting; a path to a device would be read without end."""
    digits = "[targets.demo]\nrefresh = " + "9" * 5000 + "\n"
    with pytest.raises(ConfigError, match="a number in it has thousands of digits"):
        parse_config(digits, WHERE)
    nested = "a = " + "[" * 100_000 + "]" * 100_000 + "\n"
    with pytest.raises(ConfigError, match="nested too deeply"):
        parse_config(nested, WHERE)
    with pytest.raises(ConfigError, match=r"/dev/zero is larger than 1024 KiB"):
        load_config(Path("/dev/zero"))
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * MAX_CONFIG_BYTES + "\n")
    with pytest.raises(ConfigError, match=r"big\.toml is larger than"):
        load_config(big)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://ops:s3cret@127.0.0.1:1/carpool",
        "postgresql://ops@127.0.0.1:1/carpool?password=s3cret",
        "host=127.0.0.1 port=1 dbname=carpool password='s 3cret'",
    ],
)
def test_a_password_others_can_read_is_warned_of_once(
    cli_env: dict[str, str], tmp_path: Path, dsn: str
) -> None:
    """On a shared jump host the file gives the password to every user: said
    once on stderr (check's stdout stays the monitor's one line), and the
    file is still used."""
    config = tmp_path / "carpool.toml"
    config.write_text(f"[targets.prod]\ndsn = {json.dumps(dsn)}\n")
    config.chmod(0o644)
    done = cli(cli_env, "check", "--config", str(config), "--target", "prod")
    assert done.returncode == 3 and done.stdout.startswith("CARPOOL UNKNOWN")
    warning = (
        f"carpool-tui: warning: config file {config} holds a password and other "
        f"users can read it (mode 644); make it yours alone: chmod 600 {config}"
    )
    assert done.stderr.count(warning) == 1, done.stderr
    assert "s3cret" not in done.stderr + done.stdout
    config.chmod(0o600)
    private = cli(cli_env, "check", "--config", str(config), "--target", "prod")
    assert private.returncode == 3 and "warning" not in private.stderr


def test_a_readable_file_without_a_password_is_not_warned_of(tmp_path: Path) -> None:
    config = tmp_path / "carpool.toml"
    config.write_text(
        "[targets.a]\ndsn = 'postgresql://ops:@h/db'\n"
        "[targets.b]\ndsn = 'host=h dbname=db sslmode=require'\n"
    )
    config.chmod(0o644)
    assert load_config(config).shared_password is None


def test_unknown_target_lists_the_others() -> None:
    config = parse_config("[targets.prod]\n[targets.staging]\n", WHERE)
    with pytest.raises(ConfigError) as caught:
        config.target("qa")
    assert str(caught.value) == (
        "no target 'qa' in config file /etc/carpool/c.toml (targets: prod, staging)"
    )


def test_options_beat_the_target_which_beats_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        "[targets.wall]\ndsn = 'postgresql://wall@h/db'\nread_only = true\n"
        "refresh = 30\noperator = 'wallboard'\n"
    )
    monkeypatch.setenv("CARPOOL_TUI_CONFIG", str(config))
    monkeypatch.setenv("DATABASE_URL", "postgresql://env@h/db")
    parser = build_parser()

    settings, _, _ = _target_settings(parser.parse_args(["--target", "wall"]))
    assert settings.dsn == "postgresql://wall@h/db"
    assert (settings.read_only, settings.refresh_seconds) == (True, 30.0)
    assert settings.operator == "wallboard"

    args = parser.parse_args(
        ["--target", "wall", "--dsn", "postgresql://cli@h/db", "--refresh", "2"]
    )
    settings, _, _ = _target_settings(args)
    assert (settings.dsn, settings.refresh_seconds) == ("postgresql://cli@h/db", 2.0)

    settings, _, _ = _target_settings(parser.parse_args([]))
    assert settings.dsn == "postgresql://env@h/db"
    assert (settings.read_only, settings.refresh_seconds) == (False, 5.0)

    # --target before or after the command name.
    for argv in (["--target", "wall", "check"], ["check", "--target", "wall"]):
        settings, _, target = _target_settings(parser.parse_args(argv))
        assert target is not None and target.name == "wall"
        assert settings.dsn == "postgresql://wall@h/db"


def test_a_bad_file_is_one_line_on_the_command_line(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[targets.prod]\ndsn = 'postgresql://x\n")
    cli_env["CARPOOL_TUI_CONFIG"] = str(bad)
    for args in (["migrate"], ["--target", "prod"], ["run-job", "expire_rides"]):
        done = cli(cli_env, *args)
        assert done.returncode == 1, args
        assert done.stderr.strip().splitlines() == [
            f'carpool-tui: config file {bad}, line 2 (end of the file): Expected "\'"'
        ]


async def test_a_broken_target_leaves_the_others_usable_on_the_command_line(
    tmp_path: Path, cli_env: dict[str, str], ops_dsn: str
) -> None:
    mixed = tmp_path / "mixed.toml"
    mixed.write_text(
        f"[targets.good]\ndsn = '{ops_dsn}'\n[targets.bad]\nrefresh = 'fast'\n"
    )
    cli_env["CARPOOL_TUI_CONFIG"] = str(mixed)
    for args in (["--target", "good", "check"], ["--dsn", ops_dsn, "check"]):
        done = cli(cli_env, *args)
        assert "CARPOOL" in done.stdout and done.returncode != 3, done.stdout
    done = cli(cli_env, "--target", "bad", "check")
    assert done.returncode == 3
    assert f"config file {mixed}, line 4: targets.bad.refresh must be" in done.stdout


async def test_a_read_only_target_refuses_migrate_and_seed(
    tmp_path: Path, cli_env: dict[str, str], ops_dsn: str
) -> None:
    config = tmp_path / "ro.toml"
    config.write_text(f"[targets.wall]\ndsn = '{ops_dsn}'\nread_only = true\n")
    cli_env["CARPOOL_TUI_CONFIG"] = str(config)
    for args in (
        ["migrate", "--target", "wall"],
        ["seed", "--target", "wall", "--rides", "5"],
        ["seed", "--target", "wall", "--dsn", ops_dsn, "--rides", "5"],
    ):
        done = cli(cli_env, *args)
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"target 'wall' is read_only = true, and {args[0]} writes" in (
            done.stderr
        )
    rides = await once(ops_dsn, "SELECT count(*) FROM rides")
    assert rides == 0
    dry = cli(cli_env, "migrate", "--target", "wall", "--dry-run")
    assert dry.returncode == 0, dry.stderr  # a dry run only reads
    as_json = cli(cli_env, "run-job", "expire_rides", "--target", "nope", "--json")
    assert json.loads(as_json.stdout)["success"] is False
    assert "no target 'nope'" in json.loads(as_json.stdout)["error"]


async def test_read_only_on_the_command_line_refuses_migrate_and_seed(
    cli_env: dict[str, str], base_dsn: str, ops_dsn: str
) -> None:
    """--read-only is as binding as a read_only target: refused before
    connecting, so nothing is written."""
    for args in (
        ["--read-only", "migrate", "--dsn", base_dsn],
        ["--read-only", "--dsn", base_dsn, "migrate", "--base"],
        ["--read-only", "seed", "--dsn", ops_dsn, "--rides", "5"],
        ["--dsn", ops_dsn, "--read-only", "seed", "--rides", "5"],
    ):
        done = cli(cli_env, *args)
        assert done.returncode == 1, done.stdout + done.stderr
        command = "migrate" if "migrate" in args else "seed"
        assert done.stderr.strip().splitlines() == [
            f"carpool-tui: --read-only is given, and {command} writes to the"
            " database; run it without --read-only"
        ]
    assert await once(base_dsn, "SELECT to_regproc('ops_layer_version')") is None
    assert await once(ops_dsn, "SELECT count(*) FROM rides") == 0
    dry = cli(cli_env, "--read-only", "migrate", "--dsn", base_dsn, "--dry-run")
    assert dry.returncode == 0, dry.stderr  # a dry run only reads
    assert "would apply ops/0101_ops_tables.sql" in dry.stdout


def test_a_target_dsn_that_names_nothing_is_refused_when_used(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    config = tmp_path / "empty.toml"
    config.write_text("[targets.prod]\ndsn = 'postgresql:///?sslmode=disable'\n")
    cli_env["CARPOOL_TUI_CONFIG"] = str(config)
    done = cli(cli_env, "check", "--target", "prod")
    assert done.returncode == 3
    assert "line 2: targets.prod.dsn names no server or database" in done.stdout


def test_an_unknown_target_on_the_command_line(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    done = cli(cli_env, "migrate", "--target", "prod")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"carpool-tui: no target 'prod': config file "
        f"{tmp_path / 'config' / 'carpool-tui' / 'config.toml'} does not exist "
        "(set CARPOOL_TUI_CONFIG or --config to use another file)"
    )


def test_thresholds_go_through_json_and_bad_ones_are_refused() -> None:
    strict = parse_config(
        "[check]\noverdue_factor = 3\n[check.warn]\nfailed_runs_24h = 'off'\n"
        "[targets.t.check.critical]\ncritical_violations = 'off'\n"
        "unresolved_violations = 9\n",
        WHERE,
    )
    thresholds = strict.thresholds(strict.target("t"))
    assert CheckThresholds.from_json(thresholds.to_json()) == thresholds
    assert CheckThresholds.from_json("{}") == CheckThresholds()
    for bad, problem in (
        ("[]", "not a JSON object"),
        ('{"warn": {"nope": 1}}', "unknown metric 'nope'"),
        ('{"critical": {"seat_mismatches": -1}}', "below 0"),
        ('{"overdue_factor": "x"}', "overdue_factor must be a number"),
        ('{"limits": {}}', "unknown key 'limits'"),
    ):
        with pytest.raises(ValueError, match=problem):
            CheckThresholds.from_json(bad)
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--thresholds", bad])


def test_served_walls_judge_with_the_targets_thresholds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve --target` starts dashboards without the target: its thresholds
    must reach them as the DSN does, or the wall in the browser judges with
    the defaults while `check --target` does not."""
    config = tmp_path / "c.toml"
    config.write_text(
        "[targets.demo]\ndsn = 'postgresql://wall@h/db'\n"
        "[targets.demo.check.critical]\ncritical_violations = 'off'\n"
    )
    monkeypatch.setenv("CARPOOL_TUI_CONFIG", str(config))
    monkeypatch.setenv("DATABASE_URL", "postgresql://env@h/db")
    served: list[str] = []

    class Server:
        """Takes the command each browser tab would run; serves nothing."""

        def __init__(self, command: str, **options: Any) -> None:
            served.append(command)
            self.public_url = "http://127.0.0.1:1"
            self.templates_path = Path(textual_serve.__file__).parent / "templates"

        def serve(self) -> None:
            pass

    monkeypatch.setattr(textual_serve.server, "Server", Server)
    args = build_parser().parse_args(["serve", "--target", "demo", "--wallboard"])
    assert cmd_serve(args) == 0
    command = shlex.split(served[0])
    assert command[1:3] == ["-m", "carpool_tui"] and "postgresql:" not in served[0]
    child = build_parser().parse_args(command[3:])
    settings, config_file, target = _target_settings(child)
    assert settings.dsn == os.environ["DATABASE_URL"] == "postgresql://wall@h/db"
    wall = _wall_thresholds(child, config_file, target)
    assert wall == load_config(config).thresholds(load_config(config).target("demo"))
    assert wall.critical["critical_violations"] is None


def test_diagnostics_to_a_device_keep_the_action_log_in_the_state_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    for device in ("/dev/null", "/dev/full"):
        monkeypatch.setenv("CARPOOL_TUI_LOG", device)
        assert default_log_file() == Path(device)
        assert default_action_log() == state / "carpool-tui" / "actions.log"
    # A file of its own, even one not written yet, keeps the log beside it.
    monkeypatch.setenv("CARPOOL_TUI_LOG", str(tmp_path / "logs" / "tui.log"))
    assert default_action_log() == tmp_path / "logs" / "actions.log"
    monkeypatch.delenv("CARPOOL_TUI_LOG")
    assert default_action_log() == state / "carpool-tui" / "actions.log"


def test_the_tests_keep_off_the_operators_own_files() -> None:
    """A test run writes no entry into the action log an operator reads."""
    assert not default_action_log().is_relative_to(Path.home())
    assert not default_log_file().is_relative_to(Path.home())


def test_a_pipe_is_read_when_written_and_refused_when_nothing_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--config <(...)` is a pipe with a writer; a pipe without one must not
    hang the command."""
    pipe = tmp_path / "config.pipe"
    os.mkfifo(pipe)
    monkeypatch.setattr(config_module, "PIPE_WAIT_SECONDS", 0.3)
    with pytest.raises(ConfigError, match=r"config\.pipe is a pipe that sent nothing"):
        load_config(pipe)

    def stall() -> None:
        with pipe.open("w") as file:
            file.write("[targets.piped]\n")
            file.flush()
            time.sleep(1.5)  # past the wait, without ending

    writer = threading.Thread(target=stall)
    writer.start()
    try:
        with pytest.raises(ConfigError, match=r"sent nothing for 0\.3 s without"):
            load_config(pipe)
    finally:
        writer.join(timeout=5)

    def write() -> None:
        with pipe.open("w") as file:
            file.write("[targets.piped]\ndsn = 'postgresql://a@h/db'\n")

    monkeypatch.setattr(config_module, "PIPE_WAIT_SECONDS", 10.0)
    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert list(load_config(pipe).targets) == ["piped"]
    finally:
        writer.join(timeout=5)
