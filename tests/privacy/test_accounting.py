"""Accountants: opacus' sigma for known budgets, consistency, the exact Gaussian profile."""

from __future__ import annotations

import math

import pytest

from fedprllm_secure.errors import ConfigError
from fedprllm_secure.privacy import accounting
from fedprllm_secure.privacy.accounting import gaussian_delta


def test_exact_gaussian_known_value() -> None:
    # Balle & Wang (ICML 2018), analytic Gaussian mechanism: eps = 1, delta = 1e-5 needs
    # sigma = 3.73 (vs 4.84 from the classical sqrt(2 ln(1.25/delta)) / eps bound).
    sigma = accounting.get("gaussian").noise_multiplier(1.0, 1e-5, 1)
    assert sigma == pytest.approx(3.73, abs=0.01)
    assert math.sqrt(2 * math.log(1.25 / 1e-5)) == pytest.approx(4.84, abs=0.01)


@pytest.mark.parametrize(
    "name, epsilon, delta, releases, sigma",
    [
        # Values opacus 1.6 returns (sample rate 1); pinned so that an upgrade that changes the
        # accounting is noticed.
        ("rdp", 1.0, 1e-5, 1, 4.06),
        ("prv", 1.0, 1e-5, 1, 3.77),
    ],
)
def test_opacus_sigma_known_values(
    name: str, epsilon: float, delta: float, releases: int, sigma: float
) -> None:
    assert accounting.get(name).noise_multiplier(epsilon, delta, releases) == pytest.approx(
        sigma, abs=0.02
    )


@pytest.mark.parametrize("name", ["rdp", "prv", "gaussian"])
@pytest.mark.parametrize("epsilon, releases", [(1.0, 1), (4.0, 30), (8.0, 30)])
def test_sigma_is_sound_and_consistent(name: str, epsilon: float, releases: int) -> None:
    """The sigma an accountant picks really gives (eps, delta) by the exact profile, and the same
    accountant certifies at most eps for it."""
    delta = 1e-5
    accountant = accounting.get(name)
    sigma = accountant.noise_multiplier(epsilon, delta, releases)
    mu = math.sqrt(releases) / sigma  # T Gaussian releases at sigma are exactly mu-GDP
    assert gaussian_delta(epsilon, mu) <= delta * 1.05  # opacus' search tolerance is 0.5% on eps
    assert accountant.epsilon(sigma, delta, releases) <= epsilon * 1.01
    exact = accounting.get("gaussian").noise_multiplier(epsilon, delta, releases)
    assert exact <= sigma * 1.01  # nobody beats the exact profile
    assert sigma <= exact * 1.35  # and RDP is not wildly loose


def test_more_releases_need_more_noise() -> None:
    rdp = accounting.get("rdp")
    assert rdp.noise_multiplier(4.0, 1e-5, 30) > rdp.noise_multiplier(4.0, 1e-5, 1) * 3


@pytest.mark.parametrize(
    "epsilon, delta, releases, fragment",
    [(0.0, 1e-5, 1, "--dp-stats-epsilon"), (1.0, 1.0, 1, "--dp-delta"), (1.0, 1e-5, 0, "releases")],
)
def test_bad_budgets_are_config_errors(
    epsilon: float, delta: float, releases: int, fragment: str
) -> None:
    with pytest.raises(ConfigError, match=fragment):
        accounting.get("rdp").noise_multiplier(epsilon, delta, releases)


def test_registry() -> None:
    assert {"rdp", "prv", "gaussian"} <= set(accounting.available())
    with pytest.raises(ConfigError, match="unknown accountant"):
        accounting.get("nope")
    with pytest.raises(ConfigError, match="already registered"):
        accounting.register("rdp", accounting.ExactGaussianAccountant)
