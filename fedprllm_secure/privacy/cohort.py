"""The minimum cohort guard: the server never releases counts summed over too few clients.

With n contributors a count of 0 or n reveals every contributor's bit, and n = 1 or 2 reveals
nearly everything; secure aggregation hides individual masks only in a crowd.
"""

from __future__ import annotations

from ..errors import ConfigError, PrivacyError

DEFAULT_MIN_COHORT = 3


def min_cohort_for(min_cohort: int | None, protocol_secure: bool) -> int:
    """The explicit minimum cohort, else DEFAULT_MIN_COHORT for secure protocols and 1 for
    plaintext (whose server already holds every mask: refusing the sum would protect nothing)."""
    if min_cohort is not None:
        return min_cohort
    return DEFAULT_MIN_COHORT if protocol_secure else 1


def check_min_cohort(min_cohort: int) -> int:
    if not isinstance(min_cohort, int) or min_cohort < 1:
        raise ConfigError(f"--min-cohort must be a positive integer, got {min_cohort}")
    return min_cohort


def require_cohort(contributors: int, min_cohort: int = DEFAULT_MIN_COHORT) -> None:
    """Raise PrivacyError when fewer than `min_cohort` clients contributed to the counts."""
    check_min_cohort(min_cohort)
    if contributors < min_cohort:
        raise PrivacyError(
            f"only {contributors} client(s) contributed to the sum, fewer than the minimum cohort "
            f"of {min_cohort}; the server refuses to release the counts (lower it explicitly "
            f"with --min-cohort N if every client accepts that)"
        )
