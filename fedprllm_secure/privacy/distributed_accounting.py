"""Accounting and noise calibration for distributed DP inside the secure sum.

Each contributor adds a share of integer noise; the server sees only the sum (under `additive`
or `ckks`). RDP bounds of the summed noise, in integer units, for L2 / L1 sensitivities D2, D1:

* Skellam with total variance mu (Agarwal, Kairouz & Liu, NeurIPS 2021, Corollary 3.6), integer
  orders a > 1:  eps(a) <= a D2^2 / (2 mu) + min(((2a - 1) D2^2 + 6 D1) / (4 mu^2), 3 D1 / (2 mu)).
* The sum of N independent discrete Gaussians N_Z(0, s^2) (Kairouz, Liu & Steinke, ICML 2021,
  Proposition 14), with tau = 10 sum_{k=1}^{N-1} exp(-2 pi^2 s^2 k / (k+1)), l2 = D2 / (sqrt(N) s),
  l1 = D1 / (sqrt(N) s), d the dimension:
  eps(a) <= min(a l2^2 / 2 + tau d, a (l2^2 + 2 l1 tau + tau^2 d) / 2, a (l2 + sqrt(d) tau)^2 / 2).

No maintained library ships these two bounds (dp-accounting 0.6.0 has Gaussian, Laplace, discrete
Laplace, zCDP and subsampling events, not Skellam or the distributed discrete Gaussian), so the
per-release curves are written here and tested against the closed forms; composition (adding RDP
over releases) and the RDP -> (eps, delta) conversion are dp-accounting's
(`rdp_privacy_accountant.compute_epsilon`).

Dropouts and collusion: every client adds the share for `min_survivors` honest contributors
(variance total / min_survivors), so any sum over m >= min_survivors honest shares carries at least
the total variance. The bounds are monotone in the variance (worst at m = min_survivors) and, for
the discrete Gaussian, in tau (worst at the most summands, `max_contributors`), so one bound with
both worst cases holds for every m in [min_survivors, max_contributors].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

from ..errors import ConfigError, PrivacyError
from ..randomness import RandomSource
from .accounting import check_budget
from .discrete_noise import SAMPLERS, discrete_gaussian_pieces
from .noise_source import secret_source

ORDERS = tuple(range(2, 257)) + (384, 512, 768, 1024)
"""Integer RDP orders (the Skellam bound holds for integer orders)."""
MECHANISMS = tuple(SAMPLERS)


def skellam_rdp(orders: np.ndarray, l2: float, l1: float, variance: float) -> np.ndarray:
    """RDP of Skellam noise of total variance `variance` at integer `orders` (one release)."""
    a = np.asarray(orders, dtype=np.float64)
    extra = np.minimum(((2 * a - 1) * l2**2 + 6 * l1) / (4 * variance**2), 3 * l1 / (2 * variance))
    return a * l2**2 / (2 * variance) + extra


def ddgauss_tau(piece_variance: float, summands: int) -> float:
    """Kairouz et al.'s tau for the sum of `summands` discrete Gaussians of parameter s^2."""
    k = np.arange(1, max(summands, 1), dtype=np.float64)
    return float(10.0 * np.sum(np.exp(-2.0 * math.pi**2 * piece_variance * k / (k + 1))))


def ddgauss_rdp(
    orders: np.ndarray,
    l2: float,
    l1: float,
    piece_variance: float,
    min_summands: int,
    max_summands: int,
    dimension: int,
) -> np.ndarray:
    """RDP of the sum of between `min_summands` and `max_summands` discrete Gaussians (one
    release): Proposition 14 with l2, l1 at the fewest summands and tau at the most."""
    a = np.asarray(orders, dtype=np.float64)
    scale = math.sqrt(min_summands * piece_variance)
    s2, s1 = l2 / scale, l1 / scale
    tau = ddgauss_tau(piece_variance, max_summands)
    first = a * s2**2 / 2 + tau * dimension
    second = a * (s2**2 + 2 * s1 * tau + tau**2 * dimension) / 2
    third = a * (s2 + math.sqrt(dimension) * tau) ** 2 / 2
    return np.minimum(np.minimum(first, second), third)


def epsilon_from_rdp(rdp: np.ndarray, delta: float, orders: tuple = ORDERS) -> float:
    """dp-accounting's (optimal-order) conversion of an RDP curve to epsilon at `delta`."""
    return float(compute_epsilon(list(orders), list(np.asarray(rdp, dtype=np.float64)), delta)[0])


def replace_one_sensitivity(norm_bound: float, dimension: int) -> tuple[float, float]:
    """(L2, L1) sensitivity when one unit (a window, or a client's whole set) whose integer
    vector is non-negative with L2 norm <= norm_bound is replaced by another.

    L2: ||u - v||^2 = ||u||^2 + ||v||^2 - 2<u, v> <= 2 B^2 (non-negative: <u, v> >= 0).
    L1: <= sqrt(d) ||u - v||_2, and <= ||u - v||_2^2 for integer vectors.
    """
    l2 = math.sqrt(2.0) * norm_bound
    return l2, min(math.sqrt(dimension) * l2, l2**2)


