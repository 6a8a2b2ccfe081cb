"""Distributed vs local DP on the stats upload, on the embedded model: eps-perplexity and noise.

    # 1. per-window statistics of every client (one-shot: dense activations), resumable:
    flock /work/heavy.lock python experiments/ddp_sweep.py cache --clients 8 --windows 32
    # 2. variants (each one: mechanism on the cached statistics -> stats masks -> perplexity):
    flock /work/heavy.lock python experiments/ddp_sweep.py run --clients 8 --windows 32 \
        --variants nonprivate dist-window-group-e4 local-window-group-e4 ...

One-shot stats calibration is one release of every block's statistics, computed from the dense
model, so a client's per-window statistics do not depend on the mechanism: they are computed
once (`cache`, `experiments/cache/`, not committed) and every variant applies its mechanism to
them exactly as the pipeline does (`privacy.distributed_stats`: public scales and clip from public
text, clip, randomized rounding, noise shares, residues mod 2^b summed exactly, decoded; local: the
`privacy.statistics` Gaussian mechanism on each client, floored, then summed), then the server's
Wanda masks (`pipeline.server_step.stats_masks`) are evaluated on held-out text.

Variant names: `nonprivate`; `public` (no client data: Wanda statistics of the public reference
text alone, the prior every normalised release falls back to); `dist-<unit>-<domain>-e<eps>[-m<survivors>][-ddgauss]`;
`local-window-<domain>-e<eps>`; unit window|client, domain raw|group|feature. delta = 1e-5.
Rows go to experiments/results/ddp/sweep_<clients>x<windows>x<seqlen>.json (one per variant,
skipped when present: resumable). Each row has the perplexity, the noise std measured on the sum
(normalised units, before the release floor) and the plan's. Noise comes from the OS CSPRNG.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fedprllm_secure import data
from fedprllm_secure.audit import noisy_stats
from fedprllm_secure.config import DataConfig
from fedprllm_secure.outputs import write_json
from fedprllm_secure.pipeline.dp_reference import reference_statistics
from fedprllm_secure.pipeline.server_step import stats_masks
from fedprllm_secure.pipeline.texts import client_texts, eval_text
from fedprllm_secure.pipeline.workbench import Workbench
from fedprllm_secure.privacy import distributed_stats as ds
from fedprllm_secure.randomness import SystemRandomSource

ROOT = Path(__file__).parent
DELTA, SPARSITY, MODEL = 1e-5, 0.5, "smollm2-135m"


def setting(args: argparse.Namespace) -> str:
    return f"{args.clients}x{args.windows}x{args.seqlen}" + (
        "" if args.split == "iid" else "-topic"
    )


def cache_dir(args: argparse.Namespace) -> Path:
    return ROOT / "cache" / "ddp" / setting(args)


def bench_for(args: argparse.Namespace) -> Workbench:
    torch.set_num_threads(1)
    bench = Workbench(MODEL, "cpu")
    bench.use_eval_text(eval_text(DataConfig()), args.seqlen, args.eval_windows)
    return bench


def cache(args: argparse.Namespace) -> None:
    folder = cache_dir(args)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    bench = bench_for(args)
    texts = client_texts(DataConfig(clients=args.clients, split=args.split), seed=0)
    if not (folder / "reference.npz").exists():
        reference, _ = reference_statistics(bench, args.seqlen, args.batch)
        np.savez(folder / "reference.npz", **reference)
    for client, text in enumerate(texts):
        path = folder / f"client{client}.npz"
        if path.exists():
            continue
        if time.perf_counter() - started > args.max_minutes * 60:
            print("time budget spent; run again to continue", file=sys.stderr)
            return
        windows = data.calibration_samples(bench.tokenizer, text, args.windows, args.seqlen)
        stats, groups = noisy_stats.window_statistics(bench, windows, args.batch)
        np.savez(path, **stats)
        (folder / "groups.json").write_text(json.dumps(groups))
        topics = list(text.topics)
        (folder / f"client{client}.json").write_text(json.dumps({"topics": topics}))
        print(f"client {client}: {time.perf_counter() - started:.0f}s", file=sys.stderr)


def load(args: argparse.Namespace) -> tuple[list[dict], dict, list]:
    folder = cache_dir(args)
    clients = []
    for c in range(args.clients):
        with np.load(folder / f"client{c}.npz") as z:
            clients.append({k: z[k].astype(np.float64) for k in z.files})
    with np.load(folder / "reference.npz") as z:
        reference = {k: z[k] for k in z.files}
    return clients, reference, json.loads((folder / "groups.json").read_text())


def parse(name: str) -> dict:
    parts = name.split("-")
    kind = parts[0]
    if kind in ("nonprivate", "public"):
        return {"kind": kind}
    spec = {"kind": kind, "unit": parts[1], "domain": parts[2], "eps": float(parts[3][1:])}
    spec["m"] = next((int(p[1:]) for p in parts[4:] if p.startswith("m")), None)
    spec["mechanism"] = "ddgauss" if "ddgauss" in parts else "skellam"
    return spec


def run(args: argparse.Namespace) -> None:
    out = ROOT / "results" / "ddp" / f"sweep_{setting(args)}.json"
    stored = json.loads(out.read_text()) if out.exists() else {}
    rows, settings = stored.get("rows", {}), stored.get("settings", {})
    todo = [v for v in args.variants if v not in rows]
    if not todo:
        return
    started = time.perf_counter()
    clients, reference, groups = load(args)
    leaders = [g[0] for g in groups]
    bench = bench_for(args)
    weights = {layer.name: layer.module.weight.data for layer in bench.layers}
    tokens = args.clients * args.windows * args.seqlen
    if "dense" not in rows:
        rows["dense"] = {"perplexity": bench.evaluate()[0]}
    for name in todo:
        if time.perf_counter() - started > args.max_minutes * 60:
            print("time budget spent; run again to continue", file=sys.stderr)
            break
        v, row = parse(name), {}
        source = SystemRandomSource()
        if v["kind"] == "nonprivate":
            totals = noisy_stats.exact_totals(clients, leaders)
        elif v["kind"] == "public":  # no client data: Wanda on the public reference text
            totals = noisy_stats.public_totals(reference, leaders)
        else:
            per_unit = args.windows if v["unit"] == "client" else 1
            spec = ds.public_spec(reference, leaders, v["domain"], None, per_unit)
            budget = {"epsilon": v["eps"], "delta": DELTA, "unit": v["unit"],
                      "mechanism": v["mechanism"], "min_survivors": v["m"]}  # fmt: skip
            mechanism = noisy_stats.distributed_totals if v["kind"] == "dist" else \
                noisy_stats.local_totals  # fmt: skip
            totals, row = mechanism(clients, spec, budget, source)
        masks = stats_masks(groups, totals, tokens, weights, SPARSITY)
        row["perplexity"] = bench.evaluate(masks)[0]
        rows[name] = row
        print(name, json.dumps(row), file=sys.stderr)
        commands = settings.get("commands", [])
        command = "python " + " ".join(sys.argv)
        settings = {**vars(args), "delta": DELTA, "sparsity": SPARSITY, "model": MODEL,
                    "commands": commands + [command] * (command not in commands)}  # fmt: skip
        settings.pop("variants")
        write_json(out, {"settings": settings, "rows": rows})


def attack(args: argparse.Namespace) -> None:
    """The topic attacker on the released aggregate under client-level distributed DP.

    Worst case for the target: the attacker knows every other client's contribution and
    subtracts it, so it holds the target's clipped (normalised) statistics plus the sum's noise
    (Skellam of the plan's total variance at m = n, plus the rounding's). It labels the target by
    the nearest topic centroid of the other clients' exact contributions (leave-one-out, label =
    a client's first topic), `--draws` noise draws per target. eps = inf: no noise (the
    attacker's power)."""
    from fedprllm_secure.audit.leakage import nearest_centroid_attack
    from fedprllm_secure.privacy import distributed_encoding as de
    from fedprllm_secure.privacy.discrete_noise import skellam

    out = ROOT / "results" / "ddp" / f"topic_attack_{setting(args)}.json"
    clients, reference, groups = load(args)
    leaders = [g[0] for g in groups]
    folder = cache_dir(args)
    topics = [json.loads((folder / f"client{c}.json").read_text())["topics"][0]
              for c in range(args.clients)]  # fmt: skip
    spec = ds.public_spec(reference, leaders, "group", None, args.windows)
    vectors = [de.clip_windows(spec.stack(c).sum(axis=0, keepdims=True), spec.clip)[0]
               for c in clients]  # fmt: skip
    rows = {}
    for eps in args.eps:
        noise_std = 0.0
        if math.isfinite(eps):
            plan = ds.plan_for(eps, DELTA, 1, spec.clip, spec.dimension, args.windows,
                               args.clients, args.clients, "skellam", "client")  # fmt: skip
            noise_std = plan.noise.sum_std(args.clients) / plan.encoding.gamma
        correct = total = 0
        for target, _ in itertools.product(range(args.clients), range(args.draws)):
            view = vectors[target]
            if noise_std:
                variance = (noise_std * plan.encoding.gamma) ** 2
                draws = skellam(SystemRandomSource(), variance, spec.dimension)
                view = view + draws / plan.encoding.gamma
            others = [c for c in range(args.clients) if c != target]
            result = nearest_centroid_attack(
                [vectors[c] for c in others], [topics[c] for c in others], [view], [topics[target]]
            )
            correct, total = correct + result.correct, total + 1
        from fedprllm_secure.audit.leakage import accuracy_interval

        low, high = accuracy_interval(correct, total)
        chance = 1 / len(set(topics))
        rows[f"{eps:g}"] = {"accuracy": correct / total, "ci95": [low, high], "chance": chance,
                            "noise_std_on_sum": noise_std, "targets": total}  # fmt: skip
        print(eps, rows[f"{eps:g}"], file=sys.stderr)
    write_json(out, {"settings": {**vars(args), "delta": DELTA, "model": MODEL,
                                  "command": "python " + " ".join(sys.argv)},
                     "topics": sorted(set(topics)), "rows": rows})  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=["cache", "run", "attack"])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--split", default="iid")
    parser.add_argument("--eval-windows", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-minutes", type=float, default=15.0)
    parser.add_argument("--variants", nargs="*", default=["nonprivate"])
    parser.add_argument("--draws", type=int, default=1, help="attack: noise draws per target")
    parser.add_argument("--eps", nargs="*", type=float, default=[1, 4, 16, 64, 256, math.inf])
    args = parser.parse_args()
    {"cache": cache, "run": run, "attack": attack}[args.step](args)


if __name__ == "__main__":
    main()
