"""Every number the README quotes from a measurement comes from a committed result file.

A block (a paragraph or a table) of README.md that quotes results is preceded by a marker line

    <!-- numbers from: experiments/results/x.json experiments/reports/y/results.json -->

and every number in it (outside code spans and link targets; a table's header row holds settings
and is skipped) must be one of the source files' numbers as displayed: rounded to the digits the
README shows (half a unit in the last shown digit), directly, as a percentage (x 100) or in
millions (bytes -> MB). A table whose source is a Markdown file must copy its rows verbatim. Every
README table with a purely numeric cell must have a marker, so a new table cannot skip the check.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKER = re.compile(r"^\s*<!-- numbers from: (.+?) -->\s*$")
NUMBER = re.compile(
    r"(?<![\w.,])(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?(?:e[+-]?\d+)?)(?![\d,]*\d)(?!\.\d)(?![A-Za-wyz_])"
)
CODE = re.compile(r"`[^`]*`|\]\([^)]*\)|<!--.*?-->")
CONVENTIONS = {95.0}  # "95% interval": the confidence level, not a measurement
NUMERIC_CELL = re.compile(r"^\**[\d.,e+]+\s*(?:%|x|s|MB|MB per client)?\**$")


def numbers_in(text: str) -> list[str]:
    return [m.group(1) for m in NUMBER.finditer(CODE.sub(" ", text))]


def _leaves(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, str):
        return [float(n.replace(",", "")) for n in numbers_in(value)]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [leaf for item in items for leaf in _leaves(item)]


def source_values(path: Path) -> list[float]:
    """Every number of a result file (JSON leaves, or the numbers of a text file)."""
    text = path.read_text(encoding="utf-8")
    values = _leaves(json.loads(text)) if path.suffix == ".json" else _leaves(text)
    return [v * k for v in values for k in (1.0, 100.0, 1e-6)]


def matches(token: str, values: list[float]) -> bool:
    """`token` as displayed is one of `values` rounded to its shown digits."""
    number = float(token.replace(",", ""))
    if "e" in token:
        mantissa = token.split("e")[0]
        digits = len(mantissa.split(".")[1]) if "." in mantissa else 0
        return any(v and f"{v:.{digits}e}" == f"{number:.{digits}e}" for v in values)
    digits = len(token.split(".")[1]) if "." in token else 0
    return any(abs(v - number) <= 0.5 * 10**-digits + 1e-9 for v in values)


def marked_blocks(lines: list[str]) -> list[tuple[int, list[Path], list[str]]]:
    """(line number, sources, lines of the block) for every marker."""
    blocks = []
    for i, line in enumerate(lines):
        found = MARKER.match(line)
        if not found:
            continue
        sources = [ROOT / p for p in found.group(1).split()]
        end = i + 1
        while end < len(lines) and lines[end].strip():
            end += 1
        blocks.append((i + 1, sources, lines[i + 1 : end]))
    return blocks


def body_lines(block: list[str]) -> list[str]:
    """The block without a table's header row and separator."""
    return [
        line for k, line in enumerate(block)
        if not re.match(r"^\s*\|[-| ]+\|$", line)
        and not (k + 1 < len(block) and re.match(r"^\s*\|[-| ]+\|$", block[k + 1]))
    ]  # fmt: skip


README_LINES = README.read_text(encoding="utf-8").splitlines()
BLOCKS = marked_blocks(README_LINES)


@pytest.mark.parametrize(("line", "sources", "block"), BLOCKS, ids=[str(b[0]) for b in BLOCKS])
def test_quoted_numbers_come_from_committed_results(
    line: int, sources: list[Path], block: list[str]
) -> None:
    assert block, f"README line {line}: a marker must precede a block"
    for source in sources:
        assert source.is_file(), f"README line {line}: {source} is not committed"
    values = [v for s in sources for v in source_values(s)] + sorted(CONVENTIONS)
    missing = [
        (token, text) for text in body_lines(block) for token in numbers_in(text)
        if not matches(token, values)
    ]  # fmt: skip
    assert not missing, f"README line {line}: numbers not in {[s.name for s in sources]}: {missing}"
    markdown = [s for s in sources if s.suffix == ".md"]
    if markdown and block[0].lstrip().startswith("|"):
        rows = {r for s in markdown for r in s.read_text(encoding="utf-8").splitlines()}
        assert not [r for r in block if r.strip() not in rows], f"README line {line}: rows differ"