@dataclass(frozen=True)
class DistributedNoise:
    """One release's per-client noise share and what it certifies over `releases` releases."""

    mechanism: str  # "skellam" or "ddgauss"
    share_variance: float  # each client's share (ddgauss: pieces * piece_variance)
    pieces: int  # ddgauss: exact draws per share (1 for skellam)
    l2_sensitivity: float  # integer units
    l1_sensitivity: float
    dimension: int
    releases: int
    delta: float
    min_survivors: int  # honest contributors whose shares are always in the sum
    max_contributors: int

    def sum_std(self, contributors: int) -> float:
        """Standard deviation of the noise in a sum of `contributors` shares (integer units)."""
        return math.sqrt(contributors * self.share_variance)

    def rdp(self, survivors: int | None = None) -> np.ndarray:
        """RDP over all releases when at least `survivors` (default min_survivors) honest
        shares are in the sum."""
        m = self.min_survivors if survivors is None else survivors
        if m < 1:
            raise PrivacyError("no honest noise share in the sum: no guarantee")
        if self.mechanism == "skellam":
            one = skellam_rdp(
                np.array(ORDERS), self.l2_sensitivity, self.l1_sensitivity, m * self.share_variance
            )
        else:
            piece = self.share_variance / self.pieces
            one = ddgauss_rdp(
                np.array(ORDERS),
                self.l2_sensitivity,
                self.l1_sensitivity,
                piece,
                m * self.pieces,
                max(m, self.max_contributors) * self.pieces,
                self.dimension,
            )
        return self.releases * one

    def epsilon(self, survivors: int | None = None) -> float:
        """The epsilon certified at `delta` over all releases for >= `survivors` honest shares."""
        return epsilon_from_rdp(self.rdp(survivors), self.delta)

    def sample(self, source: RandomSource, count: int) -> np.ndarray:
        """One client's share for one release: `count` int64 noise values."""
        return SAMPLERS[self.mechanism](source, self.share_variance, count)


def _noise(mechanism: str, total_variance: float, **fixed) -> DistributedNoise:
    share = total_variance / fixed["min_survivors"]
    pieces = 1
    if mechanism == "ddgauss":
        pieces, piece_variance = discrete_gaussian_pieces(share)
        share = float(pieces * piece_variance)
    return DistributedNoise(mechanism, share, pieces, **fixed)


def calibrate(
    mechanism: str,
    epsilon: float,
    delta: float,
    releases: int,
    l2_sensitivity: float,
    l1_sensitivity: float,
    dimension: int,
    min_survivors: int,
    max_contributors: int,
) -> DistributedNoise:
    """The smallest share (to 0.1% in variance) whose sum over `min_survivors` honest clients
    makes `releases` releases (epsilon, delta)-DP."""
    check_budget(epsilon, delta, releases)
    if mechanism not in MECHANISMS:
        raise ConfigError(f"unknown distributed noise {mechanism!r} (use {', '.join(MECHANISMS)})")
    if not 1 <= min_survivors <= max_contributors:
        raise ConfigError(
            f"need 1 <= min survivors ({min_survivors}) <= contributors ({max_contributors})"
        )
    fixed = dict(
        l2_sensitivity=float(l2_sensitivity),
        l1_sensitivity=float(l1_sensitivity),
        dimension=int(dimension),
        releases=int(releases),
        delta=float(delta),
        min_survivors=int(min_survivors),
        max_contributors=int(max_contributors),
    )

    def meets(variance: float) -> bool:
        return _noise(mechanism, variance, **fixed).epsilon() <= epsilon

    high = max(1.0, l2_sensitivity**2)
    while not meets(high):
        high *= 4.0
        if high > 1e40:
            raise ConfigError(f"no noise level reaches epsilon {epsilon} at delta {delta}")
    low = high / 4.0
    while meets(low):  # large epsilon: the smallest noise may lie far below D2^2
        high, low = low, low / 4.0
        if low < 1e-12:
            raise ConfigError(f"epsilon {epsilon} needs no noise at this sensitivity")
    while high / low > 1.001:
        middle = math.sqrt(low * high)
        low, high = (low, middle) if meets(middle) else (middle, high)
    return _noise(mechanism, high, **fixed)


def share_source(seed: int, reproducible: bool, client: str, release: str) -> RandomSource:
    """Where a client's noise share comes from: the OS CSPRNG, or (only when `reproducible`) a
    source seeded from the run seed, the client and the release."""
    return secret_source(seed, reproducible, "distributed-dp").child(f"{client}/{release}")
