"""Distributed-DP accounting: the Skellam and distributed discrete Gaussian RDP bounds against
their closed forms and the Gaussian limit, calibration, replace-one sensitivity, and dropouts
(the sum of min_survivors shares still meets the target)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.rdp import RdpAccountant

from fedprllm_secure.errors import ConfigError, PrivacyError
from fedprllm_secure.privacy import accounting
from fedprllm_secure.privacy import distributed_accounting as dda


def test_skellam_rdp_matches_the_papers_closed_form_by_hand() -> None:
    # Agarwal et al. 2021, Cor. 3.6: a D2^2/(2mu) + min(((2a-1) D2^2 + 6 D1)/(4mu^2), 3 D1/(2mu))
    orders = np.array([2, 10, 2])
    got = dda.skellam_rdp(orders[:2], 1.0, 1.0, 10.0)
    assert got == pytest.approx([0.1 + 9 / 400, 0.5 + 25 / 400])  # first branch of the min
    assert dda.skellam_rdp(np.array([2]), 1.0, 1.0, 1.0) == pytest.approx([1.0 + 1.5])  # second
    # D2 = 3, D1 = 5, mu = 50, a = 4: 4*9/100 + min((7*9 + 30)/10000, 15/100)
    assert dda.skellam_rdp(np.array([4]), 3.0, 5.0, 50.0) == pytest.approx([0.36 + 0.0093])


def test_ddgauss_tau_and_rdp_match_proposition_14_by_hand() -> None:
    assert dda.ddgauss_tau(1.0, 2) == pytest.approx(10 * math.exp(-(math.pi**2)))
    assert dda.ddgauss_tau(1.0, 1) == 0.0  # one discrete Gaussian is exactly discrete Gaussian
    tau = dda.ddgauss_tau(0.25, 3)  # s = 1/2, three summands: tau is not negligible
    assert tau == pytest.approx(10 * (math.exp(-(math.pi**2) / 4) + math.exp(-(math.pi**2) / 3)))
    l2, l1, d, a = 2.0, 4.0, 4, 3.0
    s2, s1 = l2 / math.sqrt(3 * 0.25), l1 / math.sqrt(3 * 0.25)
    expected = min(
        a * s2**2 / 2 + tau * d,
        a * (s2**2 + 2 * s1 * tau + tau**2 * d) / 2,
        a * (s2 + math.sqrt(d) * tau) ** 2 / 2,
    )
    assert dda.ddgauss_rdp(np.array([a]), l2, l1, 0.25, 3, 3, d) == pytest.approx([expected])


@pytest.mark.parametrize("mechanism", ["skellam", "ddgauss"])
def test_large_noise_tends_to_the_gaussian_mechanism(mechanism: str) -> None:
    """With variance >> sensitivity both bounds tend to a D^2 / (2 var), the Gaussian's RDP; the
    composed epsilon then matches dp-accounting's own Gaussian accountant."""
    sigma, sensitivity, releases, delta = 6.0, 1000.0, 30, 1e-5
    variance = (sigma * sensitivity) ** 2
    orders = np.array(dda.ORDERS)
    if mechanism == "skellam":
        rdp = dda.skellam_rdp(orders, sensitivity, sensitivity * 40, variance)
    else:
        rdp = dda.ddgauss_rdp(orders, sensitivity, sensitivity * 40, variance / 8, 8, 8, 1600)
    gaussian = orders * sensitivity**2 / (2 * variance)
    assert np.all(rdp >= gaussian * (1 - 1e-12)) and np.all(rdp[:100] <= gaussian[:100] * 1.001)
    library = RdpAccountant(list(dda.ORDERS))
    library.compose(dp_event.GaussianDpEvent(sigma), releases)
    assert dda.epsilon_from_rdp(releases * rdp, delta) == pytest.approx(
        library.get_epsilon(delta), rel=2e-3
    )


@pytest.mark.parametrize("mechanism", ["skellam", "ddgauss"])
def test_calibrated_multiplier_matches_the_central_gaussian_accountant(mechanism: str) -> None:
    """At eps 4, delta 1e-5, 30 releases the sum's noise std / L2 sensitivity is the Gaussian
    noise multiplier the project's RDP accountant (opacus) certifies, to within 0.5%."""
    l2, l1 = dda.replace_one_sensitivity(1027.0, 3264)
    noise = dda.calibrate(mechanism, 4.0, 1e-5, 30, l2, l1, 3264, 8, 8)
    central = accounting.get("rdp").noise_multiplier(4.0, 1e-5, 30)
    assert noise.sum_std(8) / l2 == pytest.approx(central, rel=5e-3)
    assert noise.epsilon() <= 4.0


