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
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fedprllm_secure import data
from fedprllm_secure.config import DataConfig
from fedprllm_secure.outputs import write_json
from fedprllm_secure.pipeline.dp_reference import WindowRecorder, reference_statistics
from fedprllm_secure.pipeline.server_step import stats_masks
from fedprllm_secure.pipeline.texts import client_texts, eval_text
from fedprllm_secure.pipeline.workbench import Workbench
from fedprllm_secure.privacy import distributed_encoding as de
from fedprllm_secure.privacy import distributed_stats as ds
from fedprllm_secure.privacy.accounting import get
from fedprllm_secure.privacy.sampling import standard_normal
from fedprllm_secure.privacy.statistics import FLOOR_STDS
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


def client_statistics(bench: Workbench, windows: torch.Tensor, batch: int) -> tuple[dict, list]:
    """Every block's per-window statistics per input-group leader (dense, one-shot) and groups."""
    from fedprllm_secure.client.calibrate import BlockwiseCalibration, shared_input_groups

    recorder = WindowRecorder()
    walk = BlockwiseCalibration(bench.model, windows, batch, recorder)
    out, groups = {}, []
    while not walk.done:
        block, layers = walk.index, walk.layers
        stats = walk.statistics()
        recorded = recorder.take(block)
        for group in shared_input_groups(layers, stats):
            groups.append(group)
            out[group[0]] = recorded[group[0]].astype(np.float32)
        walk.propagate_dense()
    return out, groups


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
        stats, groups = client_statistics(bench, windows, args.batch)
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


def distributed(clients: list[dict], spec: ds.ReleaseSpec, v: dict, windows: int) -> tuple:
    n = len(clients)
    m = v["m"] or n
    plan = ds.plan_for(v["eps"], DELTA, 1, spec.clip, spec.dimension, windows, m, n,
                       v["mechanism"], v["unit"])  # fmt: skip
    sums: dict[str, np.ndarray] = {}
    exact = np.zeros(spec.dimension)
    for per_window in clients:
        chunks = ds.client_chunks(per_window, spec, plan, SystemRandomSource())
        for name, values in chunks.items():
            sums[name] = sums.get(name, 0) + values.astype(np.uint64)
        stacked = spec.stack(per_window)
        if v["unit"] == "client":
            stacked = stacked.sum(axis=0, keepdims=True)
        exact += de.clip_windows(stacked, spec.clip).sum(axis=0)
    count = ds.limbs(plan)
    joined = np.concatenate([
        ds.fixed_point.from_limbs([sums[ds.chunk_name(leader, k)] for k in range(count)])
        for leader in spec.leaders
    ])  # fmt: skip
    error = de.decode_sum(joined, plan.encoding) - exact
    totals = ds.server_totals(sums, spec, plan, n)
    noise = {"measured_sum_std": float(error.std()),
             "plan_sum_std": plan.noise.sum_std(n) / plan.encoding.gamma,
             "modulus_bits": plan.encoding.modulus_bits, "epsilon_spent": plan.noise.epsilon(),
             "epsilon_if_one_share_is_seen": plan.noise.epsilon(1)}  # fmt: skip
    return totals, noise, exact


def local(clients: list[dict], spec: ds.ReleaseSpec, v: dict) -> tuple:
    sigma = get("rdp").noise_multiplier(v["eps"], DELTA, 1)
    std = sigma * math.sqrt(2.0) * spec.clip
    total = np.zeros(spec.dimension)
    exact = np.zeros(spec.dimension)
    noise_sum = np.zeros(spec.dimension)
    for per_window in clients:
        clipped = de.clip_windows(spec.stack(per_window), spec.clip).sum(axis=0)
        noise = std * standard_normal(SystemRandomSource(), spec.dimension)
        total += np.maximum(clipped + noise, FLOOR_STDS * std)  # each client floors its release
        exact += clipped
        noise_sum += noise
    noise = {"measured_sum_std": float(noise_sum.std()), "noise_multiplier": sigma,
             "plan_sum_std": std * math.sqrt(len(clients))}  # fmt: skip
    return spec.split(total), noise, exact


def run(args: argparse.Namespace) -> None:
    out = ROOT / "results" / "ddp" / f"sweep_{setting(args)}.json"
    rows = json.loads(out.read_text())["rows"] if out.exists() else {}
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
        if v["kind"] == "nonprivate":
            totals = {k: sum(c[k].sum(axis=0) for c in clients) for k in leaders}
        elif v["kind"] == "public":  # no client data: Wanda on the public reference text
            totals = {k: reference[k].astype(np.float64).sum(axis=0) for k in leaders}
        else:
            per_unit = args.windows if v["unit"] == "client" else 1
            spec = ds.public_spec(reference, leaders, v["domain"], None, per_unit)
            if v["kind"] == "dist":
                totals, row, exact = distributed(clients, spec, v, args.windows)
            else:
                totals, row, exact = local(clients, spec, v)
            row["clip"] = spec.clip
            row["mean_exact_entry"] = float(exact.mean())
        masks = stats_masks(groups, totals, tokens, weights, SPARSITY)
        row["perplexity"] = bench.evaluate(masks)[0]
        rows[name] = row
        print(name, json.dumps(row), file=sys.stderr)
        write_json(out, {"settings": {**vars(args), "delta": DELTA, "sparsity": SPARSITY,
                                      "model": MODEL, "command": " ".join(sys.argv)},
                         "rows": rows})  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=["cache", "run"])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--split", default="iid")
    parser.add_argument("--eval-windows", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-minutes", type=float, default=15.0)
    parser.add_argument("--variants", nargs="*", default=["nonprivate"])
    args = parser.parse_args()
    (cache if args.step == "cache" else run)(args)


if __name__ == "__main__":
    main()
