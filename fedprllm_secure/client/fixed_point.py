"""Fixed-point encoding of activation statistics for the secure sum (`--aggregate stats`).

Statistics are non-negative floats (sums of squares). For one layer, every client first reports
the binade of its largest value as a one-hot vector over `EXPONENT_SLOTS` exponents, summed
securely like any bounded vector: the server learns only how many clients fall in each binade.
The common exponent `e` is set by a quorum, never by one report (`layer_exponent`): the
`EXPONENT_QUORUM`-th highest report plus `EXPONENT_HEADROOM` binades, capped at the highest
report. Then each client sends q = round(min(x, 2^e) * 2^(P - e)) capped at 2^P - 1 for every
value x (values above 2^e saturate), split into limbs of `LIMB_BITS` bits (so every protocol,
CKKS included, carries them exactly); each limb sum is at most n * (2^LIMB_BITS - 1), and the
joined sum at most n * (2^P - 1), which `check_capacity` keeps below 2^64: overflow is impossible
by construction.

Why a quorum: under "the highest report wins", one client reporting binade 159 (a valid one-hot)
made e = 159, every honest value encode to 0 and the summed statistics the attacker's own. With
quorum 2 the 2nd-highest of all reports lies between the 2nd-highest and the highest honest
report, so one liar can neither raise e above the highest honest binade + headroom nor lower it
below the second-highest honest binade; what it sends is then at most 2^e per entry, like anyone.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError, ProtocolError

EXPONENT_MIN = -96
EXPONENT_SLOTS = 256  # exponents -96 .. 159
EXPONENT_QUORUM = 2  # a binade sets the scale only when this many clients report it or higher
EXPONENT_HEADROOM = 1  # binades above the quorum's report that still encode exactly
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


def _reports(histogram: np.ndarray) -> np.ndarray:
    counts = np.asarray(histogram)
    if counts.shape != (EXPONENT_SLOTS,) or (counts.size and counts.min() < 0):
        raise ProtocolError("the exponent histogram is not a count per binade")
    if int(counts.sum()) == 0:
        raise ProtocolError("no client reported an exponent")
    return counts.astype(np.int64)


def highest_reported(histogram: np.ndarray) -> int:
    """The highest binade any contributor reported (what one client alone can set)."""
    return int(np.flatnonzero(_reports(histogram))[-1]) + EXPONENT_MIN


def layer_exponent(
    histogram: np.ndarray,
    quorum: int = EXPONENT_QUORUM,
    headroom: int = EXPONENT_HEADROOM,
) -> int:
    """The common exponent: the `quorum`-th highest report plus `headroom`, capped at the
    highest report.

    The `quorum`-th highest report is the highest binade b such that at least `quorum` clients
    reported b or above (all of them when fewer contributed). Fewer than `quorum` clients can
    therefore not raise the scale above what honest clients report (plus `headroom` binades),
    nor lower it below the `quorum`-th highest honest report. Honest values above 2^e saturate.
    """
    if quorum < 1 or headroom < 0:
        raise ConfigError("the exponent quorum must be >= 1 and the headroom >= 0")
    counts = _reports(histogram)
    needed = min(quorum, int(counts.sum()))
    at_or_above = np.cumsum(counts[::-1])[::-1]  # clients reporting binade >= each slot
    quorum_slot = int(np.flatnonzero(at_or_above >= needed)[-1])
    highest = int(np.flatnonzero(counts)[-1])
    return min(quorum_slot + headroom, highest) + EXPONENT_MIN


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


def largest_exponent_gap(precision_bits: int) -> int:
    """How many binades the common exponent may lie above a client's own: P // 2.

    Beyond it the client keeps fewer than P/2 bits of its largest statistic (at e = own + P,
    every value it has encodes to 0), so it refuses to encode: a forged exponent histogram,
    which no protocol here can rule out (no range proofs), can then only abort the round.
    """
    return precision_bits // 2


def encode(values: np.ndarray, exponent: int, precision_bits: int) -> np.ndarray:
    """q = round(min(x, 2^e) * 2^(P - e)) capped at 2^P - 1, as uint64.

    Values above 2^e saturate at 2^e (the common exponent is a quorum's, so an honest client's
    largest values may exceed it). Refuses (ProtocolError) a negative or non-finite value, and a
    common exponent more than `largest_exponent_gap(P)` binades above the client's own.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size and (not np.isfinite(values).all() or values.min() < 0):
        raise ProtocolError("a statistic is negative or not finite")
    peak = float(values.max()) if values.size else 0.0
    if peak > 0 and exponent - exponent_of(peak) > largest_exponent_gap(precision_bits):
        raise ProtocolError(
            f"the common exponent {exponent} lies more than {largest_exponent_gap(precision_bits)}"
            f" binades above this client's largest statistic (2^{exponent_of(peak)}): encoding "
            "would erase its statistics, so it refuses (a forged exponent histogram?)"
        )
    clipped = np.minimum(values, math.ldexp(1.0, exponent))
    scaled = np.rint(np.ldexp(clipped, precision_bits - exponent))
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
