"""Settings for one session: where the database is, how often to poll, who acts."""

from __future__ import annotations

import getpass
import json
import math
import os
import re
import select
import socket
import stat
import tomllib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_REFRESH_SECONDS = 5.0
MIN_REFRESH_SECONDS = 1.0
MAX_REFRESH_SECONDS = 300.0
DEFAULT_STATEMENT_TIMEOUT_MS = 5_000
DEFAULT_JOB_TIMEOUT_MS = 300_000
LOG_FILE_ENV = "CARPOOL_TUI_LOG"


def default_operator() -> str:
    """The operator name recorded in audit rows when none is given: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


OPERATOR_UNSEEN = "contains a control or invisible character"
OPERATOR_MAX = 200


def operator_problem(name: str) -> str | None:
    """What makes `name` unfit to record as the operator, or None.

    The name goes into audit rows that people read later: a control or
    zero-width character would make two names look the same, or hide part of
    one.
    """
    if not name.strip():
        return "is blank"
    if len(name) > OPERATOR_MAX:
        # Every job run and audit row repeats it, and the action log too.
        return (
            f"is {len(name):,} characters long, more than the {OPERATOR_MAX}"
            " a name takes"
        )
    for char in name:
        if unicodedata.category(char) == "Cs":
            # A byte of the environment or command line that is not UTF-8,
            # which Python keeps as a lone surrogate: the server refuses it.
            return f"is not UTF-8 text (it holds the byte \\x{ord(char) - 0xDC00:02x})"
        if unicodedata.category(char) in {"Cc", "Cf", "Zl", "Zp"}:
            return f"{OPERATOR_UNSEEN} ({ascii(char)[1:-1]})"
    return None


def login_operator() -> str:
    """user@host as the operator, or ConfigError when the login name cannot
    be recorded (a byte that is not UTF-8 in $USER): every job and write
    would otherwise fail at the server with an encoding error."""
    name = default_operator()
    problem = operator_problem(name)
    if problem is not None:
        raise ConfigError(
            f"the operator name from the login, {name!a}, {problem}; give "
            "the name to record in audit rows and the job log with --operator NAME"
        )
    return name


def default_log_file() -> Path:
    """Where diagnostics go while the TUI owns the terminal."""
    env = os.environ.get(LOG_FILE_ENV)
    return Path(env) if env else _state_folder() / "carpool-tui.log"


def _state_folder() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "carpool-tui"


def default_action_log() -> Path:
    """The local append-only log of every write the dashboard made: beside
    the diagnostics file, unless that is not a file of its own (/dev/null to
    silence diagnostics): the record of writes then stays in the state
    folder, not in /dev beside a device."""
    log = default_log_file()
    if log.exists() and not log.is_file():
        return _state_folder() / "actions.log"
    return log.with_name("actions.log")


def dsn_parts(dsn: str) -> dict[str, str]:
    """The settings a URL or key=value DSN names (user, host, port, dbname and
    the URL's options), empty ones included; ValueError for an unreadable URL.

    Only the first of several hosts counts, and a password is never read.
    """
    found: dict[str, str] = {}
    if not URL_FORM.match(dsn.strip()):
        return keyword_options(dsn)
    url = urlsplit(dsn)
    userinfo, at, hosts = url.netloc.rpartition("@")
    if at:
        found["user"] = unquote(userinfo.split(":", 1)[0])
    first = hosts.split(",", 1)[0]
    if first.startswith("["):
        host, _, rest = first[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, _, port = first.partition(":")
    found["host"] = unquote(host)
    found["port"] = port
    found["dbname"] = unquote(url.path.lstrip("/"))
    for key, values in parse_qs(url.query).items():
        found[key] = values[0]
    return found


def names_nothing(dsn: str) -> bool:
    """Whether a DSN names neither a server nor a database.

    ``postgresql://$HOST/$DB?sslmode=require`` with the variables unset becomes
    ``postgresql:///?sslmode=require``, and ``host=$HOST dbname=$DB`` becomes
    ``host= dbname=``: libpq would fill them in from its defaults and reach
    whatever database those point to, which is not the one that was meant. A
    DSN must name a host, a database or a service (in the URL or its options).
    """
    text = dsn.strip()
    if not text:
        return True
    if not URL_FORM.match(text) and "=" not in text:
        return False  # not a form this checks; the driver says what is wrong
    try:
        named = dsn_parts(text)
    except ValueError:
        return False  # malformed: connecting says so, without the password
    wanted = ("host", "hostaddr", "dbname", "service")
    return not any(named.get(key, "").strip() for key in wanted)


def holds_password(dsn: str) -> bool:
    """Whether a URL or key=value DSN carries a password (an empty one does
    not count); an unreadable DSN counts as none."""
    text = dsn.strip()
    try:
        if not URL_FORM.match(text):
            return bool(keyword_options(text).get("password"))
        url = urlsplit(text)
    except ValueError:
        return False
    userinfo, at, _ = url.netloc.rpartition("@")
    if at and userinfo.partition(":")[2]:
        return True
    return any(v for v in parse_qs(url.query).get("password", []))


URL_FORM = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
"""How libpq tells a URL DSN from ``key=value`` options: a URL starts with its
scheme (libpq takes only postgresql:// and postgres://)."""

# A value is quoted ('...', with backslash escapes) or runs to the next space;
# one that opens a quote must close it, as libpq requires.
_KEYWORD = re.compile(r"\s*(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|(?!')\S*)")
_OPEN_QUOTE = re.compile(r"\s*(\w+)\s*=\s*'")


class UnclosedQuote(ValueError):
    """A keyword DSN's value opens a quote it never closes."""


def keyword_options(text: str) -> dict[str, str]:
    """libpq's options from its ``key=value`` form (the last of a repeated key).

    ValueError names what cannot be read: an unclosed quote would otherwise
    take the rest of the string for the value, and so another database.
    """
    options: dict[str, str] = {}
    position = 0
    while position < len(text):
        match = _KEYWORD.match(text, position)
        if match is None:
            unclosed = _OPEN_QUOTE.match(text, position)
            if unclosed is not None:
                raise UnclosedQuote(
                    f"The connection string's {unclosed.group(1)} value opens a"
                    " quote (') that is never closed"
                )
            if text[position:].strip():
                raise ValueError(
                    f"Cannot read the connection string near {text[position:]!r}"
                )
            break
        key, value = match.group(1), match.group(2)
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        options[key] = value
        position = match.end()
    return options


def resolve_dsn(cli_dsn: str | None, target: Target | None = None) -> str | None:
    """Pick the DSN: --dsn, the target's, then DATABASE_URL; None lets PG* act."""
    if cli_dsn:
        return cli_dsn
    if target is not None and target.dsn:
        return target.dsn
    env = os.environ.get("DATABASE_URL")
    if env is not None and names_nothing(env):
        # Set but blank (an unset shell variable): falling through to PG* would
        # reach another database.
        raise ConfigError(
            "DATABASE_URL is set but names no server or database"
            f" ({describe_target(env.strip())!r}: an unset variable in it?); set it"
            " to a full DSN, or unset it to use the PG* variables"
        )
    return env or None


def describe_target(dsn: str | None) -> str:
    """A short, password-free name of the database for the screen and messages."""
    if dsn is None:
        host = os.environ.get("PGHOST", "local socket")
        db = os.environ.get("PGDATABASE", os.environ.get("PGUSER", getpass.getuser()))
        return f"{db} on {host} (PG* environment)"
    text = dsn
    if "://" in text:
        scheme, rest = text.split("://", 1)
        if "@" in rest:
            creds, rest = rest.rsplit("@", 1)
            user = creds.split(":", 1)[0]
            rest = f"{user}@{rest}"
        text = f"{scheme}://{_redact_query(rest)}"
    return _PASSWORD_OPTION.sub(r"\1***", text)


def _redact_query(rest: str) -> str:
    """A URL's options with the password's value hidden, however its key is
    spelt: libpq decodes ``passw%6Frd`` to ``password`` too."""
    head, sep, query = rest.partition("?")
    if not sep:
        return rest
    pairs = []
    for pair in query.split("&"):
        key, eq, _ = pair.partition("=")
        if eq and unquote(key).strip().lower() == "password":
            pair = f"{key}=***"
        pairs.append(pair)
    return f"{head}?{'&'.join(pairs)}"


# password=... as a libpq keyword or a URL query option, quoted or not.
_PASSWORD_OPTION = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s]*)", re.I)


