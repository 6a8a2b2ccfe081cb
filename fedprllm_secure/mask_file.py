"""The global masks as a file: `OUT/masks.npz` (`simulate --save-masks`).

Format `fedprllm-secure-masks/1`, a NumPy `.npz` archive (`np.load` reads it):

* `__format__`: the string `fedprllm-secure-masks/1`;
* for every prunable layer, in mask-layout order, `<layer name>`: its mask flattened (row-major)
  and bit-packed with `np.packbits` (uint8, most significant bit first; True = the weight is
  pruned, i.e. zero), and `__shape__/<layer name>`: the weight's shape (int64).

`load_masks` returns boolean arrays shaped like the weights; it also reads the plain archive of
boolean masks that the Flower server app writes (one array per layer, no `__format__`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .errors import DataError

FORMAT = "fedprllm-secure-masks/1"
SHAPE = "__shape__/"


def save_masks(path: Path, masks: Mapping[str, np.ndarray]) -> None:
    """Write `masks` (layer name -> boolean mask, True = pruned) to `path` atomically."""
    arrays: dict[str, np.ndarray] = {"__format__": np.array(FORMAT)}
    for name, mask in masks.items():
        values = np.asarray(mask).astype(bool)
        arrays[name] = np.packbits(values.reshape(-1).astype(np.uint8))
        arrays[SHAPE + name] = np.asarray(values.shape, dtype=np.int64)
    temporary = path.with_name(f".{path.name}.tmp.npz")
    np.savez_compressed(temporary, **arrays)  # type: ignore[arg-type]
    os.replace(temporary, path)


def load_masks(path: Path) -> dict[str, np.ndarray]:
    """The masks of `path` (this format or Flower's plain one) as shaped boolean arrays."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not a masks file: {exc}") from None
    with archive:
        if "__format__" not in archive.files:
            return {name: archive[name].astype(bool) for name in archive.files}
        if str(archive["__format__"]) != FORMAT:
            raise DataError(f"{path}: unknown masks format {archive['__format__']!s}")
        masks = {}
        for name in archive.files:
            if name == "__format__" or name.startswith(SHAPE):
                continue
            shape = tuple(int(n) for n in archive[SHAPE + name])
            bits = np.unpackbits(archive[name], count=int(np.prod(shape)))
            masks[name] = bits.reshape(shape).astype(bool)
        return masks
