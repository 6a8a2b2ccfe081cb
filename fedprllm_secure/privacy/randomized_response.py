"""Randomized response on mask bits (local DP per weight) and the server's unbiased counts.

A client keeps each bit with probability p = e^eps / (1 + e^eps) and flips it otherwise, so each
submitted bit is eps-DP with respect to the true bit; over d bits this composes to d * eps.
From the noisy sum S over n contributors, `(S - n (1 - p)) / (2p - 1)` is unbiased for the true
count, with variance n e^eps / (e^eps - 1)^2.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..errors import ConfigError
from ..randomness import RandomSource, SeededRandomSource
from ..secure_sum.api import ChunkSpec
from .sampling import uniform_uint32


def check_epsilon(epsilon: float, flag: str = "--rr-epsilon") -> float:
    """Return `epsilon` as a float, or raise ConfigError unless it is finite and positive."""
    if not (isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon > 0):
        raise ConfigError(f"{flag} must be a positive finite number, got {epsilon}")
    return float(epsilon)


def keep_probability(epsilon: float) -> float:
    """p = e^eps / (1 + e^eps), computed without overflow."""
    return 1.0 / (1.0 + math.exp(-check_epsilon(epsilon)))


def flip_probability(epsilon: float) -> float:
    """1 - p = 1 / (1 + e^eps)."""
    return 1.0 / (1.0 + math.exp(check_epsilon(epsilon)))


def randomize_bits(bits: np.ndarray, epsilon: float, source: RandomSource) -> np.ndarray:
    """Flip each 0/1 entry of `bits` independently with probability 1 / (1 + e^eps).

    Returns uint8 of the same shape. Each entry uses 32 fresh random bits from `source`
    (flip iff u < floor(q * 2^32), so the flip probability is exact to within 2^-32).
    """
    flat = np.asarray(bits).reshape(-1)
    if flat.size and (int(flat.min()) < 0 or int(flat.max()) > 1):
        raise ConfigError("randomized response needs a 0/1 mask")
    threshold = np.uint32(min(int(flip_probability(epsilon) * 2**32), 2**32 - 1))
    flips = uniform_uint32(source, flat.size) < threshold
    return (flat.astype(np.uint8) ^ flips.astype(np.uint8)).reshape(np.shape(bits))


def debias_counts(noisy_sums: np.ndarray, contributors: int, epsilon: float) -> np.ndarray:
    """Unbiased counts `(S - n (1 - p)) / (2p - 1)` from noisy sums over `contributors` = n.

    `n` must be the exact number of clients whose bits entered the sums (the protocol's
    `AggregateResult.contributors`); a wrong n biases every count.
    """
    if contributors < 1:
        raise ConfigError("debiasing needs at least one contributor")
    p = keep_probability(epsilon)
    sums = np.asarray(noisy_sums, dtype=np.float64)
    return (sums - contributors * (1.0 - p)) / (2.0 * p - 1.0)


def count_variance(contributors: int, epsilon: float) -> float:
    """Variance of one debiased count: n e^eps / (e^eps - 1)^2."""
    e = math.exp(check_epsilon(epsilon))
    return contributors * e / (e - 1.0) ** 2


RR_KEY_BYTES = 32


def draw_rr_key(source: RandomSource) -> bytes:
    """A client's secret randomized-response key for one pruning round (drawn once)."""
    return source.random_bytes(RR_KEY_BYTES)


def chunk_flips_source(key: bytes, chunk_name: str) -> RandomSource:
    """The randomness that flips the bits of chunk `chunk_name`: a ChaCha20 keystream keyed by
    SHA-256 of (the client's secret key, the chunk name), so a function of the chunk alone."""
    if len(key) != RR_KEY_BYTES:
        raise ConfigError(f"a randomized-response key has {RR_KEY_BYTES} bytes")
    return SeededRandomSource(b"fedprllm-secure/rr-key\x00" + key).child(f"rr/{chunk_name}")


def randomized_provider(
    provider: Callable[[int, ChunkSpec], np.ndarray], epsilon: float, key: bytes
) -> Callable[[int, ChunkSpec], np.ndarray]:
    """Wrap a client's InputProvider so every chunk it submits is randomized first.

    The flips of a chunk depend only on (`key`, chunk name), never on the aggregation index or
    the session: a chunk read again, in any aggregation, gives the same randomized bits, so m
    reads give one noisy copy, not m independent ones whose majority vote would reveal the true
    bits. `key` is the client's secret for one pruning round (`draw_rr_key`, from the OS CSPRNG
    in production); a new calibration needs a new key, or the XOR of two releases of one chunk
    name would cancel the flips.
    """
    check_epsilon(epsilon)

    def randomized(index: int, chunk: ChunkSpec) -> np.ndarray:
        bits = provider(index, chunk)
        return randomize_bits(bits, epsilon, chunk_flips_source(key, chunk.name))

    return randomized
