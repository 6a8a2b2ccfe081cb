"""Global masks by comparison group: exactly k per group, and the tie rules."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedprllm_secure.errors import ConfigError
from fedprllm_secure.server.aggregate import global_mask, scaling_factors

counts_arrays = st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 8)).flatmap(
    lambda shape: arrays(np.uint16, shape[:2], elements=st.integers(0, shape[2]))
)


@settings(max_examples=200, deadline=None)
@given(counts=counts_arrays, sparsity=st.floats(0.01, 0.99), seed=st.integers(0, 5))
def test_layer_group_prunes_exactly_k_highest(
    counts: np.ndarray, sparsity: float, seed: int
) -> None:
    mask = global_mask(counts, sparsity, "layer", seed=seed, layer_index=3)
    k = int(counts.size * sparsity)
    assert int(mask.sum()) == k
    if 0 < k < counts.size:
        assert counts[mask].min() >= counts[~mask].max()  # never keep a higher count
    assert np.array_equal(mask, global_mask(counts, sparsity, "layer", seed=seed, layer_index=3))


@settings(max_examples=200, deadline=None)
@given(counts=counts_arrays, sparsity=st.floats(0.01, 0.99))
def test_row_and_column_groups_prune_exactly_k_per_group(
    counts: np.ndarray, sparsity: float
) -> None:
    rows, columns = counts.shape
    row = global_mask(counts, sparsity, "row")
    assert (row.sum(axis=1) == int(columns * sparsity)).all()
    column = global_mask(counts, sparsity, "column")
    assert (column.sum(axis=0) == int(rows * sparsity)).all()
    for r in range(rows):
        if row[r].any() and (~row[r]).any():
            assert counts[r][row[r]].min() >= counts[r][~row[r]].max()


def test_layer_ties_are_random_but_seeded() -> None:
    counts = np.ones((10, 10), dtype=np.uint8)
    masks = [global_mask(counts, 0.5, "layer", seed=s).tobytes() for s in range(6)]
    assert len(set(masks)) > 1  # different seeds break ties differently
    assert masks[0] == global_mask(counts, 0.5, "layer", seed=0).tobytes()
    # The threshold level only: entries above it are always pruned.
    counts[0, :3] = 5
    for seed in range(5):
        assert global_mask(counts, 0.2, "layer", seed=seed)[0, :3].all()


def test_row_and_column_ties_take_lower_index_first() -> None:
    counts = np.array([[1, 2, 2, 2], [3, 3, 0, 3]], dtype=np.uint8)
    assert global_mask(counts, 0.5, "row").tolist() == [
        [False, True, True, False],
        [True, True, False, False],
    ]
    assert global_mask(counts, 0.5, "column").tolist() == [
        [False, False, True, False],
        [True, True, False, True],
    ]
    column = global_mask(np.array([[2, 0], [2, 1], [2, 1]], dtype=np.uint8), 0.34, "column")
    assert column[:, 0].tolist() == [True, False, False]
    assert column[:, 1].tolist() == [False, True, False]


def test_scaling_factors_and_unknown_group() -> None:
    counts = np.array([[0, 1], [2, 4]])
    assert np.allclose(scaling_factors(counts, 4), [[1.0, 0.75], [0.5, 0.0]])
    with pytest.raises(ConfigError):
        global_mask(counts, 0.5, "diagonal")
