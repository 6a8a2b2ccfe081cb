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
from ..client.calibrate import LayerStats
from ..client.methods import PruneMethod, block_masks, owl_block_ratio, owl_layer_sparsities
from ..server.aggregate import global_mask, implied_sparsity, n_m_global_mask, scaling_factors
from .layout import limb_chunk


@dataclass(frozen=True)
class MaskRule:
    """How the server turns counts into a global mask (`pruning.*` and the run's seed).

    `n_m` (N, M): N:M groups instead of `group`. `implied`: each layer's sparsity is the mean
    local sparsity its counts imply (OWL: every client chose its own per-layer sparsities)."""

    sparsity: float
    group: str
    seed: int
    scaling: bool = False
    n_m: tuple[int, int] | None = None
    implied: bool = False


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
        if rule.n_m is not None:
            masks[name] = n_m_global_mask(shaped, *rule.n_m)
        else:
            sparsity = implied_sparsity(shaped, contributors) if rule.implied else rule.sparsity
            masks[name] = global_mask(shaped, sparsity, rule.group, rule.seed, index[name])
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


FIRST_MOMENT = ("x+", "x-")  # suffixes of the DSnoT statistics: sums of max(x, 0), max(-x, 0)


def moment_key(leader: str, part: str) -> str:
    """The statistics key of a group's first-moment part `part` (FIRST_MOMENT)."""
    return f"{leader}|{part}"


def group_moments(
    groups: Sequence[Sequence[str]], totals: Mapping[str, np.ndarray], tokens: int, samples: int
) -> dict[str, LayerStats]:
    """Every layer's summed statistics from its group leader's totals (with the first-moment
    parts when `totals` holds them)."""
    stats: dict[str, LayerStats] = {}
    for group in groups:
        leader = group[0]
        parts = [totals.get(moment_key(leader, part)) for part in FIRST_MOMENT]
        x_pos, x_neg = (None if p is None else torch.from_numpy(p) for p in parts)
        entry = LayerStats(torch.from_numpy(totals[leader]), tokens, samples=samples,
                           x_pos=x_pos, x_neg=x_neg)  # fmt: skip
        stats.update(dict.fromkeys(group, entry))
    return stats


def stats_masks(
    groups: Sequence[Sequence[str]],
    totals: Mapping[str, np.ndarray],
    tokens: int,
    weights: Mapping[str, torch.Tensor],
    sparsity: float | Mapping[str, float],
    method: PruneMethod | None = None,
    samples: int = 0,
) -> dict[str, np.ndarray]:
    """The centralized method's masks (default Wanda) from the summed statistics
    `totals[leader]` over `tokens` tokens (and `samples` windows, DSnoT): every linear of a group
    scores its weight against the group's statistics. `sparsity`: one, or per layer (OWL)."""
    method = method or PruneMethod()
    stats = group_moments(groups, totals, tokens, samples)
    names = [name for group in groups for name in group]
    sparsities = dict(sparsity) if isinstance(sparsity, Mapping) else dict.fromkeys(names, sparsity)
    chosen = {name: weights[name].cpu() for name in names}
    return {
        name: mask.numpy() for name, mask in block_masks(method, chosen, stats, sparsities).items()
    }


def owl_stats_sparsities(
    method: PruneMethod,
    groups: Sequence[Sequence[str]],
    totals: Mapping[str, np.ndarray],
    tokens: int,
    weights: Mapping[str, torch.Tensor],
    block_of: Mapping[str, int],
    target: float,
) -> dict[str, float]:
    """OWL's per-layer sparsities from the summed dense statistics of every block."""
    stats = group_moments(groups, totals, tokens, 0)
    blocks: dict[int, dict[str, int]] = {}
    for name in (name for group in groups for name in group):
        blocks.setdefault(block_of[name], {})[name] = int(weights[name].numel())
    ordered = [blocks[b] for b in sorted(blocks)]
    ratios = [owl_block_ratio(method, {n: weights[n] for n in block}, stats) for block in ordered]
    return owl_layer_sparsities(method, ratios, ordered, target)


def limb_lengths(lengths: Mapping[str, int], precision: int) -> dict[str, int]:
    """Chunk lengths of the limbs of every group leader (`lengths[leader]` features)."""
    limbs = fixed_point.limb_count(precision)
    return {limb_chunk(name, k): n for name, n in lengths.items() for k in range(limbs)}
