"""The bits a `ClientNode` stages for `prepare masks {block}` (client_step's helper).

A node whose model is whole calibrated every block's local masks at `calibrate` and stages the
asked block's share of them; a node on a `BlockwiseBench` computes the asked block's masks now,
with that block's weights in memory only meanwhile, its walk moving on exactly as
`client.calibrate.local_masks` moves (one-shot: dense; sequential: through the block pruned by
its own masks), so the bits are the same as the whole model's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..client.calibrate import BlockwiseCalibration, method_block_masks
from ..client.methods import PruneMethod
from ..errors import ProtocolError
from .layout import pack_masks


def mask_bits(
    bench: Any, calibration: Any, walk_at: Callable[[int], BlockwiseCalibration], block: Any
) -> dict[str, np.ndarray]:
    """The packed local masks of `block`'s layers (every layer when `block` is None);
    `walk_at(block)`: the calibration's walk, checked to stand at `block`."""
    if bench.blockwise and calibration.options["walk"] == "masks":
        if block is None:
            raise ProtocolError("a blockwise node stages one block at a time: name the block")
        return pack_masks(blockwise_masks(bench, calibration, walk_at, int(block)))
    if calibration.masks is None:
        raise ProtocolError("prepare masks: the current calibration has no local masks")
    if block is None:
        return dict(calibration.masks)
    return {layer.name: calibration.masks[layer.name] for layer in bench.block_layers(int(block))}


def blockwise_masks(
    bench: Any, calibration: Any, walk_at: Callable[[int], BlockwiseCalibration], block: int
) -> dict[str, torch.Tensor]:
    """`local_masks`'s masks of `block` on a blockwise bench, the walk moving on."""
    options = calibration.options
    method = PruneMethod.from_settings(options.get("method"))
    sparsity = float(options["sparsity"])
    with bench.holding(block):
        if calibration.walk is None:  # magnitude: no data, no walk
            return method_block_masks(bench.block_layers(block), {}, sparsity, method)
        _, masks = walk_at(block).mask_and_advance(sparsity, method, options["calibration"])
    return masks
