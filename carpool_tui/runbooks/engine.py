"""The engine that walks an operator through a procedure, step by step.

A procedure is data (see carpool_tui.runbooks.procedures): steps that name the
live rows to show, an optional action and the outcome check. The engine keeps
where the operator is, what each step ended as and the session's incident
timeline; it knows nothing of any one procedure and never touches a database
or a screen, so it is tested on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from carpool_tui.files import write_new
from carpool_tui.models import RowSet

ActionKind = Literal["job", "seat_fix", "expire_ride"]
StepState = Literal["pending", "done", "skipped", "failed"]
Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class Action:
    """A write a step offers; it runs through an existing admin function or job."""

    kind: ActionKind
    title: str
    job: str | None = None
    """For a job action: which job; None means the job of the chosen failed run."""


@dataclass(frozen=True)
class Check:
    """How a step's outcome is verified: a named rule, read against live rows."""

    rule: str
    expect: str
    """The expected outcome in words, shown before the check runs."""
    arg: str | None = None


@dataclass(frozen=True)
class Step:
    """One step: why it is there, the rows it concerns, what it does, the check."""

    title: str
    purpose: str
    view: str
    """The name of the live rows to show (a repository view)."""
    action: Action | None = None
    check: Check | None = None
    advice: str = ""
    fixes_automatically: bool = True


@dataclass(frozen=True)
class Procedure:
    """A procedure of the operations manual, as a list of steps."""

    id: str
    section: str
    title: str
    summary: str
    steps: tuple[Step, ...]
    target: Literal["job_run", "violation", "ride"] | None = None
    can_end_healthy: bool = True
    """False where the manual offers no automatic fix (data corruption)."""


@dataclass(frozen=True)
class Evidence:
    """What a check reads: the step's fresh rows, the last action's result."""

    rows: Rows
    result: dict[str, Any] | None = None
    target: str | None = None


@dataclass(frozen=True)
class Verdict:
    """A check's answer and the sentence that explains it."""

    ok: bool
    text: str
    from_rows: bool = field(default=True, compare=False)
    """Whether it judged the rows just read. One drawn only from what the step
    holds (its action's result, its chosen row) is the same answer each time it
    is checked again, until the step acts or chooses anew."""


def _held(ok: bool, text: str) -> Verdict:
    """A verdict on what the step holds (its action's result, its choice) rather
    than on the rows just read."""
    return Verdict(ok, text, from_rows=False)


def _no_rows(ev: Evidence, arg: str | None) -> Verdict:
    if not ev.rows:
        return Verdict(True, "No affected rows remain.")
    return Verdict(False, f"{len(ev.rows)} affected row(s) remain.")


def latest_start(rows: RowSet | None, job: str) -> datetime | None:
    """When the job's latest run in ``rows`` (a latest_runs view) started."""
    for row in rows.rows if rows is not None else []:
        started = row.get("started_at")
        if row.get("job_name") == job and isinstance(started, datetime):
            return started
    return None


def _job_from_log(ev: Evidence, result: dict[str, Any]) -> Verdict:
    """The job's answer was lost: its row in the job log says how it ended."""
    job = str(result.get("job_name"))
    before = result.get("runs_before")
    row = next((r for r in ev.rows if r.get("job_name") == job), None)
    started = row.get("started_at") if row is not None else None
    if row is None or started is None or (before is not None and started <= before):
        return Verdict(
            False,
            "Its answer was lost and the job log has no run of it since: it may "
            "still be running, or it rolled back. r reads the log again.",
        )
    if row.get("status") == "completed":
        return Verdict(True, "The job completed (its row in the job log).")
    if row.get("status") == "failed":
        error = row.get("error_message") or "no message"
        return Verdict(False, f"The job failed (its row in the job log): {error}.")
    return Verdict(False, f"The job's run is {row.get('status')}; r reads it again.")


def _job_ok(ev: Evidence, arg: str | None) -> Verdict:
    if ev.result is None:
        return _held(False, "The job has not run in this step yet.")
    if ev.result.get("outcome_unknown"):
        return _job_from_log(ev, ev.result)
    if ev.result.get("success"):
        return _held(True, "The job completed.")
    error = ev.result.get("error") or "no message"
    return _held(False, f"The job failed: {error}.")


_RUN_AGAIN = " That was this step's run of the check: a runs it again."
"""A failed check's counts are those of the step's own run, which c only
judges again; after fixes made elsewhere, the check has to run again."""