@dataclass(frozen=True)
class Settings:
    """Everything a dashboard session needs to know before it connects."""

    dsn: str | None = None
    refresh_seconds: float = DEFAULT_REFRESH_SECONDS
    read_only: bool = False
    operator: str = field(default_factory=default_operator)
    statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS
    job_timeout_ms: int = DEFAULT_JOB_TIMEOUT_MS
    action_log: Path = field(default_factory=default_action_log)

    @property
    def target(self) -> str:
        """The database as shown to the operator (no password)."""
        return describe_target(self.dsn)


# -- the config file -----------------------------------------------------

CONFIG_ENV = "CARPOOL_TUI_CONFIG"
DEFAULT_OVERDUE_FACTOR = 2.0
OFF = "off"

# What `check` measures: metric -> (words, warn above, critical above). A
# threshold of None never raises that level.
CHECK_METRICS: dict[str, tuple[str, int | None, int | None]] = {
    "seat_mismatches": ("seat mismatches", None, 0),
    "critical_violations": ("unresolved critical violations", None, 0),
    "unresolved_violations": ("unresolved violations", 0, 5),
    "expired_active_rides": ("expired rides still active", 0, 20),
    "failing_jobs": ("job(s) whose last run failed", None, 0),
    "failed_runs_24h": ("failed runs in 24 h", 0, None),
    "overdue_jobs": ("overdue jobs", 0, None),
}

