"""Activation statistics and local masks, block by block through the decoder.

Only one block's activations for the samples at hand are ever held (`BlockInputs`), so a client
with n samples costs n forward passes, never a buffer sized for every client.

* one-shot: statistics of every block come from the dense model's activations.
* sequential (Wanda): block l's statistics come from inputs that went through blocks 0..l-1
  pruned with this client's own masks; after masking block l its outputs are recomputed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, DataError
from ..model import PrunableLayer, block_linears, decoder_blocks
from .scores import magnitude_scores, row_mask, wanda_scores

CALIBRATIONS = ("sequential", "one-shot")
BlockCallback = Callable[[int, int], None]  # (block index, number of blocks)
# (block index, {layer: per-sample sums of x^2 [samples, in_features]}) -> {layer: released sums}
StatsTransform = Callable[[int, dict[str, torch.Tensor]], dict[str, torch.Tensor]]


@dataclass
class BlockInputs:
    """The hidden states entering one block, in micro-batches, with the block's call kwargs."""

    hidden: list[torch.Tensor]
    kwargs: list[dict[str, Any]]


@dataclass
class LayerStats:
    """Sum over tokens of x_j^2 for each input feature of one linear, and the token count."""

    sq_sum: torch.Tensor  # float64 [in_features]
    tokens: int
    input_key: tuple = ()  # identifies the tensor the layer read (q/k/v read the same one)
    per_sample: torch.Tensor | None = None  # [samples, in_features], only when requested

    @property
    def sq_mean(self) -> torch.Tensor:
        return self.sq_sum / max(self.tokens, 1)

    def __add__(self, other: LayerStats) -> LayerStats:
        return LayerStats(
            self.sq_sum + other.sq_sum.to(self.sq_sum.device), self.tokens + other.tokens
        )


class _StopForward(Exception):
    pass


def capture_block_inputs(
    model: nn.Module, samples: torch.Tensor, batch_size: int = 8
) -> BlockInputs:
    """Run the embedding layers on `samples` [n, seqlen] and catch what enters block 0."""
    blocks = decoder_blocks(model)
    device = next(model.parameters()).device
    hidden: list[torch.Tensor] = []
    kwargs: list[dict[str, Any]] = []

    def catch(_module: nn.Module, args: tuple, kw: dict) -> None:
        hidden.append(args[0] if args else kw.pop("hidden_states"))
        kw = {k: v for k, v in kw.items() if k != "hidden_states"}
        kw.pop("past_key_values", None)  # no KV cache: each block is re-run on these inputs
        kw["use_cache"] = False
        kwargs.append(kw)
        raise _StopForward

    handle = blocks[0].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        with torch.no_grad():
            for start in range(0, samples.shape[0], batch_size):
                try:
                    model(samples[start : start + batch_size].to(device), use_cache=False)
                except _StopForward:
                    pass
    finally:
        handle.remove()
    return BlockInputs(hidden, kwargs)


def _block_output(result: Any) -> torch.Tensor:
    return result[0] if isinstance(result, tuple) else result


def run_block(block: nn.Module, inputs: BlockInputs) -> BlockInputs:
    """The block's outputs for every micro-batch (they are the next block's inputs)."""
    with torch.no_grad():
        outputs = [
            _block_output(block(h, **kw))
            for h, kw in zip(inputs.hidden, inputs.kwargs, strict=True)
        ]
    return BlockInputs(outputs, inputs.kwargs)


