"""Global mask from the aggregate counts C (how many clients want each weight pruned).

Pure functions on numpy arrays shaped like the weight [out, in]; True = pruned.

* layer:  prune exactly int(numel * s) entries with the highest counts; ties at the threshold are
          broken uniformly at random by a generator seeded with (seed, layer index).
* row:    per output row, prune the int(in * s) highest counts; ties: lower column index first.
* column: per input column, prune the int(out * s) highest counts; ties: lower row index first.
* N:M (`n_m_global_mask`, whatever the group): in every group of M consecutive inputs of a row,
          keep the N lowest counts and prune the M - N highest; ties: lower column index pruned
          first. The global mask is then N:M like every local one.
"""

from __future__ import annotations

import numpy as np

from ..client.scores import prune_count
from ..errors import ConfigError

GROUPS = ("layer", "row", "column")


def _highest_per_row(counts: np.ndarray, k: int) -> np.ndarray:
    mask = np.zeros(counts.shape, dtype=bool)
    if k:
        # A stable sort of -C puts the highest counts first and keeps lower indices first on ties.
        order = np.argsort(-counts.astype(np.float64), axis=1, kind="stable")[:, :k]
        np.put_along_axis(mask, order, True, axis=1)
    return mask


def _highest_in_layer(counts: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    flat = counts.reshape(-1)
    mask = np.zeros(flat.shape, dtype=bool)
    if k:
        threshold = np.partition(flat, flat.size - k)[flat.size - k]
        above = flat > threshold
        mask[above] = True
        tied = np.flatnonzero(flat == threshold)
        need = k - int(above.sum())
        mask[rng.choice(tied, size=need, replace=False)] = True
    return mask.reshape(counts.shape)


def global_mask(
    counts: np.ndarray, sparsity: float, group: str, seed: int = 0, layer_index: int = 0
) -> np.ndarray:
    """The global mask of one weight matrix from its counts."""
    if counts.ndim != 2:
        raise ValueError("counts must be shaped like the weight [out, in]")
    if group == "layer":
        rng = np.random.default_rng([seed, layer_index])
        return _highest_in_layer(counts, prune_count(counts.size, sparsity), rng)
    if group == "row":
        return _highest_per_row(counts, prune_count(counts.shape[1], sparsity))
    if group == "column":
        return _highest_per_row(counts.T, prune_count(counts.shape[0], sparsity)).T
    raise ConfigError(f"unknown comparison group {group!r} (use {', '.join(GROUPS)})")


def scaling_factors(counts: np.ndarray, clients: int) -> np.ndarray:
    """The paper's optional weight scaling: a kept weight is multiplied by (m - C) / m."""
    return (clients - counts.astype(np.float64)) / clients


def n_m_global_mask(counts: np.ndarray, kept: int, group: int) -> np.ndarray:
    """Keep the `kept` lowest counts of every `group` consecutive inputs of each row."""
    rows, columns = counts.shape
    if columns % group:
        raise ConfigError(f"{columns} input features are not a multiple of the N:M group {group}")
    grouped = counts.astype(np.float64).reshape(rows, columns // group, group)
    # A stable sort of -C puts the highest counts first and keeps lower indices first on ties.
    order = np.argsort(-grouped, axis=2, kind="stable")[:, :, : group - kept]
    mask = np.zeros(grouped.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=2)
    return mask.reshape(rows, columns)


def implied_sparsity(counts: np.ndarray, clients: int) -> float:
    """The mean local sparsity behind `counts` from `clients` masks: sum(C) / (m * numel),
    clipped to [0, 1) (debiased randomized-response counts may stray outside)."""
    if clients <= 0 or counts.size == 0:
        return 0.0
    fraction = float(np.asarray(counts, dtype=np.float64).sum()) / (clients * counts.size)
    return min(max(fraction, 0.0), float(np.nextafter(1.0, 0.0)))