_TARGET_KEYS = ("dsn", "read_only", "refresh", "operator", "check")
_CHECK_KEYS = ("warn", "critical", "overdue_factor")


class ConfigError(Exception):
    """A config file that cannot be used; str() is one line naming file and line."""


@dataclass(frozen=True)
class CheckThresholds:
    """When `check` says WARNING or CRITICAL: a metric's value above its limit.

    ``overdue_factor`` scales the manual's frequency of each job: a job whose
    last run started longer ago than factor x frequency (or never ran) is
    overdue; 0 turns the overdue test off.
    """

    warn: dict[str, int | None] = field(
        default_factory=lambda: {k: v[1] for k, v in CHECK_METRICS.items()}
    )
    critical: dict[str, int | None] = field(
        default_factory=lambda: {k: v[2] for k, v in CHECK_METRICS.items()}
    )
    overdue_factor: float = DEFAULT_OVERDUE_FACTOR

    def merged(self, overrides: CheckOverrides) -> CheckThresholds:
        """These thresholds with some limits replaced."""
        factor = overrides.overdue_factor
        return CheckThresholds(
            warn={**self.warn, **overrides.warn},
            critical={**self.critical, **overrides.critical},
            overdue_factor=self.overdue_factor if factor is None else factor,
        )

    def ordered(self) -> CheckThresholds:
        """These thresholds, unless a metric's warning limit is above its
        critical one: WARNING could then never show for it, which is far more
        often a slip than a wish. ConfigError names the metric and both limits.
        """
        for metric in CHECK_METRICS:
            warn, critical = self.warn.get(metric), self.critical.get(metric)
            if warn is not None and critical is not None and warn > critical:
                raise ConfigError(
                    f"The warning limit of {metric} ({warn}) is above its "
                    f"critical limit ({critical}), so it could never give "
                    "WARNING: lower the warning limit or raise the critical one "
                    "(--warn/--critical, or the config file's check tables)."
                )
        return self

    def to_json(self) -> str:
        """One line of JSON that from_json reads back, "off" for a limit that is
        off: how `serve` hands a target's thresholds to the dashboard processes
        it starts, which have no target of their own."""
        return json.dumps(
            {
                "warn": {k: OFF if v is None else v for k, v in self.warn.items()},
                "critical": {
                    k: OFF if v is None else v for k, v in self.critical.items()
                },
                "overdue_factor": self.overdue_factor,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> CheckThresholds:
        """Thresholds from to_json's JSON: the defaults with the limits it
        names replaced; ValueError says what is wrong with it."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        unknown = sorted(set(data) - set(_CHECK_KEYS))
        if unknown:
            raise ValueError(
                f"unknown key {unknown[0]!r} (known: {', '.join(_CHECK_KEYS)})"
            )
        limits: dict[str, dict[str, int | None]] = {}
        for level in ("warn", "critical"):
            raw = data.get(level, {})
            if not isinstance(raw, dict):
                raise ValueError(f"{level} must be an object of metric limits")
            limits[level] = {}
            for metric, value in raw.items():
                if metric not in CHECK_METRICS:
                    raise ValueError(f"{level}: unknown metric {metric!r}")
                try:
                    limits[level][metric] = parse_limit(value)
                except ValueError as exc:
                    raise ValueError(f"{level}.{metric}: {exc}") from None
        factor = data.get("overdue_factor")
        if factor is not None and (
            isinstance(factor, bool)
            or not isinstance(factor, int | float)
            or not math.isfinite(factor)
            or factor < 0
        ):
            raise ValueError(f"overdue_factor must be a number, 0 or more: {factor!r}")
        overrides = CheckOverrides(
            warn=limits["warn"],
            critical=limits["critical"],
            overdue_factor=None if factor is None else float(factor),
        )
        return cls().merged(overrides)


@dataclass(frozen=True)
class CheckOverrides:
    """Threshold changes from a config table or the command line."""

    warn: dict[str, int | None] = field(default_factory=dict)
    critical: dict[str, int | None] = field(default_factory=dict)
    overdue_factor: float | None = None


@dataclass(frozen=True)
class Target:
    """One named database of the config file; unset fields fall back to defaults."""

    name: str
    dsn: str | None = None
    read_only: bool = False
    refresh_seconds: float | None = None
    operator: str | None = None
    check: CheckOverrides = field(default_factory=CheckOverrides)


@dataclass(frozen=True)
class ConfigFile:
    """The parsed config file: named targets and default check thresholds."""

    path: Path
    exists: bool = False
    targets: dict[str, Target] = field(default_factory=dict)
    check: CheckOverrides = field(default_factory=CheckOverrides)
    broken: dict[str, ConfigError] = field(default_factory=dict)
    """Targets with a mistake, raised only when that target is used: a typo
    in one database's settings must not stop every command on the others."""
    shared_password: str | None = None
    """A warning when the file holds a password that users other than its
    owner may read (a jump host is shared): libpq refuses a password file
    like that; this file is still used, with the warning said."""

    def target(self, name: str) -> Target:
        """The target called ``name``, or a ConfigError that lists the others."""
        if name in self.targets:
            return self.targets[name]
        if name in self.broken:
            raise self.broken[name]
        if not self.exists:
            raise ConfigError(
                f"no target {name!r}: config file {self.path} does not exist "
                f"(set {CONFIG_ENV} or --config to use another file)"
            )
        names = [*self.targets, *(f"{n} (has a mistake)" for n in self.broken)]
        known = ", ".join(sorted(names)) or "none"
        raise ConfigError(
            f"no target {name!r} in config file {self.path} (targets: {known})"
        )

    def thresholds(self, target: Target | None = None) -> CheckThresholds:
        """Default thresholds, then the file's [check], then the target's."""
        merged = CheckThresholds().merged(self.check)
        return merged if target is None else merged.merged(target.check)


def default_config_file() -> Path:
    """$CARPOOL_TUI_CONFIG, else config.toml under $XDG_CONFIG_HOME/carpool-tui."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "carpool-tui" / "config.toml"


MAX_CONFIG_BYTES = 1024 * 1024


def load_config(path: Path | None = None) -> ConfigFile:
    """Read and check a config file.

    ``path`` None means the default file, which may be missing (no targets); a
    file named by --config or $CARPOOL_TUI_CONFIG must exist.
    """
    explicit = path is not None or bool(os.environ.get(CONFIG_ENV))
    where = path if path is not None else default_config_file()
    try:
        # Read no more than a config file can be: a path to /dev/zero or a
        # huge file would otherwise fill memory before any check.
        raw, mode = _read_limited(where)
        # utf-8-sig: an editor that starts the file with a byte-order mark
        # would otherwise make line 1 unreadable.
        text = raw.decode("utf-8-sig")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file {where} does not exist") from None
        return ConfigFile(path=where)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {where}: cannot be read ({exc})") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {where} is larger than {MAX_CONFIG_BYTES // 1024} KiB;"
            " a config file is a few lines: check that it names the right file"
        )
    config = parse_config(text, where)
    readable = mode & (stat.S_IRGRP | stat.S_IROTH)
    if readable and any(
        t.dsn and holds_password(t.dsn) for t in config.targets.values()
    ):
        warning = (
            f"config file {where} holds a password and other users can read it "
            f"(mode {stat.S_IMODE(mode):o}); make it yours alone: chmod 600 {where}"
        )
        config = replace(config, shared_password=warning)
    return config


PIPE_WAIT_SECONDS = 5.0


def _read_limited(where: Path) -> tuple[bytes, int]:
    """The first MAX_CONFIG_BYTES + 1 bytes of a file, and its mode.

    A named pipe is opened without waiting for a writer and read as it sends:
    `--config <(...)` works, and a pipe that sends nothing for
    PIPE_WAIT_SECONDS without ending is refused instead of hanging the command.
    """
    fd = os.open(where, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as file:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISFIFO(mode):
            os.set_blocking(fd, True)
            return file.read(MAX_CONFIG_BYTES + 1), mode
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_CONFIG_BYTES:
            ready, _, _ = select.select([fd], [], [], PIPE_WAIT_SECONDS)
            if not ready:
                raise ConfigError(
                    f"config file {where} is a pipe that sent nothing for "
                    f"{PIPE_WAIT_SECONDS:g} s without ending; name the config "
                    "file itself"
                )
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                break  # the writer closed it: the whole file is in
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)[: MAX_CONFIG_BYTES + 1], mode


def parse_config(text: str, path: Path) -> ConfigFile:
    """Parse the text of a config file; errors name the file and, if known, line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}{_toml_problem(exc, text)}") from exc
    except ValueError:  # an integer past Python's limit on digits
        raise ConfigError(
            f"config file {path}: not readable as TOML (a number in it has"
            " thousands of digits, more than any setting takes)"
        ) from None
    except RecursionError:
        raise ConfigError(
            f"config file {path}: not readable as TOML (arrays or tables nested"
            " too deeply)"
        ) from None
    return _Parser(text, path).config(data)


def _toml_problem(exc: tomllib.TOMLDecodeError, text: str) -> str:
    """tomllib's 'Problem (at line 3, column 7)' as ', line 3, column 7: Problem'."""
    message = str(exc)
    match = re.fullmatch(r"(.*) \(at (line \d+, column \d+)\)", message)
    if match is not None:
        return f", {match.group(2)}: {match.group(1)}"
    match = re.fullmatch(r"(.*) \(at end of document\)", message)
    if match is not None:
        last = max(len(text.splitlines()), 1)
        return f", line {last} (end of the file): {match.group(1)}"
    return f": {message}"


class _Parser:
    """Checks the parsed TOML against the schema, finding lines for its errors."""

    def __init__(self, text: str, path: Path) -> None:
        self.lines = text.splitlines()
        self.path = path

    def fail(self, table: str, key: str | None, problem: str) -> ConfigError:
        line = self.line_of(table, key)
        where = f"config file {self.path}" + (f", line {line}" if line else "")
        return ConfigError(f"{where}: {problem}")

    def line_of(self, table: str, key: str | None) -> int | None:
        """Best effort: the line defining ``key`` in ``table`` (dotted path)."""
        table = _normalise(table)
        current = ""
        header_line: int | None = None
        for number, raw in enumerate(self.lines, start=1):
            line = raw.strip()
            header = re.fullmatch(r"\[\[?\s*([^\]]+?)\s*\]\]?(\s*#.*)?", line)
            if header:
                current = _normalise(header.group(1))
                if current == table:
                    header_line = number
                continue
            if key is None or "=" not in line:
                continue
            lhs = _normalise(line.split("=", 1)[0])
            full = f"{current}.{lhs}" if current else lhs
            wanted = f"{table}.{key}" if table else key
            if full == wanted or full.startswith(wanted + "."):
                return number
        if header_line is not None:
            return header_line
        # Written as an inline table or with dotted keys: find the names.
        names = [key, table.rsplit(".", 1)[-1] if table else None]
        for name in (n for n in names if n):
            pattern = rf"(^|[.\s\[{{,]){re.escape(name)}\s*[=\].]"
            for number, raw in enumerate(self.lines, start=1):
                if re.search(pattern, raw.split("#", 1)[0]):
                    return number
        return None

    def config(self, data: dict[str, Any]) -> ConfigFile:
        self.unknown_keys("", data, ("targets", "check"))
        targets_raw = data.get("targets", {})
        if not isinstance(targets_raw, dict):
            raise self.fail("", "targets", "targets must be a table of targets")
        targets: dict[str, Target] = {}
        broken: dict[str, ConfigError] = {}
        for name, raw in targets_raw.items():
            table = f"targets.{_quote(name)}"
            try:
                if not isinstance(raw, dict):
                    raise self.fail(
                        "targets", name, f"[{table}] must be a table of settings"
                    )
                targets[name] = self.target(name, table, raw)
            except ConfigError as exc:
                broken[name] = exc
        check = self.check("check", data.get("check", {}))
        return ConfigFile(
            path=self.path,
            exists=True,
            targets=targets,
            check=check,
            broken=broken,
        )

    def unknown_keys(
        self, table: str, raw: dict[str, Any], known: Sequence[str]
    ) -> None:
        for key in raw:
            if key not in known:
                where = f" in [{table}]" if table else " at the top level"
                raise self.fail(
                    table,
                    key,
                    f"unknown key {key!r}{where} (known: {', '.join(known)})",
                )

    def target(self, name: str, table: str, raw: dict[str, Any]) -> Target:
        self.unknown_keys(table, raw, _TARGET_KEYS)
        dsn = raw.get("dsn")
        if dsn is not None and (not isinstance(dsn, str) or not dsn.strip()):
            raise self.fail(table, "dsn", f"{table}.dsn must be a non-empty string")
        if dsn is not None and names_nothing(dsn):
            # libpq would fill it in from its defaults and reach another database.
            raise self.fail(
                table,
                "dsn",
                f"{table}.dsn names no server or database "
                f"({describe_target(dsn.strip())!r}); give a full DSN",
            )
        read_only = raw.get("read_only", False)
        if not isinstance(read_only, bool):
            raise self.fail(
                table, "read_only", f"{table}.read_only must be true or false"
            )
        refresh = raw.get("refresh")
        if refresh is not None and (
            isinstance(refresh, bool)
            or not isinstance(refresh, int | float)
            or not MIN_REFRESH_SECONDS <= refresh <= MAX_REFRESH_SECONDS
        ):
            raise self.fail(
                table,
                "refresh",
                f"{table}.refresh must be a number of seconds between "
                f"{MIN_REFRESH_SECONDS:g} and {MAX_REFRESH_SECONDS:g}, "
                f"not {_shown(refresh)}",
            )
        operator = raw.get("operator")
        if operator is not None and (
            not isinstance(operator, str) or not operator.strip()
        ):
            raise self.fail(
                table, "operator", f"{table}.operator must be a non-empty string"
            )
        problem = None if operator is None else operator_problem(operator)
        if problem is not None:
            raise self.fail(
                table,
                "operator",
                f"{table}.operator {problem}; write the name to record in audit "
                "rows and the job log",
            )
        return Target(
            name=name,
            dsn=dsn,
            read_only=read_only,
            refresh_seconds=None if refresh is None else float(refresh),
            operator=None if operator is None else operator.strip(),
            check=self.check(f"{table}.check", raw.get("check", {})),
        )

    def check(self, table: str, raw: Any) -> CheckOverrides:
        if not isinstance(raw, dict):
            parent, _, key = table.rpartition(".")
            raise self.fail(parent, key, f"{table} must be a table")
        self.unknown_keys(table, raw, _CHECK_KEYS)
        factor = raw.get("overdue_factor")
        if factor is not None and (
            isinstance(factor, bool)
            or not isinstance(factor, int | float)
            or not math.isfinite(factor)
            or factor < 0
        ):
            raise self.fail(
                table,
                "overdue_factor",
                f"{table}.overdue_factor must be a number, 0 or more "
                f"(0 turns the overdue test off), not {_shown(factor)}",
            )
        return CheckOverrides(
            warn=self.limits(f"{table}.warn", raw.get("warn", {})),
            critical=self.limits(f"{table}.critical", raw.get("critical", {})),
            overdue_factor=None if factor is None else float(factor),
        )

    def limits(self, table: str, raw: Any) -> dict[str, int | None]:
        if not isinstance(raw, dict):
            parent, _, key = table.rpartition(".")
            raise self.fail(parent, key, f"{table} must be a table of metric limits")
        self.unknown_keys(table, raw, tuple(CHECK_METRICS))
        limits: dict[str, int | None] = {}
        for metric, value in raw.items():
            try:
                limits[metric] = parse_limit(value)
            except ValueError as exc:
                raise self.fail(table, metric, f"{table}.{metric}: {exc}") from None
        return limits


def _shown(value: object) -> str:
    """A config value as the file spells it (true, not Python's True), cut
    short: an error names it, and a line of thousands of digits helps nobody."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, int | float):
        text = str(value)
    elif isinstance(value, list):
        return "an array"
    elif isinstance(value, dict):
        return "a table"
    else:
        text = str(value)
    return text if len(text) <= 40 else text[:39] + "…"


def parse_limit(value: object) -> int | None:
    """A threshold: a whole number 0 or more, or "off" (None: never raises)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == OFF:
            return None
        # Plain ASCII digits only: int() would also take "1_000", "+3" and
        # other scripts' digits, which a monitoring config should not hold.
        digits = text.removeprefix("-")
        if not (digits.isascii() and digits.isdigit()):
            raise ValueError(f"{value!r} is not a whole number or {OFF!r}")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{_shown(value)} is not a whole number or {OFF!r}")
    if value < 0:
        raise ValueError(f"{value} is below 0 (use {OFF!r} to turn it off)")
    return value


def _normalise(key_path: str) -> str:
    """'targets . "prod"' -> 'targets.prod': a TOML key path without quotes."""
    parts = [p.strip().strip("\"'") for p in key_path.split(".")]
    return ".".join(parts)


def _quote(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)