def block_statistics(
    block: nn.Module,
    layers: list[PrunableLayer],
    inputs: BlockInputs,
    keep_outputs: bool,
    per_sample: bool = False,
) -> tuple[dict[str, LayerStats], BlockInputs | None]:
    """Hook every prunable linear of the block and accumulate sum x^2 per input feature.

    With `per_sample`, each LayerStats also holds every sample's own sums (what DP clips).
    """
    stats = {
        layer.name: LayerStats(
            torch.zeros(
                layer.module.in_features, dtype=torch.float64, device=layer.module.weight.device
            ),
            0,
        )
        for layer in layers
    }

    sources: list[torch.Tensor] = []
    # q/k/v (and gate/up) read the same tensor one after another: square and sum it once.
    last: dict[str, Any] = {"input": None, "increment": None, "samples": None}
    parts: dict[str, list[torch.Tensor]] = {layer.name: [] for layer in layers}

    def make_hook(name: str) -> Callable:
        def hook(_module: nn.Module, args: tuple, _output: Any) -> None:
            entry = stats[name]
            if not entry.input_key:
                # Hold every distinct input of the first pass so no address is reused: the key
                # is the position of the very tensor object this layer read.
                position = next((i for i, t in enumerate(sources) if t is args[0]), len(sources))
                if position == len(sources):
                    sources.append(args[0])
                entry.input_key = (position,)
            if last["input"] is not args[0]:
                # float64 before the reduction: sums over different token groupings (one client
                # vs all pooled) must agree far below any Wanda score gap.
                x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
                last["input"], last["increment"] = args[0], x.pow(2).sum(dim=0)
                if per_sample:
                    batch = args[0].detach().reshape(args[0].shape[0], -1, args[0].shape[-1])
                    last["samples"] = batch.double().pow(2).sum(dim=1)
            entry.sq_sum += last["increment"]
            if per_sample:
                parts[name].append(last["samples"])
            entry.tokens += args[0].numel() // args[0].shape[-1]

        return hook

    handles = [layer.module.register_forward_hook(make_hook(layer.name)) for layer in layers]
    try:
        outputs = run_block(block, inputs)
    finally:
        for handle in handles:
            handle.remove()
    if per_sample:
        for name, entry in stats.items():
            entry.per_sample = torch.cat(parts[name]) if parts[name] else None
    return stats, (outputs if keep_outputs else None)


def shared_input_groups(
    layers: list[PrunableLayer], stats: dict[str, LayerStats]
) -> list[list[str]]:
    """The block's linears grouped by the input tensor they read, in layer order.

    Linears of one group (LLaMA: q/k/v, and gate/up) have identical statistics, so a client needs
    to send them once. The grouping depends on the architecture only, never on the data.
    """
    groups: dict[tuple, list[str]] = {}
    for layer in layers:
        key = stats[layer.name].input_key or (layer.name,)
        groups.setdefault(key, []).append(layer.name)
    return list(groups.values())


@contextmanager
def masked_weights(layers: list[PrunableLayer], masks: dict[str, torch.Tensor]) -> Iterator[None]:
    """Temporarily zero the masked weights of `layers`; the dense weights come back after."""
    saved = {layer.name: layer.module.weight.data.clone() for layer in layers}
    try:
        for layer in layers:
            layer.module.weight.data[masks[layer.name].to(layer.module.weight.device)] = 0
        yield
    finally:
        for layer in layers:
            layer.module.weight.data.copy_(saved[layer.name])


class BlockwiseCalibration:
    """One client's samples walking through the decoder, one block at a time.

    For the current block call `statistics()`, then exactly one of `propagate_dense()` (the
    dense block's outputs, a by-product of the statistics pass) or `propagate(masks)` (the block
    re-run with `masks` applied for the pass only; None runs it with the weights as they are, e.g.
    after the server pruned the global block in place). Holds one block's activations.

    With `stats_transform` (e.g. DP noise), `statistics()` returns the transform's sums of the
    per-sample statistics instead of the exact sums: one call of the transform per block.
    """

    def __init__(
        self,
        model: nn.Module,
        samples: torch.Tensor,
        batch_size: int = 8,
        stats_transform: StatsTransform | None = None,
    ) -> None:
        self.model = model
        self.stats_transform = stats_transform
        self.blocks = decoder_blocks(model)
        self.index = 0
        self._inputs = capture_block_inputs(model, samples, batch_size)
        self._dense_outputs: BlockInputs | None = None

    @property
    def done(self) -> bool:
        return self.index >= len(self.blocks)

    @property
    def layers(self) -> list[PrunableLayer]:
        return block_linears(self.model, self.index)

    def statistics(self) -> dict[str, LayerStats]:
        transform = self.stats_transform
        stats, self._dense_outputs = block_statistics(
            self.blocks[self.index],
            self.layers,
            self._inputs,
            keep_outputs=True,
            per_sample=transform is not None,
        )
        if transform is not None:
            per_sample: dict[str, torch.Tensor] = {}
            for name, entry in stats.items():
                if entry.per_sample is None:  # the layer's hook never ran: no samples reached it
                    raise DataError(f"{name} saw no calibration samples: nothing to release")
                per_sample[name] = entry.per_sample
            released = transform(self.index, per_sample)
            for name, entry in stats.items():
                entry.sq_sum = released[name].to(entry.sq_sum.device, torch.float64)
                entry.per_sample = None
        return stats

    @property
    def hidden(self) -> list[torch.Tensor]:
        """The activations entering the current block (one tensor per micro-batch)."""
        return self._inputs.hidden

    def resume_at(self, index: int, hidden: list[torch.Tensor]) -> None:
        """Continue a saved walk: block `index` next, entered by `hidden` (what `hidden` held
        when it was saved). The call kwargs stay this walk's own (they depend on the samples'
        shape only)."""
        if len(hidden) != len(self._inputs.hidden):
            raise DataError("a saved walk must have one activation tensor per micro-batch")
        device = self._inputs.hidden[0].device
        self._inputs = BlockInputs([h.to(device) for h in hidden], self._inputs.kwargs)
        self._dense_outputs = None
        self.index = index

    def propagate_dense(self) -> None:
        if self._dense_outputs is None:
            raise RuntimeError("statistics() must run before propagate_dense()")
        self._advance(self._dense_outputs)

    def propagate(self, masks: dict[str, torch.Tensor] | None) -> None:
        block = self.blocks[self.index]
        if masks is None:
            outputs = run_block(block, self._inputs)
        else:
            with masked_weights(self.layers, masks):
                outputs = run_block(block, self._inputs)
        self._advance(outputs)

    def _advance(self, outputs: BlockInputs) -> None:
        self._inputs = outputs
        self._dense_outputs = None
        self.index += 1


