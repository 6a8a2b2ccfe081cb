"""Client calibration of a model larger than memory: one decoder block in memory at a time.

`open_blockwise(spec)` builds the model's skeleton with empty (meta) weights, then loads the
tensors outside the decoder blocks from the checkpoint (embeddings, final norm; not an untied
output head, which calibration never runs). `iter_block_masks` walks the
samples through the decoder exactly as `client.calibrate.local_masks` does (the same
`BlockwiseCalibration`, statistics and Wanda masks), loading each block's weights from the
checkpoint just before its statistics and releasing them (back to meta) once its outputs are
computed. It yields every block's statistics and masks and keeps none of them, so a caller that
uploads or writes them (`PrunedCheckpointWriter`) holds one block at a time: peak memory is the
embeddings, one block (plus the masked copy a sequential pass makes) and the samples' activations.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .checkpoint import CheckpointReader, resolve_checkpoint, return_freed_memory
from .client.calibrate import (
    BlockCallback,
    BlockwiseCalibration,
    LayerStats,
    StatsTransform,
    check_mask_options,
    method_block_masks,
)
from .client.methods import PruneMethod
from .errors import ConfigError, ModelError
from .model import block_linears, block_prefix, decoder_blocks, resolve_device, resolve_dtype


@dataclass
class BlockwiseModel:
    """A causal LM whose decoder blocks live in the checkpoint until `load_block` brings one in."""

    model: nn.Module
    tokenizer: object
    reader: CheckpointReader
    prefix: str  # e.g. "model.layers"
    device: torch.device
    dtype: torch.dtype

    @property
    def blocks(self) -> int:
        return len(decoder_blocks(self.model))

    def load_block(self, index: int) -> None:
        """Read block `index`'s weights from the checkpoint into the skeleton (in `dtype`)."""
        from accelerate.utils import set_module_tensor_to_device

        block = decoder_blocks(self.model)[index]
        expected = {f"{self.prefix}.{index}.{key}" for key in block.state_dict()}
        stored = set(self.reader.block_names(self.prefix, index))
        if expected - stored:
            raise ModelError(
                f"the checkpoint lacks {sorted(expected - stored)[:3]} of block {index}"
            )
        for name, tensor in self.reader.read(sorted(expected)).items():
            value = tensor.to(self.dtype) if tensor.is_floating_point() else tensor
            set_module_tensor_to_device(self.model, name, self.device, value=value)

    def load_output_head(self) -> nn.Module:
        """The output head, its weights read now if untied (calibration never loads them)."""
        from accelerate.utils import set_module_tensor_to_device

        head = self.model.get_output_embeddings()
        if getattr(self.model.config, "tie_word_embeddings", False):
            head.weight = self.model.get_input_embeddings().weight  # loaded with the skeleton
            return head
        prefix = next(name for name, module in self.model.named_modules() if module is head)
        names = [f"{prefix}.{key}" for key, _ in head.named_parameters()]
        for name, tensor in self.reader.read(names).items():
            value = tensor.to(self.dtype) if tensor.is_floating_point() else tensor
            set_module_tensor_to_device(self.model, name, self.device, value=value)
        return head

    def release_block(self, index: int) -> None:
        """Drop block `index`'s weights (back to the meta device: no memory)."""
        decoder_blocks(self.model)[index].to(torch.device("meta"))
        return_freed_memory()


def _checkpoint_dtype(config: object) -> torch.dtype:
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(stored, str):
        stored = getattr(torch, stored, None)
    return stored if isinstance(stored, torch.dtype) else torch.float32


def _output_head_names(model: nn.Module) -> set[str]:
    """The parameter names of an untied output head (LLaMA: lm_head.weight), else none."""
    head = model.get_output_embeddings()
    if head is None or head.weight is model.get_input_embeddings().weight:
        return set()
    for name, module in model.named_modules():
        if module is head:
            return {f"{name}.{key}" for key, _ in module.named_parameters()}
    return set()


