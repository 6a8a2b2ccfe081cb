"""The model of a run, loaded once: prunable layers, dense snapshot, evaluation windows.

Shared by the server step (global masks, evaluation), by in-process client nodes (they calibrate
on it and leave it dense), by `audit` and by the experiments (one workbench for many runs).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import data
from ..errors import DataError
from ..evaluate import Evaluation, eval_windows, evaluate, predicted_bytes
from ..model import LoadedModel, PrunableLayer, decoder_blocks, load_model, prunable_layers
from ..progress import Advance
from ..server.apply import apply_masks, restore_weights, snapshot_weights, sparsity_report

Masks = Mapping[str, np.ndarray | torch.Tensor]


class Workbench:
    """One loaded model and its dense weights; `windows` are set by `use_eval_text`."""

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto") -> None:
        """`dtype`: the weights' (`model.load_model`; auto: the checkpoint's own)."""
        from ..saving import checkpoint_dtype

        self.loaded: LoadedModel = load_model(model, device, dtype)
        self.source_dtype: str | None = checkpoint_dtype(model)
        self.model = self.loaded.model
        self.tokenizer = self.loaded.tokenizer
        self.layers: list[PrunableLayer] = prunable_layers(self.model)
        self.shapes = {layer.name: tuple(layer.module.weight.shape) for layer in self.layers}
        self.lengths = {layer.name: layer.numel for layer in self.layers}
        self.index = {layer.name: i for i, layer in enumerate(self.layers)}
        self.blocks = len(decoder_blocks(self.model))
        self.dense = snapshot_weights(self.layers)
        self.windows: list[torch.Tensor] = []
        self.window_bytes: int | None = None
        self.eval_tokens: torch.Tensor | None = None

    @property
    def weights(self) -> int:
        return sum(self.lengths.values())

    @property
    def device(self) -> str:
        return str(self.loaded.device)

    def use_eval_text(self, text: str, seqlen: int, count: int) -> None:
        """Evaluate on at most `count` windows of `seqlen` tokens of `text`."""
        self.eval_tokens = data.tokenize(self.tokenizer, text)
        self.windows = eval_windows(self.eval_tokens, seqlen, count)
        self.window_bytes = predicted_bytes(self.tokenizer, self.windows)

    blockwise = False  # BlockwiseBench: the decoder blocks stay in the checkpoint

    def use_public_text(self, text: str) -> None:
        """Public text for `reference_windows` when no evaluation text was set (a Flower server
        does not evaluate)."""
        if self.eval_tokens is None:
            self.eval_tokens = data.tokenize(self.tokenizer, text)

    def reference_windows(self, count: int, seqlen: int) -> torch.Tensor:
        """[count', seqlen] windows of public text, to set public DP parameters: the last
        count' <= count whole windows of the evaluation text (evaluation reads its first ones:
        disjoint when the text holds both)."""
        if self.eval_tokens is None:
            raise DataError("no evaluation text: call use_eval_text first")
        available = min(count, self.eval_tokens.numel() // seqlen)
        if available < 1:
            raise DataError(f"the evaluation text has fewer than {seqlen} tokens")
        tail = self.eval_tokens[self.eval_tokens.numel() - available * seqlen :]
        return tail.reshape(available, seqlen)

    def block_layers(self, block: int) -> list[PrunableLayer]:
        return [layer for layer in self.layers if layer.block == block]

    def holding(self, block: int) -> AbstractContextManager[None]:
        """Block `block`'s weights in memory while the context lasts (here: always)."""
        return nullcontext()

    def apply(
        self,
        masks: Masks,
        scales: Mapping[str, np.ndarray] | None = None,
        advance: Advance | None = None,
    ) -> None:
        """Prune the model in place (every layer of `masks` must be prunable), calling `advance`
        after each layer; `restore` undoes."""
        if advance is None:
            apply_masks(self.layers, masks, scales)
            return
        for layer in self.layers:
            apply_masks([layer], masks, scales)
            advance()

    def restore(self) -> None:
        restore_weights(self.layers, self.dense)

    def sparsity(self) -> dict[str, Any]:
        overall, per_layer = sparsity_report(self.layers)
        return {
            "overall": round(overall, 6),
            "per_layer": {k: round(v, 6) for k, v in per_layer.items()},
        }

    def perplexity(self, advance: Advance | None = None) -> float:
        """Perplexity of the model as it is now over the evaluation windows."""
        return self.evaluation(advance).perplexity

    def evaluation(self, advance: Advance | None = None) -> Evaluation:
        """Perplexity, its per-window standard error and bits per byte of the model as it is."""
        return evaluate(self.model, self.windows, self.window_bytes, advance)

    def evaluate(
        self,
        masks: Masks | None = None,
        scales: Mapping[str, np.ndarray] | None = None,
        advance: Advance | None = None,
    ) -> tuple[float, dict[str, Any]]:
        """(perplexity, sparsity report) of the model pruned by `masks`; dense again after."""
        try:
            if masks is not None:
                self.apply(masks, scales)
            return self.perplexity(advance), self.sparsity()
        finally:
            self.restore()

    @contextmanager
    def pruned(
        self,
        layers: list[PrunableLayer],
        masks: Masks,
        scales: Mapping[str, np.ndarray] | None = None,
    ) -> Iterator[None]:
        """`layers` pruned by `masks` (and scaled) for the block only; their weights after."""
        saved = {layer.name: layer.module.weight.data.clone() for layer in layers}
        try:
            apply_masks(layers, masks, scales)
            yield
        finally:
            for layer in layers:
                layer.module.weight.data.copy_(saved[layer.name])

    def save(self, folder: Path, card: Mapping[str, Any] | None = None) -> None:
        """Save the model as it is now (e.g. pruned) with its tokenizer, `from_pretrained` style,
        in the dtype of the checkpoint it was loaded from, with a model card from `card`."""
        from ..saving import save_pretrained

        save_pretrained(self.model, self.tokenizer, folder, self.source_dtype, card)
