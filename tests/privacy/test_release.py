"""Randomized response through a real protocol: the server debiases with the reported cohort."""

from __future__ import annotations

import numpy as np
import pytest

from fedprllm_secure.errors import PrivacyError
from fedprllm_secure.privacy.randomized_response import draw_rr_key, randomized_provider
from fedprllm_secure.privacy.release import release_counts
from fedprllm_secure.randomness import SeededRandomSource
from fedprllm_secure.secure_sum.api import AggregationSpec
from fedprllm_secure.secure_sum.session import SimulatedSession

LENGTH = 20_000


def run(protocol: str, clients: int, epsilon: float | None, drop: dict | None = None):
    truth = {c: np.full(LENGTH, c % 2, dtype=np.uint8) for c in range(clients)}
    inputs = {}
    for c in range(clients):
        plain = lambda _i, _chunk, c=c: truth[c]  # noqa: E731
        source = SeededRandomSource(f"client-{c}")
        inputs[c] = (
            plain if epsilon is None else randomized_provider(plain, epsilon, draw_rr_key(source))
        )
    session = SimulatedSession(protocol, inputs, SeededRandomSource("s"), drop_at=drop)
    result = session.aggregate(AggregationSpec.from_lengths(0, {"w": LENGTH}, bound=1))
    expected = sum(truth[c].astype(np.int64) for c in result.contributors)
    return result, expected


@pytest.mark.parametrize(
    "protocol, drop", [("plaintext", {3: "input"}), ("additive", {3: "masked-input"})]
)
def test_debiased_counts_over_the_survivors_are_unbiased(protocol: str, drop: dict) -> None:
    result, expected = run(protocol, 5, 1.0, drop)
    assert len(result.contributors) == 4
    counts = release_counts(result, rr_epsilon=1.0)["w"]
    # Each entry is an unbiased estimate; the mean over 20,000 entries is within 4 standard errors.
    sd = np.sqrt(4 * np.e / (np.e - 1) ** 2 / LENGTH)
    assert abs(counts.mean() - expected.mean()) < 4 * sd
    # Debiasing with a wrong n (the roster instead of the survivors) is visibly biased.
    wrong = release_counts(type(result)(result.spec, result.sums, tuple(range(5))), rr_epsilon=1.0)[
        "w"
    ]
    assert abs(wrong.mean() - expected.mean()) > 10 * sd


def test_counts_without_noise_are_the_exact_sums_and_small_cohorts_are_refused() -> None:
    result, expected = run("plaintext", 3, None)
    assert np.array_equal(release_counts(result)["w"], expected)
    small, _ = run("plaintext", 3, None, {0: "input"})
    with pytest.raises(PrivacyError, match="minimum cohort"):
        release_counts(small)
    assert release_counts(small, min_cohort=2)["w"].shape == (LENGTH,)


def test_colluders_recover_only_the_randomized_mask_of_the_last_honest_client() -> None:
    """Server + all other clients subtract their inputs from the sum: without noise they get the
    honest client's mask exactly; with randomized response only its flipped bits."""
    n, epsilon = 3, 1.0
    truth = {c: (np.arange(LENGTH) % (c + 2) == 0).astype(np.uint8) for c in range(n)}
    for noisy in (False, True):
        inputs = {}
        for c in range(n):
            plain = lambda _i, _chunk, c=c: truth[c]  # noqa: E731
            honest = noisy and c == 0
            inputs[c] = (
                randomized_provider(plain, epsilon, draw_rr_key(SeededRandomSource("honest")))
                if honest
                else plain
            )
        session = SimulatedSession("additive", inputs, SeededRandomSource("collude"))
        result = session.aggregate(AggregationSpec.from_lengths(0, {"w": LENGTH}, bound=1))
        recovered = result.sums["w"].astype(np.int64) - truth[1] - truth[2]
        mismatch = float(np.mean(recovered != truth[0]))
        if noisy:
            assert abs(mismatch - 1 / (1 + np.e)) < 0.015  # each bit flipped w.p. 1/(1+e^eps)
        else:
            assert mismatch == 0.0
