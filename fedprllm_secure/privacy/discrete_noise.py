"""Integer noise for distributed DP inside the secure sum: discrete Gaussian and Skellam.

Both are drawn from an injected `RandomSource` (the OS CSPRNG unless reproducible noise was asked
for; see `privacy.noise_source`), never from numpy's global state or the run's `--seed`.

* `discrete_gaussian(source, variance, count)`: exact samples of N_Z(0, s^2), pmf proportional
  to exp(-x^2 / (2 s^2)) on the integers, with s^2 a positive integer. The algorithm is
  Canonne, Kamath & Steinke 2020 (Algorithms 1-3): discrete Laplace proposals and Bernoulli
  trials of exp(-num/den) for rationals, decided by exact integer comparisons of uniform integers
  drawn by rejection (no floating point anywhere, so no leak through rounding, Mironov 2012).
  Vectorised over the pending candidates with int64 arithmetic (Python integers for the one
  square that may exceed 64 bits); `s^2 <= MAX_EXACT_VARIANCE` keeps every comparison in int64.
* `skellam(source, mu, count)`: Poisson(mu / 2) - Poisson(mu / 2), variance mu. Sums of
  independent Skellams are Skellam. Drawn with numpy's Poisson sampler on a Philox-4x64 bit
  generator whose 128-bit key `SeedSequence` derives from 256 fresh bits of `source` per call: the
  key is CSPRNG output, never derived from the run seed unless the source is seeded. Numpy's large-mean Poisson
  sampler (PTRS) decides acceptance in floating point, so the pmf holds up to double rounding;
  the output is an integer, so no low-order float bits are released.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError
from ..randomness import RandomSource

MAX_EXACT_VARIANCE = 1 << 26
"""Largest s^2 of one exact discrete Gaussian draw: keeps 2 s^2 t^2 * K below 2^62 in int64."""
_MAX_DENOMINATOR = 1 << 62


def uniform_uint64(source: RandomSource, count: int) -> np.ndarray:
    """`count` uniform 64-bit words."""
    return np.frombuffer(source.random_bytes(8 * count), dtype="<u8").copy()


def _bit_lengths(values: np.ndarray) -> np.ndarray:
    """Bit length of each non-negative int64 (exact, no floating point)."""
    lengths = np.zeros(values.shape, dtype=np.int64)
    rest = values.copy()
    while rest.any():
        lengths += rest > 0
        rest >>= 1
    return lengths


def uniform_below(source: RandomSource, upper: np.ndarray) -> np.ndarray:
    """Independent uniform integers in [0, upper[i]) for each entry (1 <= upper < 2^62).

    Rejection sampling on the smallest power of two >= upper: exact, accepts with prob >= 1/2.
    """
    upper = np.asarray(upper, dtype=np.int64)
    if upper.size and (upper.min() < 1 or upper.max() >= _MAX_DENOMINATOR):
        raise ValueError("uniform_below needs 1 <= upper < 2^62")
    masks = (np.ones(upper.shape, dtype=np.uint64) << _bit_lengths(upper - 1).astype(np.uint64)) - 1
    out = np.empty(upper.shape, dtype=np.int64)
    pending = np.arange(upper.size)
    while pending.size:
        draws = (uniform_uint64(source, pending.size) & masks[pending]).astype(np.int64)
        accepted = draws < upper[pending]
        out[pending[accepted]] = draws[accepted]
        pending = pending[~accepted]
    return out


def bernoulli(source: RandomSource, num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Independent Bernoulli(num / den) trials, exactly (0 <= num <= den < 2^62)."""
    return uniform_below(source, den) < num


def bernoulli_exp_neg_fraction(
    source: RandomSource, num: np.ndarray, den: np.ndarray
) -> np.ndarray:
    """Bernoulli(exp(-num / den)) for 0 <= num <= den (CKS20 Algorithm 1, gamma in [0, 1]).

    Draw A_k ~ Bernoulli(gamma / k) for k = 1, 2, ... until the first A_k = 0; succeed iff that k
    is odd. P(k > j) = gamma^j / j!, so the loop is short.
    """
    num, den = np.asarray(num, dtype=np.int64), np.asarray(den, dtype=np.int64)
    result = np.zeros(num.shape, dtype=bool)
    active = np.arange(num.size)
    k = 1
    while active.size:
        if int(den[active].max()) * k >= _MAX_DENOMINATOR:
            raise ValueError("denominator too large for an exact Bernoulli(exp(-x)) trial")
        keep_going = bernoulli(source, num[active], den[active] * k)
        stopped = active[~keep_going]
        result[stopped] = k % 2 == 1
        active = active[keep_going]
        k += 1
    return result


def bernoulli_exp_neg(
    source: RandomSource, whole: np.ndarray, num: np.ndarray, den: np.ndarray
) -> np.ndarray:
    """Bernoulli(exp(-(whole + num / den))) with whole >= 0 and 0 <= num < den (CKS20 Alg. 1).

    exp(-(w + f)) = exp(-1)^w * exp(-f): `w` independent Bernoulli(exp(-1)) trials, then one of
    exp(-f); all must succeed.
    """
    whole = np.asarray(whole, dtype=np.int64)
    alive = np.ones(whole.shape, dtype=bool)
    step = 0
    while True:
        todo = np.flatnonzero(alive & (whole > step))
        if not todo.size:
            break
        ones = np.ones(todo.size, dtype=np.int64)
        alive[todo] = bernoulli_exp_neg_fraction(source, ones, ones)
        step += 1
    todo = np.flatnonzero(alive)
    alive[todo] = bernoulli_exp_neg_fraction(
        source, np.asarray(num, dtype=np.int64)[todo], np.asarray(den, dtype=np.int64)[todo]
    )
    return alive


