"""The one registry of dashboard actions, and why an action is unavailable now.

Bindings, the footer, the command palette and the help screen are all built
from ACTIONS, so a key, its title and its read-only rule are written once.
This module is plain data and has no Textual import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from carpool_tui.db.errors import READ_ONLY
from carpool_tui.db.migrate import defining_file
from carpool_tui.models import JOBS, Capabilities

Needs = Literal["violation", "row"] | None

MIGRATE_COMMAND = "carpool-tui migrate --dsn ..."
NOT_CONNECTED = "Not connected to the database."


@dataclass(frozen=True)
class ActionSpec:
    """One thing the operator can do, by key or from the palette."""

    id: str
    key: str
    key_label: str
    title: str
    description: str
    action: str
    writes: bool = False
    needs_ops: bool = False
    needs: Needs = None
    function: str | None = None
    footer: bool = False
    spare: bool = False
    """A footer key a narrow footer leaves out (help and the palette keep it)."""
    needs_db: bool = False


def _job_actions() -> tuple[ActionSpec, ...]:
    return tuple(
        ActionSpec(
            id=f"run-{job.name}",
            key=str(number),
            key_label=str(number),
            title=f"Run {job.name}",
            description=f"{job.title}: {job.summary} Recommended {job.frequency_text}.",
            action=f"run_job('{job.name}')",
            writes=True,
            function=job.name,
            needs_db=True,
        )
        for number, job in enumerate(JOBS, start=1)
    )


ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec(
        "help",
        "question_mark",
        "?",
        "Help",
        "Show every key and what it does.",
        "show_help",
        footer=True,
    ),
    ActionSpec("quit", "q", "q", "Quit", "Leave the dashboard.", "quit", footer=True),
    ActionSpec(
        "procedures",
        "g",
        "g",
        "Procedures",
        "Guided emergency procedures (manual section 4), checked against the "
        "live database. On a failed run or a violation it opens the matching "
        "procedure with that item chosen.",
        "procedures",
        footer=True,
        needs_db=True,
    ),
    ActionSpec(
        "refresh",
        "r",
        "r",
        "Refresh",
        "Poll the database now, or try again after an error stopped polling.",
        "refresh",
        footer=True,
        spare=True,
    ),
    ActionSpec(
        "pause",
        "p",
        "p",
        "Pause",
        "Pause or resume live polling.",
        "toggle_pause",
        footer=True,
        spare=True,
    ),
    ActionSpec(
        "faster",
        "plus",
        "+",
        "Faster",
        "Poll more often.",
        "faster",
    ),
    ActionSpec(
        "slower",
        "minus",
        "-",
        "Slower",
        "Poll less often.",
        "slower",
    ),
    *_job_actions(),
    ActionSpec(
        "seat-fix",
        "s",
        "s",
        "Fix seats",
        "Preview and apply a seat fix for one ride (from the selected seat "
        "violation, or type a ride id): shows total, current and computed "
        "seats and the bookings that count; needs a note.",
        "seat_fix",
        writes=True,
        needs_ops=True,
        function="ops_apply_seat_fix",
        footer=True,
        needs_db=True,
    ),
    ActionSpec(
        "resolve",
        "x",
        "x",
        "Resolve",
        "Mark the selected violation resolved with a note, after showing "
        "whether its check still fails right now.",
        "resolve",
        writes=True,
        needs_ops=True,
        needs="violation",
        function="ops_resolve_violation",
        footer=True,
        needs_db=True,
    ),
    ActionSpec(
        "expire-ride",
        "e",
        "e",
        "Expire ride",
        "Expire one ride by hand (manual 4.3): preview its due time and the "
        "bookings it completes, then apply with a note.",
        "expire_ride",
        writes=True,
        needs_ops=True,
        function="ops_expire_ride",
        footer=True,
        needs_db=True,
    ),
    ActionSpec(
        "details",
        "enter",
        "Enter",
        "Details",
        "Open the selected job run or violation with its full text and samples.",
        "details",
        needs="row",
    ),
    ActionSpec(
        "switch-pane",
        "t",
        "t",
        "Log/Violations",
        "Switch between the job log and the violations (tabs on small screens).",
        "switch_pane",
        footer=True,
    ),
    ActionSpec(
        "failed-only",
        "f",
        "f",
        "Failed only",
        "Show only failed runs in the job log, or all runs again.",
        "toggle_failed",
        needs_db=True,
    ),
    ActionSpec(
        "older",
        "right_square_bracket",
        "]",
        "Older runs",
        "Next page of the job log (older runs).",
        "page(1)",
        needs_db=True,
    ),
    ActionSpec(
        "newer",
        "left_square_bracket",
        "[",
        "Newer runs",
        "Previous page of the job log (newer runs).",
        "page(-1)",
        needs_db=True,
    ),
    ActionSpec(
        "schedule",
        "c",
        "c",
        "Schedule",
        "Where each job is scheduled: pg_cron's entries (if installed) beside "
        "the manual's schedule, missing or different ones flagged, and which "
        "jobs are overdue by the job log.",
        "app.show_schedule",
        needs_db=True,
    ),
    ActionSpec(
        "trends",
        "h",
        "h",
        "Trends",
        "Sparklines of the last 24 h by hour: each job's duration and records "
        "processed, and the violations the invariant check found.",
        "app.show_trends",
        needs_db=True,
    ),
    ActionSpec(
        "theme",
        "v",
        "v",
        "Theme",
        "Switch the colours: dark, light, ANSI-only (the terminal's own 16 colours).",
        "app.next_theme",
    ),
    ActionSpec(
        "copy-id",
        "y",
        "y",
        "Copy ID",
        "Copy the selected row's id to the clipboard (OSC 52, works over SSH).",
        "app.copy_id",
        needs="row",
    ),
    ActionSpec(
        "dismiss",
        "escape",
        "Esc",
        "Dismiss notices",
        "Clear the notifications on screen (each also goes by itself); on 80x24 "
        "they cover the tables.",
        "dismiss_notices",
    ),
    ActionSpec(
        "export-csv",
        "o",
        "o",
        "Export CSV",
        "Write the table in view (jobs, this job-log page or the violations) to "
        "a CSV file next to the action log; the path is shown.",
        "app.export('csv')",
        needs_db=True,
    ),
    ActionSpec(
        "export-json",
        "j",
        "j",
        "Export JSON",
        "Write the table in view to a JSON file next to the action log.",
        "app.export('json')",
        needs_db=True,
    ),
)

ACTIONS_BY_ID: dict[str, ActionSpec] = {spec.id: spec for spec in ACTIONS}


def action_name(spec: ActionSpec) -> str:
    """The bare Textual action name, without parameters."""
    return spec.action.split("(", 1)[0]


def incomplete_why(caps: Capabilities) -> str:
    """What is missing from an incomplete ops layer, and the way out."""
    if caps.pending_migrations:
        names = ", ".join(caps.pending_migrations[:3])
        more = len(caps.pending_migrations) - 3
        return (
            f"{len(caps.pending_migrations)} of its files are not applied ({names}"
            + (f" and {more} more" if more > 0 else "")
            + f"): run `{MIGRATE_COMMAND}` to apply them."
        )
    first = caps.missing_functions[0]
    missing = ", ".join(f"{f}()" for f in caps.missing_functions[:3])
    where = defining_file(first)
    source = (
        "the ops layer's files"
        if where is None
        else f"{where[0]} (on this machine: {where[1]})"
    )
    verb = "is" if len(caps.missing_functions) == 1 else "are"
    return (
        f"Its files are all recorded as applied, but {missing} {verb} gone (dropped "
        f"since), and migrate does not apply a recorded file again. {first}() "
        f"is defined last in {source}: run its CREATE FUNCTION statement, and "
        "the GRANTs for it that follow, as the ops layer's owner."
    )


def blocked_reason(
    spec: ActionSpec,
    caps: Capabilities | None,
    *,
    selected: set[str] = frozenset(),  # type: ignore[assignment]
    job_running: bool = False,
) -> str | None:
    """Why the action cannot run now, or None when it can."""
    if caps is None:
        if spec.needs_db or spec.writes:
            return NOT_CONNECTED
        return None
    if spec.writes and caps.read_only:
        return f"Read-only session. {READ_ONLY}"
    if spec.needs_ops and not caps.ops_layer:
        if caps.pending_migrations:
            return f"Needs the ops layer, which is incomplete: {incomplete_why(caps)}"
        return (
            "Needs the ops layer, which this database lacks (legacy functions "
            f"only). Upgrade it with `{MIGRATE_COMMAND}`."
        )
    if spec.function and spec.function in caps.missing_functions:
        way_out = (
            incomplete_why(caps)
            if caps.ops_layer
            else f"Add it with `{MIGRATE_COMMAND}`."
        )
        return f"This database has no {spec.function}() function. {way_out}"
    if spec.function and spec.function in caps.missing_grants:
        return (
            f"This role may not execute {spec.function}(); ask for the "
            "carpool_ops_operator role."
        )
    if spec.needs and spec.needs not in selected:
        if spec.needs == "violation":
            return "Select a violation first (t shows the violations)."
        return "Select a row first."
    if job_running and spec.id.startswith("run-"):
        return "A job is already running."
    return None
