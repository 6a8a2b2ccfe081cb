"""Integer noise for distributed DP: exact discrete Gaussian pmf, summed shares' variance, and
noise that never comes from the run seed unless reproducible noise is asked for.

Statistical tests use a fixed failure probability of 1e-6 each (a correct sampler fails one
with probability at most 1e-6); the draws come from a seeded source so a run is repeatable.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fedprllm_secure.errors import ConfigError
from fedprllm_secure.privacy import discrete_noise
from fedprllm_secure.privacy.distributed_accounting import share_source
from fedprllm_secure.randomness import SeededRandomSource

FAILURE = 1e-6


def discrete_gaussian_pmf(variance: float, support: np.ndarray) -> np.ndarray:
    weights = np.exp(-(support.astype(np.float64) ** 2) / (2 * variance))
    # the normaliser over a range holding all but ~1e-30 of the mass
    wide = np.arange(-40 * math.isqrt(int(variance)) - 40, 40 * math.isqrt(int(variance)) + 41)
    return weights / np.exp(-(wide.astype(np.float64) ** 2) / (2 * variance)).sum()


@pytest.mark.parametrize("variance", [1, 3, 50])
def test_discrete_gaussian_matches_its_pmf(variance: int) -> None:
    draws = discrete_noise.discrete_gaussian(
        SeededRandomSource(f"dg/{variance}"), variance, 200_000
    )
    edge = int(4 * math.sqrt(variance)) + 1  # pool the two tails beyond +-edge
    support = np.arange(-edge, edge + 1)
    inner = discrete_gaussian_pmf(variance, support)
    expected = np.concatenate([[(1 - inner.sum()) / 2], inner, [(1 - inner.sum()) / 2]])
    clipped = np.clip(draws, -edge - 1, edge + 1) + edge + 1
    observed = np.bincount(clipped, minlength=support.size + 2)
    result = stats.chisquare(observed, expected * draws.size)
    assert result.pvalue > FAILURE, result


def test_the_pmf_test_rejects_a_rounded_continuous_gaussian() -> None:
    """The goodness-of-fit test above has power: rounding N(0, s^2) is not N_Z(0, s^2) at s^2 = 1."""
    rng = np.random.default_rng(0)
    draws = np.rint(rng.normal(0.0, 1.0, 200_000)).astype(np.int64)
    support = np.arange(-5, 6)
    inner = discrete_gaussian_pmf(1, support)
    expected = np.concatenate([[(1 - inner.sum()) / 2], inner, [(1 - inner.sum()) / 2]])
    observed = np.bincount(np.clip(draws, -6, 6) + 6, minlength=13)
    assert stats.chisquare(observed, expected * draws.size).pvalue < FAILURE


def test_bernoulli_exp_neg_has_the_right_rate() -> None:
    source = SeededRandomSource("bern")
    count = 200_000
    for num, den in [(3, 10), (1, 1), (7, 3)]:
        whole, frac = divmod(num, den)
        hits = discrete_noise.bernoulli_exp_neg(
            source,
            np.full(count, whole),
            np.full(count, frac),
            np.full(count, den),
        ).sum()
        p = math.exp(-num / den)
        low, high = stats.binom.interval(1 - FAILURE, count, p)
        assert low <= hits <= high, (num, den, hits / count, p)


@pytest.mark.parametrize("mechanism", ["skellam", "ddgauss"])
@pytest.mark.parametrize("clients, share", [(8, 1250.0), (24, 300.0), (3, 1.5e8)])
def test_summed_shares_have_the_claimed_variance(
    mechanism: str, clients: int, share: float
) -> None:
    """n clients' shares sum to noise of variance n * share: chi-square interval at 1e-6.

    (1.5e8 per client exceeds one exact discrete Gaussian draw: the share is three pieces.)
    """
    count = 20_000
    source = SeededRandomSource(f"sum/{mechanism}/{clients}/{share}")
    sampler = discrete_noise.SAMPLERS[mechanism]
    total = sum(sampler(source.child(str(i)), share, count) for i in range(clients))
    if mechanism == "ddgauss":
        pieces, piece = discrete_noise.discrete_gaussian_pieces(share)
        share = pieces * piece
    claimed = clients * share
    statistic = (count - 1) * np.var(total, ddof=1) / claimed
    low, high = stats.chi2.interval(1 - FAILURE, count - 1)
    assert low <= statistic <= high, statistic / (count - 1)
    assert abs(total.mean()) < stats.norm.isf(FAILURE / 2) * math.sqrt(claimed / count)


def test_pieces_cover_the_share() -> None:
    assert discrete_noise.discrete_gaussian_pieces(10.2) == (1, 11)
    pieces, piece = discrete_noise.discrete_gaussian_pieces(3e8)
    assert pieces * piece >= 3e8 and piece <= discrete_noise.MAX_EXACT_VARIANCE and pieces == 5


def test_discrete_gaussian_refuses_a_non_integer_or_huge_variance() -> None:
    for bad in (2.5, 0, 1 << 27):
        with pytest.raises(ConfigError):
            discrete_noise.discrete_gaussian(SeededRandomSource("x"), bad, 4)


@pytest.mark.parametrize("mechanism", ["skellam", "ddgauss"])
def test_noise_never_comes_from_the_run_seed_unless_reproducible(mechanism: str) -> None:
    sampler = discrete_noise.SAMPLERS[mechanism]

    def run(reproducible: bool) -> np.ndarray:
        return sampler(share_source(7, reproducible, "client-3", "block-0"), 1e4, 64)

    assert not np.array_equal(run(False), run(False))  # two runs, same --seed: fresh noise
    assert np.array_equal(run(True), run(True))  # reproducible noise is asked for: repeatable
    other = sampler(share_source(7, True, "client-4", "block-0"), 1e4, 64)
    assert not np.array_equal(run(True), other)  # and independent per client