def wanda_block_masks(
    layers: list[PrunableLayer], stats: dict[str, LayerStats], sparsity: float
) -> dict[str, torch.Tensor]:
    """Per-row Wanda masks of one block's linears from their activation statistics."""
    return {
        layer.name: row_mask(
            wanda_scores(layer.module.weight.data, stats[layer.name].sq_mean), sparsity
        )
        for layer in layers
    }


def magnitude_masks(model: nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    """Per-row magnitude masks of every prunable linear (no calibration data)."""
    return {
        layer.name: row_mask(magnitude_scores(layer.module.weight.data), sparsity).cpu()
        for index in range(len(decoder_blocks(model)))
        for layer in block_linears(model, index)
    }


def check_mask_options(sparsity: float, pruner: str, calibration: str) -> None:
    if calibration not in CALIBRATIONS:
        raise ConfigError(f"unknown calibration {calibration!r} (use {' or '.join(CALIBRATIONS)})")
    if not 0.0 < sparsity < 1.0:
        raise ConfigError(f"sparsity must lie in (0, 1), got {sparsity}")
    if pruner not in ("wanda", "magnitude"):
        raise ConfigError(f"unknown pruner {pruner!r} (use wanda or magnitude)")


def local_masks(
    model: nn.Module,
    samples: torch.Tensor | None,
    sparsity: float,
    pruner: str = "wanda",
    calibration: str = "sequential",
    batch_size: int = 8,
    on_block: BlockCallback | None = None,
    stats_transform: StatsTransform | None = None,
    max_blocks: int | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, LayerStats]]:
    """One client's local masks (per output row, True = pruned) and the statistics behind them.

    `samples` [n, seqlen] are the client's token windows (None for magnitude). one-shot: every
    block sees dense activations; sequential: block l sees the outputs of blocks 0..l-1 pruned with
    this client's own masks (Wanda). The model's weights are unchanged when this returns.
    `stats_transform` replaces each block's statistics (see BlockwiseCalibration); `max_blocks`
    stops after the first blocks (their masks do not depend on later blocks).
    """
    check_mask_options(sparsity, pruner, calibration)
    if pruner == "magnitude":
        magnitude = magnitude_masks(model, sparsity)
        blocks = len(decoder_blocks(model))
        for index in range(blocks if on_block else 0):
            on_block(index, blocks)  # type: ignore[misc]
        return magnitude, {}
    if samples is None:
        raise ConfigError("wanda needs calibration samples")
    walk = BlockwiseCalibration(model, samples, batch_size, stats_transform)
    masks: dict[str, torch.Tensor] = {}
    all_stats: dict[str, LayerStats] = {}
    while not walk.done and (max_blocks is None or walk.index < max_blocks):
        index, layers = walk.index, walk.layers
        stats = walk.statistics()
        block_masks = wanda_block_masks(layers, stats, sparsity)
        if calibration == "one-shot":
            walk.propagate_dense()
        else:
            walk.propagate(block_masks)
        masks.update({name: mask.cpu() for name, mask in block_masks.items()})
        all_stats.update({name: LayerStats(s.sq_sum.cpu(), s.tokens) for name, s in stats.items()})
        if on_block:
            on_block(index, len(walk.blocks))
    return masks, all_stats
