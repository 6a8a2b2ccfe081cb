"""Federated RIA, OWL, N:M and DSnoT against centralized Wanda on the embedded SmolLM2 (issue 14).

    python experiments/pruner_table.py                  # the README table, resumable
    python experiments/pruner_table.py --columns 0.5 2:4 --rows wanda-central ria-stats
    python experiments/pruner_table.py --model DIR --quick

Settings of the paper table (experiments/paper_table.py): 8 IID clients x 4 windows of 512 tokens
(32 in all), perplexity on 16 held-out windows, `plaintext` sum, seed 0. Rows:

* centralized Wanda: sequential calibration on the pooled windows (Wanda's standard);
* FedPrLLM Wanda masks (paper): clients' sequential Wanda masks, layer comparison group;
* federated stats rows: `--aggregate stats --calibration one-shot`. One stats round is run through
  the pipeline per statistics kind (sums of x^2; with DSnoT also the first moments); every stats
  row's masks are then computed from the server's summed statistics with the function the
  strategy calls (`stats_masks`, `owl_stats_sparsities`), which equals the centralized one-shot
  method bit for bit (tests/test_pruners_pipeline.py); the row of the run itself is checked
  against the strategy's own masks;
* FedPrLLM RIA masks: each client's one-shot RIA masks (from its own statistics, computed once),
  summed in plaintext, layer group.

Cells of the paper table's settings (centralized and FedPrLLM Wanda at 50/60/70%) are taken from
experiments/results/paper_table/rows.json when its settings match. Every finished cell is saved
to OUT/rows.json at once (an interrupted run resumes). Writes OUT/pruner_table.{md,json}, the
comparison with the issue's targets, and with --bench OUT/bench.json: each method's client time
and upload against Wanda's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from statistics import mean
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from paper_table import Rows, variant  # noqa: E402

from fedprllm_secure.client.calibrate import local_masks  # noqa: E402
from fedprllm_secure.client.methods import PruneMethod, block_masks  # noqa: E402
from fedprllm_secure.config import DataConfig, PruningConfig, RunConfig  # noqa: E402
from fedprllm_secure.outputs import write_json  # noqa: E402
from fedprllm_secure.pipeline import Pipeline, Workbench  # noqa: E402
from fedprllm_secure.pipeline.server_step import (  # noqa: E402
    MaskRule,
    global_masks,
    owl_stats_sparsities,
    stats_masks,
)

ROWS = {  # key -> (label, kind, pruning changes)
    "wanda-central": ("centralized Wanda", "central", {}),
    "wanda-masks": ("FedPrLLM Wanda masks (paper)", "masks-seq", {}),
    "wanda-stats": ("federated Wanda stats, one-shot (= centralized one-shot)", "stats", {}),
    "ria-stats": ("federated RIA stats", "stats", dict(pruner="ria")),
    "ria-owl-stats": ("federated RIA + OWL stats", "stats", dict(pruner="ria", layerwise="owl")),
    "ria-owl-dsnot-stats": (
        "federated RIA + OWL + DSnoT stats", "stats",
        dict(pruner="ria", layerwise="owl", refine="dsnot"),
    ),
    "ria-dsnot-stats": ("federated RIA + DSnoT stats", "stats", dict(pruner="ria", refine="dsnot")),
    "wanda-owl-stats": ("federated Wanda + OWL stats", "stats", dict(layerwise="owl")),
    "ria-masks": ("FedPrLLM RIA masks", "masks-local", dict(pruner="ria")),
}  # fmt: skip
COLUMNS = ["0.5", "2:4", "0.6", "0.7", "4:8"]
TARGETS = {"0.5": 1 / 0.95, "0.6": 1 / 0.70, "0.7": 2.0, "2:4": 1 / 0.85}  # central / best


def column_pruning(column: str) -> dict[str, Any]:
    if ":" in column:
        return {"sparsity": 0.5, "sparsity_type": column}
    return {"sparsity": float(column)}


def applicable(changes: dict[str, Any], column: str) -> bool:
    """OWL and DSnoT are unstructured only (refused with N:M by the configuration)."""
    return ":" not in column or not ({"layerwise", "refine"} & set(changes))


class Table:
    """The pipeline, the shared calibrations and the cells."""

    def __init__(self, args: argparse.Namespace, rows: Rows) -> None:
        self.args, self.rows = args, rows
        self.base = RunConfig(
            model=args.model, device=args.device, seed=args.seed,
            data=DataConfig(clients=8, split="iid", samples_per_client=args.budget // 8,
                            seqlen=args.seqlen, eval_windows=args.eval_windows),
            pruning=PruningConfig(),
        )  # fmt: skip
        self._pipe: Pipeline | None = None
        self._stats: dict[bool, Any] = {}
        self._client_stats: list[dict[str, Any]] | None = None

    @property
    def pipe(self) -> Pipeline:
        if self._pipe is None:
            bench = Workbench(self.args.model, self.args.device)
            self._pipe = Pipeline(self.base, bench=bench)
        return self._pipe

    def config(self, column: str, changes: dict[str, Any], **more: Any) -> RunConfig:
        return variant(self.base, **column_pruning(column), **changes, **more)

    def evaluate(self, masks: dict[str, np.ndarray]) -> float:
        return self.pipe.evaluate("cell", masks)[0]

    def central(self, column: str, changes: dict[str, Any]) -> dict[str, Any]:
        masks = self.pipe.centralized(self.config(column, changes))
        return {"ppl": self.evaluate(masks)}

    def masks_seq(self, column: str, changes: dict[str, Any]) -> dict[str, Any]:
        result = self.pipe.fedprllm(self.config(column, changes))
        uploads = result.protocol["uplink_bytes_per_client"].values()
        return {"ppl": self.evaluate(result.masks), "upload_bytes_per_client": mean(uploads)}

    def stats_round(self, first_moment: bool) -> Any:
        """One real stats round (one-shot; DSnoT's first moments when asked): the server."""
        if first_moment not in self._stats:
            changes = dict(pruner="ria", refine="dsnot") if first_moment else {}
            config = self.config("0.5", changes, aggregate="stats", calibration="one-shot")
            started = time.perf_counter()
            result = self.pipe.fedprllm(config)
            seconds = time.perf_counter() - started
            uploads = result.protocol["uplink_bytes_per_client"].values()
            self._stats[first_moment] = (result, mean(uploads), seconds, config)
        return self._stats[first_moment]

    def stats(self, column: str, changes: dict[str, Any]) -> dict[str, Any]:
        first_moment = changes.get("refine") == "dsnot"
        result, upload, seconds, run_config = self.stats_round(first_moment)
        server, p = result.server, self.config(column, changes).pruning
        method, bench = PruneMethod.of(p), self.pipe.bench
        weights = {layer.name: layer.module.weight.data for layer in bench.layers}
        d = self.base.data
        contributors = server.contributors[-1]
        tokens = contributors * d.samples_per_client * d.seqlen
        sparsity: Any = p.sparsity
        if method.layerwise == "owl":
            block_of = {layer.name: layer.block for layer in bench.layers}
            sparsity = owl_stats_sparsities(method, server.stats_groups, server.stats_totals,
                                            tokens, weights, block_of, p.sparsity)  # fmt: skip
        masks = stats_masks(server.stats_groups, server.stats_totals, tokens, weights, sparsity,
                            method, contributors * d.samples_per_client)  # fmt: skip
        if PruneMethod.of(run_config.pruning) == method and p.sparsity == 0.5:
            assert all(np.array_equal(masks[n], result.masks[n]) for n in masks)
        return {"ppl": self.evaluate(masks), "upload_bytes_per_client": upload,
                "stats_round_seconds": round(seconds, 1)}  # fmt: skip

    def client_stats(self) -> list[dict[str, Any]]:
        """Every client's own one-shot statistics (computed once, reused by every column)."""
        if self._client_stats is None:
            answers = self.pipe._command("samples", {})
            self._client_stats = []
            for client in sorted(answers):
                tokens = torch.from_numpy(answers[client].arrays["tokens"])
                _, stats = local_masks(self.pipe.bench.model, tokens, 0.5, "wanda", "one-shot",
                                       self.base.pruning.batch_size)  # fmt: skip
                self._client_stats.append(stats)
        return self._client_stats

    def masks_local(self, column: str, changes: dict[str, Any]) -> dict[str, Any]:
        p = self.config(column, changes).pruning
        method, bench = PruneMethod.of(p), self.pipe.bench
        weights = {layer.name: layer.module.weight.data for layer in bench.layers}
        counts = {name: np.zeros(bench.shapes[name], dtype=np.int64) for name in weights}
        for stats in self.client_stats():
            local = block_masks(method, weights, stats, dict.fromkeys(weights, p.sparsity))
            for name, mask in local.items():
                counts[name] += mask.numpy()
        rule = MaskRule(p.sparsity, "layer", self.base.seed, n_m=method.n_m)
        masks, _ = global_masks(rule, counts, bench.shapes, bench.index, len(self.client_stats()))
        return {"ppl": self.evaluate(masks)}

    def cell(self, row: str, column: str) -> None:
        _label, kind, changes = ROWS[row]
        if not applicable(changes, column):
            return
        key = f"{row}/{column}"
        reused = reuse_paper_table(self.args, row, column)
        if reused is not None and key not in self.rows.rows:
            self.rows.rows[key] = reused
            write_json(self.rows.path, self.rows.rows)
        recipes: dict[str, Callable[[], dict[str, Any]]] = {
            "central": lambda: self.central(column, changes),
            "masks-seq": lambda: self.masks_seq(column, changes),
            "stats": lambda: self.stats(column, changes),
            "masks-local": lambda: self.masks_local(column, changes),
        }
        self.rows.get(key, recipes[kind])


PAPER_KEYS = {"wanda-central": "centralized", "wanda-masks": "fedprllm layer one-shot"}


def reuse_paper_table(args: argparse.Namespace, row: str, column: str) -> dict[str, Any] | None:
    """The paper table's cell for the same setting (same model, data, evaluation, seed)."""
    folder = Path("experiments/results/paper_table")
    if row not in PAPER_KEYS or ":" in column or not (folder / "paper_table.json").is_file():
        return None
    settings = json.loads((folder / "paper_table.json").read_text())["settings"]
    same = {"model": args.model, "budget": args.budget, "seqlen": args.seqlen,
            "eval_windows": args.eval_windows, "protocol": "plaintext", "seed": args.seed}  # fmt: skip
    if any(settings.get(k) != v for k, v in same.items()):
        return None
    found = json.loads((folder / "rows.json").read_text()).get(f"iid-8-{column}/{PAPER_KEYS[row]}")
    return None if found is None else {**found, "source": "experiments/results/paper_table"}


FRONTIER_LAMBDAS = (0.04, 0.08, 0.12)
FRONTIER_MS = (3.0, 5.0, 10.0)


def frontier(table: Table, rows: Rows, columns: list[str]) -> dict[str, Any]:
    """OWL's (lambda, M) and DSnoT on Wanda's summed statistics, selected on validation windows
    (the next `eval_windows` held-out windows, disjoint from the test windows), then the selected
    setting measured on the test windows. Every candidate is a stats-mode mask (exact)."""
    from fedprllm_secure.pipeline.texts import eval_text

    bench, args = table.pipe.bench, table.args
    test = list(bench.windows)
    bench.use_eval_text(eval_text(table.base.data), args.seqlen, 2 * args.eval_windows)
    validation = bench.windows[len(test) :]
    if len(validation) < len(test):
        raise SystemExit("not enough held-out text for validation windows")
    chosen: dict[str, Any] = {}
    for column in (c for c in columns if ":" not in c):
        room = min(float(column), 1 - float(column)) / 2
        candidates: dict[str, dict[str, Any]] = {
            f"owl l={lam} M={m:g}": dict(layerwise="owl", owl_lambda=lam, owl_m=m)
            for lam in FRONTIER_LAMBDAS if lam < room for m in FRONTIER_MS
        }  # fmt: skip
        candidates["dsnot"] = dict(refine="dsnot")
        candidates["owl + dsnot"] = dict(layerwise="owl", refine="dsnot")
        bench.windows = validation
        for name, changes in candidates.items():
            rows.get(f"frontier-val/{column}/{name}", partial(table.stats, column, changes))
        scores = {n: rows.rows[f"frontier-val/{column}/{n}"]["ppl"] for n in candidates}
        best = min(scores, key=scores.__getitem__)
        bench.windows = test
        rows.get(f"frontier-test/{column}/{best}", partial(table.stats, column, candidates[best]))
        chosen[column] = {"setting": best, "changes": candidates[best],
                          "test_ppl": rows.rows[f"frontier-test/{column}/{best}"]["ppl"]}  # fmt: skip
    bench.windows = test
    return chosen


def ppl_text(value: float) -> str:
    return f"{value:.2f}" if value < 1e4 else f"{value:.1e}"


def comparisons(rows: Rows) -> dict[str, Any]:
    """Per column: centralized Wanda, the best federated cell, the ratio and the target."""
    out: dict[str, Any] = {}
    for column in COLUMNS:
        central = rows.rows.get(f"wanda-central/{column}")
        federated = {
            row: rows.rows[f"{row}/{column}"]["ppl"]
            for row in ROWS
            if row != "wanda-central" and f"{row}/{column}" in rows.rows
        }
        if central is None or not federated:
            continue
        best = min(federated, key=federated.__getitem__)
        ratio = central["ppl"] / federated[best]
        target = TARGETS.get(column)
        out[column] = {
            "centralized_wanda": central["ppl"], "best_federated": best,
            "best_federated_ppl": federated[best], "centralized_over_best": ratio,
            "target_ratio": target, "met": None if target is None else ratio >= target,
        }  # fmt: skip
    return out


def markdown(rows: Rows, args: argparse.Namespace) -> str:
    lines = [
        f"Perplexity on held-out text ({args.eval_windows} windows x {args.seqlen} tokens), "
        f"model `{args.model}`, 8 IID clients x {args.budget // 8} windows of {args.seqlen} "
        f"tokens, `plaintext`, seed {args.seed}. Stats rows: one-shot calibration.",
        "",
        "| method | "
        + " | ".join(f"{float(c):.0%}" if ":" not in c else c for c in COLUMNS)
        + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for row, (label, _kind, changes) in ROWS.items():
        cells = []
        for column in COLUMNS:
            found = rows.rows.get(f"{row}/{column}")
            cells.append(
                "n/a" if not applicable(changes, column) else "-" if found is None
                else ppl_text(found["ppl"])
            )  # fmt: skip
        if any(c not in ("-", "n/a") for c in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "| column | centralized Wanda | best federated | ratio | target | met |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for column, c in comparisons(rows).items():
        target = "-" if c["target_ratio"] is None else f"{c['target_ratio']:.3f}"
        lines.append(
            f"| {column} | {ppl_text(c['centralized_wanda'])} | {ROWS[c['best_federated']][0]} "
            f"{ppl_text(c['best_federated_ppl'])} | {c['centralized_over_best']:.3f} | {target} | "
            f"{'-' if c['met'] is None else 'yes' if c['met'] else 'no'} |"
        )
    frontier_keys = sorted(k for k in rows.rows if k.startswith("frontier-test/"))
    if frontier_keys:
        lines += ["", "Frontier: Wanda's summed statistics with OWL (lambda, M) or DSnoT, the "
                  f"setting chosen on {args.eval_windows} validation windows (held out, disjoint "
                  "from the test windows), measured on the test windows:", "",
                  "| column | chosen setting | perplexity | centralized Wanda / it |",
                  "|---|---|---|---|"]  # fmt: skip
        for key in frontier_keys:
            _, column, name = key.split("/", 2)
            ppl = rows.rows[key]["ppl"]
            central = rows.rows.get(f"wanda-central/{column}", {}).get("ppl")
            ratio = "-" if central is None else f"{central / ppl:.3f}"
            lines.append(f"| {column} | Wanda + {name} | {ppl_text(ppl)} | {ratio} |")
    return "\n".join(lines) + "\n"


def bench(table: Table, out: Path) -> dict[str, Any]:
    """One client's extra calibration time and upload per method, against Wanda's, measured side
    by side on the same client's windows."""
    pipe = table.pipe
    answers = pipe._command("samples", {})
    tokens = torch.from_numpy(answers[min(answers)].arrays["tokens"])
    model, batch = pipe.bench.model, table.base.pruning.batch_size
    methods = {
        "wanda": PruneMethod(), "ria": PruneMethod(pruner="ria"),
        "ria 2:4": PruneMethod(pruner="ria", sparsity_type="2:4"),
        "ria + owl": PruneMethod(pruner="ria", layerwise="owl"),
        "ria + dsnot": PruneMethod(pruner="ria", refine="dsnot"),
    }  # fmt: skip
    seconds: dict[str, float] = {}
    for name, method in methods.items():
        started = time.perf_counter()
        local_masks(model, tokens, 0.5, calibration="one-shot", batch_size=batch, method=method)
        seconds[name] = time.perf_counter() - started
    uploads = {kind: table.stats_round(kind)[1] for kind in (False, True)}
    report = {
        "client_local_masks_seconds": seconds,
        "client_time_over_wanda": {k: v / seconds["wanda"] for k, v in seconds.items()},
        "stats_upload_bytes_per_client": {"wanda/ria/owl": uploads[False], "dsnot": uploads[True]},
        "stats_upload_over_wanda": {"dsnot": uploads[True] / uploads[False]},
        "windows": list(tokens.shape),
        "note": "masks mode: one client's one-shot local masks (its whole client time); stats "
        "mode: RIA/OWL/N:M cost the client nothing extra (server-side), DSnoT adds two sums.",
    }
    write_json(out / "bench.json", report)
    print(json.dumps(report, indent=1), flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", type=Path, default=Path("experiments/results/pruner_table"))
    parser.add_argument("--budget", type=int, default=32, help="calibration windows in all")
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--eval-windows", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--columns", nargs="+", default=COLUMNS, choices=COLUMNS)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--bench", action="store_true", help="also the client time/upload bench")
    parser.add_argument("--frontier", action="store_true", help="also OWL/DSnoT settings")
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.budget, args.seqlen, args.eval_windows = 8, 32, 2
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = Rows(args.out / "rows.json")
    table = Table(args, rows)
    started = time.perf_counter()
    for column in args.columns:
        print(f"column {column}", flush=True)
        for row in args.rows:
            table.cell(row, column)
    if args.bench:
        bench(table, args.out)
    chosen = frontier(table, rows, args.columns) if args.frontier else None
    if chosen is not None:
        write_json(args.out / "frontier.json", chosen)
        print(json.dumps(chosen, indent=1), flush=True)
    text = markdown(rows, args)
    (args.out / "pruner_table.md").write_text(text)
    write_json(
        args.out / "pruner_table.json",
        {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
         "rows": rows.rows, "comparison_with_targets": comparisons(rows)},
    )  # fmt: skip
    print(text)
    print(f"this run: {(time.perf_counter() - started) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
