"""The public architectural clip bound vs the public-text clip (protocols/distributed_dp.md).

    python experiments/ddp_architecture_bound.py   # needs experiments/ddp_sweep.py cache (8x32x512)

A post-RMSNorm input x = g * h / rms(h) has ||x||^2 <= max_j g_j^2 d per token, so a window of T
tokens has statistics norm <= T max_j g_j^2 d: a clip from the architecture alone. Printed: its
ratio to the median per-window norm of public text, for the q/k/v and gate/up inputs (o_proj and
down_proj read unnormalised inputs: no such bound). Writes experiments/results/ddp/architecture_bound.json.
"""

import json
import time

import numpy as np
import torch

torch.set_num_threads(1)
t = time.time()
from fedprllm_secure.model import load_model

m = load_model("smollm2-135m", "cpu").model
print("load", time.time() - t)
ref = np.load("experiments/cache/ddp/8x32x512/reference.npz")
groups = json.load(open("experiments/cache/ddp/8x32x512/groups.json"))
T = 512
rows = []
for g in groups:
    leader = g[0]
    if not (leader.endswith("q_proj") or leader.endswith("gate_proj")):
        continue
    b = int(leader.split(".")[2])
    layer = m.model.layers[b]
    norm = layer.input_layernorm if leader.endswith("q_proj") else layer.post_attention_layernorm
    w = norm.weight.detach().double().numpy()
    d = w.size
    bound = T * (w**2).max() * d
    norms = np.linalg.norm(ref[leader].astype(np.float64), axis=1)
    rows.append((leader, bound, float(np.median(norms)), bound / float(np.median(norms))))
r = np.array([x[3] for x in rows])
print(
    len(rows),
    "ratio bound/median: min %.1f median %.1f max %.1f" % (r.min(), np.median(r), r.max()),
)
json.dump(
    {
        "groups": len(rows),
        "ratio_min": float(r.min()),
        "ratio_median": float(np.median(r)),
        "ratio_max": float(r.max()),
        "definition": "public architectural bound T * max_j g_j^2 * d on a post-RMSNorm input window's statistics norm (T = 512 tokens) over the median per-window norm on public text, q/k/v and gate/up inputs of SmolLM2-135M",
        "command": "python experiments/ddp_architecture_bound.py",
    },
    open("experiments/results/ddp/architecture_bound.json", "w"),
    indent=1,
)
