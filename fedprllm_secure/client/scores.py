"""Pure functions: pruning scores and the local (per output row) mask.

Masks are boolean tensors shaped like the weight, True = pruned.
"""

from __future__ import annotations

import numpy as np
import torch

PRUNERS = ("wanda", "ria", "magnitude")
SPARSITY_TYPES = ("unstructured", "2:4", "4:8")  # and any "N:M" with 0 < N < M
LAYERWISE = ("uniform", "owl")
REFINES = ("none", "dsnot")


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


def ria_scores(
    weight: torch.Tensor, feature_sq_mean: torch.Tensor, alpha: float = 0.5
) -> torch.Tensor:
    """RIA: (|W_ij| / sum_k |W_ik| + |W_ij| / sum_k |W_kj|) * sqrt(a[j])^alpha.

    A row or column whose weights are all zero contributes 0 (not NaN) to its term.
    """
    magnitude = weight.abs().float()
    row_sum = magnitude.sum(dim=1, keepdim=True)
    column_sum = magnitude.sum(dim=0, keepdim=True)
    relative = magnitude / torch.where(row_sum > 0, row_sum, 1.0) + magnitude / torch.where(
        column_sum > 0, column_sum, 1.0
    )
    activation = feature_sq_mean.float().clamp_min(0).sqrt().pow(alpha)
    return relative * activation.unsqueeze(0)


def layer_lowest_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Prune the int(numel * s) lowest scores of the whole layer; ties: lower flat index first
    (RIA's comparison group for unstructured sparsity)."""
    flat = scores.reshape(1, -1)
    return row_mask(flat, sparsity).reshape(scores.shape)


def parse_n_m(sparsity_type: str) -> tuple[int, int] | None:
    """(N, M) of an "N:M" sparsity type (keep N of every M), None for "unstructured".

    Raises ValueError unless 0 < N < M (both integers)."""
    if sparsity_type == "unstructured":
        return None
    kept, sep, group = sparsity_type.partition(":")
    if not sep or not kept.isdigit() or not group.isdigit() or not 0 < int(kept) < int(group):
        raise ValueError(
            f"sparsity type {sparsity_type!r} is neither unstructured nor N:M with 0 < N < M"
        )
    return int(kept), int(group)


def n_m_mask(scores: torch.Tensor, kept: int, group: int) -> torch.Tensor:
    """In every group of `group` consecutive inputs of a row, keep the `kept` highest scores
    and prune the rest; ties: the lower column index is pruned first.

    Needs in_features divisible by `group` (ValueError otherwise)."""
    rows, columns = scores.shape
    if columns % group:
        raise ValueError(f"{columns} input features are not a multiple of the N:M group {group}")
    grouped = scores.reshape(rows, columns // group, group).double()
    # A stable ascending sort puts the lowest scores first and lower indices first on ties.
    order = torch.sort(grouped, dim=2, stable=True).indices[:, :, : group - kept]
    mask = torch.zeros_like(grouped, dtype=torch.bool)
    mask.scatter_(2, order, True)
    return mask.reshape(rows, columns)


def outlier_ratio(block_scores: list[torch.Tensor], outlier_m: float) -> float:
    """OWL's layer outlier ratio (percent): of all Wanda scores of a block's linears, the share
    above `outlier_m` times their mean."""
    flat = torch.cat([s.reshape(-1).double() for s in block_scores])
    return float((flat > flat.mean() * outlier_m).sum()) / flat.numel() * 100


def owl_sparsities(ratios: list[float], sizes: list[int], target: float, lam: float) -> list[float]:
    """OWL's per-block sparsities: outlier ratios min-max scaled to [0, 2 lambda], then shifted
    so that the density (1 - sparsity) averages 1 - target, weighted by the blocks' `sizes`
    (prunable weights); more outliers -> denser. Equal ratios give the target everywhere."""
    values = np.asarray(ratios, dtype=np.float64)
    weights = np.asarray(sizes, dtype=np.float64)
    spread = float(values.max() - values.min()) if values.size else 0.0
    if spread == 0.0:
        return [float(target)] * len(ratios)
    scaled = (values - values.min()) / spread * (2 * lam)
    density = scaled - float(np.dot(scaled, weights) / weights.sum()) + (1 - target)
    return [float(1 - d) for d in density]
