"""Integer encoding of noisy statistics for distributed DP through the secure sum.

A client's statistics for one release are `windows` non-negative vectors of `dimension` entries
(one per calibration window). Pipeline, all parameters public:

1. clip each window's vector to L2 norm `clip` (C);
2. scale by gamma = norm_units / C, so a clipped window has norm <= norm_units;
3. round each entry up or down at random, unbiased (P(up) = fractional part), redrawing a window
   whose rounded norm exceeds `window_bound` = sqrt(u^2 + d/4 + sqrt(2 ln(1/beta)) (u + sqrt(d)/2))
   (u = norm_units; Kairouz, Liu & Steinke 2021, conditional randomized rounding; a draw exceeds it
   with probability <= beta). Every rounded window is then a non-negative integer vector of norm
   <= `window_bound`, deterministically, whatever the rounding draws: the sensitivity holds;
4. sum the windows, add the client's noise share (integers, possibly negative), reduce mod 2^b.

The secure sum adds the residues (each in [0, 2^b - 1]; as limbs of `fixed_point.LIMB_BITS` bits
when b > 24) exactly; the server reduces the total mod 2^b and lifts it into the public window
[low, low + 2^b), which holds the true noisy sum except with probability bounded by the noise's
tail at `tail_sds` standard deviations (a utility failure, never a privacy one: reduction mod 2^b is
post-processing). b is chosen from the parameters (`plan_encoding`). No offset is needed: negative
values wrap, and nothing data-dependent (no exponent) is uploaded unnoised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, PrivacyError, ProtocolError
from ..randomness import RandomSource
from .sampling import uniform_open

ROUNDING_BETA = 2.0**-20
"""Probability bound of one rounding draw exceeding the norm bound (it is then redrawn)."""
TAIL_SDS = 12.0
"""Noise standard deviations on each side kept inside the decoding window."""
MAX_ROUNDING_TRIES = 64
MAX_MODULUS_BITS = 62


def rounded_norm_bound(norm_units: float, dimension: int, beta: float = ROUNDING_BETA) -> float:
    """The L2 bound enforced on a randomized-rounded window of norm <= `norm_units`."""
    slack = math.sqrt(2.0 * math.log(1.0 / beta)) * (norm_units + math.sqrt(dimension) / 2.0)
    return math.sqrt(norm_units**2 + dimension / 4.0 + slack)


@dataclass(frozen=True)
class Encoding:
    """Public parameters of one release's encoding (every client and the server agree on them)."""

    clip: float  # C: L2 norm bound of one window's vector, in statistic units
    norm_units: float  # gamma * C: integer units of a clipped window's norm
    dimension: int
    windows: int  # windows per client (public)
    modulus_bits: int  # residues mod 2^b
    low: int  # the decoded sum is lifted into [low, low + 2^b)

    @property
    def gamma(self) -> float:
        """Integer units per statistic unit."""
        return self.norm_units / self.clip

    @property
    def window_bound(self) -> float:
        """L2 norm bound of every rounded window (integer units): the sensitivity's base."""
        return rounded_norm_bound(self.norm_units, self.dimension)

    @property
    def bound(self) -> int:
        """Every residue a client submits lies in [0, bound] (split into limbs when b > 24)."""
        return (1 << self.modulus_bits) - 1


def plan_encoding(
    clip: float,
    dimension: int,
    windows: int,
    max_contributors: int,
    sum_noise_std: float,
    norm_units: float | None = None,
    tail_sds: float = TAIL_SDS,
) -> Encoding:
    """The smallest modulus 2^b holding the noisy sum of up to `max_contributors` clients.

    The signal per entry lies in [0, max_contributors * windows * floor(window_bound)] (a
    non-negative vector's entries are at most its norm); the noise (std at most `sum_noise_std`
    over `max_contributors`) is kept within `tail_sds` standard deviations each side.
    `norm_units` defaults to the smallest power of two >= 16 sqrt(d) (the rounding then
    inflates the norm bound by about 0.1%).
    """
    if not (math.isfinite(clip) and clip > 0):
        raise ConfigError(f"the clip norm must be positive and finite, got {clip}")
    if dimension < 1 or windows < 1 or max_contributors < 1:
        raise ConfigError("dimension, windows and contributors must be at least 1")
    if norm_units is None:
        norm_units = float(1 << max(0, math.ceil(math.log2(16.0 * math.sqrt(dimension)))))
    window_cap = math.floor(rounded_norm_bound(norm_units, dimension))
    margin = math.ceil(tail_sds * sum_noise_std)
    span = max_contributors * windows * window_cap + 2 * margin + 1
    bits = max(1, span.bit_length())
    if bits > MAX_MODULUS_BITS or max_contributors << bits >= 1 << 64:
        raise ConfigError(
            f"{max_contributors} clients x 2^{bits} overflows 64 bits: lower the norm units"
        )
    return Encoding(clip, float(norm_units), dimension, windows, bits, -margin)


