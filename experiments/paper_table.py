"""Reproduce the FedPrLLM paper's table (arXiv, May 2025: its main perplexity table) on the
embedded SmolLM2; README.md, section "The paper's table on the embedded model", shows the result.

    python experiments/paper_table.py                      # the README table (about an hour)
    python experiments/paper_table.py --model DIR --quick  # a smoke run on any small model

Part A, IID split over 8 clients, at 50/60/70% sparsity: dense, centralized Wanda, local-only
(mean over clients), FedPrLLM layer/row/column one-shot, layer one-shot with scaling, layer and
row iterative. Part B, at 50%: a topic (non-IID) split for 2, 8 and 32 clients at a fixed total
sample budget. Part C, at 50%: 25% of the clients dropped out (IID and topic, 8 clients).

Client masks are computed once per (split, clients, sparsity) and reused by every variant; every
finished row is saved to OUT/rows.json at once, so an interrupted run resumes where it stopped.
Writes OUT/paper_table.md and OUT/paper_table.json and prints the time each part took.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from statistics import mean
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedprllm_secure.config import DataConfig, ProtocolConfig, PruningConfig, RunConfig  # noqa: E402
from fedprllm_secure.outputs import write_json  # noqa: E402
from fedprllm_secure.pipeline import Pipeline, Workbench  # noqa: E402


class Rows:
    """Finished rows by key, persisted after each one (resume support)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, dict[str, Any]] = (
            json.loads(path.read_text()) if path.is_file() else {}
        )

    def get(self, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if key not in self.rows:
            started = time.perf_counter()
            row = compute()
            row["seconds"] = round(time.perf_counter() - started, 1)
            self.rows[key] = row
            write_json(self.path, self.rows)
            print(f"  {key:<55} ppl {row['ppl']:10.3f}  ({row['seconds']:.0f}s)", flush=True)
        return self.rows[key]


def evaluate(pipe: Pipeline, label: str, masks: dict | None, scales: dict | None = None) -> float:
    return pipe.evaluate(label, masks, scales)[0]


def variant(config: RunConfig, drop: dict | None = None, **pruning: Any) -> RunConfig:
    """`config` with other pruning settings (and a dropout plan)."""
    config = replace(config, pruning=replace(config.pruning, **pruning))
    if drop is not None:
        config = replace(config, federation=replace(config.federation, drop=drop))
    return config


def fedprllm_row(pipe: Pipeline, **changes: Any) -> dict[str, Any]:
    result = pipe.fedprllm(variant(pipe.config, **changes))
    report = result.protocol
    return {
        "ppl": evaluate(pipe, "fedprllm", result.masks, result.scales),
        "contributors": len(report["contributors"]),
        "upload_bytes_per_client": mean(report["uplink_bytes_per_client"].values()),
    }


def local_row(pipe: Pipeline) -> dict[str, Any]:
    values = [evaluate(pipe, f"local {c}", masks) for c, masks in enumerate(pipe.local())]
    return {"ppl": mean(values), "per_client": values}


def setting(
    rows: Rows, bench: Callable[[], Workbench], base: RunConfig, tag: str, variants: list[str]
) -> None:
    """Run every variant of one (split, clients, sparsity) setting, sharing the client masks
    (each node reuses its masks for identical calibration options) and the loaded model."""

    def key(variant: str) -> str:
        return f"{tag}/{variant}" if tag else variant

    pending = [v for v in variants if key(v) not in rows.rows]
    if not pending:
        return
    pipe = Pipeline(base, bench=bench())
    dropped = {c: "input" for c in range(max(1, base.data.clients // 4))}
    recipes: dict[str, Callable[[], dict[str, Any]]] = {
        "dense": lambda: {"ppl": evaluate(pipe, "dense", None)},
        "centralized": lambda: {"ppl": evaluate(pipe, "centralized", pipe.centralized())},
        "local-only (mean)": lambda: local_row(pipe),
        "fedprllm layer one-shot": lambda: fedprllm_row(pipe, group="layer"),
        "fedprllm row one-shot": lambda: fedprllm_row(pipe, group="row"),
        "fedprllm column one-shot": lambda: fedprllm_row(pipe, group="column"),
        "fedprllm layer one-shot scaling": lambda: fedprllm_row(pipe, group="layer", scaling=True),
        "fedprllm layer iterative": lambda: fedprllm_row(pipe, group="layer", mode="iterative"),
        "fedprllm row iterative": lambda: fedprllm_row(pipe, group="row", mode="iterative"),
        "fedprllm layer one-shot, 25% dropped": lambda: fedprllm_row(pipe, drop=dropped),
        "fedprllm stats one-shot": lambda: fedprllm_row(
            pipe, aggregate="stats", calibration="one-shot"
        ),
        "fedprllm stats sequential": lambda: fedprllm_row(pipe, aggregate="stats"),
    }
    for variant_name in variants:
        rows.get(key(variant_name), recipes[variant_name])


PART_A = [
    "centralized",
    "local-only (mean)",
    "fedprllm layer one-shot",
    "fedprllm row one-shot",
    "fedprllm column one-shot",
    "fedprllm layer one-shot scaling",
    "fedprllm layer iterative",
    "fedprllm row iterative",
    "fedprllm stats one-shot",
    "fedprllm stats sequential",
]
PART_B = ["centralized", "local-only (mean)", "fedprllm layer one-shot", "fedprllm row one-shot"]


def markdown(rows: Rows, args: argparse.Namespace) -> str:
    def cell(key: str) -> str:
        row = rows.rows.get(key)
        if row is None:
            return "-"
        return f"{row['ppl']:.2f}" if row["ppl"] < 1e4 else f"{row['ppl']:.1e}"

    sparsities = args.sparsities
    lines = [
        f"Perplexity on the held-out Wikipedia text ({args.eval_windows} windows x {args.seqlen} "
        f"tokens); model `{args.model}`; {args.budget} calibration samples of {args.seqlen} tokens "
        f"in all; protocol `{args.protocol}`; seed {args.seed}.",
        "",
        "**A. IID split, 8 clients**",
        "",
        "| method | "
        + " | ".join(f"{int(s * 100)}%" for s in sparsities)
        + " | upload per client | time (50%) |",
        "|---|" + "---|" * (len(sparsities) + 2),
        "| dense | " + " | ".join(cell("dense") for _ in sparsities) + " | - | - |",
    ]
    for variant in PART_A:
        cells = [cell(f"iid-8-{s}/{variant}") for s in sparsities]
        row = rows.rows.get(f"iid-8-{sparsities[0]}/{variant}", {})
        upload = row.get("upload_bytes_per_client")
        cells.append("-" if upload is None else f"{upload / 1e6:.2f} MB")
        cells.append("-" if "seconds" not in row else f"{row['seconds']:.0f} s")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"**B. Topic (non-IID) split at 50%, {args.budget} samples in all**",
        "",
        "| method | " + " | ".join(f"{m} clients" for m in args.client_counts) + " |",
        "|---|" + "---|" * len(args.client_counts),
    ]
    for variant in PART_B:
        cells = [cell(f"topic-{m}-0.5/{variant}") for m in args.client_counts]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "**C. 25% of 8 clients dropped out (50%, layer, one-shot)**",
        "",
        "| split | all clients | 25% dropped |",
        "|---|---|---|",
    ]
    for split in ("iid", "topic"):
        tag = f"{split}-8-0.5"
        lines.append(
            f"| {split} | {cell(tag + '/fedprllm layer one-shot')} | "
            f"{cell(tag + '/fedprllm layer one-shot, 25% dropped')} |"
        )
    lines += ["", "Compute time recorded per part (sum over rows; an interrupted run resumes): "]
    parts = {
        "A": lambda k: k == "dense" or k.startswith("iid-"),
        "B+C": lambda k: k.startswith("topic-"),
    }
    for part, member in parts.items():
        seconds = sum(r.get("seconds", 0.0) for k, r in rows.rows.items() if member(k))
        lines[-1] += f"{part} {seconds / 60:.0f} min; "
    lines[-1] = lines[-1].rstrip("; ") + "."
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", type=Path, default=Path("experiments/results/paper_table"))
    parser.add_argument("--budget", type=int, default=32, help="calibration samples in all")
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--eval-windows", type=int, default=16)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.6, 0.7])
    parser.add_argument("--client-counts", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--protocol", default="plaintext")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.budget, args.seqlen, args.eval_windows = 8, 32, 2
        args.sparsities, args.client_counts = [0.5], [2, 4]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = Rows(args.out / "rows.json")
    options = {"threshold": None} if args.protocol == "additive" else {}

    def base(split: str, clients: int, sparsity: float) -> RunConfig:
        return RunConfig(
            model=args.model,
            device=args.device,
            seed=args.seed,
            data=DataConfig(
                clients=clients,
                split=split,
                samples_per_client=max(1, args.budget // clients),
                seqlen=args.seqlen,
                eval_windows=args.eval_windows,
            ),
            pruning=PruningConfig(sparsity=sparsity),
            protocol=ProtocolConfig(
                args.protocol, {k: v for k, v in options.items() if v is not None}
            ),
        )

    loaded: list[Workbench] = []

    def bench() -> Workbench:
        """One model for every setting (loaded at the first setting that runs)."""
        if not loaded:
            loaded.append(Workbench(args.model, args.device))
        return loaded[0]

    timings: dict[str, float] = {}
    started = time.perf_counter()
    print("A. IID, 8 clients", flush=True)
    for sparsity in args.sparsities:
        variants = (["dense"] if sparsity == args.sparsities[0] else []) + PART_A
        if sparsity == 0.5:
            variants.append("fedprllm layer one-shot, 25% dropped")
        tag = f"iid-8-{sparsity}"
        if "dense" in variants:
            setting(rows, bench, base("iid", 8, sparsity), "", ["dense"])
            variants.remove("dense")
        setting(rows, bench, base("iid", 8, sparsity), tag, variants)
    timings["A (iid, 8 clients)"] = time.perf_counter() - started
    started = time.perf_counter()
    print("B. topic split at 50%", flush=True)
    for clients in args.client_counts:
        variants = list(PART_B)
        if clients == 8:
            variants.append("fedprllm layer one-shot, 25% dropped")
        setting(rows, bench, base("topic", clients, 0.5), f"topic-{clients}-0.5", variants)
    timings["B+C (topic split, dropouts)"] = time.perf_counter() - started
    write_json(rows.path, rows.rows)
    table = markdown(rows, args)
    (args.out / "paper_table.md").write_text(table)
    write_json(
        args.out / "paper_table.json",
        {"settings": vars(args) | {"out": str(args.out)}, "rows": rows.rows},
    )
    print(table)
    print("time per part: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items()))


if __name__ == "__main__":
    main()
