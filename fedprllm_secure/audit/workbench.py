"""The model, its dense weights and the evaluation windows, loaded once for a whole audit."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .. import data
from ..evaluate import eval_windows, perplexity
from ..model import LoadedModel, PrunableLayer, load_model, prunable_layers
from ..server.apply import apply_masks, restore_weights, snapshot_weights
from .config import AuditConfig


class Workbench:
    """Shared by every point: measure the perplexity of the model pruned by a global mask."""

    def __init__(self, config: AuditConfig) -> None:
        self.config = config
        self.loaded: LoadedModel = load_model(config.model, config.device)
        self.model = self.loaded.model
        self.layers: list[PrunableLayer] = prunable_layers(self.model)
        self.shapes = {layer.name: tuple(layer.module.weight.shape) for layer in self.layers}
        self.blocks = len({layer.block for layer in self.layers})
        self.dense = snapshot_weights(self.layers)
        self.articles = data.load_corpus(config.corpus)
        tokens = data.tokenize(self.loaded.tokenizer, data.heldout_text(self.articles))
        self.windows = eval_windows(tokens, config.seqlen, config.eval_windows)

    @property
    def weights(self) -> int:
        return sum(layer.numel for layer in self.layers)

    def perplexity(self, masks: Mapping[str, np.ndarray] | None = None) -> float:
        """Perplexity of the model pruned by `masks` (dense if None); weights restored after."""
        if masks is not None:
            apply_masks(self.layers, masks)
        try:
            return perplexity(self.model, self.windows, lambda: None)
        finally:
            restore_weights(self.layers, self.dense)
