"""Fixed-point encoding of activation statistics for the secure sum (`--aggregate stats`).

Statistics are non-negative floats (sums of squares). For one layer, every client first reports
the binade of its largest value as a one-hot vector over `EXPONENT_SLOTS` exponents, summed
securely like any bounded vector: the server learns only how many clients fall in each binade and
takes the highest, `e`. Then each client sends q = min(round(x * 2^(P - e)), 2^P - 1) for every
value x <= 2^e, split into limbs of `LIMB_BITS` bits (so every protocol, CKKS included, carries
them exactly); each limb sum is at most n * (2^LIMB_BITS - 1), and the joined sum at most
n * (2^P - 1), which `check_capacity` keeps below 2^64: overflow is impossible by construction.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError, ProtocolError

EXPONENT_MIN = -96
EXPONENT_SLOTS = 256  # exponents -96 .. 159
LIMB_BITS = 24
LIMB_BOUND = (1 << LIMB_BITS) - 1


def exponent_of(max_value: float) -> int:
    """The smallest e >= EXPONENT_MIN with max_value <= 2^e."""
    if not math.isfinite(max_value) or max_value < 0:
        raise ProtocolError(f"statistic {max_value} is not a finite non-negative number")
    if max_value == 0:
        return EXPONENT_MIN
    mantissa, exponent = math.frexp(max_value)  # max_value = mantissa * 2^exponent, 0.5 <= m < 1
    e = exponent - 1 if mantissa == 0.5 else exponent
    if e >= EXPONENT_MIN + EXPONENT_SLOTS:
        raise ProtocolError(f"statistic {max_value} is too large to encode")
    return max(e, EXPONENT_MIN)


def exponent_one_hot(values: np.ndarray) -> np.ndarray:
    """One-hot vector (length EXPONENT_SLOTS) marking the binade of max(values)."""
    vector = np.zeros(EXPONENT_SLOTS, dtype=np.uint8)
    peak = float(np.max(values)) if values.size else 0.0
    vector[exponent_of(peak) - EXPONENT_MIN] = 1
    return vector


def layer_exponent(histogram: np.ndarray) -> int:
    """The highest binade any contributor reported."""
    occupied = np.flatnonzero(np.asarray(histogram))
    if occupied.size == 0:
        raise ProtocolError("no client reported an exponent")
    return int(occupied[-1]) + EXPONENT_MIN


def bound(precision_bits: int) -> int:
    """The largest encoded value."""
    return (1 << precision_bits) - 1


def limb_count(precision_bits: int) -> int:
    return -(-precision_bits // LIMB_BITS)


def check_capacity(precision_bits: int, clients: int) -> None:
    """Refuse a precision whose sum over `clients` could exceed 64 bits."""
    if not 8 <= precision_bits <= 56:
        raise ConfigError(f"--stats-precision-bits must lie in 8..56, got {precision_bits}")
    if bound(precision_bits) * clients >= 1 << 64 or LIMB_BOUND * clients >= 1 << 62:
        raise ConfigError(
            f"{clients} clients x 2^{precision_bits} overflows 64 bits: lower --stats-precision-bits"
        )


def encode(values: np.ndarray, exponent: int, precision_bits: int) -> np.ndarray:
    """q = min(round(x * 2^(P - e)), 2^P - 1) as uint64; refuses a value outside [0, 2^e]."""
    values = np.asarray(values, dtype=np.float64)
    if values.size and (
        not np.isfinite(values).all()
        or values.min() < 0
        or values.max() > math.ldexp(1.0, exponent)
    ):
        raise ProtocolError(f"a statistic lies outside the declared bound [0, 2^{exponent}]")
    scaled = np.rint(np.ldexp(values, precision_bits - exponent))
    return np.minimum(scaled, float(bound(precision_bits))).astype(np.uint64)


def to_limbs(encoded: np.ndarray, precision_bits: int) -> list[np.ndarray]:
    """Split encoded values into limb vectors, least significant first, each <= LIMB_BOUND."""
    return [
        (encoded >> np.uint64(LIMB_BITS * k)) & np.uint64(LIMB_BOUND)
        for k in range(limb_count(precision_bits))
    ]


def from_limbs(limb_sums: list[np.ndarray]) -> np.ndarray:
    """Join summed limbs back into the summed encoded values (uint64, exact)."""
    total = np.zeros(np.asarray(limb_sums[0]).shape, dtype=np.uint64)
    for k, part in enumerate(limb_sums):
        total += np.asarray(part, dtype=np.uint64) << np.uint64(LIMB_BITS * k)
    return total


def decode(sums: np.ndarray, exponent: int, precision_bits: int) -> np.ndarray:
    """The float sum of the encoded values (within n * 2^(e - P) of the exact sum)."""
    return np.ldexp(np.asarray(sums, dtype=np.float64), exponent - precision_bits)
