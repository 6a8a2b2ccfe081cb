"""DSnoT (Zhang et al., ICLR 2024): training-free prune-and-grow refinement of a given mask.

Per output row, the expected reconstruction error of the pruned weights is
`e = sum_{j pruned} W_ij * s_j` with `s_j` = (sum over tokens of x_j) / samples (the reference's
`sum_metric_row`). While |e| > `threshold` (and at most `max_cycles` times) one pruned weight is
regrown and one kept weight pruned, swapping one for one (the row's pruned count never changes):

* regrow: among the pruned, the largest W_ij s_j / var_j when e > 0, the smallest otherwise;
* prune: among the kept, ordered with negative W_ij s_j first by ascending Wanda score and positive
  ones last by descending Wanda score: the last when e < 0, the first otherwise;
* e += (pruned W s) - (regrown W s).

Defaults as the reference's (`max_cycle_time 50`, `update_threshold 0.1`, `pow_of_var_regrowing
1`, same-sign check off, MLP linears skipped). Deviations: var_j is the variance over all
calibration tokens (the reference averages per-sample variances, which plain per-feature sums
cannot give), and a row stops when a candidate list is exhausted (the reference would index past
it). Pure function of the weight, the mask and the per-feature sums: exact from summed statistics.
"""

from __future__ import annotations

import torch

MAX_CYCLES = 50
UPDATE_THRESHOLD = 0.1


def refines_layer(name: str) -> bool:
    """The reference's default `--skip_layer mlp`: only attention linears are refined."""
    return ".mlp." not in f".{name}"


def _kept_order(metric: torch.Tensor, wanda: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    """Column order of the prune candidates (kept entries first, pruned last)."""
    columns = metric.shape[1]
    rank = torch.argsort(torch.argsort(wanda, dim=1, stable=True), dim=1).double()
    key = torch.where(
        metric < 0, rank, torch.where(metric > 0, 3.0 * columns - rank, 1.5 * columns)
    )
    key = torch.where(pruned, torch.inf, key)
    return torch.argsort(key, dim=1, stable=True)


def dsnot_refine(
    weight: torch.Tensor,
    mask: torch.Tensor,
    x_sum_per_sample: torch.Tensor,
    sq_mean: torch.Tensor,
    variance: torch.Tensor,
    max_cycles: int = MAX_CYCLES,
    threshold: float = UPDATE_THRESHOLD,
) -> torch.Tensor:
    """The refined mask (True = pruned) of `weight` [out, in] from its initial `mask`."""
    w = weight.detach().double().cpu()
    pruned = mask.clone().cpu()
    metric = w * x_sum_per_sample.double().cpu().unsqueeze(0)
    wanda = w.abs() * sq_mean.double().cpu().clamp_min(0).sqrt().unsqueeze(0)
    rows = torch.arange(w.shape[0])
    error = (metric * pruned).sum(dim=1)
    var = variance.double().cpu().clamp_min(torch.finfo(torch.float64).tiny).unsqueeze(0)
    regrow_key = torch.where(pruned, metric / var, torch.inf)
    regrow_order = torch.argsort(regrow_key, dim=1, stable=True)  # pruned first, ascending
    prune_order = _kept_order(metric, wanda, pruned)
    pruned_count = pruned.sum(dim=1)
    low_r, high_r = torch.zeros_like(pruned_count), pruned_count - 1
    low_p, high_p = torch.zeros_like(pruned_count), w.shape[1] - pruned_count - 1
    active = torch.ones_like(error, dtype=torch.bool)
    for _ in range(max_cycles):
        active &= (error.abs() > threshold) & (low_r <= high_r) & (low_p <= high_p)
        if not bool(active.any()):
            break
        take_high_r, take_high_p = error > 0, error < 0
        at_r = torch.where(take_high_r, high_r, low_r)
        at_p = torch.where(take_high_p, high_p, low_p)
        regrow = regrow_order[rows, at_r.clamp(0, w.shape[1] - 1)]
        prune = prune_order[rows, at_p.clamp(0, w.shape[1] - 1)]
        low_r += (~take_high_r).long()
        high_r -= take_high_r.long()
        low_p += (~take_high_p).long()
        high_p -= take_high_p.long()
        chosen = rows[active]
        pruned[chosen, regrow[active]] = False
        pruned[chosen, prune[active]] = True
        error = error + torch.where(active, metric[rows, prune] - metric[rows, regrow], 0.0)
    return pruned.to(mask.device)
