"""The house boundary: only db/ talks to PostgreSQL, only ui/ uses Textual."""

from __future__ import annotations

import ast
from pathlib import Path

import carpool_tui

PACKAGE = Path(carpool_tui.__file__).parent
SQL_WORDS = ("SELECT ", "INSERT ", "UPDATE ", "DELETE ", " FROM ")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _modules(folder: str) -> list[Path]:
    files = sorted((PACKAGE / folder).rglob("*.py"))
    assert files, f"no modules under {folder}"
    return files


def test_ui_never_imports_asyncpg() -> None:
    for path in _modules("ui"):
        assert "asyncpg" not in _imports(path), path


def test_ui_builds_no_sql() -> None:
    for path in _modules("ui"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                upper = node.value.upper()
                hits = [w for w in SQL_WORDS if w in upper]
                assert len(hits) < 2, f"{path}: looks like SQL: {node.value!r}"


def test_db_never_imports_textual_or_rich() -> None:
    for path in _modules("db"):
        imported = _imports(path)
        assert "textual" not in imported, path
        assert "rich" not in imported, path


def test_models_and_registry_are_plain_data() -> None:
    for path in (PACKAGE / "models.py", PACKAGE / "ui" / "actions.py"):
        imported = _imports(path)
        assert "textual" not in imported, path
        assert "asyncpg" not in imported, path


def test_the_check_sees_imports() -> None:
    assert "asyncpg" in _imports(PACKAGE / "db" / "repo.py")
    assert "textual" in _imports(PACKAGE / "ui" / "app.py")
