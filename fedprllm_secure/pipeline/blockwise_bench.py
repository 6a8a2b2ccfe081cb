"""`BlockwiseBench`: a `Workbench` whose decoder blocks stay in the checkpoint (`pruning.blockwise`).

The layout (prunable layers, shapes, lengths, block count) comes from the model's skeleton
(`blockwise.open_blockwise`: embeddings and final norm loaded, every block on the meta device), so
the server and the in-process clients agree with a whole-model `Workbench` on every name and size.
A block's weights are in memory only inside `holding(block)` (read from the checkpoint, released
on exit); the client node wraps each command that runs a block in it. Nothing is ever pruned in
place, so `restore` has nothing to undo; the whole model is never built, so it is not evaluated or
saved whole: `writer(dest)` streams the pruned checkpoint block by block instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..blockwise import BlockwiseModel, open_blockwise
from ..checkpoint import PrunedCheckpointWriter
from ..errors import ConfigError
from ..model import LoadedModel, PrunableLayer, decoder_blocks, prunable_layers
from .workbench import Workbench


class BlockwiseBench(Workbench):
    """The `Workbench` interface of a model held one decoder block at a time."""

    blockwise = True

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto") -> None:
        self.bm: BlockwiseModel = open_blockwise(model, device, dtype)
        self.loaded = LoadedModel(self.bm.model, self.bm.tokenizer, model, self.bm.device)
        self.source_dtype = None
        self.model = self.bm.model
        self.tokenizer = self.bm.tokenizer
        self.layers: list[PrunableLayer] = prunable_layers(self.model)
        self.shapes = {layer.name: tuple(layer.module.weight.shape) for layer in self.layers}
        self.lengths = {layer.name: layer.numel for layer in self.layers}
        self.index = {layer.name: i for i, layer in enumerate(self.layers)}
        self.blocks = len(decoder_blocks(self.model))
        self.dense = {}
        self.windows = []
        self.window_bytes = None

    @contextmanager
    def holding(self, block: int) -> Iterator[None]:
        """Block `block`'s weights in memory (from the checkpoint) for the duration only."""
        self.bm.load_block(block)
        try:
            yield
        finally:
            self.bm.release_block(block)

    def block_part(
        self, block: int, masks: Mapping[str, Any], scales: Mapping[str, Any] | None
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The entries of `masks` (and `scales`) that belong to block `block`'s layers."""
        names = [layer.name for layer in self.block_layers(block)]
        return {n: masks[n] for n in names}, None if scales is None else {
            n: scales[n] for n in names
        }

    def writer(self, dest: Path) -> PrunedCheckpointWriter:
        """A pruned copy of the checkpoint at `dest`, written block by block."""
        return PrunedCheckpointWriter(self.bm.reader, dest, self.bm.prefix, self.blocks)

    def restore(self) -> None:
        """Nothing to undo: blocks are never pruned in place."""

    def _whole(self, *_args: object, **_kwargs: object) -> None:
        raise ConfigError(
            "pruning.blockwise never holds the whole model: it is not evaluated nor saved whole"
        )

    apply = evaluate = evaluation = perplexity = save = _whole  # type: ignore[assignment]
