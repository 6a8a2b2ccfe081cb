"""Noise on the summed statistics: distributed DP (inside the secure sum) vs local DP, same budget.

    python experiments/ddp_noise_scale.py            # writes experiments/results/ddp_noise_scale.json

For n = 8 and 64 clients, each with 32 calibration windows whose per-window statistics vector has
d = 3264 entries (one SmolLM2-135M block: 576 + 576 + 576 + 1536 distinct inputs), clip C = 1,
replace-one-window adjacency, delta = 1e-5, 30 releases (sequential: one per block) or 1
(one-shot), at eps 1, 4 and 8, one release is run end to end and the error of the server's sum
(decoded sum, before the release floor, minus the exact clipped sum) is measured:

* local: every client adds N(0, (sigma sqrt(2) C)^2) to its own clipped sum (today's
  `privacy.statistics`, opacus' RDP accountant); the server sums n noisy vectors;
* distributed (`skellam`, `ddgauss`): every client clips, scales, rounds, adds its integer share
  calibrated for min_survivors = n (and n * 3/4, a dropout margin), encodes mod 2^b; the
  residues are summed exactly and decoded (`privacy.distributed_dp`).

Printed side by side: the measured std of the sum's error for each, their ratio (expected
~ sqrt(n): local noise adds up over n clients, distributed noise is the central mechanism's once),
the analytic stds and the modulus bits per entry. Noise from a seeded source (repeatable numbers;
the experiment measures scale, it protects nothing).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

from fedprllm_secure.outputs import write_json
from fedprllm_secure.privacy import accounting
from fedprllm_secure.privacy import distributed_accounting as dda
from fedprllm_secure.privacy import distributed_dp as ddp
from fedprllm_secure.privacy import distributed_encoding as de
from fedprllm_secure.privacy.sampling import standard_normal
from fedprllm_secure.randomness import SeededRandomSource

DIMENSION, WINDOWS, CLIP, DELTA = 3264, 32, 1.0, 1e-5
RESULT = Path(__file__).parent / "results" / "ddp_noise_scale.json"


def client_windows(rng: np.random.Generator, clients: int) -> list[np.ndarray]:
    """Non-negative per-window statistics spanning many octaves (like squared activations)."""
    spread = np.exp(rng.normal(0.0, 2.0, DIMENSION))
    return [rng.exponential(1.0, (WINDOWS, DIMENSION)) * spread for _ in range(clients)]


def local_error(windows: list[np.ndarray], epsilon: float, releases: int, source) -> dict:
    sigma = accounting.get("rdp").noise_multiplier(epsilon, DELTA, releases)
    std = sigma * math.sqrt(2.0) * CLIP
    noise = sum(std * standard_normal(source.child(str(i)), DIMENSION) for i in range(len(windows)))
    return {
        "noise_multiplier": sigma,
        "analytic_sum_std": std * math.sqrt(len(windows)),
        "measured_sum_std": float(np.std(noise)),
    }


def distributed_error(
    windows: list[np.ndarray], mechanism: str, epsilon: float, releases: int, survivors: int, source
) -> dict:
    n = len(windows)
    plan = ddp.plan_release(
        epsilon, DELTA, releases, CLIP, DIMENSION, WINDOWS, survivors, n, mechanism
    )
    residues = [
        ddp.client_upload(c, plan, source.child(f"client-{i}")) for i, c in enumerate(windows)
    ]
    truth = sum(de.clip_windows(client, CLIP).sum(axis=0) for client in windows)
    decoded = de.decode_sum(np.sum(np.stack(residues), axis=0), plan.encoding)
    return {
        "share_variance": plan.noise.share_variance,
        "epsilon_certified": plan.noise.epsilon(),
        "analytic_sum_std": plan.noise.sum_std(n) / plan.encoding.gamma,
        "measured_sum_std": float(np.std(decoded - truth)),
        "modulus_bits": plan.encoding.modulus_bits,
        "gamma": plan.encoding.gamma,
    }


def main() -> int:
    rng = np.random.default_rng(2026)
    source = SeededRandomSource("experiments/ddp_noise_scale")
    rows = []
    print(
        f"{'n':>3} {'rel':>3} {'eps':>4} {'mech':>8} {'m_min':>5} {'local sd':>9} "
        f"{'dist sd':>9} {'ratio':>6} {'sqrt n':>6} {'bits':>4} {'s':>5}"
    )
    for clients in (8, 64):
        windows = client_windows(rng, clients)
        for releases in (30, 1):
            for epsilon in (1.0, 4.0, 8.0):
                local = local_error(windows, epsilon, releases, source.child("local"))
                for mechanism in dda.MECHANISMS:
                    for survivors in (clients, clients * 3 // 4):
                        start = time.perf_counter()
                        dist = distributed_error(
                            windows,
                            mechanism,
                            epsilon,
                            releases,
                            survivors,
                            source.child(f"{mechanism}/{survivors}"),
                        )
                        ratio = local["measured_sum_std"] / dist["measured_sum_std"]
                        rows.append(
                            {
                                "clients": clients,
                                "releases": releases,
                                "epsilon": epsilon,
                                "delta": DELTA,
                                "mechanism": mechanism,
                                "min_survivors": survivors,
                                "local": local,
                                "distributed": dist,
                                "measured_ratio": ratio,
                                "seconds": time.perf_counter() - start,
                            }
                        )
                        print(
                            f"{clients:>3} {releases:>3} {epsilon:>4g} {mechanism:>8} "
                            f"{survivors:>5} {local['measured_sum_std']:>9.3f} "
                            f"{dist['measured_sum_std']:>9.3f} {ratio:>6.2f} "
                            f"{math.sqrt(clients):>6.2f} {dist['modulus_bits']:>4} "
                            f"{rows[-1]['seconds']:>5.1f}",
                            flush=True,
                        )
    write_json(
        RESULT,
        {
            "command": "python experiments/ddp_noise_scale.py",
            "dimension": DIMENSION,
            "windows_per_client": WINDOWS,
            "clip": CLIP,
            "adjacency": "replace one calibration window",
            "rows": rows,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
