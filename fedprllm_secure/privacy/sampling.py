"""Uniform and Gaussian draws from an injected RandomSource (never numpy's global state)."""

from __future__ import annotations

import numpy as np

from ..randomness import RandomSource


def uniform_uint32(source: RandomSource, count: int) -> np.ndarray:
    """`count` independent uniform integers in [0, 2**32)."""
    return np.frombuffer(source.random_bytes(4 * count), dtype="<u4").copy()


def uniform_open(source: RandomSource, count: int) -> np.ndarray:
    """`count` independent uniforms in (0, 1) with 53-bit resolution (never 0, never 1)."""
    words = np.frombuffer(source.random_bytes(8 * count), dtype="<u8")
    return ((words >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def standard_normal(source: RandomSource, count: int) -> np.ndarray:
    """`count` independent N(0, 1) draws (Box-Muller on `uniform_open`)."""
    pairs = (count + 1) // 2
    u1, u2 = uniform_open(source, pairs), uniform_open(source, pairs)
    radius = np.sqrt(-2.0 * np.log(u1))
    angle = 2.0 * np.pi * u2
    return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:count]
