"""Check that the tests guarding each protection fail when that protection is removed.

    python tests/mutations/run.py [--only NAME ...] [--file AREA.toml] [--requires flwr]
                                  [--list] [--each] [--timeout S] [--keep]

Reads every tests/mutations/*.toml (see README.md there), validates them, copies the repository's
files (tracked, and untracked but not ignored) to a scratch directory once, runs all named tests
there unmutated (they must pass, none skipped), then for each mutation: rewrites its `find` to its
`replace` in the scratch copy, runs its tests with pytest in the scratch directory (so the package
imports from the mutated copy), requires pytest's exit code 1 (tests failed), and restores the
file. Exit status 0 only when every mutation was killed (or skipped because it needs flwr and flwr
is not installed); 1 when one survived or errored; 2 when the mutation files are invalid.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as a package
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[2]
MUTATIONS = ROOT / "tests" / "mutations"
REQUIRED = {"name": str, "file": str, "find": str, "replace": str, "tests": list}
OPTIONAL = {"requires": str}
KNOWN_REQUIREMENTS = {"flwr"}
# Same reference syntax as tests/test_threat_models.py: `tests/x.py::test_name`, or `::test_name`
# after an earlier path in the same line.
CITATION = re.compile(r"`(tests/[\w/]+\.py)?::(test_\w+)")
EXIT_MEANING = {
    0: "SURVIVED: every named test passed with the protection removed",
    2: "error: pytest was interrupted (collection error?)",
    3: "error: pytest internal error",
    4: "error: pytest usage error (bad test id?)",
    5: "error: pytest collected no tests",
}
PLUGIN = "_mutation_outcomes"
PLUGIN_SOURCE = '''
"""Written by tests/mutations/run.py: records each test's outcome and where the package is."""
import json, os

_OUT = os.environ["MUTATION_OUTCOMES"]
_outcomes = {}


def pytest_sessionstart(session):
    import fedprllm_secure

    _outcomes["__package__"] = os.path.realpath(fedprllm_secure.__file__)


def pytest_collectreport(report):
    if report.skipped:  # a module-level skip (pytest.importorskip): its tests never run
        _outcomes[report.nodeid] = "skipped"


def pytest_runtest_logreport(report):
    previous = _outcomes.get(report.nodeid)
    if report.failed:
        _outcomes[report.nodeid] = "failed"
    elif report.skipped and previous != "failed":
        _outcomes[report.nodeid] = "skipped"
    elif report.when == "call" and report.passed and previous is None:
        _outcomes[report.nodeid] = "passed"


def pytest_sessionfinish(session):
    with open(_OUT, "w") as f:
        json.dump(_outcomes, f)