def test_every_numeric_table_has_a_source() -> None:
    marked = {line + k for line, _, block in BLOCKS for k in range(len(block))}
    for number, text in enumerate(README_LINES):
        if not text.lstrip().startswith("|") or number in marked:
            continue
        cells = [c.strip() for c in text.strip().strip("|").split("|")]
        assert not any(NUMERIC_CELL.match(c) for c in cells[1:]), (
            f"README line {number + 1}: a table of numbers without a `numbers from` marker"
        )


def test_the_checker_catches_a_wrong_number(tmp_path: Path) -> None:
    source = tmp_path / "r.json"
    source.write_text(json.dumps({"acc": 0.125, "ppl": 36.8063, "bytes": 42488064}))
    values = source_values(source)
    assert matches("12", values) and matches("36.81", values) and matches("42.5", values)
    assert not matches("19", values) and not matches("36.82", values)
    assert not matches("43", values) and matches("4.2e+07", values)
    assert numbers_in("chance 25% (`--seed 7`, [x](a/b9.md)), 1,234 and 2.4x, 106.2M") == [
        "25", "1,234", "2.4",
    ]  # fmt: skip


AUDIT = "experiments/reports/audit-small/results.json"
LEAK = "points.leakage."
# Sentences whose numbers are each pinned to one value (the bag check above cannot tell two
# measurements of the same file apart): (README text, source, [(path, scale)] in order).
CLAIMS: list[tuple[str, str, list[tuple[str, float]]]] = [
    (
        "with 88% accuracy (chance 25%)", AUDIT,
        [(LEAK + "plaintext_mask.accuracy", 100), (LEAK + "plaintext_mask.chance", 100)],
    ),
    (
        "under `additive` (12%, 95% interval 4-36%) or `ckks` (25%, 10-49%)",
        AUDIT,
        [(LEAK + "server_view.additive.accuracy", 100), ("", 95)]
        + [(LEAK + f"server_view.additive.{k}", 100) for k in ("ci95_low", "ci95_high")]
        + [(LEAK + f"server_view.ckks.{k}", 100) for k in ("accuracy", "ci95_low", "ci95_high")],
    ),
    (
        "it reaches 50% (95% interval 28-72%)", AUDIT,
        [(LEAK + "aggregate.accuracy", 100), ("", 95),
         (LEAK + "aggregate.ci95_low", 100), (LEAK + "aggregate.ci95_high", 100)],
    ),
    (
        "FedPrLLM reaches perplexity 36.3-36.9 (dense 14.4, magnitude 271)", AUDIT,
        [("points.utility-iid-c4-none.perplexity", 1),
         ("points.utility-topic-c4-none.perplexity", 1),
         ("points.dense.perplexity", 1), ("points.magnitude.perplexity", 1)],
    ),
    (
        "perplexity 209-219 at eps 32 and 235-276 at eps 8", AUDIT,
        [("points.utility-iid-c4-dp-eps32.perplexity", 1), ("points.utility-topic-c4-dp-eps32.perplexity", 1),
         ("", 32), ("points.utility-topic-c4-dp-eps8.perplexity", 1),
         ("points.utility-iid-c4-dp-eps8.perplexity", 1), ("", 8)],
    ),
    (
        "The topic attacker then gets 19-38%", AUDIT,
        [(LEAK.replace("leakage.", "leakage-dp-eps32.") + "accuracy", 100),
         (LEAK.replace("leakage.", "leakage-dp-eps8.") + "accuracy", 100)],
    ),
]  # fmt: skip


def _at(data: Any, path: str) -> Any:
    for part in path.split("."):
        data = data[part]
    return data


@pytest.mark.parametrize(("text", "source", "paths"), CLAIMS, ids=[c[0][:30] for c in CLAIMS])
def test_pinned_claims(text: str, source: str, paths: list[tuple[str, float]]) -> None:
    readme = " ".join(README.read_text(encoding="utf-8").split())
    assert text in readme, f"README no longer says: {text}"
    data = json.loads((ROOT / source).read_text(encoding="utf-8"))
    tokens = numbers_in(text)
    assert len(tokens) == len(paths), tokens
    for token, (path, scale) in zip(tokens, paths, strict=True):
        value = scale if not path else _at(data, path) * scale
        assert matches(token, [value]), f"{token} in {text!r} is not {path} = {value}"
