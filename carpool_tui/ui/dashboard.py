"""The one live screen: health strip, jobs, job log and violations, polled in a worker.

A poll round runs in an exclusive worker and posts one typed snapshot (or the
error) back; the next round is scheduled only after that message has been
handled, so rounds never overlap. Keys come from the action registry.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.events import Key, Resize
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Static, Tab, Tabs

from carpool_tui.checks import EXPIRE_CHECKS
from carpool_tui.config import MAX_REFRESH_SECONDS, MIN_REFRESH_SECONDS
from carpool_tui.db.errors import (
    ConnectionLost,
    NotMigrated,
    OpsError,
    PermissionMissing,
    SettingsInvalid,
)
from carpool_tui.db.repo import VIOLATION_LIMIT
from carpool_tui.models import JOBS_BY_NAME, Capabilities, JobLogEntry, Snapshot
from carpool_tui.ui import fmt
from carpool_tui.ui.actions import (
    ACTIONS,
    ACTIONS_BY_ID,
    NOT_CONNECTED,
    ActionSpec,
    action_name,
    blocked_reason,
)
from carpool_tui.ui.dialogs import (
    ConfirmJobDialog,
    ExpireRideDialog,
    HelpScreen,
    JobRunDialog,
    LogEntryDialog,
    ResolveDialog,
    SeatFixDialog,
    ViolationDialog,
)
from carpool_tui.ui.procedures import ProcedureScreen, ProceduresScreen, opening_for
from carpool_tui.ui.text import safe_markup
from carpool_tui.ui.widgets import (
    HealthStrip,
    JobLogTable,
    JobsTable,
    KeysFooter,
    ViolationsTable,
    panel_error_text,
    show_text,
)

if TYPE_CHECKING:
    from carpool_tui.ui.app import DashboardApp

INTERVALS = (1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0)
MAX_BACKOFF_S = 30.0
RECHECK_S = 60.0
"""How often a refused login or a missing database is looked at again: someone
may put the password or the database back, and a wall screen has no r key."""
STALE_AFTER_INTERVALS = 3
"""The status line says STALE once the last good poll is this many intervals old."""
LABEL_WIDTH = 40
LABEL_MIN_WIDTH = 16
"""The database name is cut no shorter than this to keep the flags in view."""
LOG_PAGE = 100
COMPACT_WIDTH = 100
COMPACT_HEIGHT = 32

KEY_TO_SPEC: dict[str, ActionSpec] = {spec.key: spec for spec in ACTIONS}


def backoff(failures: int) -> float:
    """Seconds before retry number `failures`: 1, 2, 4, … up to 30."""
    return min(MAX_BACKOFF_S, 2.0 ** max(0, failures - 1))


def failure_kind(error: OpsError) -> str:
    """What a failed poll says is wrong, for telling each cause once: every
    passing connection fault (refused, dropped, never sent) is one cause."""
    if isinstance(error, ConnectionLost) and error.retryable:
        return "connection"
    return type(error).__name__


def retry_delay(error: OpsError, failures: int) -> float | None:
    """Seconds before polling again after `error`, or None to stop.

    A passing fault is retried with a growing pause. A refused login or a
    missing database is not fixed by retrying but is put right on the server,
    so it is looked at again every minute. Bad settings are only fixed here.
    """
    if error.retryable:
        return backoff(failures)
    if isinstance(error, ConnectionLost):
        return RECHECK_S
    return None


def next_interval(current: float, step: int) -> float:
    """The next slower (step 1) or faster (step -1) refresh interval."""
    if step > 0:
        bigger = [i for i in INTERVALS if i > current]
        value = bigger[0] if bigger else INTERVALS[-1]
    else:
        smaller = [i for i in INTERVALS if i < current]
        value = smaller[-1] if smaller else INTERVALS[0]
    return min(MAX_REFRESH_SECONDS, max(MIN_REFRESH_SECONDS, value))


def _first_failure_flag(error: OpsError) -> str:
    """The status-line flag before any data arrived: what stands in the way.

    A role without grants or a database without the ops layer is reached, so
    calling it "not connected" would send the operator to check the network.
    """
    if isinstance(error, PermissionMissing):
        return "NO PERMISSION"
    if isinstance(error, NotMigrated):
        return "NOT MIGRATED"
    return "NOT CONNECTED"


class SnapshotReady(Message):
    """A poll round finished with a snapshot."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class PollFailed(Message):
    """A poll round (or the connection) failed as a whole."""

    def __init__(self, error: OpsError) -> None:
        super().__init__()
        self.error = error


