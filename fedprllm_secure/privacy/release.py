"""What the server does with an aggregate before anyone sees the counts.

Refuse cohorts below the minimum; debias randomized-response sums with the exact number of
contributors the protocol reports. Pure: no protocol, no transport.
"""

from __future__ import annotations

import numpy as np

from ..secure_sum.api import AggregateResult
from .cohort import DEFAULT_MIN_COHORT, require_cohort
from .randomized_response import debias_counts


def release_counts(
    result: AggregateResult, rr_epsilon: float | None = None, min_cohort: int = DEFAULT_MIN_COHORT
) -> dict[str, np.ndarray]:
    """Per-chunk counts the server may release: raw sums, or debiased (float64) under RR.

    Raises PrivacyError when fewer than `min_cohort` clients contributed.
    """
    contributors = len(result.contributors)
    require_cohort(contributors, min_cohort)
    if rr_epsilon is None:
        return dict(result.sums)
    return {
        name: debias_counts(sums, contributors, rr_epsilon) for name, sums in result.sums.items()
    }
