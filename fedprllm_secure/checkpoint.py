"""Safetensors checkpoints read one decoder block at a time, and pruned copies written the same way.

`resolve_checkpoint(spec)` finds the folder of a model spec: an embedded name (its converted
float32 checkpoint), a local folder, or a Hub id already in the Hugging Face cache (resolved
offline to its snapshot folder). GGUF files have no safetensors: load them whole (`load_model`).

`CheckpointReader` reads tensors by name from `model.safetensors` or from the shards named by
`model.safetensors.index.json`. Each read opens the shard memory-mapped (`safe_open`), copies the
asked tensors out and closes it again, so no mapping (and no page of it) outlives the read: the
reader holds nothing but the weight map.

`PrunedCheckpointWriter` writes a copy of a checkpoint shard by shard: one shard with every tensor
outside the decoder blocks, then one shard per block, each block's weights read from the source
in its own dtype with the masked entries set to zero. Config, tokenizer and every other non-weight
file are copied; the folder appears whole (atomic rename) when `finish()` returns, and it loads
with `from_pretrained`.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

from . import assets
from .errors import ModelError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".ckpt")
WEIGHT_INDEXES = (INDEX_FILE, "pytorch_model.bin.index.json")


def resolve_checkpoint(spec: str) -> Path:
    """The local folder holding the safetensors checkpoint of `spec` (never downloads)."""
    from .model import _embedded_checkpoint

    if spec in assets.ASSETS:
        if assets.ASSETS[spec].kind != "model":
            raise ModelError(f"{spec!r} is a corpus, not a model")
        return _embedded_checkpoint(spec)
    if spec.endswith(".gguf"):
        raise ModelError(f"{spec}: block-by-block loading needs a safetensors checkpoint, not GGUF")
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"{spec} is not a model directory (no config.json)")
        return path
    if spec.startswith((".", "/", "~")):
        raise ModelError(f"model path not found: {spec}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(spec, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise ModelError(
            f"{spec!r} is not in the Hugging Face cache (block-by-block is offline)"
        ) from exc


def return_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc `malloc_trim`; a no-op elsewhere).

    A block's tensors are below glibc's mmap threshold (at most 32 MB), so they come from the
    heap, and freed heap pages stay in the process: without this, RSS grows by most of a block
    per block although nothing is held (measured: +18 MB per 22 MB block)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


class CheckpointReader:
    """Tensors of a safetensors checkpoint folder by name, read shard by shard on demand."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        index = self.folder / INDEX_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError, TypeError) as exc:
                raise ModelError(f"{index} is not a safetensors index: {exc}") from exc
            self.weight_map: dict[str, str] = {str(k): str(v) for k, v in weight_map.items()}
        elif (self.folder / SINGLE_FILE).is_file():
            from safetensors import safe_open

            with safe_open(str(self.folder / SINGLE_FILE), framework="pt") as handle:
                self.weight_map = dict.fromkeys(handle.keys(), SINGLE_FILE)
        else:
            raise ModelError(f"{self.folder} has no {SINGLE_FILE} nor {INDEX_FILE}")
        for shard in set(self.weight_map.values()):
            if not (self.folder / shard).is_file():
                raise ModelError(f"{self.folder}: shard {shard} named by the index is missing")

    @property
    def names(self) -> list[str]:
        return list(self.weight_map)

    def read(self, names: Iterable[str]) -> dict[str, torch.Tensor]:
        """The tensors `names` (in their stored dtype), each shard mapped only while read."""
        from safetensors import safe_open

        by_shard: dict[str, list[str]] = {}
        for name in names:
            if name not in self.weight_map:
                raise ModelError(f"{self.folder}: the checkpoint holds no tensor {name!r}")
            by_shard.setdefault(self.weight_map[name], []).append(name)
        tensors: dict[str, torch.Tensor] = {}
        for shard, wanted in by_shard.items():
            with safe_open(str(self.folder / shard), framework="pt") as handle:
                for name in wanted:
                    tensors[name] = handle.get_tensor(name).clone()  # own memory, not the map
        return tensors

    def block_names(self, prefix: str, index: int) -> list[str]:
        """The stored tensors of decoder block `index` (`prefix`: e.g. "model.layers")."""
        start = f"{prefix}.{index}."
        return [name for name in self.weight_map if name.startswith(start)]

    def outside_blocks(self, prefix: str) -> list[str]:
        """The stored tensors that belong to no decoder block (embeddings, final norm, head)."""
        return [name for name in self.weight_map if not name.startswith(prefix + ".")]


