"""Shared helpers of the integration tests; registers the `flower` marker."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "flower: needs flwr (pip install '.[flower]'); skipped when it is missing"
    )


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """Where a test's Flower nodes keep their identity keys, trust file and ledgers."""
    return tmp_path / "nodes"
