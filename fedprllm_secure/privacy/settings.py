"""The privacy options of one run and the three places they act in the pipeline.

1. client calibration: `statistics_mechanism` (local DP on activation statistics), one per
   client; under distributed noise (`dp_noise`, stats mode under `additive` / `ckks`) no local
   mechanism: each client adds a share of integer noise to its stats upload instead
   (`privacy.distributed_stats`);
2. client submission: `wrap_provider` (randomized response on the mask bits);
3. server release: `release` (minimum cohort, then debiasing).

`resolved(...)` fixes what depends on the run (the noise kind, the minimum survivors) before the
server sends the settings to the clients.

`RunConfig.privacy` holds one of these; the flags of `simulate` fill it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..randomness import RandomSource
from ..secure_sum.api import AggregateResult, InputProvider
from .accounting import DEFAULT_ACCOUNTANT, available
from .cohort import check_min_cohort, min_cohort_for
from .discrete_noise import SAMPLERS
from .distributed_dp import PROTECTED_PROTOCOLS, UNITS
from .guarantees import privacy_report
from .randomized_response import check_epsilon, randomized_provider
from .release import release_counts
from .statistics import StatisticsBudget, StatisticsMechanism

DEFAULT_DELTA = 1e-5
NOISE_KINDS = ("distributed", "local")
DP_MECHANISMS = tuple(SAMPLERS)
DP_UNITS = tuple(UNITS)
DP_DOMAINS = ("raw", "group", "feature")
"""Public normalisation of the statistics before clipping (distributed noise): none, one public
scale per input group, or one per feature (`privacy.distributed_stats`)."""


@dataclass(frozen=True)
class PrivacySettings:
    rr_epsilon: float | None = None
    dp_stats_epsilon: float | None = None
    dp_delta: float = DEFAULT_DELTA
    dp_clip: float | None = None
    accountant: str = DEFAULT_ACCOUNTANT
    min_cohort: int | None = None  # None: DEFAULT_MIN_COHORT under a secure protocol
    reproducible_noise: bool = False  # seed noise and protocol secrets from the seed: not private
    dp_noise: str | None = None  # distributed | local; None: distributed in stats mode under a
    # secure protocol, else local (`resolved`)
    dp_mechanism: str = "skellam"  # distributed: skellam | ddgauss
    dp_unit: str = "window"  # distributed: window (sample level) | client
    dp_min_survivors: int | None = None  # distributed: None = the protocol's smallest release
    dp_domain: str = "group"  # distributed: raw | group | feature (public normalisation)

    def validate(self) -> None:
        """Raise ConfigError naming the first bad or inconsistent flag."""
        if self.min_cohort is not None:
            check_min_cohort(self.min_cohort)
        if self.rr_epsilon is not None:
            check_epsilon(self.rr_epsilon, "--rr-epsilon")
        if self.accountant not in available():
            raise ConfigError(
                f"unknown accountant {self.accountant!r} (use {', '.join(available())})"
            )
        self._validate_distributed_fields()
        if self.dp_stats_epsilon is None:
            if self.dp_clip is not None:
                raise ConfigError("--dp-clip needs --dp-stats-epsilon")
            if self.dp_noise is not None:
                raise ConfigError("--dp-noise needs --dp-stats-epsilon")
            return
        if self.dp_clip is not None and not (math.isfinite(self.dp_clip) and self.dp_clip > 0):
            raise ConfigError(f"--dp-clip must be a positive finite number, got {self.dp_clip}")
        if self.dp_noise == "local" and self.dp_clip is None:
            raise ConfigError("--dp-stats-epsilon needs --dp-clip C (the per-sample L2 bound)")
        StatisticsBudget(self.dp_stats_epsilon, self.dp_delta, self.dp_clip or 1.0, 1,
                         self.accountant)  # fmt: skip

    def _validate_distributed_fields(self) -> None:
        for value, choices, flag in (
            (self.dp_noise, (None, *NOISE_KINDS), "--dp-noise"),
            (self.dp_mechanism, DP_MECHANISMS, "--dp-mechanism"),
            (self.dp_unit, DP_UNITS, "--dp-unit"),
            (self.dp_domain, DP_DOMAINS, "--dp-domain"),
        ):
            if value not in choices:
                names = ", ".join(c for c in choices if c is not None)
                raise ConfigError(f"unknown {flag} {value!r} (use {names})")
        m = self.dp_min_survivors
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ConfigError(f"--dp-min-survivors must be a positive integer, got {m}")

    @property
    def distributed(self) -> bool:
        """Whether the statistics get distributed noise (only meaningful once `resolved`)."""
        return self.dp_stats_epsilon is not None and self.dp_noise == "distributed"

    def noise_kind(self, protocol: str, aggregate: str) -> str | None:
        """The DP noise of a run: explicit --dp-noise, else distributed in stats mode under a
        protocol that hides each client's upload, else local; None without DP statistics."""
        if self.dp_stats_epsilon is None:
            return None
        if self.dp_noise is not None:
            return self.dp_noise
        secure = protocol in PROTECTED_PROTOCOLS
        return "distributed" if secure and aggregate == "stats" else "local"

    def resolved(
        self, protocol: str, options: dict[str, Any], clients: int, aggregate: str
    ) -> PrivacySettings:
        """These settings with the noise kind and (distributed) the minimum survivors fixed."""
        kind = self.noise_kind(protocol, aggregate)
        if kind != "distributed":
            return replace(self, dp_noise=kind)
        from .distributed_stats import default_min_survivors

        secure = protocol in PROTECTED_PROTOCOLS
        m = self.dp_min_survivors or default_min_survivors(
            protocol, options, clients, self.cohort_minimum(secure)
        )
        return replace(self, dp_noise=kind, dp_min_survivors=m)

    def cohort_minimum(self, protocol_secure: bool) -> int:
        """The explicit --min-cohort, else the default for the protocol (`min_cohort_for`)."""
        return min_cohort_for(self.min_cohort, protocol_secure)

    def statistics_mechanism(
        self, releases: int, source: RandomSource
    ) -> StatisticsMechanism | None:
        """A fresh mechanism for one client's calibration with `releases` releases, or None."""
        if self.dp_stats_epsilon is None or self.dp_clip is None or self.dp_noise == "distributed":
            return None
        budget = StatisticsBudget(
            self.dp_stats_epsilon, self.dp_delta, self.dp_clip, releases, self.accountant
        )
        return StatisticsMechanism(budget, source)

    def wrap_provider(self, provider: InputProvider, rr_key: bytes) -> InputProvider:
        """The client's provider, randomized if --rr-epsilon is set (flips keyed by `rr_key`
        and the chunk name only: see `randomized_provider`)."""
        if self.rr_epsilon is None:
            return provider
        return randomized_provider(provider, self.rr_epsilon, rr_key)

    def release(self, result: AggregateResult, protocol_secure: bool) -> dict[str, np.ndarray]:
        """The counts the server may release (guard, then debias); PrivacyError if refused."""
        return release_counts(result, self.rr_epsilon, self.cohort_minimum(protocol_secure))

    def report(
        self,
        *,
        protocol: str,
        protocol_secure: bool,
        weights: int,
        contributors: int,
        statistics: dict[str, Any] | None,
        noise_source: str,
        distributed: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return privacy_report(
            distributed=distributed,
            noise_source=noise_source,
            protocol=protocol,
            protocol_secure=protocol_secure,
            weights=weights,
            contributors=contributors,
            min_cohort=self.cohort_minimum(protocol_secure),
            rr_epsilon=self.rr_epsilon,
            statistics=statistics,
        )