def open_blockwise(spec: str, device: str = "cpu", dtype: str = "auto") -> BlockwiseModel:
    """The skeleton of `spec` (embedded name, checkpoint folder, cached Hub id) with only the
    tensors outside the decoder blocks loaded. `dtype` as in `load_model` (auto: the stored one)."""
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from .model import _quiet_transformers

    _quiet_transformers()
    folder = resolve_checkpoint(spec)
    target = resolve_device(device)
    reader = CheckpointReader(folder)
    try:
        config = AutoConfig.from_pretrained(str(folder))
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load model {spec!r}: {str(exc).strip().splitlines()[0]}") from exc
    wanted = resolve_dtype(dtype)
    torch_dtype = _checkpoint_dtype(config) if wanted == "auto" else wanted
    with init_empty_weights():  # parameters on meta; buffers (rotary frequencies) real
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    prefix = block_prefix(model)
    head = _output_head_names(model)  # never run by calibration: not loaded
    for name, tensor in reader.read(set(reader.outside_blocks(prefix)) - head).items():
        value = tensor.to(torch_dtype) if tensor.is_floating_point() else tensor
        set_module_tensor_to_device(model, name, target, value=value)
    for name, buffer in list(model.named_buffers()):  # rotary frequencies follow the device
        set_module_tensor_to_device(model, name, target, value=buffer)
    model.eval()
    return BlockwiseModel(model, tokenizer, reader, prefix, target, torch_dtype)


@dataclass
class BlockResult:
    """One block's outcome: its layers' statistics (empty for magnitude) and local masks."""

    index: int
    stats: dict[str, LayerStats]
    masks: dict[str, torch.Tensor]  # layer name -> bool mask on the CPU, True = pruned


def iter_block_masks(
    bm: BlockwiseModel,
    samples: torch.Tensor | None,
    sparsity: float,
    pruner: str = "wanda",
    calibration: str = "sequential",
    batch_size: int = 8,
    stats_transform: StatsTransform | None = None,
    max_blocks: int | None = None,
    method: PruneMethod | None = None,
) -> Iterator[BlockResult]:
    """`local_masks`'s walk, one block in memory at a time; yields each block's result in order.
    `method` (default: `pruner` alone) as in `local_masks`, except OWL: its per-block sparsities
    need every block's statistics before the first mask, so it is refused here (ConfigError)."""
    method = method or PruneMethod(pruner=pruner)
    pruner = method.pruner
    if method.layerwise == "owl":
        raise ConfigError("block-by-block calibration does not support OWL (layerwise owl)")
    check_mask_options(sparsity, pruner, calibration)
    stop = bm.blocks if max_blocks is None else min(max_blocks, bm.blocks)
    if pruner == "magnitude":
        for index in range(stop):
            bm.load_block(index)
            layers = block_linears(bm.model, index)
            masks = {
                n: m.cpu() for n, m in method_block_masks(layers, {}, sparsity, method).items()
            }
            bm.release_block(index)
            yield BlockResult(index, {}, masks)
        return
    if samples is None:
        raise ConfigError("wanda needs calibration samples")
    walk = BlockwiseCalibration(
        bm.model, samples, batch_size, stats_transform, first_moment=method.first_moment
    )
    while walk.index < stop:
        index = walk.index
        bm.load_block(index)
        try:
            stats, masks = walk.mask_and_advance(sparsity, method, calibration)
        finally:
            bm.release_block(index)
        yield BlockResult(
            index,
            {name: LayerStats(s.sq_sum.cpu(), s.tokens, s.input_key) for name, s in stats.items()},
            {name: mask.cpu() for name, mask in masks.items()},
        )


def blockwise_local_masks(
    bm: BlockwiseModel,
    samples: torch.Tensor | None,
    sparsity: float,
    pruner: str = "wanda",
    calibration: str = "sequential",
    batch_size: int = 8,
    on_block: BlockCallback | None = None,
    stats_transform: StatsTransform | None = None,
    max_blocks: int | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, LayerStats]]:
    """`calibrate.local_masks`'s contract (every mask and statistic, held) on a BlockwiseModel.
    For models whose masks fit in memory; larger ones consume `iter_block_masks` block by block."""
    masks: dict[str, torch.Tensor] = {}
    stats: dict[str, LayerStats] = {}
    for result in iter_block_masks(
        bm, samples, sparsity, pruner, calibration, batch_size, stats_transform, max_blocks
    ):
        masks.update(result.masks)
        stats.update(result.stats)
        if on_block:
            on_block(result.index, bm.blocks)
    return masks, stats
