"""The public architectural clip bound vs the public-text clip (protocols/distributed_dp.md).

    python experiments/ddp_architecture_bound.py   # needs `ddp_sweep.py cache` (8x32x512) first

A post-RMSNorm input x = g * h / rms(h) has ||x||^2 <= max_j g_j^2 d per token, so the statistics
of a window of T tokens have norm <= T max_j g_j^2 d: a clip from the architecture alone. Printed:
its ratio to the median per-window norm of public text, for the q/k/v and gate/up inputs (o_proj
and down_proj read unnormalised inputs: no such bound). Writes
experiments/results/ddp/architecture_bound.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fedprllm_secure.model import load_model
from fedprllm_secure.outputs import write_json

ROOT = Path(__file__).parent
CACHE = ROOT / "cache" / "ddp" / "8x32x512"
TOKENS = 512


def main() -> None:
    torch.set_num_threads(1)
    model = load_model("smollm2-135m", "cpu").model
    reference = np.load(CACHE / "reference.npz")
    ratios = []
    for group in json.loads((CACHE / "groups.json").read_text()):
        leader = group[0]
        if not leader.endswith(("q_proj", "gate_proj")):
            continue
        layer = model.model.layers[int(leader.split(".")[2])]
        attention = leader.endswith("q_proj")
        norm = layer.input_layernorm if attention else layer.post_attention_layernorm
        weight = norm.weight.detach().double().numpy()
        bound = TOKENS * float((weight**2).max()) * weight.size
        median = float(np.median(np.linalg.norm(reference[leader].astype(np.float64), axis=1)))
        ratios.append(bound / median)
    r = np.array(ratios)
    print(f"{r.size} groups, bound / median public norm: min {r.min():.1f}, "
          f"median {np.median(r):.1f}, max {r.max():.1f}")  # fmt: skip
    write_json(ROOT / "results" / "ddp" / "architecture_bound.json", {
        "groups": int(r.size), "ratio_min": float(r.min()), "ratio_median": float(np.median(r)),
        "ratio_max": float(r.max()),
        "definition": "public architectural bound T max_j g_j^2 d of a post-RMSNorm input "
        "window's statistics norm (T = 512 tokens) over the median per-window norm of public "
        "text; q/k/v and gate/up inputs of SmolLM2-135M",
        "command": "python experiments/ddp_architecture_bound.py",
    })  # fmt: skip


if __name__ == "__main__":
    main()
