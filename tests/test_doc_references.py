"""The docs point only at files the project has: every relative Markdown link resolves, and no
file names a document that is not in the repository (REFERENCE.md, DESIGN.md live outside it)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
OUTSIDE = ("REFERENCE.md", "DESIGN.md")


def tracked(*patterns: str) -> list[Path]:
    done = subprocess.run(
        ["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return [ROOT / line for line in done.stdout.splitlines() if (ROOT / line).is_file()]


def test_relative_links_resolve() -> None:
    broken = []
    for doc in tracked("*.md"):
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_no_file_names_a_document_outside_the_project() -> None:
    me = Path(__file__).resolve()
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in tracked("*.md", "*.py", "*.toml")
        if path.resolve() != me
        for name in OUTSIDE
        if name in path.read_text(encoding="utf-8") and not (ROOT / name).exists()
    ]
    assert not offenders, offenders
