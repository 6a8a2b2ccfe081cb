"""Pure functions: pruning scores and the local (per output row) mask.

Masks are boolean tensors shaped like the weight, True = pruned.
"""

from __future__ import annotations

import numpy as np
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


def kth_smallest_per_row(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th smallest value of each row, shaped [rows, 1] (numpy's introselect on CPU)."""
    if scores.device.type == "cpu":
        values = np.partition(scores.detach().numpy(), k - 1, axis=1)[:, k - 1 : k]
        return torch.from_numpy(np.ascontiguousarray(values))
    return torch.kthvalue(scores, k, dim=1, keepdim=True).values


def row_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Prune the int(in * s) lowest scores of each output row; ties: lower column index first.

    Selection by the k-th smallest value (linear time) rather than a full sort: every client
    computes this for every layer, so it is a large share of federated calibration time.
    """
    rows, columns = scores.shape
    k = prune_count(columns, sparsity)
    if k == 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    threshold = kth_smallest_per_row(scores, k)
    mask = scores < threshold
    tied = scores == threshold
    still_needed = k - mask.sum(dim=1, keepdim=True)
    # Usually every tied entry is needed (real-valued scores rarely tie): skip the cumsum then.
    ambiguous = (tied.sum(dim=1, keepdim=True) != still_needed).squeeze(1)
    mask |= tied
    if bool(ambiguous.any()):
        rows_tied = tied[ambiguous]
        keep = rows_tied & (torch.cumsum(rows_tied, dim=1) <= still_needed[ambiguous])
        mask[ambiguous] = (scores[ambiguous] < threshold[ambiguous]) | keep
    return mask