'''


@dataclass
class Mutation:
    name: str
    file: str
    find: str
    replace: str
    tests: list[str]
    source: str  # the .toml it came from
    requires: str | None = None
    notes: list[str] = field(default_factory=list)


def test_defined(test_id: str, root: Path = ROOT) -> str | None:
    """None when `path::[Class::]function[params]` names a test in the tree, else why not."""
    parts = test_id.split("::")
    if (
        len(parts) not in (2, 3)
        or not parts[0].startswith("tests/")
        or not parts[0].endswith(".py")
    ):
        return f"test id {test_id!r} is not 'tests/<file>.py::<test>' (or ::<Class>::<test>)"
    path = root / parts[0]
    if not path.is_file():
        return f"test id {test_id!r}: {parts[0]} does not exist"
    source = path.read_text(encoding="utf-8")
    function = re.sub(r"\[.*\]$", "", parts[-1])
    if len(parts) == 3 and not re.search(rf"^class {re.escape(parts[1])}\b", source, re.M):
        return f"test id {test_id!r}: no class {parts[1]} in {parts[0]}"
    indent = r"[ \t]+" if len(parts) == 3 else ""
    if not re.search(rf"^{indent}(?:async[ \t]+)?def {re.escape(function)}\(", source, re.M):
        return f"test id {test_id!r}: no test function {function} in {parts[0]}"
    return None


def load(root: Path = ROOT) -> tuple[list[Mutation], list[str]]:
    """Every mutation of every tests/mutations/*.toml under `root`, and what is wrong with them."""
    mutations: list[Mutation] = []
    errors: list[str] = []
    seen: dict[str, str] = {}
    for toml in sorted((root / "tests" / "mutations").glob("*.toml")):
        where = toml.relative_to(root).as_posix()
        try:
            data = tomllib.loads(toml.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            errors.append(f"{where}: not valid TOML: {exc}")
            continue
        if set(data) - {"mutation"}:
            errors.append(f"{where}: unknown top-level keys {sorted(set(data) - {'mutation'})}")
        entries = data.get("mutation", [])
        if not isinstance(entries, list) or not entries:
            errors.append(f"{where}: no [[mutation]] entries")
            continue
        for number, entry in enumerate(entries, 1):
            label = f"{where} mutation {number}"
            if not isinstance(entry, dict):
                errors.append(f"{label}: not a table")
                continue
            if isinstance(entry.get("name"), str):
                label = f"{where} {entry['name']!r}"
            problems = check_entry(entry, root)
            errors += [f"{label}: {problem}" for problem in problems]
            if problems:
                continue
            if entry["name"] in seen:
                errors.append(f"{label}: name also used in {seen[entry['name']]}")
                continue
            seen[entry["name"]] = where
            mutations.append(
                Mutation(
                    name=entry["name"],
                    file=entry["file"],
                    find=entry["find"],
                    replace=entry["replace"],
                    tests=list(entry["tests"]),
                    source=where,
                    requires=entry.get("requires"),
                )
            )
    return mutations, errors


def check_entry(entry: dict, root: Path) -> list[str]:
    problems = []
    unknown = set(entry) - set(REQUIRED) - set(OPTIONAL)
    if unknown:
        problems.append(f"unknown keys {sorted(unknown)}")
    for key, kind in (REQUIRED | OPTIONAL).items():
        if key not in entry:
            if key in REQUIRED:
                problems.append(f"missing {key!r}")
        elif not isinstance(entry[key], kind):
            problems.append(f"{key!r} must be a {kind.__name__}")
    if problems:
        return problems
    if not entry["name"].strip():
        problems.append("empty name")
    if entry.get("requires", "flwr") not in KNOWN_REQUIREMENTS:
        problems.append(f"requires must be one of {sorted(KNOWN_REQUIREMENTS)}")
    path = root / entry["file"]
    if Path(entry["file"]).is_absolute() or ".." in Path(entry["file"]).parts:
        problems.append(f"file {entry['file']!r} must be a path inside the repository")
    elif not path.is_file():
        problems.append(f"file {entry['file']} does not exist")
    else:
        count = path.read_text(encoding="utf-8").count(entry["find"])
        if not entry["find"]:
            problems.append("empty find")
        elif count != 1:
            problems.append(f"find occurs {count} times in {entry['file']}, expected exactly once")
    if entry["find"] == entry["replace"]:
        problems.append("replace equals find: nothing is removed")
    if not entry["tests"] or not all(isinstance(t, str) for t in entry["tests"]):
        problems.append("tests must be a non-empty list of test ids")
    else:
        problems += [why for why in map(lambda t: test_defined(t, root), entry["tests"]) if why]
    return problems


def cited_tests(root: Path = ROOT) -> set[tuple[str, str]]:
    """(path, function) of every test a threat_models/*.md cites."""
    found = set()
    for doc in sorted((root / "threat_models").glob("*.md")):
        for line in doc.read_text(encoding="utf-8").splitlines():
            current = None
            for path, name in CITATION.findall(line):
                current = path or current
                if current:
                    found.add((current, name))
    return found


def uncited(mutations: list[Mutation], root: Path = ROOT) -> dict[str, list[str]]:
    """Tests named by a mutation that no threat model cites (the claim is not written down),
    each with the names of the mutations that name it."""
    cited = cited_tests(root)
    missing: dict[str, list[str]] = {}
    for mutation in mutations:
        for test_id in mutation.tests:
            parts = test_id.split("::")
            if (parts[0], re.sub(r"\[.*\]$", "", parts[-1])) not in cited:
                missing.setdefault(test_id, []).append(mutation.name)
    return dict(sorted(missing.items()))


# --- running ------------------------------------------------------------------------------------


def copy_tree(scratch: Path) -> int:
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    copied = 0
    for raw in listed:
        if not raw:
            continue
        relative = os.fsdecode(raw)
        source = ROOT / relative
        if not source.is_file() and not source.is_symlink():
            continue  # deleted in the working tree, or a submodule
        target = scratch / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
        copied += 1
    (scratch / f"{PLUGIN}.py").write_text(PLUGIN_SOURCE, encoding="utf-8")
    return copied


@dataclass
class Run:
    code: int
    outcomes: dict[str, str]
    output: str
    seconds: float
    package: str | None


def pytest(scratch: Path, tests: list[str], stop_first: bool, timeout: float) -> Run:
    outcomes_file = scratch / ".mutation-outcomes.json"
    outcomes_file.unlink(missing_ok=True)
    env = dict(os.environ)
    env.update(
        MUTATION_OUTCOMES=str(outcomes_file),
        PYTHONPATH=os.pathsep.join([str(scratch), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        PYTHONDONTWRITEBYTECODE="1",
    )
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", PLUGIN]
    command += ["-x"] if stop_first else []
    start = time.monotonic()
    try:
        done = subprocess.run(
            command + tests, cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout
        )
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        code = -1
        output = f"timed out after {timeout:.0f} s\n" + str(exc.stdout or "")[-2000:]
    seconds = time.monotonic() - start
    outcomes = json.loads(outcomes_file.read_text()) if outcomes_file.is_file() else {}
    package = outcomes.pop("__package__", None)
    if outcomes_file.is_file() and (
        package is None or not Path(package).is_relative_to(scratch.resolve())
    ):
        raise SystemExit(
            f"the tests imported fedprllm_secure from {package}, not from the scratch copy "
            f"{scratch}: a mutation there would not be tested"
        )
    return Run(code, outcomes, output, seconds, package)


def outcome_of(test_id: str, outcomes: dict[str, str]) -> str:
    """'failed' if any item of the test failed, 'passed' if any ran, 'skipped', or 'missing'."""
    items = [
        outcome
        for nodeid, outcome in outcomes.items()
        if nodeid == test_id
        or nodeid.startswith(test_id + "[")
        or test_id.startswith(nodeid + "::")  # its module or class, skipped whole
    ]
    for result in ("failed", "passed", "skipped"):
        if result in items:
            return result
    return "missing"


def flwr_available() -> bool:
    return importlib.util.find_spec("flwr") is not None


def tail(text: str, lines: int = 25) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only", action="append", metavar="NAME", help="run only this mutation (repeatable)"
    )
    parser.add_argument(
        "--file", action="append", metavar="AREA.toml", help="run only this file's mutations"
    )
    parser.add_argument(
        "--list", action="store_true", help="validate and list the mutations, run nothing"
    )
    parser.add_argument(
        "--each", action="store_true", help="require every named test to fail, not just one (no -x)"
    )
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds per pytest run (default 600)"
    )
    parser.add_argument(
        "--requires",
        choices=sorted(KNOWN_REQUIREMENTS),
        help="run only the mutations that need this (e.g. after installing flwr)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy")
    args = parser.parse_args(argv)

    mutations, errors = load()
    if errors:
        print("invalid mutation files:", *errors, sep="\n  ", file=sys.stderr)
        return 2
    if args.file:
        unknown = set(args.file) - {Path(m.source).name for m in mutations}
        if unknown:
            print(f"no mutations in {sorted(unknown)}", file=sys.stderr)
            return 2
        mutations = [m for m in mutations if Path(m.source).name in args.file]
    if args.requires:
        mutations = [m for m in mutations if m.requires == args.requires]
    if args.only:
        unknown = set(args.only) - {m.name for m in mutations}
        if unknown:
            print(f"unknown mutation names {sorted(unknown)} (see --list)", file=sys.stderr)
            return 2
        mutations = [m for m in mutations if m.name in args.only]
    missing = uncited(mutations)
    if missing:
        print(
            f"warning: {len(missing)} tests named by mutations are cited in no threat_models/*.md:"
        )
        for test_id, names in missing.items():
            print(f"    {test_id}  ({len(names)} mutations)")
    if args.list:
        for mutation in mutations:
            needs = f" [needs {mutation.requires}]" if mutation.requires else ""
            print(
                f"{mutation.source}: {mutation.name}{needs}\n    {mutation.file} -> {', '.join(mutation.tests)}"
            )
        print(f"{len(mutations)} mutations")
        return 0

    results: dict[str, tuple[Mutation, str, float]] = {}
    runnable = []
    for mutation in mutations:
        if mutation.requires == "flwr" and not flwr_available():
            results[mutation.name] = (mutation, "skipped (needs flwr)", 0.0)
        else:
            runnable.append(mutation)
    scratch = Path(tempfile.mkdtemp(prefix="fedprllm-mutations-"))
    try:
        copied = copy_tree(scratch)
        print(f"copied {copied} files to {scratch}", flush=True)
        broken = baseline(scratch, sorted({t for m in runnable for t in m.tests}), args.timeout)
        for mutation in runnable:
            bad = [f"{t} {broken[t]}" for t in mutation.tests if t in broken]
            if bad:
                print(f"\n{mutation.name} ({mutation.source}): not run:", *bad, sep="\n    ")
                results[mutation.name] = (mutation, "error (baseline)", 0.0)
            else:
                results[mutation.name] = apply_and_run(mutation, scratch, args)
    finally:
        if args.keep:
            print(f"scratch copy kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    ordered = [results[m.name] for m in mutations]
    print_table(ordered)
    failed = [r for r in ordered if r[1] != "killed" and not r[1].startswith("skipped")]
    total = sum(seconds for _, _, seconds in ordered)
    print(
        f"{len(ordered) - len(failed)}/{len(ordered)} killed or skipped ({total:.0f} s in pytest)"
    )
    return 1 if failed else 0


def baseline(scratch: Path, named: list[str], timeout: float) -> dict[str, str]:
    """Run every named test unmutated; what is wrong with each that does not simply pass."""
    if not named:
        return {}
    run = pytest(scratch, named, stop_first=False, timeout=timeout)
    print(f"baseline: {len(named)} tests, {run.seconds:.1f} s, package from {run.package}")
    outcomes = {test_id: outcome_of(test_id, run.outcomes) for test_id in named}
    if run.code not in (0, 1):
        # One bad id (exit 4/5) stops pytest before it runs anything: find which, one by one.
        print(
            f"baseline: pytest exit {run.code}; running the tests one at a time\n{tail(run.output)}"
        )
        for test_id in named:
            alone = pytest(scratch, [test_id], stop_first=False, timeout=timeout)
            outcomes[test_id] = outcome_of(test_id, alone.outcomes)
            if alone.code not in (0, 1) and outcomes[test_id] != "skipped":
                outcomes[test_id] = f"pytest exit {alone.code}: {EXIT_MEANING.get(alone.code, '?')}"
    broken = {}
    for test_id, outcome in outcomes.items():
        if outcome == "skipped":
            broken[test_id] = "is skipped here: a skipped test cannot kill a mutant"
        elif outcome == "missing":
            broken[test_id] = "was not run (not collected?)"
        elif outcome != "passed":
            broken[test_id] = f"does not pass unmutated ({outcome})"
    if broken and run.code in (0, 1):
        print(f"baseline (pytest exit {run.code}):\n{tail(run.output)}")
    return broken


def apply_and_run(
    mutation: Mutation, scratch: Path, args: argparse.Namespace
) -> tuple[Mutation, str, float]:
    target = scratch / mutation.file
    original = target.read_text(encoding="utf-8")
    if original.count(mutation.find) != 1:
        return mutation, "error: find does not occur exactly once in the copy", 0.0
    try:
        target.write_text(original.replace(mutation.find, mutation.replace), encoding="utf-8")
        run = pytest(scratch, mutation.tests, stop_first=not args.each, timeout=args.timeout)
    finally:
        target.write_text(original, encoding="utf-8")
    if run.code == 1:
        outcomes = {t: outcome_of(t, run.outcomes) for t in mutation.tests}
        if args.each and any(o != "failed" for o in outcomes.values()):
            alive = [t for t, o in outcomes.items() if o != "failed"]
            print(f"\n{mutation.name}: these tests did not fail: {alive}")
            return mutation, "SURVIVED in part", run.seconds
        return mutation, "killed", run.seconds
    meaning = EXIT_MEANING.get(run.code, f"error: pytest exit {run.code}")
    short = "SURVIVED" if run.code == 0 else f"error (pytest exit {run.code})"
    if run.code == -1:
        meaning, short = f"error: timed out after {args.timeout:.0f} s", "error (timeout)"
    print(f"\n{mutation.name} ({mutation.source}): {meaning}\n{tail(run.output)}")
    return mutation, short, run.seconds


def print_table(results: list[tuple[Mutation, str, float]]) -> None:
    rows = [("mutation", "tests", "result", "seconds")]
    for mutation, result, seconds in results:
        tests = ", ".join(t.split("::")[-1] for t in mutation.tests)
        rows.append((mutation.name, tests, result, f"{seconds:.1f}"))
    widths = [min(60, max(len(row[i]) for row in rows)) for i in range(4)]
    print()
    for row in rows:
        cells = [cell if len(cell) <= 60 else cell[:57] + "..." for cell in row]
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
        )


if __name__ == "__main__":
    sys.exit(main())
