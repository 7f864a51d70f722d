"""The dashboard's panels: each renders its part of a Snapshot, in place."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.events import Resize
from textual.message import Message
from textual.widgets import DataTable, Footer, Static

from carpool_tui.models import (
    JOBS,
    HealthSummary,
    JobLogEntry,
    JobLogPage,
    PanelError,
    RecentJob,
    Snapshot,
    Violation,
    last_start,
)
from carpool_tui.runbooks.procedures import UNKNOWN, diagnose
from carpool_tui.ui import fmt
from carpool_tui.ui.text import packed, safe_markup, safe_text
from carpool_tui.warroom import overdue

Cells = tuple[Text, ...]

# (key, label, warn when above, alert when above); None never colours.
HEALTH_FIELDS: tuple[tuple[str, str, int | None, int | None], ...] = (
    ("seat_mismatches", "seat mismatches", None, 0),
    ("unresolved_violations", "unresolved violations", 0, 5),
    ("expired_active_rides", "expired still active", 0, 20),
    ("failed_jobs_24h", "failed jobs 24h", None, 0),
    ("active_rides", "active rides", None, None),
    ("in_progress_rides", "in progress", None, None),
    ("pending_bookings", "pending", None, None),
    ("confirmed_bookings", "confirmed", None, None),
    ("total_rides", "rides", None, None),
    ("total_bookings", "bookings", None, None),
)


def level(value: int | None, warn: int | None, alert: int | None) -> str:
    """'ok', 'warn' or 'alert' for a count against its thresholds."""
    if value is None:
        return "ok"
    if alert is not None and value > alert:
        return "alert"
    if warn is not None and value > warn:
        return "warn"
    return "ok"


def health_markup(
    health: HealthSummary | None,
    error: PanelError | None,
    *,
    critical: bool = False,
    width: int | None = None,
) -> str:
    """The health strip as markup: counts coloured by threshold.

    With `critical` (a critical violation is open) the unresolved count is red
    whatever its size; warnings alone follow the thresholds. With `width` the
    counts are packed into lines of that many cells, so a count is never
    parted from its label where the strip wraps.
    """
    if health is None:
        if error is not None:
            return f"[b $error]Health unavailable:[/] {safe_markup(error.message)}" + (
                f"\n[dim]{safe_markup(error.hint)}[/]" if error.hint else ""
            )
        return "[dim]Waiting for the first health summary…[/]"
    parts: list[tuple[str, int]] = []
    data = health.model_dump()
    for key, label, warn, alert in HEALTH_FIELDS:
        if key not in data or data[key] is None:
            continue
        value = data[key]
        shade = level(value, warn, alert)
        if key == "unresolved_violations" and critical and value:
            shade = "alert"
        style = {"ok": "b", "warn": "b $warning", "alert": "b reverse $error"}[shade]
        count = fmt.count(value)
        parts.append((f"[{style}] {count} [/] {label}", len(count) + 3 + len(label)))
    return packed(parts, width, gap=2)


class DialogScroll(VerticalScroll):
    """A dialog's scrolling body, whose keys (and note) are docked over its
    bottom: a page is what shows above them, less one line kept for context,
    so PgDn never skips lines hidden behind the docked part."""

    def page(self, direction: int) -> None:
        """Scroll one page down (1) or up (-1), without animation."""
        docked = sum(
            child.outer_size.height
            for child in self.children
            if child.styles.dock in ("top", "bottom")
        )
        step = max(1, self.scrollable_content_region.height - docked - 1)
        self.scroll_to(y=self.scroll_y + direction * step, animate=False)

    def action_page_down(self) -> None:
        self.page(1)

    def action_page_up(self) -> None:
        self.page(-1)

    class Resized(Message):
        """The body, or what it holds, changed size: what it hides may have.

        A Resize event does not reach the dialog, and the body's virtual size
        alone can change before its own height does, so a dialog that says
        what is out of view listens for this instead.
        """

    def on_resize(self) -> None:
        self.post_message(self.Resized())

    def hidden(self) -> tuple[bool, bool]:
        """Whether lines are out of view (above, below) the visible part."""
        return round(self.scroll_y) > 0, round(self.scroll_y) < self.max_scroll_y


class FormScroll(DialogScroll):
    """The body of a dialog with fields: it takes no focus.

    The dialog's PgUp/PgDn and the mouse scroll it, and Tab goes from field
    to field instead of to the body, where typing did nothing and nothing
    showed where the focus had gone.
    """

    can_focus = False


PALETTE_KEY_CELLS = 12  # "▏^p palette " docked at the footer's right end


class KeysFooter(Footer):
    """The footer; narrower than its keys need, it drops the spare ones.

    At 80 columns the full footer ran past the edge and cut off the write keys
    (Resolve, Expire) and the pane switch. Below the width every key needs, it
    draws compact and leaves out the spare keys and the palette key; the help
    screen and Ctrl+P still list them, and every key still works.
    """

    DEFAULT_CSS = """
    KeysFooter.-narrow FooterKey.-spare,
    KeysFooter.-narrow FooterKey.-command-palette {
        display: none;
    }
    """

    def __init__(self, keys: Iterable[tuple[str, str, str, bool]]) -> None:
        """``keys``: (key shown, title, action, spare) of each footer action."""
        super().__init__()
        self.spare = frozenset(action for _, _, action, spare in keys if spare)
        self.wide = PALETTE_KEY_CELLS
        """Cells every key on the footer needs at full spacing."""

    def compose(self) -> ComposeResult:
        # Measured on the keys shown now: a read-only session hides the write
        # keys, and what they would take is room for the spare ones.
        wide = PALETTE_KEY_CELLS
        for widget in super().compose():
            key = getattr(widget, "key_display", None)
            if key is not None and not widget.has_class("-command-palette"):
                # A key takes " k title " on a footer at full spacing.
                wide += len(key) + len(getattr(widget, "description", "")) + 3
            if getattr(widget, "action", None) in self.spare:
                widget.add_class("-spare")
            yield widget
        self.wide = wide
        self._fit(self.size.width)

    def on_resize(self, event: Resize) -> None:
        self._fit(event.size.width)

    def _fit(self, width: int) -> None:
        narrow = 0 < width < self.wide
        self.set_class(narrow, "-narrow")
        self.compact = narrow


def copy_for_operator(app: App[Any], text: str, what: str) -> None:
    """Put ``text`` on the clipboard by OSC 52, which reaches the operator's
    own terminal over SSH, and say that ``what`` was copied."""
    app.copy_to_clipboard(text)
    app.notify(f"Copied {what} (OSC 52: the terminal must allow it).")


def show_text(widget: Static, content: str) -> None:
    """Put ``content`` in ``widget`` unless it is there already.

    Every update lays the whole screen out again, and most polls bring the
    text that is already shown.
    """
    if widget.content != content:
        widget.update(content)


class HealthStrip(Static):
    """The counts of get_system_health_summary(), coloured by threshold."""

    _shown: Snapshot | None = None

    def show(self, snapshot: Snapshot) -> None:
        self._shown = snapshot
        critical = any(v.severity == "critical" for v in snapshot.violations)
        show_text(
            self,
            health_markup(
                snapshot.health,
                snapshot.errors.get("health"),
                critical=critical,
                width=self.content_size.width or None,
            ),
        )

    def on_resize(self) -> None:
        if self._shown is not None:
            self.show(self._shown)


def status_word(status: str) -> str:
    """A run's status as shown; a failed run's in capitals, to stand out
    without colour (NO_COLOR, a monochrome wall)."""
    return status.upper() if status == "failed" else status


def status_cell(status: str) -> Text:
    """A run's status in the jobs panel and the job log, styled."""
    return safe_text(status_word(status), 12, status_style(status))


