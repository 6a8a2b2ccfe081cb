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
from .methods import PruneMethod, block_masks, owl_model_sparsities
from .scores import PRUNERS

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
    """Sum over tokens of x_j^2 for each input feature of one linear, the token and sample
    counts, and (only when asked for, DSnoT) the sums of max(x_j, 0) and of max(-x_j, 0)."""

    sq_sum: torch.Tensor  # float64 [in_features]
    tokens: int
    input_key: tuple = ()  # identifies the tensor the layer read (q/k/v read the same one)
    per_sample: torch.Tensor | None = None  # [samples, in_features], only when requested
    samples: int = 0
    x_pos: torch.Tensor | None = None  # float64 [in_features]: sum of the positive parts
    x_neg: torch.Tensor | None = None  # float64 [in_features]: sum of the negative parts

    @property
    def sq_mean(self) -> torch.Tensor:
        return self.sq_sum / max(self.tokens, 1)

    def __add__(self, other: LayerStats) -> LayerStats:
        def plus(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
            return None if a is None or b is None else a + b.to(a.device)

        return LayerStats(
            self.sq_sum + other.sq_sum.to(self.sq_sum.device),
            self.tokens + other.tokens,
            samples=self.samples + other.samples,
            x_pos=plus(self.x_pos, other.x_pos),
            x_neg=plus(self.x_neg, other.x_neg),
        )

    def detached(self) -> LayerStats:
        """The sums on the CPU, without the per-sample parts or the input key."""

        def cpu(value: torch.Tensor | None) -> torch.Tensor | None:
            return None if value is None else value.cpu()

        return LayerStats(
            self.sq_sum.cpu(), self.tokens, samples=self.samples,
            x_pos=cpu(self.x_pos), x_neg=cpu(self.x_neg),
        )  # fmt: skip


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
    first_moment: bool = False,
) -> tuple[dict[str, LayerStats], BlockInputs | None]:
    """Hook every prunable linear of the block and accumulate sum x^2 per input feature.

    With `per_sample`, each LayerStats also holds every sample's own sums (what DP clips); with
    `first_moment`, the sums of the positive and of the negative parts of x (DSnoT).
    """

    def zeros(layer: PrunableLayer) -> torch.Tensor:
        return torch.zeros(
            layer.module.in_features, dtype=torch.float64, device=layer.module.weight.device
        )

    stats = {
        layer.name: LayerStats(
            zeros(layer),
            0,
            x_pos=zeros(layer) if first_moment else None,
            x_neg=zeros(layer) if first_moment else None,
        )
        for layer in layers
    }

    sources: list[torch.Tensor] = []
    # q/k/v (and gate/up) read the same tensor one after another: square and sum it once.
    last: dict[str, Any] = {"input": None, "increment": None, "samples": None, "parts": None}
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
                if first_moment:
                    last["parts"] = (x.clamp_min(0).sum(dim=0), (-x).clamp_min(0).sum(dim=0))
                if per_sample:
                    batch = args[0].detach().reshape(args[0].shape[0], -1, args[0].shape[-1])
                    last["samples"] = batch.double().pow(2).sum(dim=1)
            entry.sq_sum += last["increment"]
            if first_moment:
                entry.x_pos += last["parts"][0]
                entry.x_neg += last["parts"][1]
            entry.samples += args[0].shape[0] if args[0].dim() == 3 else 1
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
        first_moment: bool = False,
    ) -> None:
        self.model = model
        self.stats_transform = stats_transform
        self.first_moment = first_moment
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
            first_moment=self.first_moment,
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

    def mask_and_advance(
        self, sparsity: float | dict[str, float], method: PruneMethod, calibration: str
    ) -> tuple[dict[str, LayerStats], dict[str, torch.Tensor]]:
        """This block's statistics and masks; move on dense (one-shot) or pruned by them."""
        stats = self.statistics()
        masks = method_block_masks(self.layers, stats, sparsity, method)
        self.propagate_dense() if calibration == "one-shot" else self.propagate(masks)
        return stats, masks

    def _advance(self, outputs: BlockInputs) -> None:
        self._inputs = outputs
        self._dense_outputs = None
        self.index += 1


def method_block_masks(
    layers: list[PrunableLayer],
    stats: dict[str, LayerStats],
    sparsity: float | dict[str, float],
    method: PruneMethod | None = None,
) -> dict[str, torch.Tensor]:
    """Masks of one block's linears under `method` (default Wanda) from their statistics, at
    `sparsity` (one value, or one per layer name)."""
    method = method or PruneMethod()
    weights = {layer.name: layer.module.weight.data for layer in layers}
    sparsities = sparsity if isinstance(sparsity, dict) else dict.fromkeys(weights, sparsity)
    return block_masks(method, weights, stats, sparsities)


def magnitude_masks(
    model: nn.Module, sparsity: float, method: PruneMethod | None = None
) -> dict[str, torch.Tensor]:
    """Magnitude masks of every prunable linear (no calibration data)."""
    method = method or PruneMethod(pruner="magnitude")
    return {
        name: mask.cpu()
        for index in range(len(decoder_blocks(model)))
        for name, mask in method_block_masks(
            block_linears(model, index), {}, sparsity, method
        ).items()
    }


def check_mask_options(sparsity: float, pruner: str, calibration: str) -> None:
    if calibration not in CALIBRATIONS:
        raise ConfigError(f"unknown calibration {calibration!r} (use {' or '.join(CALIBRATIONS)})")
    if not 0.0 < sparsity < 1.0:
        raise ConfigError(f"sparsity must lie in (0, 1), got {sparsity}")
    if pruner not in PRUNERS:
        raise ConfigError(f"unknown pruner {pruner!r} (use {', '.join(PRUNERS)})")


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
    method: PruneMethod | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, LayerStats]]:
    """One client's local masks (per output row, True = pruned) and the statistics behind them.

    `samples` [n, seqlen] are the client's token windows (None for magnitude). one-shot: every
    block sees dense activations; sequential: block l sees the outputs of blocks 0..l-1 pruned with
    this client's own masks (Wanda). The model's weights are unchanged when this returns.
    `stats_transform` replaces each block's statistics (see BlockwiseCalibration); `max_blocks`
    stops after the first blocks (their masks do not depend on later blocks). `method` (default:
    `pruner` alone) picks scores, sparsity type, OWL and DSnoT; its pruner wins over `pruner`.
    """
    method = method or PruneMethod(pruner=pruner)
    check_mask_options(sparsity, method.pruner, calibration)
    if method.pruner == "magnitude":
        magnitude = magnitude_masks(model, sparsity, method)
        blocks = len(decoder_blocks(model))
        for index in range(blocks if on_block else 0):
            on_block(index, blocks)  # type: ignore[misc]
        return magnitude, {}
    if samples is None:
        raise ConfigError(f"{method.pruner} needs calibration samples")
    sparsities: float | dict[str, float] = sparsity
    if method.layerwise == "owl":
        sparsities = owl_model_sparsities(model, samples, method, sparsity, batch_size)
    walk = BlockwiseCalibration(
        model, samples, batch_size, stats_transform, first_moment=method.first_moment
    )
    masks: dict[str, torch.Tensor] = {}
    all_stats: dict[str, LayerStats] = {}
    while not walk.done and (max_blocks is None or walk.index < max_blocks):
        index = walk.index
        stats, block_masks = walk.mask_and_advance(sparsities, method, calibration)
        masks.update({name: mask.cpu() for name, mask in block_masks.items()})
        all_stats.update({name: s.detached() for name, s in stats.items()})
        if on_block:
            on_block(index, len(walk.blocks))
    return masks, all_stats
