"""Shared helpers of the integration tests; registers the `flower` marker."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "flower: needs flwr (pip install '.[flower]'); skipped when it is missing"
    )