def status_style(status: str) -> str:
    return {
        "failed": "bold red",
        "running": "bold yellow",
        "completed": "green",
    }.get(status, "")


def severity_style(severity: str) -> str:
    return {"critical": "bold red", "warning": "yellow"}.get(severity, "")


class RowTable(DataTable[Text]):
    """A table of whole rows: Home and End go to the first and last row.

    DataTable scrolls sideways on Home and End when its cursor is a row; in a
    list of runs or violations an operator means the first or the last one.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("home", "scroll_top", "First row", show=False),
        Binding("end", "scroll_bottom", "Last row", show=False),
    ]


class LiveTable(RowTable):
    """A DataTable updated in place by row key, so the cursor stays on its row."""

    follow_head = False
    """On the first row, stay on the first row as new rows arrive above it."""

    def __init__(self, columns: Sequence[tuple[str, str]], **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)  # type: ignore[arg-type]
        self._column_spec = list(columns)
        self._shown: dict[str, Cells] = {}
        self._order: list[str] = []

    def on_mount(self) -> None:
        for key, label in self._column_spec:
            self.add_column(label, key=key)

    @property
    def selected_key(self) -> str | None:
        """The row key under the cursor, if any row is shown."""
        if not self._order or self.cursor_row < 0:
            return None
        if self.cursor_row >= len(self._order):
            return None
        return self._order[self.cursor_row]

    def sync(self, rows: Sequence[tuple[str, Cells]], *, refit: bool = False) -> None:
        """Show exactly these rows; unchanged rows and the cursor's row stay put.

        Columns only ever grow to fit what they show; with `refit` they are laid
        out afresh for these rows, so they can also narrow.
        """
        keys = [key for key, _ in rows]
        if refit:
            selected, row_before = self.selected_key, self.cursor_row
            self.clear(columns=True)
            for key, label in self._column_spec:
                self.add_column(label, key=key)
            self._fill(rows, selected, row_before)
            return
        if keys == self._order:
            columns = [key for key, _ in self._column_spec]
            for key, cells in rows:
                old = self._shown.get(key)
                if old == cells:
                    continue
                for column, (before, after) in enumerate(
                    zip(old or (), cells, strict=False)
                ):
                    if before != after:
                        # Grow the column to the new value: never cut it silently.
                        self.update_cell(key, columns[column], after, update_width=True)
                self._shown[key] = cells
            return
        selected = self.selected_key
        row_before = self.cursor_row
        self.clear()
        self._fill(rows, selected, row_before)

    def _fill(
        self, rows: Sequence[tuple[str, Cells]], selected: str | None, row_before: int
    ) -> None:
        """Add `rows` to the emptied table and put the cursor back on its row."""
        keys = [key for key, _ in rows]
        for key, cells in rows:
            self.add_row(*cells, key=key)
        self._order = keys
        self._shown = dict(rows)
        if selected in keys and not (self.follow_head and row_before == 0):
            self.move_cursor(row=keys.index(selected), animate=False)
        elif keys:
            self.move_cursor(row=min(max(row_before, 0), len(keys) - 1), animate=False)


class JobsTable(LiveTable):
    """The four jobs: last run, status, age, duration, records, overdue mark."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(
            [
                ("job", "Job"),
                ("status", "Status"),
                ("due", "Due"),
                ("age", "Age"),
                ("duration", "Took"),
                ("records", "Records"),
                ("last", "Last run (UTC)"),
            ],
            **kwargs,
        )

    def show(self, snapshot: Snapshot, now: datetime) -> None:
        rows: list[tuple[str, Cells]] = []
        for number, job in enumerate(JOBS, start=1):
            run = snapshot.latest_run(job.name)
            rows.append(
                (job.name, job_cells(number, job.name, run, now, job.frequency))
            )
        self.sync(rows)


