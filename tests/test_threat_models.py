"""Every test a threat model document cites exists (a claim must name a real check)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "threat_models").glob("*.md"))
# `tests/x.py::test_name` or, later in the same table cell or sentence, `::test_name`.
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?::(test_\w+)")


def cited(doc: Path) -> list[tuple[str, str]]:
    found, current = [], None
    for line in doc.read_text(encoding="utf-8").splitlines():
        for path, name in REFERENCE.findall(line):
            current = path or current
            if current:
                found.append((current, name))
    return found


def defined(path: str) -> set[str]:
    source = (ROOT / path).read_text(encoding="utf-8")
    return set(re.findall(r"^(?:async )?def (test_\w+)", source, flags=re.M))


@pytest.mark.parametrize("doc", [d for d in DOCS if cited(d)], ids=lambda d: d.name)
def test_cited_tests_exist(doc: Path) -> None:
    missing = [
        f"{path}::{name}"
        for path, name in cited(doc)
        if not (ROOT / path).is_file() or name not in defined(path)
    ]
    assert not missing, f"{doc.name} cites tests that do not exist: {missing}"


def test_every_adversary_has_a_document() -> None:
    names = {d.stem for d in DOCS}
    assert {
        "honest_but_curious_server", "colluding_server", "dropouts", "malicious_server",
        "malicious_client", "key_authority",
    } <= names  # fmt: skip
    index = (ROOT / "threat_models" / "README.md").read_text(encoding="utf-8")
    assert all(f"({d.name})" in index for d in DOCS if d.name != "README.md")
