"""`run` under `pruning.blockwise`: the model never held whole, by the clients nor the server.

The clients calibrate one decoder block at a time (`BlockwiseBench`); the server sums one block at
a time (the masks strategies); each block's global masks go to a sink as they are made: the
evaluation walks (`BlockwiseEvaluation`: dense and pruned perplexity, block by block), the pruned
checkpoint (`PrunedCheckpointWriter`, one shard per block, `save_model_to`) and the sparsity
report. The masks are kept only for `save_masks_to`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..mask_file import save_masks
from .blockwise_bench import BlockwiseBench
from .blockwise_eval import BlockwiseEvaluation, mask_sparsity

EVALUATED = "block by block (pruning.blockwise): each block in memory once for both walks"


def blockwise_run(
    pipe: Any, save_model_to: Path | None, save_masks_to: Path | None
) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """(perplexities, sparsity, FedResult) of the fedprllm method of `pipe` (a Pipeline on a
    BlockwiseBench), the pruned checkpoint streamed to `save_model_to`."""
    bench = pipe.bench
    assert isinstance(bench, BlockwiseBench)
    writer = bench.writer(save_model_to) if save_model_to is not None else None
    evaluation = BlockwiseEvaluation(bench)
    pruned: dict[str, np.ndarray] = {}  # the pruned fraction of each layer (a 0-d array)

    def sink(block: int, masks: dict[str, np.ndarray], scales: dict[str, np.ndarray] | None):
        with pipe.timer.phase("eval_blockwise"):
            evaluation.block(block, masks, scales)
        if writer is not None:
            with pipe.timer.phase("save_model"):
                writer.write_block(block, masks, scales)
        pruned.update({name: np.mean(mask) for name, mask in masks.items()})

    try:
        fed = pipe.fedprllm(sink=sink, keep_masks=save_masks_to is not None)
        if writer is not None:
            writer.finish()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if save_masks_to is not None:
        save_masks(save_masks_to, fed.masks)
    sparsity = {"fedprllm": mask_sparsity(pruned, bench.lengths)}
    with pipe.timer.phase("eval_blockwise"):
        dense, fedprllm = evaluation.finish()
    pipe.evaluations.update({"dense": dense, "fedprllm": fedprllm})
    return {"dense": dense.perplexity, "fedprllm": fedprllm.perplexity}, sparsity, fed