def job_cells(
    number: int,
    name: str,
    run: JobLogEntry | RecentJob | None,
    now: datetime,
    frequency: timedelta,
) -> Cells:
    """One jobs-table row; OVERDUE by the rule of warroom.overdue()."""
    if run is None:
        return (
            Text(f"{number} {name}"),
            Text("never run", style="bold red"),
            Text("OVERDUE", style="bold reverse red"),
            Text("—"),
            Text("—"),
            Text("—"),
            Text("—"),
        )
    started = last_start(run)
    if isinstance(run, JobLogEntry):
        took = fmt.duration(run.duration)
    else:
        took = fmt.duration(None if run.duration_ms is None else run.duration_ms / 1000)
    if overdue(run, now, frequency):
        due = Text("OVERDUE", style="bold reverse red")
    else:
        due = Text("ok", style="green")
    return (
        Text(f"{number} {name}"),
        status_cell(run.status),
        due,
        Text(fmt.since(started, now)),
        Text(took),
        Text(fmt.count(run.records_processed)),
        Text(fmt.stamp(started)),
    )


class JobLogTable(LiveTable):
    """system_job_log, newest first; failed runs in red with their error."""

    follow_head = True  # a log left at its newest run keeps showing the newest

    def __init__(self, **kwargs: object) -> None:
        super().__init__(
            [
                ("started", "Started (UTC)"),
                ("job", "Job"),
                ("status", "Status"),
                # Right after the status: on 80 columns a failed run's cause is
                # what must show (Enter has the rest and the time it took). Cut
                # at ERROR_CELLS, so that 120 columns still show the time.
                ("error", "Error"),
                ("duration", "Took"),
                ("records", "Records"),
            ],
            **kwargs,
        )
        self.entries: dict[str, JobLogEntry] = {}

    def show(self, page: JobLogPage) -> None:
        self.entries = {str(e.id): e for e in page.entries}
        self.sync([(str(e.id), log_cells(e)) for e in page.entries])


