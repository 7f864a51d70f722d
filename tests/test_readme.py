"""The README stays true: every key, command and option it must document is there."""

from __future__ import annotations

import argparse
from pathlib import Path

from carpool_tui.cli import build_parser
from carpool_tui.ui.actions import ACTIONS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _keys_section() -> str:
    start = README.index("## Keys")
    return README[start : README.index("\n## ", start + 1)]


def test_every_registry_key_is_in_the_keys_table() -> None:
    section = _keys_section()
    missing = [a.key_label for a in ACTIONS if f"`{a.key_label}`" not in section]
    assert missing == []


def test_every_command_and_option_is_documented() -> None:
    parser = build_parser()
    subparsers = next(
        a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
    )
    missing = []
    for name, sub in [("", parser), *subparsers.choices.items()]:
        if name and f"carpool-tui {name}" not in README:
            missing.append(name)
        for action in sub._actions:
            for flag in action.option_strings:
                documented = flag in README or flag in ("--help", "--version")
                if flag.startswith("--") and not documented:
                    missing.append(f"{name} {flag}".strip())
    assert missing == []


def test_quick_start_has_the_two_commands() -> None:
    quick = README[README.index("## Quick start") :]
    assert "pip install -e '.[demo]' && carpool-tui demo" in quick
    assert "pip install -e '.[test]' && pytest" in quick


def test_screenshots_exist() -> None:
    root = Path(__file__).resolve().parents[1]
    for line in README.splitlines():
        if line.startswith("![") and "](" in line:
            target = line.split("](", 1)[1].rstrip(")")
            assert (root / target).is_file(), target
