"""The server's step: summed counts -> global masks; summed statistics -> decode -> Wanda masks.

Pure functions of what the protocol released and of public values (the global model's weights,
the layout, the run's pruning settings). Every user of the pipeline (in-process, Flower, audit)
builds global masks here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..client import fixed_point
from ..client.scores import row_mask, wanda_scores
from ..server.aggregate import global_mask, scaling_factors
from .layout import limb_chunk


@dataclass(frozen=True)
class MaskRule:
    """How the server turns counts into a global mask (`pruning.*` and the run's seed)."""

    sparsity: float
    group: str
    seed: int
    scaling: bool = False


def global_masks(
    rule: MaskRule,
    counts: Mapping[str, np.ndarray],
    shapes: Mapping[str, tuple[int, ...]],
    index: Mapping[str, int],
    contributors: int,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """Global masks of every layer of `counts` (flat, or shaped like the weight), and with
    `rule.scaling` the kept weights' factors (m - C) / m over `contributors` = m.

    `index[name]` is the layer's position in the whole model (it seeds the layer's tie-breaking).
    """
    masks: dict[str, np.ndarray] = {}
    scales: dict[str, np.ndarray] | None = {} if rule.scaling else None
    for name, flat in counts.items():
        shaped = np.asarray(flat).reshape(shapes[name])
        masks[name] = global_mask(shaped, rule.sparsity, rule.group, rule.seed, index[name])
        if scales is not None:
            scales[name] = scaling_factors(shaped, contributors)
    return masks, scales


def common_exponents(
    histograms: Mapping[str, np.ndarray],
) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Per group leader: the common exponent (set by a quorum of reports) and, for the report,
    {"common", "highest_reported"}."""
    exponents = {name: int(fixed_point.layer_exponent(h)) for name, h in histograms.items()}
    report = {
        name: {"common": exponents[name], "highest_reported": fixed_point.highest_reported(h)}
        for name, h in histograms.items()
    }
    return exponents, report


def decode_statistics(
    sums: Mapping[str, np.ndarray], leader: str, exponent: int, precision: int
) -> np.ndarray:
    """The summed statistics of group `leader` (float64) from its summed fixed-point limbs."""
    limbs = fixed_point.limb_count(precision)
    joined = fixed_point.from_limbs([sums[limb_chunk(leader, k)] for k in range(limbs)])
    return fixed_point.decode(joined, exponent, precision)


def stats_masks(
    groups: Sequence[Sequence[str]],
    totals: Mapping[str, np.ndarray],
    tokens: int,
    weights: Mapping[str, torch.Tensor],
    sparsity: float,
) -> dict[str, np.ndarray]:
    """Centralized Wanda masks from the summed statistics `totals[leader]` over `tokens` tokens:
    every linear of a group scores its weight against the group's mean squared input."""
    masks: dict[str, np.ndarray] = {}
    for group in groups:
        feature_mean = torch.from_numpy(totals[group[0]] / max(tokens, 1))
        for name in group:
            scores = wanda_scores(weights[name].cpu(), feature_mean)
            masks[name] = row_mask(scores, sparsity).numpy()
    return masks


def limb_lengths(lengths: Mapping[str, int], precision: int) -> dict[str, int]:
    """Chunk lengths of the limbs of every group leader (`lengths[leader]` features)."""
    limbs = fixed_point.limb_count(precision)
    return {limb_chunk(name, k): n for name, n in lengths.items() for k in range(limbs)}