def _geometric_exp_neg_one(source: RandomSource, count: int) -> np.ndarray:
    """V >= 0 with P(V = v) = (1 - e^-1) e^-v: count successes of Bernoulli(exp(-1))."""
    values = np.zeros(count, dtype=np.int64)
    active = np.arange(count)
    while active.size:
        ones = np.ones(active.size, dtype=np.int64)
        more = bernoulli_exp_neg_fraction(source, ones, ones)
        values[active[more]] += 1
        active = active[more]
    return values


def discrete_laplace(source: RandomSource, scale: int, count: int) -> np.ndarray:
    """`count` exact draws with P(x) proportional to exp(-|x| / scale), integer scale >= 1
    (CKS20 Algorithm 2)."""
    out = np.empty(count, dtype=np.int64)
    pending = np.arange(count)
    while pending.size:
        size = pending.size
        u = uniform_below(source, np.full(size, scale, dtype=np.int64))
        keep = bernoulli_exp_neg_fraction(source, u, np.full(size, scale, dtype=np.int64))
        u = u[keep]
        magnitude = u + scale * _geometric_exp_neg_one(source, u.size)
        negative = (uniform_uint64(source, u.size) & np.uint64(1)).astype(bool)
        valid = ~(negative & (magnitude == 0))
        accepted = pending[keep][valid]
        out[accepted] = np.where(negative, -magnitude, magnitude)[valid]
        pending = np.setdiff1d(pending, accepted, assume_unique=True)
    return out


def discrete_gaussian(source: RandomSource, variance: int, count: int) -> np.ndarray:
    """`count` exact draws of N_Z(0, s^2) with s^2 = `variance` (CKS20 Algorithm 3).

    With t = floor(s) + 1, a discrete Laplace(t) proposal Y is accepted with probability
    exp(-(|Y| - s^2/t)^2 / (2 s^2)) = exp(-(t|Y| - s^2)^2 / (2 s^2 t^2)), an exact rational.
    """
    if not isinstance(variance, int) or not 1 <= variance <= MAX_EXACT_VARIANCE:
        raise ConfigError(
            f"discrete Gaussian variance must be an integer in [1, {MAX_EXACT_VARIANCE}], "
            f"got {variance!r}"
        )
    t = math.isqrt(variance) + 1
    den = 2 * variance * t * t
    out = np.empty(count, dtype=np.int64)
    pending = np.arange(count)
    while pending.size:
        y = discrete_laplace(source, t, pending.size)
        gap = (t * np.abs(y) - variance).astype(object)  # its square may exceed int64
        square = gap * gap
        whole, frac = square // den, square % den
        accept = bernoulli_exp_neg(
            source,
            whole.astype(np.int64),
            frac.astype(np.int64),
            np.full(y.size, den, dtype=np.int64),
        )
        out[pending[accept]] = y[accept]
        pending = pending[~accept]
    return out


def discrete_gaussian_pieces(variance: float) -> tuple[int, int]:
    """(pieces, piece_variance): the smallest number of exact draws of an integer variance
    <= MAX_EXACT_VARIANCE whose sum has variance parameter >= `variance` (pieces * piece_variance).

    A client whose share exceeds one exact draw adds several; the accountant then counts
    pieces x contributors discrete Gaussians (Kairouz et al. 2021 bound the sum of any number).
    """
    if not (math.isfinite(variance) and variance > 0):
        raise ConfigError(f"noise variance must be positive and finite, got {variance}")
    pieces = max(1, math.ceil(variance / MAX_EXACT_VARIANCE))
    return pieces, max(1, math.ceil(variance / pieces))


def distributed_discrete_gaussian(source: RandomSource, variance: float, count: int) -> np.ndarray:
    """One client's share: the sum of `discrete_gaussian_pieces(variance)` exact draws."""
    pieces, piece_variance = discrete_gaussian_pieces(variance)
    total = np.zeros(count, dtype=np.int64)
    for _ in range(pieces):
        total += discrete_gaussian(source, piece_variance, count)
    return total


def skellam(source: RandomSource, mu: float, count: int) -> np.ndarray:
    """`count` draws of Poisson(mu/2) - Poisson(mu/2) (variance mu), Philox keyed from `source`."""
    if not (math.isfinite(mu) and mu > 0):
        raise ConfigError(f"Skellam variance must be positive and finite, got {mu}")
    key = int.from_bytes(source.random_bytes(32), "big")
    generator = np.random.Generator(np.random.Philox(np.random.SeedSequence(key)))
    return generator.poisson(mu / 2.0, count) - generator.poisson(mu / 2.0, count)


SAMPLERS = {"skellam": skellam, "ddgauss": distributed_discrete_gaussian}
"""mechanism name -> share sampler(source, variance, count) -> int64 noise."""