def _check_passes(ev: Evidence, arg: str | None) -> Verdict:
    """The step's invariant check run, judged from its result alone."""
    if ev.result is None or not ev.result.get("success"):
        return _held(False, "The invariant check has not completed in this step.")
    checks = ev.result.get("checks")
    samples = ev.result.get("violations")
    if checks is None and isinstance(samples, list):
        # The deployed function gives no counts, only up to ten samples of each
        # failing check: a check with no sample passes.
        names = [v.get("name") for v in samples if isinstance(v, dict)]
        checks = [{"name": arg, "count": names.count(arg)}] if arg else []
    counts = {c.get("name"): c.get("count") for c in checks or []}
    if arg is None:
        if ev.result.get("healthy"):
            return _held(True, "Every invariant check passes: healthy.")
        total = ev.result.get("total_violations")
        failing = sum(1 for count in counts.values() if count)
        # Said as the dashboard counts: one violation per failing check.
        found = (
            f"{failing} check(s) fail, on {total} row(s)"
            if failing
            else f"{total} violation(s) remain"
        )
        return _held(False, f"Not healthy: {found}.{_RUN_AGAIN}")
    count = counts.get(arg)
    if count == 0:
        return _held(True, f"{arg} passes now.")
    return _held(False, f"{arg} still fails: {count} finding(s).{_RUN_AGAIN}")


NO_RIDE_YET = "No ride chosen yet: press a and type its id."


def _ride_finished(ev: Evidence, arg: str | None) -> Verdict:
    if not ev.target:
        return Verdict(False, NO_RIDE_YET)
    if not ev.rows:
        return Verdict(False, "The ride was not found.")
    row = ev.rows[0]
    if row.get("status") in ("completed", "cancelled") and not row.get("open_bookings"):
        return Verdict(True, f"The ride is {row.get('status')} with no open bookings.")
    return Verdict(
        False,
        f"The ride is {row.get('status')} with {row.get('open_bookings')} open "
        "booking(s).",
    )


def _seats_right(ev: Evidence, arg: str | None) -> Verdict:
    if not ev.target:
        return Verdict(False, NO_RIDE_YET)
    if not ev.rows:
        return Verdict(False, "The ride was not found.")
    row = ev.rows[0]
    current, should_be = row.get("current"), row.get("should_be")
    if current == should_be:
        return Verdict(True, f"available_seats is {current}, as it should be.")
    return Verdict(False, f"available_seats is {current}; it should be {should_be}.")


def _no_failed_latest(ev: Evidence, arg: str | None) -> Verdict:
    """Every job ran, on time, and its latest run did not fail."""
    failed, never, late = [], [], []
    for row in ev.rows:
        name, status = str(row.get("job_name")), row.get("status")
        if status == "failed":
            failed.append(name)
        if status == "never run":
            never.append(name)
        elif row.get("due") == "OVERDUE":
            late.append(name)
    if not ev.rows:
        return Verdict(False, "No job has run yet.")
    problems = [
        f"{label}: {', '.join(names)}."
        for label, names in (
            ("Latest run failed", failed),
            ("Never ran", never),
            ("Overdue", late),
        )
        if names
    ]
    if problems:
        return Verdict(False, " ".join(problems))
    return Verdict(True, "Every job ran on time and its latest run succeeded.")


def _chosen(ev: Evidence, arg: str | None) -> Verdict:
    if ev.target:
        return _held(True, f"Chosen: {ev.target}.")
    if not ev.rows:
        text = "The table is empty: nothing to choose. k skips the step"
        if arg == "typed":
            text += "; the next step's dialog (a) takes an id typed in"
        return Verdict(False, text + ".")
    return Verdict(False, "Choose a row first (Enter on it).")


RULES: dict[str, Callable[[Evidence, str | None], Verdict]] = {
    "no_rows": _no_rows,
    "job_ok": _job_ok,
    "check_passes": _check_passes,
    "ride_finished": _ride_finished,
    "seats_right": _seats_right,
    "no_failed_latest": _no_failed_latest,
    "chosen": _chosen,
}


def evaluate(check: Check, evidence: Evidence) -> Verdict:
    """Apply a step's check to what was read after its action."""
    return RULES[check.rule](evidence, check.arg)


@dataclass(frozen=True)
class Entry:
    """One line of the incident timeline."""

    at: datetime
    operator: str
    procedure: str
    step: str
    action: str
    result: str


@dataclass
class Timeline:
    """Everything done in procedures this session, in order."""

    entries: list[Entry] = field(default_factory=list)

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)

    def to_markdown(
        self, *, title: str = "Incident timeline", database: str = ""
    ) -> str:
        """The timeline as a Markdown table for the incident review."""
        lines = [f"# {title}", ""]
        if database:
            lines += [f"Database: {_cell(database)}", ""]
        if not self.entries:
            return "\n".join([*lines, "Nothing was done in this session.", ""])
        lines += [
            "| Time (UTC) | Operator | Procedure | Step | Action | Result |",
            "|---|---|---|---|---|---|",
        ]
        for e in self.entries:
            cells = (
                e.at.strftime("%Y-%m-%d %H:%M:%S"),
                e.operator,
                e.procedure,
                e.step,
                e.action,
                e.result,
            )
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        return "\n".join([*lines, ""])

    def export(self, folder: Path, now: datetime, *, database: str = "") -> Path:
        """Write the Markdown to a new file in `folder`; the file's path."""
        stem = f"incident-{now.strftime('%Y%m%d-%H%M%S')}"
        return write_new(folder, stem, ".md", self.to_markdown(database=database))


