"""The privacy options of one run and the three places they act in the pipeline.

1. client calibration: `statistics_mechanism` (DP on activation statistics), one per client;
2. client submission: `wrap_provider` (randomized response on the mask bits);
3. server release: `release` (minimum cohort, then debiasing).

`RunConfig.privacy` holds one of these; the flags of `simulate` fill it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..randomness import RandomSource
from ..secure_sum.api import AggregateResult, InputProvider
from .accounting import DEFAULT_ACCOUNTANT, available
from .cohort import check_min_cohort, min_cohort_for
from .guarantees import privacy_report
from .randomized_response import check_epsilon, randomized_provider
from .release import release_counts
from .statistics import StatisticsBudget, StatisticsMechanism

DEFAULT_DELTA = 1e-5


@dataclass(frozen=True)
class PrivacySettings:
    rr_epsilon: float | None = None
    dp_stats_epsilon: float | None = None
    dp_delta: float = DEFAULT_DELTA
    dp_clip: float | None = None
    accountant: str = DEFAULT_ACCOUNTANT
    min_cohort: int | None = None  # None: DEFAULT_MIN_COHORT under a secure protocol
    reproducible_noise: bool = False  # seed noise and protocol secrets from the seed: not private

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
        if self.dp_stats_epsilon is None:
            if self.dp_clip is not None:
                raise ConfigError("--dp-clip needs --dp-stats-epsilon")
            return
        if self.dp_clip is None:
            raise ConfigError("--dp-stats-epsilon needs --dp-clip C (the per-sample L2 bound)")
        StatisticsBudget(self.dp_stats_epsilon, self.dp_delta, self.dp_clip, 1, self.accountant)

    def cohort_minimum(self, protocol_secure: bool) -> int:
        """The explicit --min-cohort, else the default for the protocol (`min_cohort_for`)."""
        return min_cohort_for(self.min_cohort, protocol_secure)

    def statistics_mechanism(
        self, releases: int, source: RandomSource
    ) -> StatisticsMechanism | None:
        """A fresh mechanism for one client's calibration with `releases` releases, or None."""
        if self.dp_stats_epsilon is None or self.dp_clip is None:
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
    ) -> dict[str, Any]:
        return privacy_report(
            noise_source=noise_source,
            protocol=protocol,
            protocol_secure=protocol_secure,
            weights=weights,
            contributors=contributors,
            min_cohort=self.cohort_minimum(protocol_secure),
            rr_epsilon=self.rr_epsilon,
            statistics=statistics,
        )