def copy_side_files(source: Path, dest: Path) -> None:
    """Copy config, tokenizer and every other non-weight file of `source` into `dest`."""
    for item in source.iterdir():
        if (
            item.is_file()
            and not item.name.endswith(WEIGHT_SUFFIXES)
            and item.name not in WEIGHT_INDEXES
        ):
            shutil.copy2(item, dest / item.name)


class PrunedCheckpointWriter:
    """A pruned copy of `reader`'s checkpoint at `dest`, written one block shard at a time.

    Call `write_block(index, masks)` once for every block (any order): `masks` maps a layer name
    (`"model.layers.3.mlp.up_proj"`) to its boolean mask shaped like the weight, True = pruned.
    Tensors of the block with no mask are copied as stored. `finish()` writes the index and the
    side files and moves the folder to `dest`; ModelError if a block was never written.
    """

    def __init__(self, reader: CheckpointReader, dest: str | Path, prefix: str, blocks: int):
        self.reader, self.dest, self.prefix, self.blocks = reader, Path(dest), prefix, blocks
        if self.dest.exists():
            raise ModelError(f"{self.dest} exists: the pruned checkpoint needs a new folder")
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(dir=self.dest.parent, prefix=".pruned-"))
        self.weight_map: dict[str, str] = {}
        self.written: set[int] = set()
        self.total_bytes = 0
        self._save(0, reader.read(reader.outside_blocks(prefix)))

    def _shard_name(self, number: int) -> str:
        return f"model-{number + 1:05d}-of-{self.blocks + 1:05d}.safetensors"

    def _save(self, number: int, tensors: Mapping[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        name = self._shard_name(number)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(self.staging / name),
                  metadata={"format": "pt"})  # fmt: skip
        self.weight_map.update(dict.fromkeys(tensors, name))
        self.total_bytes += sum(t.numel() * t.element_size() for t in tensors.values())

    def write_block(
        self,
        index: int,
        masks: Mapping[str, torch.Tensor | np.ndarray],
        scales: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Block `index` pruned by `masks` (and its kept weights multiplied by `scales`, as
        `server.apply.apply_masks` does), in the source dtype."""
        if not 0 <= index < self.blocks or index in self.written:
            raise ModelError(f"block {index} is out of range or was already written")
        names = self.reader.block_names(self.prefix, index)
        tensors = self.reader.read(names)
        for layer, given in masks.items():
            weight = tensors.get(f"{layer}.weight")
            mask = torch.as_tensor(np.asarray(given.cpu() if torch.is_tensor(given) else given))
            if weight is None or tuple(weight.shape) != tuple(mask.shape):
                raise ModelError(f"mask of {layer} fits no weight of block {index}")
            if scales is not None:
                weight.mul_(torch.as_tensor(scales[layer], dtype=weight.dtype))
            weight[mask.to(torch.bool)] = 0
        self._save(index + 1, tensors)
        self.written.add(index)
        del tensors
        return_freed_memory()

    def finish(self) -> Path:
        missing = sorted(set(range(self.blocks)) - self.written)
        if missing:
            raise ModelError(f"pruned checkpoint: blocks {missing} were never written")
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": self.weight_map}
        (self.staging / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True))
        copy_side_files(self.reader.folder, self.staging)
        os.replace(self.staging, self.dest)
        return self.dest

    def abort(self) -> None:
        """Remove what was written (nothing appears at `dest`)."""
        shutil.rmtree(self.staging, ignore_errors=True)
