"""Privacy accountants for the Gaussian mechanism, kept apart from the mechanisms themselves.

An `Accountant` answers two questions about `releases` adaptive Gaussian releases with
sensitivity 1 and noise multiplier sigma (no subsampling: every sample is used in every release):

* `noise_multiplier(epsilon, delta, releases)`: the smallest sigma it certifies (eps, delta)-DP;
* `epsilon(sigma, delta, releases)`: the epsilon it certifies for a given sigma.

Registered: `rdp` (opacus' RDP accountant, the default), `prv` (opacus' PRV accountant, tighter),
and `gaussian` (the exact privacy profile of the composed Gaussian mechanism: T releases at
multiplier sigma are exactly mu-GDP with mu = sqrt(T) / sigma, Dong, Roth & Su 2019). Third parties
add one with `register`.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable

from scipy.optimize import brentq
from scipy.stats import norm

from ..errors import ConfigError

DEFAULT_ACCOUNTANT = "rdp"


class Accountant(ABC):
    """Accounting for `releases` full-batch Gaussian releases of sensitivity 1."""

    name: str

    @abstractmethod
    def epsilon(self, sigma: float, delta: float, releases: int) -> float:
        """The epsilon certified at `delta` for noise multiplier `sigma`."""

    @abstractmethod
    def noise_multiplier(self, epsilon: float, delta: float, releases: int) -> float:
        """A sigma that certifies (epsilon, delta)-DP over `releases` releases."""


def check_budget(epsilon: float, delta: float, releases: int) -> None:
    """Raise ConfigError unless 0 < epsilon, 0 < delta < 1 and releases >= 1."""
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ConfigError(f"--dp-stats-epsilon must be a positive finite number, got {epsilon}")
    if not 0.0 < delta < 1.0:
        raise ConfigError(f"--dp-delta must lie in (0, 1), got {delta}")
    if releases < 1:
        raise ConfigError(f"the number of releases must be at least 1, got {releases}")


class OpacusAccountant(Accountant):
    """opacus' `rdp` or `prv` accountant with sample rate 1 (every sample in every release)."""

    def __init__(self, kind: str) -> None:
        self.name = kind

    def epsilon(self, sigma: float, delta: float, releases: int) -> float:
        from opacus.accountants import create_accountant

        accountant = create_accountant(self.name)
        accountant.history = [(float(sigma), 1.0, int(releases))]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(accountant.get_epsilon(delta=delta))

    def noise_multiplier(self, epsilon: float, delta: float, releases: int) -> float:
        from opacus.accountants.utils import get_noise_multiplier

        check_budget(epsilon, delta, releases)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(
                get_noise_multiplier(
                    target_epsilon=epsilon,
                    target_delta=delta,
                    sample_rate=1.0,
                    steps=releases,
                    accountant=self.name,
                    epsilon_tolerance=0.005,
                )
            )


def gaussian_delta(epsilon: float, mu: float) -> float:
    """The exact delta(epsilon) of a mu-GDP mechanism: Phi(-e/mu + mu/2) - e^e Phi(-e/mu - mu/2)."""
    second = math.exp(min(epsilon + norm.logcdf(-epsilon / mu - mu / 2), 700.0))
    return float(norm.cdf(-epsilon / mu + mu / 2) - second)


class ExactGaussianAccountant(Accountant):
    """The tight (exact) profile of T composed full-batch Gaussian releases."""

    name = "gaussian"

    def epsilon(self, sigma: float, delta: float, releases: int) -> float:
        mu = math.sqrt(releases) / sigma
        if gaussian_delta(0.0, mu) <= delta:
            return 0.0
        return float(brentq(lambda e: gaussian_delta(e, mu) - delta, 0.0, 1e3))

    def noise_multiplier(self, epsilon: float, delta: float, releases: int) -> float:
        check_budget(epsilon, delta, releases)
        mu = brentq(lambda m: gaussian_delta(epsilon, m) - delta, 1e-8, 1e3)
        return math.sqrt(releases) / mu


_REGISTRY: dict[str, Callable[[], Accountant]] = {
    "rdp": lambda: OpacusAccountant("rdp"),
    "prv": lambda: OpacusAccountant("prv"),
    "gaussian": ExactGaussianAccountant,
}


def register(name: str, factory: Callable[[], Accountant]) -> None:
    """Make `factory` available as accountant `name` (refuses to replace one)."""
    if name in _REGISTRY:
        raise ConfigError(f"accountant {name!r} is already registered")
    _REGISTRY[name] = factory


def available() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str = DEFAULT_ACCOUNTANT) -> Accountant:
    """The accountant registered as `name`, or ConfigError naming the known ones."""
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise ConfigError(f"unknown accountant {name!r} (use {', '.join(available())})") from None
