"""The minimum cohort guard refuses to release counts over too few contributors."""

from __future__ import annotations

import pytest

from fedprllm_secure.errors import ConfigError, FedPrError, PrivacyError
from fedprllm_secure.privacy.cohort import DEFAULT_MIN_COHORT, require_cohort


def test_guard_refuses_below_the_minimum_and_releases_at_it() -> None:
    assert DEFAULT_MIN_COHORT >= 3
    with pytest.raises(PrivacyError, match="fewer than the minimum cohort of 3"):
        require_cohort(2)
    require_cohort(3)
    require_cohort(1, min_cohort=1)  # an explicit override
    assert issubclass(PrivacyError, FedPrError)


def test_bad_minimum_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--min-cohort"):
        require_cohort(5, min_cohort=0)


def test_default_minimum_applies_to_secure_protocols_and_explicit_values_everywhere() -> None:
    from fedprllm_secure.privacy.settings import PrivacySettings

    assert PrivacySettings().cohort_minimum(protocol_secure=True) == DEFAULT_MIN_COHORT
    assert PrivacySettings().cohort_minimum(protocol_secure=False) == 1
    assert PrivacySettings(min_cohort=5).cohort_minimum(protocol_secure=False) == 5