def _cell(value: Any) -> str:
    """One table cell: single line, pipes escaped."""
    text = " ".join(str(value).split())
    return text.replace("|", "\\|")


class Run:
    """One operator's way through one procedure: position, step states, timeline."""

    def __init__(
        self,
        procedure: Procedure,
        *,
        operator: str,
        clock: Callable[[], datetime],
        timeline: Timeline | None = None,
        target: str | None = None,
    ) -> None:
        self.procedure = procedure
        self.operator = operator
        self.clock = clock
        self.timeline = timeline if timeline is not None else Timeline()
        self.target = target
        self.chosen: dict[str, Any] = {}
        """The row the operator chose (a failed run, a ride), as read."""
        self.index = 0
        self.states: list[StepState] = ["pending"] * len(procedure.steps)
        self.verdicts: list[Verdict | None] = [None] * len(procedure.steps)
        self.reasons: list[str] = [""] * len(procedure.steps)
        self.results: list[dict[str, Any] | None] = [None] * len(procedure.steps)
        self.stopped = False
        self.finished = False
        self.log("start", f"target {target}" if target else "started")

    @property
    def step(self) -> Step:
        return self.procedure.steps[self.index]

    @property
    def position(self) -> str:
        return f"Step {self.index + 1} of {len(self.procedure.steps)}"

    @property
    def verdict(self) -> Verdict | None:
        return self.verdicts[self.index]

    @property
    def result(self) -> dict[str, Any] | None:
        return self.results[self.index]

    @property
    def over(self) -> bool:
        return self.stopped or self.finished

    def log(self, action: str, result: str, at: datetime | None = None) -> None:
        """Add a timeline entry for the current step, made now or ``at``."""
        step = f"{self.index + 1}. {self.step.title}" if self.procedure.steps else ""
        self.timeline.add(
            Entry(
                at=at or self.clock(),
                operator=self.operator,
                procedure=f"{self.procedure.section} {self.procedure.title}",
                step=step,
                action=action,
                result=result,
            )
        )

    def choose(
        self, target: str, row: dict[str, Any] | None = None, at: datetime | None = None
    ) -> None:
        """The operator picked the row the rest of the procedure acts on.

        A different row makes this step's earlier action result someone else's,
        so it no longer counts for the step's check.
        """
        if target != self.target:
            self.results[self.index] = None
        self.target = target
        self.chosen = dict(row or {})
        self.verdicts[self.index] = None
        self.log("choose", target, at)

    def typed(self, target: str, at: datetime | None = None) -> None:
        """The operator typed the target into this step's dialog (``at``: when
        it was written to, if it was).

        It is the choice a choosing step skipped before it asked for (its table
        empty, or the ride not in it): that step is done by it, the timeline
        says so, and the procedure can end with every check passed.
        """
        self.choose(target, at=at)
        for i in range(self.index):
            check = self.procedure.steps[i].check
            if self.states[i] == "skipped" and check and check.rule == "chosen":
                self.states[i] = "done"
                self.verdicts[i] = _held(
                    True, f"Chosen: {target}, typed in step {self.index + 1}."
                )
                self.log("choose", f"typed here; it answers step {i + 1}", at)

    def acted(
        self,
        action: str,
        result: dict[str, Any] | None,
        summary: str,
        at: datetime | None = None,
    ) -> None:
        """The step's action ran (or was refused or cancelled); keep its result.

        ``at`` is when it was sent, for an action whose answer is read later: the
        timeline gives the time it ran, not the time its result was dismissed.
        """
        self.results[self.index] = result
        self.verdicts[self.index] = None
        self.log(action, summary, at)

    def verify(self, rows: Rows) -> Verdict | None:
        """Run the step's check on fresh rows; None for a step without a check.

        The timeline gets one entry per check run. A verdict on the rows just
        read is a new run each time; one drawn only from the step's action
        result or choice (the invariant check's counts, say) is the same run
        judged again, so it is logged only when it differs from the step's
        current verdict, which acting or choosing clears.
        """
        check = self.step.check
        if check is None:
            return None
        verdict = evaluate(check, Evidence(rows, self.result, self.target))
        repeated = not verdict.from_rows and verdict == self.verdict
        self.verdicts[self.index] = verdict
        if not repeated:
            self.log(
                f"check: {check.expect}",
                ("passed: " if verdict.ok else "failed: ") + verdict.text,
            )
        return verdict

    def can_advance(self) -> str | None:
        """Why the operator cannot move on yet, or None."""
        if self.over:
            return "The procedure is over."
        if self.step.check is None:
            return None
        verdict = self.verdict
        if verdict is None:
            return "Check the outcome first: press c."
        if not verdict.ok:
            return f"The check failed: {verdict.text} Fix it, or skip it with k."
        return None

    def advance(self) -> str | None:
        """Move to the next step (or finish); the refusal reason when not allowed."""
        reason = self.can_advance()
        if reason is not None:
            return reason
        self.states[self.index] = "done"
        self.log("next", "step done")
        self._forward()
        return None

    def skip(self, reason: str) -> str | None:
        """Skip this step; a reason is required and goes into the timeline."""
        if self.over:
            return "The procedure is over."
        reason = reason.strip()
        if not reason:
            return "Say why you skip this step."
        self.states[self.index] = "skipped"
        self.reasons[self.index] = reason
        self.log("skip", reason)
        self._forward()
        return None

    def back(self) -> str | None:
        """Go back one step, to look again or redo it.

        The step returned to is checked afresh: its earlier verdict judged rows
        that may have changed since (a fix undone while later steps ran), and
        moving on must not carry that verdict forward unseen.
        """
        if self.stopped:
            return "The procedure was stopped."
        if self.finished:
            self.finished = False
            self.verdicts[self.index] = None
            self.log("back", "reopened the last step")
            return None
        if self.index == 0:
            return "Already at the first step."
        self.index -= 1
        self.states[self.index] = "pending"
        self.verdicts[self.index] = None
        self.log("back", "returned to this step")
        return None

    def stop(self, reason: str = "") -> None:
        """End the procedure here; the timeline says so."""
        if self.over:
            return
        self.stopped = True
        self.log("stop", reason.strip() or "stopped by the operator")

    def _forward(self) -> None:
        if self.index + 1 < len(self.procedure.steps):
            self.index += 1
            self.verdicts[self.index] = None
            self.results[self.index] = None
            return
        self.finished = True
        self.log("finish", self.ending())

    @property
    def checks_passed(self) -> bool:
        """Finished with every step done (none skipped) and every check passed."""
        return (
            self.finished
            and all(s == "done" for s in self.states)
            and all(
                v is not None and v.ok
                for step, v in zip(self.procedure.steps, self.verdicts, strict=True)
                if step.check is not None
            )
        )

    @property
    def healthy(self) -> bool:
        """True only when every check passed in a procedure that can fix its
        problem; one the manual gives no fix for never claims health."""
        return self.checks_passed and self.procedure.can_end_healthy

    def _healthy_ending(self) -> str:
        """What a procedure whose checks all passed may claim.

        Its checks cover its own problem; only the last invariant check run in
        it says whether the whole system is healthy.
        """
        last = next(
            (r for r in reversed(self.results) if r and "total_violations" in r),
            None,
        )
        if last is not None and last.get("healthy"):
            return "Finished: verified healthy."
        text = "Finished: every check of this procedure passed."
        if last is not None and last.get("total_violations"):
            # By check, as the violations panel counts its rows; the total of
            # rows found is what the check itself reports.
            checks = last.get("checks")
            failing = [
                c for c in checks or [] if isinstance(c, dict) and c.get("count")
            ]
            found = f"{last['total_violations']} row(s) in all"
            if failing:
                text += (
                    f" {len(failing)} other check(s) still find problems ({found});"
                    " see the violations panel."
                )
            else:
                text += (
                    f" Other checks still find problems ({found}); see the"
                    " violations panel."
                )
        return text

    def ending(self) -> str:
        """How the procedure ended, in one sentence."""
        if self.stopped:
            return "Stopped before the end."
        if not self.finished:
            return "In progress."
        skipped = [i + 1 for i, s in enumerate(self.states) if s == "skipped"]
        if self.healthy:
            return self._healthy_ending()
        if not self.procedure.can_end_healthy and self.checks_passed:
            return (
                "Finished: fixed by hand, and every check of this procedure "
                "passed. Nothing fixes this automatically: find out how the rows "
                "went wrong before it happens again."
            )
        if not self.procedure.can_end_healthy:
            return (
                "Finished, NOT healthy: no automatic fix exists; the rows above "
                "need a manual fix."
            )
        if skipped:
            steps = ", ".join(map(str, skipped))
            return f"Finished, NOT verified healthy: step(s) {steps} skipped."
        return "Finished, NOT verified healthy: a check failed."
