"""Stats-mode releases under DP noise, from per-window statistics (the audit and the sweeps).

One-shot stats calibration releases every block's statistics of the dense model once, so a
client's per-window statistics do not depend on the mechanism: `window_statistics` computes them
once and each mechanism is applied to them as the pipeline does (`privacy.distributed_stats`):

* `distributed_totals`: public scales and clip, clip, randomized rounding, each client's noise
  share, residues mod 2^b, summed entry by entry (what every secure-sum protocol returns: the
  exact sum), decoded and floored by the server;
* `local_totals`: `privacy.statistics`' Gaussian mechanism on each client (floored per client,
  as a client releases it), then summed: local noise at the same budget and clip;
* `public_totals`: no client data, the public reference text's statistics (the prior a
  normalised release falls back to where the noise dominates).

Each returns (totals per group leader, a report with the noise std measured on the sum in
normalised units before the floor, and the plan's).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..client import fixed_point
from ..client.calibrate import BlockwiseCalibration, shared_input_groups
from ..pipeline.dp_reference import WindowRecorder
from ..pipeline.workbench import Workbench
from ..privacy import distributed_encoding as encoding
from ..privacy import distributed_stats as ds
from ..privacy.accounting import get
from ..privacy.sampling import standard_normal
from ..privacy.statistics import FLOOR_STDS
from ..randomness import RandomSource

PerWindow = Mapping[str, np.ndarray]  # leader -> [windows, features]


def window_statistics(
    bench: Workbench, samples: torch.Tensor, batch_size: int
) -> tuple[dict[str, np.ndarray], list[list[str]]]:
    """Every block's per-window statistics per input-group leader (dense, one-shot) and the
    input groups in order."""
    recorder = WindowRecorder()
    walk = BlockwiseCalibration(bench.model, samples, batch_size, recorder)
    out: dict[str, np.ndarray] = {}
    groups: list[list[str]] = []
    while not walk.done:
        block, layers = walk.index, walk.layers
        stats = walk.statistics()
        recorded = recorder.take(block)
        for group in shared_input_groups(layers, stats):
            groups.append(group)
            out[group[0]] = recorded[group[0]].astype(np.float32)
        walk.propagate_dense()
    return out, groups


def _clipped_sum(clients: Sequence[PerWindow], spec: ds.ReleaseSpec, unit: str) -> np.ndarray:
    total = np.zeros(spec.dimension)
    for per_window in clients:
        stacked = spec.stack(per_window)
        if unit == "client":
            stacked = stacked.sum(axis=0, keepdims=True)
        total += encoding.clip_windows(stacked, spec.clip).sum(axis=0)
    return total


def distributed_totals(
    clients: Sequence[PerWindow],
    spec: ds.ReleaseSpec,
    budget: Mapping[str, Any],
    source: RandomSource,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The server's totals of one distributed release; `budget`: epsilon, delta, unit,
    mechanism, min_survivors (None: every client)."""
    n = len(clients)
    windows = int(np.asarray(next(iter(clients[0].values()))).shape[0])
    plan = ds.plan_for(
        float(budget["epsilon"]), float(budget["delta"]), 1, spec.clip, spec.dimension, windows,
        int(budget.get("min_survivors") or n), n, budget["mechanism"], budget["unit"],
    )  # fmt: skip
    sums: dict[str, np.ndarray] = {}
    for index, per_window in enumerate(clients):
        chunks = ds.client_chunks(per_window, spec, plan, source.child(f"client-{index}"))
        for name, values in chunks.items():
            sums[name] = sums.get(name, 0) + values.astype(np.uint64)
    count = ds.limbs(plan)
    joined = np.concatenate(
        [fixed_point.from_limbs([sums[ds.chunk_name(k, i)] for i in range(count)])
         for k in spec.leaders]
    )  # fmt: skip
    exact = _clipped_sum(clients, spec, budget["unit"])
    error = encoding.decode_sum(joined, plan.encoding) - exact
    report = {
        **plan.report(),
        "measured_sum_std": float(error.std()),
        "plan_sum_std": plan.noise.sum_std(n) / plan.encoding.gamma,
        "mean_clipped_entry": float(exact.mean()),
    }
    return ds.server_totals(sums, spec, plan, n), report


def local_totals(
    clients: Sequence[PerWindow],
    spec: ds.ReleaseSpec,
    budget: Mapping[str, Any],
    source: RandomSource,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every client's Gaussian release (one release, replace-one window, sensitivity
    sqrt(2) C, floored at one std as `privacy.statistics` does), summed by the server."""
    sigma = get(budget.get("accountant", "rdp")).noise_multiplier(
        float(budget["epsilon"]), float(budget["delta"]), 1
    )
    std = sigma * math.sqrt(2.0) * spec.clip
    total, noise_sum = np.zeros(spec.dimension), np.zeros(spec.dimension)
    for index, per_window in enumerate(clients):
        clipped = encoding.clip_windows(spec.stack(per_window), spec.clip).sum(axis=0)
        noise = std * standard_normal(source.child(f"client-{index}"), spec.dimension)
        total += np.maximum(clipped + noise, FLOOR_STDS * std)
        noise_sum += noise
    exact = _clipped_sum(clients, spec, "window")
    report = {
        "mechanism": "local Gaussian",
        "noise_multiplier": sigma,
        "measured_sum_std": float(noise_sum.std()),
        "plan_sum_std": std * math.sqrt(len(clients)),
        "clip": spec.clip,
        "mean_clipped_entry": float(exact.mean()),
    }
    return spec.split(total), report


def public_totals(reference: PerWindow, leaders: Sequence[str]) -> dict[str, np.ndarray]:
    """The public reference text's summed statistics (no client data)."""
    return {k: np.asarray(reference[k], dtype=np.float64).sum(axis=0) for k in leaders}


def exact_totals(clients: Sequence[PerWindow], leaders: Sequence[str]) -> dict[str, np.ndarray]:
    """The non-private sums (what the exact stats mode releases)."""
    return {
        k: sum(np.asarray(c[k], dtype=np.float64).sum(axis=0) for c in clients) for k in leaders
    }