ERROR_CELLS = 40


def log_cells(entry: JobLogEntry) -> Cells:
    style = "red" if entry.failed else ""
    return (
        Text(fmt.stamp(entry.started_at), style=style),
        safe_text(entry.job_name, 30, style),
        status_cell(entry.status),
        safe_text(error_gist(entry), ERROR_CELLS, style),
        Text(fmt.duration(entry.duration), style=style),
        Text(fmt.count(entry.records_processed), style=style),
    )


def error_gist(entry: JobLogEntry) -> str:
    """A run's error led by its common cause, which a narrow column still shows:
    a lock timeout, a statement timeout and a cancel all begin "canceling"."""
    message = entry.error_message or ""
    if not message and not entry.failed:
        return ""
    cause = diagnose(entry.error_sqlstate, message)
    if cause is UNKNOWN:
        return message
    return f"{cause.name}: {message}" if message else cause.name


# The check column: the longest check of the manual with its id fits the wide
# form, which the table takes from WIDE_TABLE cells on (a war-room screen); a
# narrower table keeps room for the count and the detection time.
CHECK_NARROW = 34
CHECK_WIDE = 46
WIDE_TABLE = 110


class ViolationsTable(LiveTable):
    """Unresolved invariant violations, critical first then newest."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(
            [
                ("severity", "Severity"),
                ("check", "Check"),
                ("count", "Count"),
                ("detected", "Detected (UTC)"),
                ("seen", "Last seen"),
                ("sample", "First sample"),
            ],
            **kwargs,
        )
        self.violations: dict[str, Violation] = {}
        self._check_width = CHECK_NARROW

    def show(self, violations: list[Violation]) -> None:
        self.violations = {str(v.id): v for v in violations}
        width = CHECK_WIDE if self.size.width >= WIDE_TABLE else CHECK_NARROW
        refit = width != self._check_width
        self._check_width = width
        self.sync(
            [(str(v.id), violation_cells(v, width)) for v in violations], refit=refit
        )

    def on_resize(self) -> None:
        self.show(list(self.violations.values()))


def violation_cells(violation: Violation, check_width: int = CHECK_NARROW) -> Cells:
    check = violation.check_name
    if violation.legacy:
        check = f"legacy: {', '.join(violation.checks) or check}"
    elif violation.check_id:
        check = f"{violation.check_id} {check}"
    sample = violation.sample_data[0].fields() if violation.sample_data else {}
    sample_text = " ".join(
        f"{k}={v}" for k, v in sample.items() if k not in ("check", "name", "severity")
    )
    sample_style = ""
    if violation.unreadable:
        # In place of the samples it lacks: why, where the eye looks for them.
        sample_text, sample_style = violation.unreadable, "italic"
    return (
        safe_text(violation.severity, 10, severity_style(violation.severity)),
        safe_text(check, check_width),
        Text(fmt.count(violation.violation_count)),
        Text(fmt.stamp(violation.detected_at)),
        Text(fmt.stamp(violation.last_seen_at)),
        safe_text(sample_text, 60, sample_style),
    )


def panel_error_text(error: PanelError) -> str:
    """A failed panel's message and hint as one safe line of markup."""
    hint = f" — {safe_markup(error.hint)}" if error.hint else ""
    return f"[b $error]{safe_markup(error.message)}[/]{hint}"