def test_replace_one_sensitivity_is_the_worst_case_of_non_negative_vectors() -> None:
    bound = 5.0
    l2, l1 = dda.replace_one_sensitivity(bound, 2)
    # disjoint supports reach sqrt(2) B: the worst case for non-negative vectors of norm <= B
    u, v = np.array([5.0, 0.0]), np.array([0.0, 5.0])
    assert l2 >= np.linalg.norm(u - v) == pytest.approx(math.sqrt(2) * bound)
    assert l1 >= np.abs(u - v).sum()
    rng = np.random.default_rng(1)
    for _ in range(2000):
        a, b = rng.exponential(1.0, (2, 2)) * rng.random((2, 1))
        a, b = a * min(1, bound / np.linalg.norm(a)), b * min(1, bound / np.linalg.norm(b))
        assert np.linalg.norm(a - b) <= l2 + 1e-9 and np.abs(a - b).sum() <= l1 + 1e-9


@pytest.mark.parametrize("mechanism", ["skellam", "ddgauss"])
def test_min_survivors_still_meet_the_target_and_fewer_do_not(mechanism: str) -> None:
    """Each client adds the share for min_survivors: any >= 6 of 8 honest shares meet (4, 1e-5);
    5 would not (the guarantee the report states is the one for min_survivors)."""
    l2, l1 = dda.replace_one_sensitivity(1027.0, 3264)
    noise = dda.calibrate(mechanism, 4.0, 1e-5, 30, l2, l1, 3264, 6, 8)
    central = dda.calibrate(mechanism, 4.0, 1e-5, 30, l2, l1, 3264, 1, 1)
    assert noise.epsilon(6) <= 4.0 and noise.epsilon(8) < noise.epsilon(6)
    assert noise.epsilon(5) > 4.0
    # six shares carry at least the central mechanism's variance, each share is 1/6 of it
    assert noise.sum_std(6) >= central.sum_std(1) * 0.999
    assert noise.share_variance == pytest.approx(central.share_variance / 6, rel=3e-3)
    # a little less noise than calibrated misses the target: the calibration is tight
    looser = dda.DistributedNoise(
        **{**noise.__dict__, "share_variance": noise.share_variance * 0.98}
    )
    assert looser.epsilon(6) > 4.0


def test_composition_over_releases_adds_rdp() -> None:
    l2, l1 = dda.replace_one_sensitivity(1027.0, 3264)
    one = dda.calibrate("skellam", 4.0, 1e-5, 1, l2, l1, 3264, 8, 8)
    many = dda.DistributedNoise(**{**one.__dict__, "releases": 30})
    assert np.allclose(many.rdp(), 30 * one.rdp()) and many.epsilon() > 4.0 * 3


def test_calibrate_refuses_bad_settings() -> None:
    with pytest.raises(ConfigError):
        dda.calibrate("laplace", 1.0, 1e-5, 1, 1.0, 1.0, 1, 1, 1)
    with pytest.raises(ConfigError):
        dda.calibrate("skellam", 1.0, 1e-5, 1, 1.0, 1.0, 1, 9, 8)
    with pytest.raises(ConfigError):
        dda.calibrate("skellam", -1.0, 1e-5, 1, 1.0, 1.0, 1, 1, 1)
    noise = dda.calibrate("skellam", 1.0, 1e-5, 1, 1.0, 1.0, 1, 1, 1)
    with pytest.raises(PrivacyError):
        noise.epsilon(0)


def test_calibration_keeps_decreasing_the_noise_for_large_epsilon() -> None:
    """The search also goes below D2^2: a larger epsilon always gets less noise, tightly."""
    from dataclasses import replace

    variances = []
    for eps in (4.0, 16.0, 64.0):
        noise = dda.calibrate("skellam", eps, 1e-5, 1, 100.0, 1000.0, 1000, 8, 8)
        assert noise.epsilon() <= eps
        looser = replace(noise, share_variance=noise.share_variance / 1.002)
        assert looser.epsilon() > eps  # 0.2% less noise would miss the target
        variances.append(noise.share_variance)
    assert variances[0] > variances[1] > variances[2]
    assert variances[2] * 8 < 100.0**2 / 4  # below the old floor D2^2 / 4
