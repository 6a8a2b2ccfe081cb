"""A pruning method and the mask it gives for one layer from that layer's statistics.

`PruneMethod` = pruner (wanda | ria | magnitude), sparsity type (unstructured | N:M), layerwise
sparsity (uniform | owl) and refinement (none | dsnot). `layer_mask` is the one function every
party calls to turn statistics into a mask (a client's local masks, the centralized baseline, the
server in `--aggregate stats`), so the server's mask from summed statistics equals the centralized
one whenever the sums do.

Comparison groups: Wanda per output row; RIA over the whole layer (its reference's unstructured
default); N:M per group of M consecutive inputs of a row (keep the N highest scores), whatever the
pruner. OWL sets each block's sparsity (`owl_block_ratio`, `owl_layer_sparsities`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

import torch

from .dsnot import dsnot_refine, refines_layer
from .scores import (
    layer_lowest_mask,
    magnitude_scores,
    n_m_mask,
    outlier_ratio,
    owl_sparsities,
    parse_n_m,
    ria_scores,
    row_mask,
    wanda_scores,
)


class Moments(Protocol):
    """What a mask needs of one layer's input statistics (`calibrate.LayerStats` is one)."""

    sq_sum: torch.Tensor
    tokens: int
    samples: int
    x_pos: torch.Tensor | None
    x_neg: torch.Tensor | None

    @property
    def sq_mean(self) -> torch.Tensor: ...


@dataclass(frozen=True)
class PruneMethod:
    """How a layer's mask is chosen (the `pruning.*` fields of the same names)."""

    pruner: str = "wanda"
    sparsity_type: str = "unstructured"
    layerwise: str = "uniform"
    owl_lambda: float = 0.08
    owl_m: float = 5.0
    ria_alpha: float = 0.5
    refine: str = "none"

    @classmethod
    def of(cls, pruning: Any) -> PruneMethod:
        """The method of a `PruningConfig` (or anything with these attributes)."""
        return cls(**{f.name: getattr(pruning, f.name) for f in fields(cls)})

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None) -> PruneMethod:
        return cls(**dict(settings or {}))

    def settings(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def n_m(self) -> tuple[int, int] | None:
        return parse_n_m(self.sparsity_type)

    @property
    def first_moment(self) -> bool:
        """Whether the method needs per-feature sums of x (DSnoT) besides sums of x^2."""
        return self.refine == "dsnot"

    @property
    def uses_data(self) -> bool:
        return self.pruner != "magnitude"


def layer_scores(method: PruneMethod, weight: torch.Tensor, stats: Moments | None) -> torch.Tensor:
    if method.pruner == "magnitude":
        return magnitude_scores(weight)
    if stats is None:
        raise ValueError(f"pruner {method.pruner} needs activation statistics")
    if method.pruner == "ria":
        return ria_scores(weight, stats.sq_mean, method.ria_alpha)
    return wanda_scores(weight, stats.sq_mean)


def layer_mask(
    method: PruneMethod, name: str, weight: torch.Tensor, stats: Moments | None, sparsity: float
) -> torch.Tensor:
    """The mask (True = pruned) of layer `name` at `sparsity` (ignored under N:M)."""
    scores = layer_scores(method, weight, stats)
    n_m = method.n_m
    if n_m is not None:
        mask = n_m_mask(scores, *n_m)
    elif method.pruner == "ria":
        mask = layer_lowest_mask(scores, sparsity)
    else:
        mask = row_mask(scores, sparsity)
    if method.refine == "dsnot" and refines_layer(name):
        if stats is None or stats.x_pos is None or stats.x_neg is None:
            raise ValueError("dsnot needs per-feature sums of x")
        x_sum = stats.x_pos - stats.x_neg
        x_mean = x_sum / max(stats.tokens, 1)
        variance = (stats.sq_mean - x_mean.pow(2)).clamp_min(0)
        mask = dsnot_refine(weight, mask, x_sum / max(stats.samples, 1), stats.sq_mean, variance)
    return mask


def block_masks(
    method: PruneMethod,
    weights: Mapping[str, torch.Tensor],
    stats: Mapping[str, Moments],
    sparsities: Mapping[str, float],
) -> dict[str, torch.Tensor]:
    """Masks of every layer of `weights` (a block's, or any) at its own sparsity."""
    return {
        name: layer_mask(method, name, weight, stats.get(name), sparsities[name])
        for name, weight in weights.items()
    }


def owl_block_ratio(
    method: PruneMethod, weights: Mapping[str, torch.Tensor], stats: Mapping[str, Moments]
) -> float:
    """OWL's outlier ratio of one block from its linears' Wanda scores (dense statistics)."""
    scores = [wanda_scores(w.cpu(), stats[name].sq_mean.cpu()) for name, w in weights.items()]
    return outlier_ratio(scores, method.owl_m)


def owl_layer_sparsities(
    method: PruneMethod,
    ratios: Sequence[float],
    blocks: Sequence[Mapping[str, int]],
    target: float,
) -> dict[str, float]:
    """Every layer's sparsity: its block's OWL sparsity (`blocks[b]`: layer -> weights)."""
    sizes = [sum(block.values()) for block in blocks]
    per_block = owl_sparsities(list(ratios), sizes, target, method.owl_lambda)
    return {name: per_block[b] for b, block in enumerate(blocks) for name in block}


def owl_model_sparsities(
    model: torch.nn.Module,
    samples: torch.Tensor,
    method: PruneMethod,
    target: float,
    batch_size: int,
) -> dict[str, float]:
    """Every layer's OWL sparsity from a dense walk of the samples through all blocks (as OWL's
    reference: outlier ratios of the dense model, then pruning with those ratios)."""
    from .calibrate import BlockwiseCalibration

    walk = BlockwiseCalibration(model, samples, batch_size)
    ratios: list[float] = []
    blocks: list[dict[str, int]] = []
    while not walk.done:
        layers = walk.layers
        weights = {layer.name: layer.module.weight.data for layer in layers}
        ratios.append(owl_block_ratio(method, weights, walk.statistics()))
        blocks.append({layer.name: layer.numel for layer in layers})
        walk.propagate_dense()
    return owl_layer_sparsities(method, ratios, blocks, target)