def clip_windows(windows: np.ndarray, clip: float) -> np.ndarray:
    """Each row scaled down to L2 norm <= clip; refuses negative or non-finite statistics."""
    windows = np.asarray(windows, dtype=np.float64)
    if windows.ndim != 2:
        raise ProtocolError("statistics must be given as [windows, dimension]")
    if windows.size and (not np.isfinite(windows).all() or windows.min() < 0):
        raise ProtocolError("a statistic is negative or not finite")
    norms = np.linalg.norm(windows, axis=1, keepdims=True)
    return windows * np.minimum(1.0, clip / np.maximum(norms, 1e-300))


def conditional_round(scaled: np.ndarray, bound: float, source: RandomSource) -> np.ndarray:
    """Unbiased randomized rounding of each row of a non-negative matrix, redrawn while the
    row's rounded L2 norm exceeds `bound` (returns int64, every row's norm <= bound)."""
    floor = np.floor(scaled)
    fraction = scaled - floor
    out = floor.astype(np.int64)
    todo = np.arange(scaled.shape[0])
    for _ in range(MAX_ROUNDING_TRIES):
        if not todo.size:
            return out
        up = uniform_open(source, fraction[todo].size).reshape(fraction[todo].shape)
        rounded = floor[todo].astype(np.int64) + (up < fraction[todo])
        squares = np.sum(rounded * rounded, axis=1)  # exact in int64
        fits = squares <= bound * bound
        out[todo[fits]] = rounded[fits]
        todo = todo[~fits]
    raise PrivacyError("randomized rounding kept exceeding the norm bound; refusing to encode")


def integer_statistics(windows: np.ndarray, encoding: Encoding, source: RandomSource) -> np.ndarray:
    """Steps 1-3 and the sum over windows: the client's int64 vector before noise."""
    windows = np.asarray(windows, dtype=np.float64)
    if windows.shape != (encoding.windows, encoding.dimension):
        raise ProtocolError(
            f"expected statistics of shape ({encoding.windows}, {encoding.dimension}), "
            f"got {windows.shape}"
        )
    scaled = clip_windows(windows, encoding.clip) * encoding.gamma
    return conditional_round(scaled, encoding.window_bound, source).sum(axis=0)


def encode_noisy(integers: np.ndarray, noise_share: np.ndarray, encoding: Encoding) -> np.ndarray:
    """(integers + noise_share) mod 2^b as uint64 residues in [0, encoding.bound]."""
    integers = np.asarray(integers, dtype=np.int64)
    noise_share = np.asarray(noise_share, dtype=np.int64)
    if integers.shape != (encoding.dimension,) or noise_share.shape != integers.shape:
        raise ProtocolError("statistics and noise must both have one entry per dimension")
    return np.mod(integers + noise_share, 1 << encoding.modulus_bits).astype(np.uint64)


def lift_sum(residue_sum: np.ndarray, encoding: Encoding) -> np.ndarray:
    """The noisy integer sum (int64): the exact sum of every client's residues reduced mod 2^b
    and lifted into [low, low + 2^b)."""
    modulus = np.uint64(1 << encoding.modulus_bits)
    total = np.asarray(residue_sum, dtype=np.uint64) % modulus
    shifted = (total + np.uint64(-encoding.low % (1 << encoding.modulus_bits))) % modulus
    return shifted.astype(np.int64) + encoding.low


def decode_sum(residue_sum: np.ndarray, encoding: Encoding) -> np.ndarray:
    """The noisy sum in statistic units (float64): `lift_sum` divided by gamma."""
    return lift_sum(residue_sum, encoding).astype(np.float64) / encoding.gamma
