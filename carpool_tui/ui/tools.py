"""The app's read-only war-room actions: schedule, trends, theme, copy and export.

They live on the app (the registry names them `app.…`) because they act on
whichever screen is showing the data, and none of them writes to the
database, so a read-only session keeps them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from carpool_tui.models import counted
from carpool_tui.ui import fmt
from carpool_tui.ui.actions import ACTIONS, ActionSpec
from carpool_tui.ui.export import Format, Kind, table_rows, write_export
from carpool_tui.ui.schedule import ScheduleScreen
from carpool_tui.ui.trends import TrendsScreen
from carpool_tui.ui.widgets import (
    JobLogTable,
    JobsTable,
    ViolationsTable,
    copy_for_operator,
)

if TYPE_CHECKING:
    from carpool_tui.ui.app import DashboardApp

THEMES: dict[str, str] = {
    "dark": "textual-dark",
    "light": "textual-light",
    "ansi": "ansi-dark",
}
"""The --theme names and the Textual themes they select, in switching order."""

APP_SPECS: dict[str, ActionSpec] = {
    spec.action.removeprefix("app.").split("(", 1)[0]: spec
    for spec in ACTIONS
    if spec.action.startswith("app.")
}


def theme_name(theme: str) -> str:
    """The Textual theme of a --theme name (a Textual name passes through)."""
    return THEMES.get(theme, theme)


class WarRoomActions:
    """Mixed into DashboardApp: the actions, and their registry check."""

    @property
    def _app(self) -> DashboardApp:
        return cast("DashboardApp", self)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The app's registry actions follow the registry's rules, as on the screen."""
        spec = APP_SPECS.get(action)
        if spec is None:
            return True
        return self._app.dashboard.reason(spec) is None

    def action_show_schedule(self) -> None:
        self._app.push_screen(ScheduleScreen())

    def action_show_trends(self) -> None:
        self._app.push_screen(TrendsScreen())

    def action_next_theme(self) -> None:
        app = self._app
        names = list(THEMES.values())
        now = names.index(app.theme) if app.theme in names else -1
        app.theme = names[(now + 1) % len(names)]
        short = next(k for k, v in THEMES.items() if v == app.theme)
        app.notify(f"Theme: {short} ({app.theme}).")

    def _table(self) -> tuple[Kind, JobsTable | JobLogTable | ViolationsTable]:
        """The table the operator is looking at: the focused one, else the pane."""
        dashboard = self._app.dashboard
        focused = dashboard.focused
        if isinstance(focused, JobsTable):
            return "jobs", focused
        if isinstance(focused, ViolationsTable):
            return "violations", focused
        if isinstance(focused, JobLogTable):
            return "log", focused
        if dashboard.active_pane == "violations":
            return "violations", dashboard.query_one("#violations", ViolationsTable)
        return "log", dashboard.query_one("#log", JobLogTable)

    def action_copy_id(self) -> None:
        """Copy the selected row's id with OSC 52, which reaches the local
        terminal's clipboard over SSH."""
        app = self._app
        _, table = self._table()
        key = table.selected_key or ""
        row: Any = None
        if isinstance(table, ViolationsTable):
            row = table.violations.get(key)
        elif isinstance(table, JobLogTable):
            row = table.entries.get(key)
        elif app.dashboard.snapshot is not None:
            row = app.dashboard.snapshot.latest_runs.get(key)
        if row is None:
            app.notify("Select a row with an id first.", severity="warning")
            return
        text = str(row.id)
        copy_for_operator(app, text, text)

    def action_export(self, form: Format) -> None:
        """Write the table on screen to a file next to the action log."""
        app = self._app
        snapshot = app.dashboard.snapshot
        if snapshot is None:
            app.notify("Nothing to export yet.", severity="warning")
            return
        kind, _ = self._table()
        now = app.clock()
        rows = table_rows(kind, snapshot, now)
        folder = app.settings.action_log.parent
        try:
            path = write_export(folder, kind, form, rows, now)
        except OSError as exc:
            app.notify(
                f"Could not write to {folder}: {exc}", severity="error", timeout=30
            )
            return
        app.last_export = path
        app.notify(
            f"{counted(len(rows), '{} row', '{} rows')} of the {kind} table "
            f"written to\n{fmt.where_written(path)}",
            title="Exported",
            timeout=15,
        )
