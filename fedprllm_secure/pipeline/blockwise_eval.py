"""Perplexity of a model held one decoder block at a time (`pruning.blockwise`).

`BlockwiseEvaluation` walks the evaluation windows (batch 1, as `evaluate.evaluate`) through the
decoder twice side by side, dense and pruned by the global masks, advancing both walks while a
block's weights are in memory: the server calls `block(b, masks, scales)` as each block's global
masks are made (blocks in order), then `finish()` applies the final norm and the output head (an
untied head is read from the checkpoint only now) and sums each window's next-token NLL, exactly
as `evaluate.evaluate` does on the whole model. Memory: one block, the embeddings, the head, and
two copies of the windows' activations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..client.calibrate import BlockwiseCalibration
from ..evaluate import Evaluation, summarize
from .blockwise_bench import BlockwiseBench


class BlockwiseEvaluation:
    """The dense and the pruned perplexity, computed block after block."""

    def __init__(self, bench: BlockwiseBench) -> None:
        self.bench = bench
        windows = torch.stack(bench.windows)
        self.dense = BlockwiseCalibration(bench.model, windows, batch_size=1)
        self.pruned = BlockwiseCalibration(bench.model, windows, batch_size=1)

    def block(
        self, block: int, masks: Mapping[str, np.ndarray], scales: Mapping[str, np.ndarray] | None
    ) -> None:
        """Both walks through block `block` (the pruned one with its global masks and scales)."""
        bench = self.bench
        with bench.holding(block):
            self.dense.propagate(None)
            with bench.pruned(bench.block_layers(block), masks, scales):
                self.pruned.propagate(None)

    def finish(self) -> tuple[Evaluation, Evaluation]:
        """(dense, pruned) evaluations once every block was walked."""
        bench = self.bench
        head = bench.bm.load_output_head()
        norm = bench.model.model.norm
        results = []
        with torch.no_grad():
            for walk in (self.dense, self.pruned):
                sums, counts = [], []
                for hidden, window in zip(walk.hidden, bench.windows, strict=True):
                    logits = head(norm(hidden))[0, :-1].float()
                    ids = window.to(logits.device)
                    nll = torch.nn.functional.cross_entropy(logits, ids[1:], reduction="sum")
                    sums.append(float(nll))
                    counts.append(int(window.numel()) - 1)
                results.append(summarize(sums, counts, bench.window_bytes))
        return results[0], results[1]


def evaluate_masks(
    bench: BlockwiseBench, masks: Mapping[str, np.ndarray], scales: Mapping[str, np.ndarray] | None
) -> tuple[Evaluation, Evaluation]:
    """(dense, pruned by `masks`) evaluations of a blockwise model whose global masks are known
    (Flower's server: they arrive whole, not block by block)."""
    walk = BlockwiseEvaluation(bench)
    for block in range(bench.blocks):
        walk.block(block, *bench.block_part(block, masks, scales))
    return walk.finish()


def mask_sparsity(masks: Mapping[str, np.ndarray], lengths: Mapping[str, int]) -> dict[str, Any]:
    """The sparsity report of `masks` (the pruned fraction, overall and per layer), as
    `Workbench.sparsity` reports it for a pruned model."""
    per_layer = {name: float(np.mean(mask)) for name, mask in masks.items()}
    overall = sum(per_layer[n] * lengths[n] for n in per_layer) / sum(lengths[n] for n in per_layer)
    return {
        "overall": round(overall, 6),
        "per_layer": {k: round(v, 6) for k, v in per_layer.items()},
    }
