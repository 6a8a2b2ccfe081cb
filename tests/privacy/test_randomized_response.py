"""Randomized response: flip probability, unbiased debiasing, use of the injected source."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedprllm_secure.errors import ConfigError
from fedprllm_secure.privacy.randomized_response import (
    count_variance,
    debias_counts,
    flip_probability,
    keep_probability,
    randomize_bits,
)
from fedprllm_secure.randomness import SeededRandomSource


@pytest.mark.parametrize(
    "epsilon, flip",
    [
        (1.0, 0.2689414213699951),
        (2.0, 0.11920292202211755),
        (math.log(3), 0.25),
        (4.0, 0.01798620996209156),
    ],
)
def test_epsilon_to_flip_probability_known_values(epsilon: float, flip: float) -> None:
    assert flip_probability(epsilon) == pytest.approx(flip, rel=1e-12)
    assert keep_probability(epsilon) + flip_probability(epsilon) == pytest.approx(1.0)
    # The privacy loss of one bit is exactly eps: log(keep / flip).
    assert math.log(keep_probability(epsilon) / flip_probability(epsilon)) == pytest.approx(epsilon)


def test_reference_standard_deviations() -> None:
    # The debiased count's sd, sqrt(n p (1-p)) / (1 - 2p) with p = 1 / (1 + e^eps):
    # n = 100 gives sd 9.6 at eps 1, 4.3 at eps 2, 1.4 at eps 4.
    for epsilon, sd in ((1.0, 9.6), (2.0, 4.3), (4.0, 1.4)):
        assert math.sqrt(count_variance(100, epsilon)) == pytest.approx(sd, abs=0.06)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_epsilon_is_a_config_error(bad: float) -> None:
    with pytest.raises(ConfigError, match="--rr-epsilon"):
        flip_probability(bad)


def test_flip_rate_matches_and_randomness_comes_from_the_source() -> None:
    bits = np.zeros(200_000, dtype=np.uint8)
    flipped = randomize_bits(bits, 1.0, SeededRandomSource("rr"))
    rate = flipped.mean()
    q = flip_probability(1.0)
    assert abs(rate - q) < 4 * math.sqrt(q * (1 - q) / bits.size)
    ones = randomize_bits(np.ones(200_000, dtype=np.uint8), 1.0, SeededRandomSource("rr"))
    assert np.array_equal(ones, 1 - flipped)  # same source, same flips
    again = randomize_bits(bits, 1.0, SeededRandomSource("rr"))
    assert np.array_equal(again, flipped)
    other = randomize_bits(bits, 1.0, SeededRandomSource("other"))
    assert not np.array_equal(other, flipped)


def test_randomize_refuses_non_bits() -> None:
    with pytest.raises(ConfigError):
        randomize_bits(np.array([0, 2]), 1.0, SeededRandomSource(0))


@pytest.mark.parametrize("epsilon", [0.5, 2.0])
def test_debiased_counts_are_unbiased(epsilon: float) -> None:
    """Mean over many seeds of the debiased count is within 4 standard errors of the truth."""
    n, weights, seeds = 20, 64, 300
    rng = np.random.default_rng(0)  # the true masks only: public test data, not a secret
    masks = rng.integers(0, 2, size=(n, weights), dtype=np.uint8)
    truth = masks.sum(axis=0).astype(np.float64)
    estimates = np.empty((seeds, weights))
    for seed in range(seeds):
        source = SeededRandomSource(f"unbiased-{seed}")
        noisy = sum(randomize_bits(masks[c], epsilon, source.child(str(c))) for c in range(n))
        estimates[seed] = debias_counts(noisy.astype(np.int64), n, epsilon)
    standard_error = math.sqrt(count_variance(n, epsilon) / seeds)
    deviation = np.abs(estimates.mean(axis=0) - truth)
    assert deviation.max() < 4.5 * standard_error  # 64 weights: a max over 64 near-normals
    assert abs(deviation.mean() / standard_error - math.sqrt(2 / math.pi)) < 0.25
    assert estimates.var(axis=0).mean() == pytest.approx(count_variance(n, epsilon), rel=0.15)


def test_debias_uses_the_exact_contributor_count() -> None:
    p = keep_probability(1.0)
    # The expected noisy sum of n all-ones clients is n p; it must debias to n.
    assert debias_counts(np.array([7 * p]), 7, 1.0)[0] == pytest.approx(7.0)
    assert debias_counts(np.array([7 * (1 - p)]), 7, 1.0)[0] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ConfigError):
        debias_counts(np.array([1]), 0, 1.0)


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 4.0])
def test_one_client_moves_a_debiased_count_by_at_most_one_over_2p_minus_1(epsilon: float) -> None:
    """A malicious client may skip the noise and submit any 0/1 vector: each debiased count moves
    by at most 1 / (2p - 1) (amplified from 1 by the debiasing), never more."""
    others = np.array([3, 7, 0, 10])
    honest = debias_counts(others + 0, 11, epsilon)
    worst = debias_counts(others + 1, 11, epsilon)
    bound = 1 / (2 * keep_probability(epsilon) - 1)
    assert np.allclose(worst - honest, bound)
    assert bound > 1.0
