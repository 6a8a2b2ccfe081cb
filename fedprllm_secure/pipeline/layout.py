"""The one wire layout of masks and statistics: bit packing, the layout fingerprint, chunk names.

* A mask (True = pruned) travels as `np.packbits` of its flattened 0/1 values (`pack`/`unpack`).
* The layout fingerprint names the prunable layers in order with their sizes: a node whose model
  has another fingerprint cannot take part (its chunks would not line up with the server's).
* In stats mode a layer group is named by its leader (first linear reading the input tensor); its
  fixed-point statistics travel as limbs `"<leader>#<k>"` (`limb_chunk`, `chunk_leader`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import torch

Packed = dict[str, np.ndarray]  # layer name -> np.packbits of the flattened 0/1 mask


def pack(mask: torch.Tensor | np.ndarray) -> np.ndarray:
    """The flattened 0/1 mask as packed bits (uint8, big-endian bit order: np.packbits)."""
    values = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    return np.packbits(values.reshape(-1).astype(np.uint8))


def unpack(packed: np.ndarray, length: int) -> np.ndarray:
    """The first `length` bits of `packed` as uint8 0/1 (flat)."""
    return np.unpackbits(np.asarray(packed, dtype=np.uint8), count=length)


def pack_masks(masks: Mapping[str, torch.Tensor | np.ndarray]) -> Packed:
    return {name: pack(mask) for name, mask in masks.items()}


def unpack_masks(
    packed: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    """Boolean masks shaped like their weights, for every name of `packed`."""
    return {
        name: unpack(bits, int(np.prod(shapes[name]))).reshape(shapes[name]).astype(bool)
        for name, bits in packed.items()
    }


def fingerprint(lengths: Mapping[str, int]) -> str:
    """SHA-256 (hex) of the ordered (layer name, weight count) list of the prunable layout."""
    return hashlib.sha256(repr(list(lengths.items())).encode()).hexdigest()


def limb_chunk(leader: str, limb: int) -> str:
    """The chunk name of limb `limb` of the fixed-point statistics of group `leader`."""
    return f"{leader}#{limb}"


def chunk_leader(chunk: str) -> tuple[str, int | None]:
    """(group leader, limb index) of a stats chunk; limb None for an exponent histogram."""
    leader, sep, limb = chunk.partition("#")
    return leader, (int(limb) if sep else None)
