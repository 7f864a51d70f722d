"""Export of the table on screen (jobs, job log page, violations) to CSV or JSON.

The rows come from the same snapshot the tables show, with full values where
the table cuts them, and the file goes next to the action log so it is found
with the rest of the session's records.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from carpool_tui.files import write_new
from carpool_tui.models import JOBS, JobLogEntry, Snapshot, iso_stamp, last_start
from carpool_tui.warroom import overdue

Kind = Literal["jobs", "log", "violations"]
Format = Literal["csv", "json"]

Rows = list[dict[str, Any]]


def _seconds(entry: JobLogEntry) -> float | None:
    took = entry.duration
    return None if took is None else round(took.total_seconds(), 3)


def _log_row(entry: JobLogEntry) -> dict[str, Any]:
    return {
        "id": str(entry.id),
        "job_name": entry.job_name,
        "started_at": entry.started_at,
        "completed_at": entry.completed_at,
        "status": entry.status,
        "duration_s": _seconds(entry),
        "records_processed": entry.records_processed,
        "errors_encountered": entry.errors_encountered,
        "error_message": entry.error_message,
        "sqlstate": entry.error_sqlstate,
    }


def table_rows(kind: Kind, snapshot: Snapshot, now: datetime) -> Rows:
    """The rows of one table, in the order shown, as plain values."""
    if kind == "log":
        page = snapshot.job_log
        return [_log_row(e) for e in page.entries] if page is not None else []
    if kind == "violations":
        return [
            {
                "id": str(v.id),
                "severity": v.severity,
                "check_id": v.check_id,
                "check_name": v.check_name,
                "violation_count": v.violation_count,
                "detected_at": v.detected_at,
                "last_seen_at": v.last_seen_at,
                "samples": [s.fields() for s in v.sample_data],
                # The samples are the first SAMPLES_READ of this many.
                "samples_total": v.sample_total or len(v.sample_data),
                "unreadable": v.unreadable,
            }
            for v in snapshot.violations
        ]
    rows: Rows = []
    for job in JOBS:
        run = snapshot.latest_run(job.name)
        rows.append(
            {
                "job": job.name,
                "status": None if run is None else run.status,
                "overdue": overdue(run, now, job.frequency),
                "last_started_at": last_start(run),
                "duration_s": _seconds(run) if isinstance(run, JobLogEntry) else None,
                "records_processed": None if run is None else run.records_processed,
                "last_run_id": str(run.id) if isinstance(run, JobLogEntry) else None,
            }
        )
    return rows


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_stamp(value)
    return value


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a CSV cell as a formula."""


CSV_CELL_MAX = 32_767
"""The most characters a spreadsheet keeps in one cell."""
CSV_CUT_NOTE = " … [cut: {:,} more characters; the JSON export (j) has the whole text]"
CSV_CELL_KEPT = CSV_CELL_MAX - 100
"""What a cut cell keeps, leaving room for the note that says so."""


def _csv_cell(value: Any) -> Any:
    """One value as a CSV cell: nested values as JSON, formula-like text quoted.

    Only text is guarded: numbers (a negative count) are written as they are.
    Text longer than a spreadsheet cell holds is cut with a note saying so, so
    the cut is never silent; the JSON export keeps the whole text.
    """
    if isinstance(value, list | dict):
        value = json.dumps(value)
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        value = "'" + value
    if isinstance(value, str) and len(value) > CSV_CELL_MAX:
        value = value[:CSV_CELL_KEPT] + CSV_CUT_NOTE.format(len(value) - CSV_CELL_KEPT)
    return value


def render(rows: Rows, form: Format) -> str:
    """The rows as CSV (a header, nested values as JSON) or as a JSON array.

    In CSV, text that starts with =, +, -, @, a tab or a carriage return gets a
    leading single quote. The text comes from the database, written by others
    (a failed job's error message, say), and a spreadsheet opening the file
    would run such a cell as a formula (CSV injection); the quote keeps it text.
    Lines end in CRLF (RFC 4180) so that any cell holding a carriage return is
    quoted: a bare one would start a new row, and a formula with it, mid-cell.
    JSON is left as the database has it: no spreadsheet evaluates it.
    """
    plain = [{k: _plain(v) for k, v in row.items()} for row in rows]
    if form == "json":
        return json.dumps(plain, indent=2, default=str) + "\n"
    if not plain:
        return ""
    lines: list[str] = []

    class _Sink:
        def write(self, text: str) -> int:
            lines.append(text)
            return len(text)

    writer = csv.DictWriter(_Sink(), fieldnames=list(plain[0]), lineterminator="\r\n")
    writer.writeheader()
    for row in plain:
        writer.writerow({k: _csv_cell(v) for k, v in row.items()})
    return "".join(lines)


def write_export(
    folder: Path, kind: Kind, form: Format, rows: Rows, now: datetime
) -> Path:
    """Write the rows to a new file in `folder` and return its path:
    carpool-log-20250304T030000Z.csv, then -2, -3."""
    stem = f"carpool-{kind}-{now.strftime('%Y%m%dT%H%M%SZ')}"
    return write_new(folder, stem, f".{form}", render(rows, form))
