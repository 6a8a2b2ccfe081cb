"""Distributed DP end to end (library level): n clients upload, the secure sum adds, the server
decodes; the error on the sum is the central mechanism's noise; plaintext and too few survivors
are refused; the report states the guarantee against the sum and against one share."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fedprllm_secure.errors import ConfigError
from fedprllm_secure.privacy import distributed_dp as ddp
from fedprllm_secure.privacy import distributed_encoding as de
from fedprllm_secure.privacy.distributed_accounting import share_source


def uploads(plan, clients: list[np.ndarray], seed: int, reproducible: bool) -> np.ndarray:
    residues = [
        ddp.client_upload(c, plan, share_source(seed, reproducible, f"client-{i}", "block-0"))
        for i, c in enumerate(clients)
    ]
    for r in residues:
        assert r.min() >= 0 and int(r.max()) <= plan.encoding.bound
    return np.sum(np.stack(residues), axis=0)  # what the secure sum returns


@pytest.mark.parametrize("mechanism", ["skellam", "ddgauss"])
def test_the_error_on_the_sum_is_the_central_noise(mechanism: str) -> None:
    """8 clients, 4 windows of 2000 entries: decoded - exact clipped sum has the variance of the
    sum of 8 shares (chi-square interval at 1e-6), i.e. the central mechanism's at m = 8."""
    n, windows, d = 8, 4, 2000
    plan = ddp.plan_release(4.0, 1e-5, 30, 1.0, d, windows, n, n, mechanism)
    rng = np.random.default_rng(5)
    clients = [rng.exponential(1.0, (windows, d)) * rng.random(d) for _ in range(n)]
    truth = sum(de.clip_windows(c, 1.0).sum(axis=0) for c in clients)
    total = uploads(plan, clients, 11, reproducible=True)
    error = (de.decode_sum(total, plan.encoding) - truth) * plan.encoding.gamma
    variance = plan.noise.sum_std(n) ** 2 + n * windows / 4  # noise + at most the rounding
    statistic = d * np.mean(error**2) / variance
    low, high = stats.chi2.interval(1 - 1e-6, d)
    assert low <= statistic <= high
    assert plan.noise.epsilon() <= 4.0
    # the floor is post-processing at one noise std of the sum
    released = ddp.server_decode(total, plan, n)
    assert released.min() == pytest.approx(plan.noise.sum_std(n) / plan.encoding.gamma)


def test_plaintext_is_refused_and_secure_protocols_are_not() -> None:
    with pytest.raises(ConfigError, match="plaintext"):
        ddp.refuse_unprotected("plaintext")
    for protocol in ("additive", "ckks"):
        ddp.refuse_unprotected(protocol)


def test_fewer_contributors_than_min_survivors_are_refused() -> None:
    plan = ddp.plan_release(4.0, 1e-5, 1, 1.0, 10, 2, 6, 8)
    with pytest.raises(ConfigError, match="survivors"):
        ddp.server_decode(np.zeros(10, dtype=np.uint64), plan, 5)
    ddp.server_decode(np.zeros(10, dtype=np.uint64), plan, 6)


def test_the_report_states_the_guarantee_against_the_sum_and_against_one_share() -> None:
    plan = ddp.plan_release(4.0, 1e-5, 30, 2.0, 3264, 32, 48, 64)
    report = plan.report()
    assert report["epsilon_spent"] <= 4.0 < report["epsilon_if_one_share_is_seen"]
    assert report["l2_sensitivity"] == pytest.approx(math.sqrt(2) * 2.0, rel=5e-3)
    assert report["adjacency"].startswith("replace-one calibration window")
    assert report["modulus_bits"] <= 24  # one limb of the secure sum


def test_client_level_clips_the_whole_set() -> None:
    """Client-level: the unit is the client's summed statistics, one vector of norm <= clip."""
    plan = ddp.plan_release(4.0, 1e-5, 1, 5.0, 50, 8, 4, 4, unit="client")
    assert plan.encoding.windows == 1
    windows = np.full((8, 50), 10.0)  # the sum has norm 565.7, clipped to 5
    total = uploads(plan, [windows] * 4, 3, reproducible=True)
    lifted = de.lift_sum(total, plan.encoding) / plan.encoding.gamma
    expected = 4 * 5.0 / math.sqrt(50)
    assert abs(lifted.mean() - expected) < 6 * plan.noise.sum_std(
        4
    ) / plan.encoding.gamma / math.sqrt(50)


def test_uploads_differ_between_runs_with_the_same_seed() -> None:
    plan = ddp.plan_release(4.0, 1e-5, 1, 1.0, 32, 2, 2, 2)
    clients = [np.ones((2, 32))] * 2
    assert not np.array_equal(uploads(plan, clients, 7, False), uploads(plan, clients, 7, False))
    assert np.array_equal(uploads(plan, clients, 7, True), uploads(plan, clients, 7, True))
