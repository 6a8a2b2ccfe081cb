"""Markdown tables of the distributed-DP sweeps (for the README and protocols/distributed_dp.md).

    python experiments/ddp_tables.py experiments/results/ddp/sweep_8x32x512.json [...]

One row per variant of each sweep file: mechanism, unit, domain, epsilon, minimum survivors,
perplexity, the noise std measured on the sum (normalised units) and the plan's; then each
topic-attack file's accuracy per epsilon. Numbers are printed as the README shows them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _fmt(value: object, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def sweep_table(path: Path) -> list[str]:
    data = json.loads(path.read_text())
    s = data["settings"]
    lines = [
        f"{s['clients']} clients x {s['windows']} windows of {s['seqlen']} tokens ({path.name}):",
        "",
        "| variant | perplexity | noise std on the sum | planned std | mean clipped entry |",
        "|---|---|---|---|---|",
    ]
    for name, row in data["rows"].items():
        lines.append(
            f"| {name} | {_fmt(row.get('perplexity'), 2)} | {_fmt(row.get('measured_sum_std'))} "
            f"| {_fmt(row.get('plan_sum_std'))} | {_fmt(row.get('mean_clipped_entry'))} |"
        )
    return lines


def attack_table(path: Path) -> list[str]:
    data = json.loads(path.read_text())
    lines = [
        f"topic attacker, {path.name}:",
        "",
        "| epsilon | accuracy | 95% interval | chance |",
        "|---|---|---|---|",
    ]
    for eps, row in data["rows"].items():
        low, high = row["ci95"]
        lines.append(
            f"| {eps} | {100 * row['accuracy']:.0f}% | {100 * low:.0f}-{100 * high:.0f}% "
            f"| {100 * row['chance']:.0f}% |"
        )
    return lines


def main() -> None:
    for name in sys.argv[1:]:
        path = Path(name)
        table = attack_table if path.name.startswith("topic_attack") else sweep_table
        print("\n".join(table(path)) + "\n")


if __name__ == "__main__":
    main()
