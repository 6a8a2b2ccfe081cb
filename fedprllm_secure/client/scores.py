"""Pure functions: pruning scores and the local (per output row) mask.

Masks are boolean tensors shaped like the weight, True = pruned.
"""

from __future__ import annotations

import torch

PRUNERS = ("wanda", "magnitude")


def wanda_scores(weight: torch.Tensor, feature_sq_mean: torch.Tensor) -> torch.Tensor:
    """score[i, j] = |W[i, j]| * sqrt(a[j]), a[j] = mean over tokens of x_j^2."""
    return weight.abs().float() * feature_sq_mean.float().clamp_min(0).sqrt().unsqueeze(0)


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    return weight.abs().float()


def prune_count(size: int, sparsity: float) -> int:
    """Entries to prune in a group of `size`: int(size * s), as Wanda and FedPrLLM do."""
    return int(size * sparsity)


def row_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Prune the int(in * s) lowest scores of each output row; ties: lower column index first."""
    rows, columns = scores.shape
    k = prune_count(columns, sparsity)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k:
        order = torch.sort(scores, dim=1, stable=True).indices[:, :k]
        mask.scatter_(1, order, True)
    return mask
