"""The package stays readable: no module over ~400 lines, no function over ~80 (issue 13).

Counted from the source text: a module's lines; a function's body, from its first statement (its
docstring) to its last line, so that a typer command's long parameter list does not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "fedprllm_secure"
MAX_MODULE_LINES = 420
MAX_FUNCTION_LINES = 85


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_over_the_limit() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_over_the_limit() -> None:
    long = {}
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.body[0].lineno + 1  # type: ignore[operator]
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(PACKAGE)}:{node.name}"] = lines
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_check_sees_a_long_function() -> None:
    source = "def f():\n" + "    x = 1\n" * (MAX_FUNCTION_LINES + 1)
    node = ast.parse(source).body[0]
    assert node.end_lineno - node.body[0].lineno + 1 > MAX_FUNCTION_LINES  # type: ignore[attr-defined]
