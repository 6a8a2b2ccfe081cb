"""Apply masks (and optional scaling) to the global model, and measure sparsity."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from ..model import PrunableLayer


def snapshot_weights(layers: list[PrunableLayer]) -> dict[str, torch.Tensor]:
    """A CPU copy of the dense prunable weights, to restore between variants."""
    return {layer.name: layer.module.weight.data.detach().cpu().clone() for layer in layers}


def restore_weights(layers: list[PrunableLayer], saved: Mapping[str, torch.Tensor]) -> None:
    for layer in layers:
        layer.module.weight.data.copy_(saved[layer.name])


def apply_masks(
    layers: list[PrunableLayer],
    masks: Mapping[str, torch.Tensor | np.ndarray],
    scales: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Zero the pruned weights (mask True) in place; multiply kept weights by `scales` if given."""
    for layer in layers:
        weight = layer.module.weight.data
        mask = torch.as_tensor(np.asarray(masks[layer.name]), device=weight.device)
        if scales is not None:
            weight.mul_(
                torch.as_tensor(scales[layer.name], dtype=weight.dtype, device=weight.device)
            )
        weight[mask] = 0


def sparsity_report(layers: list[PrunableLayer]) -> tuple[float, dict[str, float]]:
    """(overall fraction of zero weights, per-layer fraction) over the prunable layers."""
    per_layer, zeros, total = {}, 0, 0
    for layer in layers:
        weight = layer.module.weight.data
        layer_zeros = int((weight == 0).sum())
        per_layer[layer.name] = layer_zeros / weight.numel()
        zeros += layer_zeros
        total += weight.numel()
    return zeros / max(total, 1), per_layer