class DashboardScreen(Screen[None]):
    """Everything an on-call engineer watches, updated live."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            spec.key,
            spec.action,
            spec.title,
            show=spec.footer,
            key_display=spec.key_label,
            id=spec.id,
        )
        for spec in ACTIONS
        if spec.id != "details"
    ]

    def __init__(self) -> None:
        super().__init__()
        self.caps: Capabilities | None = None
        self.snapshot: Snapshot | None = None
        self.last_ok: datetime | None = None
        self.interval_set_at: datetime | None = None
        """When +/- last changed the interval: a poll at the new rate is due
        from then, so data older than the new rate allows is not stale yet."""
        self._status_text = ""
        self.error: OpsError | None = None
        self.failures = 0
        self.paused = False
        self.busy = False
        self.again = False
        self.retry_at: datetime | None = None
        self.failed_since: datetime | None = None
        self.panels_failed_since: dict[str, datetime] = {}
        """When each panel that failed in the latest snapshot first failed, by
        panel: the wallboard says since when it could not read it."""
        self.log_offset = 0
        self.failed_only = False
        self.active_pane = "log"
        self._told_action_log: str | None = None
        self.log_view: tuple[int, bool] | None = None
        """The (offset, failed only) of the job-log page on screen."""
        self._timer: Timer | None = None

    @property
    def dash(self) -> DashboardApp:
        return self.app  # type: ignore[return-value]

    # -- layout ----------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static("", id="status")
        with Vertical(id="startup"):
            yield Static("", id="startup-message")
        with Vertical(id="main"):
            yield HealthStrip("", id="health")
            yield JobsTable(id="jobs")
            tabs = Tabs(
                Tab("Job log", id="tab-log"),
                Tab("Violations", id="tab-violations"),
                id="pane-tabs",
            )
            # t switches the panes: a focused tab bar only made Tab stop where
            # Enter opens nothing.
            tabs.can_focus = False
            yield tabs
            with Vertical(id="log-pane", classes="pane"):
                yield Static("", id="log-info", classes="info")
                yield JobLogTable(id="log")
            with Vertical(id="violations-pane", classes="pane"):
                yield Static("", id="violations-info", classes="info")
                yield ViolationsTable(id="violations")
        yield KeysFooter(
            (spec.key_label, spec.title, spec.action, spec.spare)
            for spec in ACTIONS
            if spec.footer
        )

    def on_mount(self) -> None:
        self.query_one("#main").display = False
        self._title_jobs()
        self.query_one("#log-pane").border_title = "Job log"
        self.query_one("#violations-pane").border_title = "Unresolved violations"
        self._layout(self.size.width, self.size.height)
        self.render_status()
        self.set_interval(1.0, self._tick)
        self.start_round()

    def _title_jobs(self) -> None:
        """The jobs panel says how to run a job, or that this session cannot."""
        caps = self.caps
        read_only = self.dash.settings.read_only or (
            caps is not None and caps.read_only
        )
        barred = caps is not None and all(
            job.name in caps.missing_grants for job in JOBS_BY_NAME.values()
        )
        if read_only:
            title = "Jobs · read-only"
        elif barred:
            title = "Jobs · this role may not run them"
        else:
            title = "Jobs · keys 1-4 run one"
        self.query_one("#jobs", JobsTable).border_title = title

    def on_resize(self, event: Resize) -> None:
        self._layout(event.size.width, event.size.height)

    def _layout(self, width: int, height: int) -> None:
        compact = width < COMPACT_WIDTH or height < COMPACT_HEIGHT
        self.set_class(compact, "-compact")
        self._show_pane(self.active_pane)

    def _show_pane(self, pane: str) -> None:
        """Show one pane (the other is hidden when compact), and keep the keys
        on what is shown: focus left in the other pane would make Enter, g and y
        act on a row the operator cannot see."""
        self.active_pane = pane
        log = self.query_one("#log-pane")
        violations = self.query_one("#violations-pane")
        log.set_class(pane != "log", "-inactive")
        violations.set_class(pane != "violations", "-inactive")
        tabs = self.query_one("#pane-tabs", Tabs)
        wanted = f"tab-{pane}"
        if tabs.active != wanted:
            tabs.active = wanted
        other = violations if pane == "log" else log
        focused = self.app.focused
        if focused is not None and other in focused.ancestors_with_self:
            self._pane_table(pane).focus()

    def _pane_table(self, pane: str) -> DataTable[Any]:
        table_id = "#violations" if pane == "violations" else "#log"
        return self.query_one(table_id, DataTable)

    @on(Tabs.TabActivated, "#pane-tabs")
    def _tab_changed(self, event: Tabs.TabActivated) -> None:
        pane = "violations" if event.tab.id == "tab-violations" else "log"
        if pane != self.active_pane:
            self._show_pane(pane)

    # -- polling ---------------------------------------------------------

    def start_round(self) -> None:
        """Start one poll round now unless one is in flight."""
        if self.busy:
            self.again = True
            return
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self.busy = True
        self.retry_at = None
        self._round(self.log_offset, self.failed_only)

    @work(exclusive=True, group="poll")
    async def _round(self, log_offset: int, failed_only: bool) -> None:
        repo = self.dash.repo
        try:
            snapshot = await repo.poll(
                log_offset=log_offset, log_limit=LOG_PAGE, failed_only=failed_only
            )
        except OpsError as err:
            if isinstance(err, ConnectionLost):
                await repo.close_pool()
            self.post_message(PollFailed(err))
            return
        self.post_message(SnapshotReady(snapshot))

    def _schedule(self, delay: float) -> None:
        self.busy = False
        if self.again:
            self.again = False
            self.start_round()
            return
        if self.paused:
            return
        self.retry_at = self.dash.clock() + timedelta(seconds=delay)
        self._timer = self.set_timer(delay, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        if not self.paused:
            self.start_round()

    def _warn_action_log(self) -> None:
        """Say once when the local action log could not take an entry."""
        problem = self.dash.repo.action_log_error
        if problem and problem != self._told_action_log:
            self.notify(problem, title="Action log", severity="warning", timeout=30)
        self._told_action_log = problem

    def on_snapshot_ready(self, message: SnapshotReady) -> None:
        self._warn_action_log()
        snap = message.snapshot
        first = self.snapshot is None
        self.snapshot = snap
        changed = self.caps != snap.capabilities
        self.caps = snap.capabilities
        self.last_ok = snap.fetched_at
        self.error = None
        self.failures = 0
        self.failed_since = None
        self.panels_failed_since = {
            panel: self.panels_failed_since.get(panel, snap.fetched_at)
            for panel in snap.errors
        }
        self.render_snapshot(snap)
        if first:
            self.query_one("#startup").display = False
            self.query_one("#main").display = True
            self.query_one("#jobs", JobsTable).focus()
        if changed or first:
            self._title_jobs()
            self.refresh_bindings()
        self.render_status()
        self._schedule(self.interval)

    def on_poll_failed(self, message: PollFailed) -> None:
        previous = self.error
        self.error = message.error
        # Attempts are counted per cause: a new one starts its backoff afresh.
        same_cause = previous is not None and failure_kind(previous) == failure_kind(
            message.error
        )
        self.failures = self.failures + 1 if same_cause else 1
        if self.failed_since is None:
            self.failed_since = self.dash.clock()
        if isinstance(message.error, ConnectionLost) or self.snapshot is None:
            self.caps = None
            self.refresh_bindings()
        if self.snapshot is not None:
            # The last good data stays on screen; its ages keep counting, so a
            # job does not look more recent the longer the outage lasts.
            self.query_one("#jobs", JobsTable).show(self.snapshot, self.dash.clock())
        delay = retry_delay(message.error, self.failures)
        if delay is not None:
            self._schedule(delay)
        else:
            # Retrying cannot fix bad settings: stop and leave the error on
            # screen.
            self.busy = False
            self.again = False
            self.retry_at = None
        # Told once per cause: a database dropped, then back without its
        # functions, is two causes; the attempts of one outage are one.
        told = same_cause
        if self.snapshot is not None and message.error.retryable and not told:
            self.notify(
                f"{message.error} The data on screen is from the last good poll.",
                title="Polling failed",
                severity="warning",
                timeout=15,
            )
        elif self.snapshot is not None and not told:
            then = "Looking again every minute; r looks now."
            if delay is None:
                then = "Not retrying; r tries again."
            self.notify(
                f"{message.error} {then}",
                title="Polling stopped" if delay is None else "Polling failed",
                severity="error",
                timeout=30,
            )
        self.render_status()
        if self.snapshot is None:
            self.render_startup()

    @property
    def interval(self) -> float:
        return self.dash.interval

    # -- rendering -------------------------------------------------------

    def render_snapshot(self, snap: Snapshot) -> None:
        now = self.dash.clock()
        self.query_one("#health", HealthStrip).show(snap)
        jobs = self.query_one("#jobs", JobsTable)
        jobs.show(snap, now)
        jobs.border_subtitle = (
            panel_error_text(snap.errors["jobs"]) if "jobs" in snap.errors else ""
        )
        log_info = self.query_one("#log-info", Static)
        if (
            snap.job_log is not None
            and snap.job_log.offset
            and not snap.job_log.entries
        ):
            # The log got shorter than this page's start (rows deleted): show
            # the newest page instead of an empty one, polling again at once.
            self.log_offset = 0
            self.again = True
            self.notify("The job log has fewer rows now; showing the newest.")
        elif snap.job_log is not None:
            page = snap.job_log
            log_table = self.query_one("#log", JobLogTable)
            log_table.show(page)
            view = (page.offset, page.failed_only)
            if self.log_view is not None and view != self.log_view and page.entries:
                # Another filter or page: the old row position means nothing here.
                log_table.move_cursor(row=0, animate=False)
            self.log_view = view
            first = page.offset + 1
            last = page.offset + len(page.entries)
            if page.entries:
                parts = [f"newest first · rows {first}-{last}"]
            elif page.failed_only:
                parts = ["no failed runs"]
            else:
                parts = ["no runs yet: the jobs have not run on this database"]
            if page.has_more:
                parts.append("] older")
            if page.offset:
                parts.append("[ newer")
            parts.append("f: all runs" if page.failed_only else "f: failed only")
            if page.failed_only:
                parts.insert(0, "[b $error]FAILED ONLY[/]")
            if "job_log" not in snap.errors:
                text = " · ".join(p.replace("[ ", "\\[ ") for p in parts)
                show_text(log_info, text)
        if "job_log" in snap.errors:
            show_text(log_info, panel_error_text(snap.errors["job_log"]))
        v_info = self.query_one("#violations-info", Static)
        self.query_one("#violations", ViolationsTable).show(snap.violations)
        critical = sum(1 for v in snap.violations if v.severity == "critical")
        if "violations" in snap.errors:
            show_text(v_info, panel_error_text(snap.errors["violations"]))
        elif snap.violations:
            # x is offered only where it can act (not read-only, not legacy).
            resolve = ACTIONS_BY_ID["resolve"]
            can_resolve = (
                blocked_reason(
                    resolve, self.caps or snap.capabilities, selected={"violation"}
                )
                is None
            )
            show_text(
                v_info,
                f"{len(snap.violations)} unresolved ([b $error]{critical} critical[/])"
                " · critical first, then newest · Enter: samples"
                + (" · x: resolve" if can_resolve else ""),
            )
        else:
            show_text(v_info, "[$success]No unresolved violations.[/]")
        tab = self.query_one("#tab-violations", Tab)
        label = f"Violations ({fmt.at_least(len(snap.violations), VIOLATION_LIMIT)})"
        if tab.label_text != label:
            tab.label = label

    def _tick(self) -> None:
        """Every second: the status line, and during an outage the job ages.

        Between retries (up to 30 s apart) nothing else redraws the last good
        data, and a job must not look younger than it is.
        """
        self.render_status()
        if self.error is not None and self.snapshot is not None:
            self.query_one("#jobs", JobsTable).show(self.snapshot, self.dash.clock())

    def render_status(self) -> None:
        """One line: the database, how fresh the data is, then the rest.

        The line is cut at the right on narrow terminals, so the parts come in
        order of importance.
        """
        now = self.dash.clock()
        caps = self.caps or (self.snapshot.capabilities if self.snapshot else None)
        # What must never be cut off: how fresh the data is, and the flags that
        # say it is not live or not writable. The database name gives way.
        kept = [self._freshness(now)]
        if caps is not None and caps.read_only:
            kept.append("[b reverse $warning] READ-ONLY [/]")
        if self.paused:
            kept.append("[b reverse $warning] PAUSED [/]")
        if caps is not None and caps.ops_layer_incomplete:
            # Never cut: ? says what is missing and what to do.
            kept.append("[b reverse $warning] INCOMPLETE [/] ? says why")
        room = self.query_one("#status", Static).size.width or LABEL_WIDTH * 2
        taken = Content.from_markup(" · ".join(["", *kept])).cell_length
        label_width = max(LABEL_MIN_WIDTH, min(LABEL_WIDTH, room - taken - 1))
        parts = [f"[b]{safe_markup(self.dash.label, label_width)}[/]", *kept]
        if self.paused:
            parts.append("p resumes")
        else:
            parts.append(f"every {fmt.duration(self.interval)}")
        if self.snapshot is not None and self.snapshot.errors and self.error is None:
            parts.append(f"[$error]{len(self.snapshot.errors)} panel(s) failed[/]")
        if caps is not None:
            if caps.ops_layer:
                parts.append(f"ops {safe_markup(caps.ops_layer_version, 12)}")
            elif not caps.ops_layer_incomplete:
                parts.append("[b $warning]LEGACY[/]")
        parts.append("carpool-tui")
        status = self.query_one("#status", Static)
        text = " · ".join(parts)
        if text != self._status_text:
            # One fixed-height line: no layout pass is needed to redraw it.
            self._status_text = text
            status.update(text, layout=False)
        if self.error is not None and self.snapshot is not None:
            status.tooltip = self.error.message
        if self.snapshot is None:
            self.render_startup()

    def _freshness(self, now: datetime) -> str:
        """How old the data on screen is, and why when it is not fresh."""
        retry = self._retry_text(now)
        if self.error is not None and self.retry_at is None and not self.paused:
            # A round in flight (against a frozen server it lasts the connect
            # timeout) is a retry under way, not a stop.
            retry = ", retrying now" if self.busy else ", not retrying"
        if self.error is not None and self.last_ok is not None:
            age = fmt.since(self.last_ok, now)
            if isinstance(self.error, ConnectionLost):
                down = fmt.since(self.failed_since, now)
                return (
                    f"[b reverse $error] DISCONNECTED [/] for {down}, data {age} old"
                    f"{retry}"
                )
            return f"[b reverse $warning] STALE [/] data {age} old{retry}"
        if self.error is not None:
            flag = _first_failure_flag(self.error)
            return f"[b reverse $error] {flag} [/] {retry.lstrip(', ')}".rstrip()
        if self.last_ok is None:
            return "connecting…"
        age_s = (now - self.last_ok).total_seconds()
        due_from = max(self.last_ok, self.interval_set_at or self.last_ok)
        overdue_s = (now - due_from).total_seconds()
        if not self.paused and overdue_s > STALE_AFTER_INTERVALS * self.interval:
            return (
                f"[b reverse $warning] STALE [/] data {fmt.age(age_s)} old, "
                "waiting for the database"
            )
        return f"[$success]●[/] updated {fmt.age(age_s)} ago"

    def _retry_text(self, now: datetime) -> str:
        if self.retry_at is None:
            return ""
        wait = max(0.0, (self.retry_at - now).total_seconds())
        return f", retry in {int(wait + 0.999)} s"

    def render_startup(self) -> None:
        target = safe_markup(self.dash.label, 120)
        if self.error is None:
            text = f"Connecting to {target}…"
        else:
            retry = self._retry_text(self.dash.clock()).lstrip(", ")
            hint = f"\n\n{safe_markup(self.error.hint, 500)}" if self.error.hint else ""
            if self.error.retryable:
                then = (
                    f"Attempt {self.failures}; {retry or 'retrying'}. Press q to quit."
                )
            elif isinstance(self.error, SettingsInvalid):
                then = (
                    "Not retrying: this will not fix itself. Correct the settings "
                    "and start again; q quits."
                )
            elif retry_delay(self.error, self.failures) is not None:
                then = (
                    "This will not fix itself. Once it is fixed the dashboard "
                    "opens by itself: it looks again every minute "
                    f"({retry or 'looking now'}); r looks now; q quits."
                )
            else:
                then = (
                    "Not retrying: this will not fix itself. Once it is fixed, "
                    "press r to try again; q quits."
                )
            text = (
                f"[b]Cannot open the dashboard on {target}[/]\n\n"
                f"[b $error]{safe_markup(self.error.message, 500)}[/]{hint}\n\n"
                f"{then}"
            )
        self.query_one("#startup-message", Static).update(text)

    # -- the registry and check_action ----------------------------------

    def selected(self) -> set[str]:
        """What is selected now, for actions that need a selection."""
        found: set[str] = set()
        if self._violations_shown() and self.selected_violation() is not None:
            found.add("violation")
        if self._focused_row() is not None:
            found.add("row")
        return found

    def reason(self, spec: ActionSpec) -> str | None:
        """Why the action cannot run now (None when it can)."""
        reason = blocked_reason(
            spec,
            self.caps,
            selected=self.selected(),
            job_running=self.dash.repo.job_running,
        )
        if reason == NOT_CONNECTED and self.error is not None:
            # Reached but refused (no grant, no ops layer): say what the
            # screen says, not "not connected".
            return str(self.error)
        return reason

    def spec_for(
        self, action: str, parameters: tuple[object, ...]
    ) -> ActionSpec | None:
        if action == "run_job" and parameters:
            return ACTIONS_BY_ID.get(f"run-{parameters[0]}")
        for spec in ACTIONS:
            if action_name(spec) == action:
                return spec
        return None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        spec = self.spec_for(action, parameters)
        if spec is None:
            return True
        return self.reason(spec) is None

    def on_key(self, event: Key) -> None:
        """A key of an unavailable action says why instead of doing nothing."""
        spec = KEY_TO_SPEC.get(event.key)
        if spec is None or spec.id == "details":
            return
        reason = self.reason(spec)
        if reason is not None:
            event.stop()
            event.prevent_default()
            self.notify(
                reason, title=f"{spec.title}: not available", severity="warning"
            )

    def _refuse(self, spec: ActionSpec, reason: str) -> None:
        self.notify(reason, title=f"{spec.title}: not available", severity="warning")

    def run_spec(self, spec_id: str) -> None:
        """Run a registry action by id (the command palette's entry point)."""
        spec = ACTIONS_BY_ID[spec_id]
        reason = self.reason(spec)
        if reason is not None:
            self.notify(
                reason, title=f"{spec.title}: not available", severity="warning"
            )
            return
        self.call_later(self.app.run_action, spec.action, self)

    @on(DataTable.RowHighlighted)
    def _row_moved(self) -> None:
        self.refresh_bindings()

    # -- actions ---------------------------------------------------------

    def action_quit(self) -> None:
        self.app.exit(0)

    def action_show_help(self) -> None:
        self.app.push_screen(HelpScreen())

    def action_dismiss_notices(self) -> None:
        self.app.clear_notifications()

    def action_refresh(self) -> None:
        self.dash.repo.rediscover()
        self.start_round()

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        if self.paused:
            if self._timer is not None:
                self._timer.stop()
                self._timer = None
            self.retry_at = None
        else:
            self.start_round()
        self.render_status()

    def _set_interval(self, step: int) -> None:
        self.dash.interval = next_interval(self.interval, step)
        self.interval_set_at = self.dash.clock()
        self.notify(f"Refreshing every {fmt.duration(self.interval)}.")
        if self._timer is not None and self.error is None:
            self._timer.stop()
            self._timer = None
            self._schedule(self.interval)
        self.render_status()

    def action_faster(self) -> None:
        self._set_interval(-1)

    def action_slower(self) -> None:
        self._set_interval(1)

    def action_toggle_failed(self) -> None:
        self.failed_only = not self.failed_only
        self.log_offset = 0
        self._show_pane("log")
        self.start_round()

    def action_page(self, delta: int) -> None:
        page = self.snapshot.job_log if self.snapshot else None
        if delta > 0 and (page is None or not page.has_more):
            self.notify("No older runs.")
            return
        if delta < 0 and self.log_offset == 0:
            self.notify("Already at the newest runs.")
            return
        self.log_offset = max(0, self.log_offset + delta * LOG_PAGE)
        self._show_pane("log")
        self.start_round()

    def action_switch_pane(self) -> None:
        pane = "violations" if self.active_pane == "log" else "log"
        self._show_pane(pane)
        self._pane_table(pane).focus()

    def action_run_job(self, name: str) -> None:
        job = JOBS_BY_NAME[name]

        def confirmed(ok: bool | None) -> None:
            if ok:
                self.app.push_screen(JobRunDialog(job), self._after_write)

        self.app.push_screen(
            ConfirmJobDialog(job, self.dash.settings.operator), confirmed
        )

    def _after_write(self, _result: Any = None) -> None:
        self.refresh_bindings()
        self.start_round()

    def _violations_shown(self) -> bool:
        """Whether the violations are on screen: a compact layout hides them
        behind the Job log tab, and `x` must not act on a row out of view."""
        return self.active_pane == "violations" or not self.has_class("-compact")

    def selected_violation(self) -> Any:
        table = self.query_one("#violations", ViolationsTable)
        key = table.selected_key
        return table.violations.get(key) if key else None

    def _focused_row(self) -> Any:
        focused = self.focused
        if isinstance(focused, ViolationsTable):
            return self.selected_violation()
        if isinstance(focused, JobLogTable):
            key = focused.selected_key
            return focused.entries.get(key) if key else None
        if isinstance(focused, JobsTable) and self.snapshot is not None:
            key = focused.selected_key
            return self.snapshot.latest_runs.get(key) if key else None
        return None

    def action_seat_fix(self) -> None:
        violation = self.selected_violation()
        ride = None
        if violation is not None and self.active_pane == "violations":
            ride = self._next_ride(violation.seat_ride_ids)
        self.app.push_screen(SeatFixDialog(ride), self._after_write)

    def _next_ride(self, rides: list[str]) -> str | None:
        """The first of a violation's sample rides this session has not fixed
        or expired yet (the samples predate those writes), else the first."""
        fresh = [r for r in rides if not self.dash.handled_ride(r)]
        return next(iter(fresh or rides), None)

    def action_expire_ride(self) -> None:
        violation = self.selected_violation()
        ride = None
        if violation is not None and self.active_pane == "violations":
            ride = self._next_ride(
                [
                    sample.ride_id
                    for sample in violation.sample_data
                    if sample.ride_id
                    and (sample.name or violation.check_name) in EXPIRE_CHECKS
                ]
            )
        self.app.push_screen(ExpireRideDialog(ride), self._after_write)

    def action_resolve(self) -> None:
        violation = self.selected_violation()
        if violation is not None and self._violations_shown():
            self.app.push_screen(ResolveDialog(violation), self._after_write)

    def action_procedures(self) -> None:
        """On a failed run or violation its procedure, else the procedures list.

        Esc from the procedure comes back here, where the item was chosen.
        """
        opening = opening_for(self._focused_row())
        if opening is None:
            self.app.push_screen(ProceduresScreen())
            return
        self.app.push_screen(
            ProcedureScreen(opening.procedure, opening.target, opening.row)
        )

    def action_details(self) -> None:
        row = self._focused_row()
        self._open_details(row)

    def _open_details(self, row: Any) -> None:
        if isinstance(row, JobLogEntry):
            self.app.push_screen(LogEntryDialog(row))
        elif row is not None:
            self.app.push_screen(ViolationDialog(row))

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        table = event.data_table
        key = event.row_key.value
        if isinstance(table, ViolationsTable):
            self._open_details(table.violations.get(key or ""))
        elif isinstance(table, JobLogTable):
            self._open_details(table.entries.get(key or ""))
        elif isinstance(table, JobsTable) and self.snapshot is not None:
            self._open_details(self.snapshot.latest_runs.get(key or ""))
