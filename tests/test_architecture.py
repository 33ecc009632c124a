"""The layout rules of docs/ARCHITECTURE.md, checked on the source: the library never imports the
trainers, and no function outside tests and page layouts grows past 80 lines."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAX_FUNCTION_LINES = 80


def _sources(*folders: str):
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_the_library_never_imports_trainers_not_even_inside_a_function():
    offenders = []
    for path, tree in _sources("xmodal_core"):
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names
                          if n == "trainers" or n.startswith("trainers.")]
    assert offenders == []


def test_no_function_outside_tests_and_page_layouts_is_longer_than_80_lines():
    too_long = []
    for path, tree in _sources("xmodal_core", "trainers", "bench", "pages"):
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            n = node.end_lineno - node.lineno + 1
            is_layout = path.parent.name == "pages" and node.name in ("build", "layout")
            if n > MAX_FUNCTION_LINES and not is_layout:
                too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({n} lines)")
    assert too_long == []
