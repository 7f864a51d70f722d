"""The command palette's view of the action registry."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from carpool_tui.ui.actions import ACTIONS, ActionSpec


class ActionCommands(Provider):
    """Every registry action, with the reason when it is unavailable now."""

    def _help(self, spec: ActionSpec) -> str:
        reason = self._reason(spec)
        return f"Unavailable: {reason}" if reason else spec.description

    def _reason(self, spec: ActionSpec) -> str | None:
        reason = getattr(self.screen, "reason", None)
        return reason(spec) if callable(reason) else None

    def _run(self, spec_id: str) -> None:
        run = getattr(self.screen, "run_spec", None)
        if callable(run):
            run(spec_id)

    async def discover(self) -> Hits:
        for spec in ACTIONS:
            yield DiscoveryHit(
                f"{spec.title} ({spec.key_label})",
                partial(self._run, spec.id),
                help=self._help(spec),
            )

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for spec in ACTIONS:
            text = f"{spec.title} ({spec.key_label})"
            score = matcher.match(text)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(text),
                    partial(self._run, spec.id),
                    text=text,
                    help=self._help(spec),
                )
