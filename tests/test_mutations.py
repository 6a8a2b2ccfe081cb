"""The mutation files are valid without running them (tests/mutations/run.py runs them in CI).

A code change that moves or rewrites a protection breaks its mutation's `find`; this catches it in
the fast suite, before the runner would report the mutation as an error.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("mutation_runner", ROOT / "tests/mutations/run.py")
assert _spec and _spec.loader
runner = importlib.util.module_from_spec(_spec)
sys.modules["mutation_runner"] = runner
_spec.loader.exec_module(runner)


def test_every_mutation_file_is_valid() -> None:
    mutations, errors = runner.load()
    assert not errors, "\n".join(errors)
    assert {Path(m.source).name for m in mutations} >= {"generic.toml"}
    for mutation in mutations:
        source = (ROOT / mutation.file).read_text(encoding="utf-8")
        assert source.count(mutation.find) == 1, mutation.name


def fake_repo(tmp_path: Path, toml: str) -> Path:
    (tmp_path / "pkg").mkdir(parents=True)
    (tmp_path / "pkg" / "guard.py").write_text("def check(x):\n    if x:\n        raise E\n")
    (tmp_path / "tests" / "mutations").mkdir(parents=True)
    (tmp_path / "tests" / "test_guard.py").write_text(
        "def test_refuses():\n    pass\n\n\nclass TestGuard:\n    def test_in_class(self):\n"
        "        pass\n"
    )
    (tmp_path / "tests" / "mutations" / "area.toml").write_text(toml)
    return tmp_path


GOOD = """
[[mutation]]
name = "guard removed"
file = "pkg/guard.py"
find = '''    if x:'''
replace = '''    if False:'''
tests = ["tests/test_guard.py::test_refuses", "tests/test_guard.py::TestGuard::test_in_class"]
"""


def test_a_valid_entry_loads(tmp_path: Path) -> None:
    mutations, errors = runner.load(fake_repo(tmp_path, GOOD + 'requires = "flwr"\n'))
    assert errors == []
    assert [m.name for m in mutations] == ["guard removed"] and mutations[0].requires == "flwr"


def test_each_kind_of_mistake_is_an_error(tmp_path: Path) -> None:
    cases = {
        "unknown keys": GOOD + 'why = "x"\n',
        "missing 'replace'": GOOD.replace("replace = '''    if False:'''\n", ""),
        "occurs 0 times": GOOD.replace("    if x:'''", "    if y:'''"),
        "occurs 3 times": GOOD.replace("find = '''    if x:'''", "find = '''    '''"),
        "no test function test_gone": GOOD.replace("::test_refuses", "::test_gone"),
        "test_guard2.py does not exist": GOOD.replace(
            "test_guard.py::test_r", "test_guard2.py::test_r"
        ),
        "no class TestOther": GOOD.replace("::TestGuard::", "::TestOther::"),
        "does not exist": GOOD.replace("pkg/guard.py", "pkg/gone.py"),
        "requires must be": GOOD + 'requires = "torch"\n',
        "'tests' must be a list": GOOD.replace(
            'tests = ["tests/test_guard.py::test_refuses", ', 'tests = "x"\n#'
        ),
        "name also used": GOOD + GOOD,
        "not valid TOML": GOOD + "[[mutation\n",
        "replace equals find": GOOD.replace("if False:'''", "if x:'''"),
    }
    for expected, toml in cases.items():
        _mutations, errors = runner.load(
            fake_repo(tmp_path / "".join(c if c.isalnum() else "_" for c in expected), toml)
        )
        assert any(expected in error for error in errors), (expected, errors)


def test_tests_named_by_mutations_but_cited_by_no_threat_model_are_reported(tmp_path) -> None:
    repo = fake_repo(tmp_path, GOOD)
    (repo / "threat_models").mkdir()
    (repo / "threat_models" / "a.md").write_text(
        "| claim | `tests/test_guard.py::test_refuses` |\n"
    )
    mutations, _errors = runner.load(repo)
    assert list(runner.uncited(mutations, repo)) == [
        "tests/test_guard.py::TestGuard::test_in_class"
    ]
