"""RIA, N:M, OWL and DSnoT: hand-computed examples, properties, and stats mode == centralized."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedprllm_secure.client.dsnot import dsnot_refine
from fedprllm_secure.client.scores import (
    layer_lowest_mask,
    n_m_mask,
    outlier_ratio,
    owl_sparsities,
    parse_n_m,
    ria_scores,
)
from fedprllm_secure.server.aggregate import implied_sparsity, n_m_global_mask


def test_ria_scores_match_hand_computation() -> None:
    weight = torch.tensor([[1.0, -3.0], [2.0, 4.0]])
    sq_mean = torch.tensor([4.0, 16.0])  # sqrt -> [2, 4]; ^0.5 -> [sqrt 2, 2]
    # row sums |W|: 4, 6; column sums: 3, 7
    relative = torch.tensor([[1 / 4 + 1 / 3, 3 / 4 + 3 / 7], [2 / 6 + 2 / 3, 4 / 6 + 4 / 7]])
    expected = relative * torch.tensor([[math.sqrt(2), 2.0]])
    assert torch.allclose(ria_scores(weight, sq_mean), expected, rtol=1e-6)
    assert torch.allclose(ria_scores(weight, sq_mean, 1.0), relative * torch.tensor([[2.0, 4.0]]))
    zero = ria_scores(torch.zeros(2, 2), sq_mean)
    assert torch.equal(zero, torch.zeros(2, 2))  # all-zero rows/columns: 0, not NaN


def test_layer_lowest_mask_compares_the_whole_layer() -> None:
    scores = torch.tensor([[5.0, 1.0, 2.0], [0.5, 9.0, 2.0]])
    assert layer_lowest_mask(scores, 0.5).tolist() == [[False, True, True], [True, False, False]]


def test_parse_n_m() -> None:
    assert parse_n_m("unstructured") is None
    assert parse_n_m("2:4") == (2, 4) and parse_n_m("4:8") == (4, 8)
    for bad in ("4:2", "2:2", "0:4", "2-4", "a:b", "2:"):
        with pytest.raises(ValueError):
            parse_n_m(bad)


@settings(max_examples=60, deadline=None)
@given(
    n_m=st.sampled_from([(1, 2), (2, 4), (4, 8), (1, 4), (3, 4)]),
    rows=st.integers(1, 5),
    groups=st.integers(1, 4),
    seed=st.integers(0, 2**16),
    ties=st.booleans(),
)
def test_n_m_mask_keeps_exactly_n_highest_of_every_m(n_m, rows, groups, seed, ties) -> None:
    kept, group = n_m
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(rows, groups * group, generator=generator)
    if ties:
        scores = scores.round()
    mask = n_m_mask(scores, kept, group).reshape(rows, groups, group)
    grouped = scores.reshape(rows, groups, group)
    assert bool(((~mask).sum(dim=2) == kept).all())
    lowest_kept = torch.where(mask, torch.inf, grouped).min(dim=2).values
    highest_pruned = torch.where(mask, grouped, -torch.inf).max(dim=2).values
    assert bool((lowest_kept >= highest_pruned).all())
    counts = np.random.default_rng(seed).integers(0, 5, (rows, groups * group))
    global_mask = n_m_global_mask(counts, kept, group).reshape(rows, groups, group)
    assert bool(((~global_mask).sum(axis=2) == kept).all())
    grouped_counts = counts.reshape(rows, groups, group)
    lowest_pruned = np.where(global_mask, grouped_counts, np.inf).min(axis=2)
    highest_kept = np.where(global_mask, -np.inf, grouped_counts).max(axis=2)
    assert bool((lowest_pruned >= highest_kept).all())  # the most-wanted-pruned go


def test_n_m_ties_prune_the_lower_index_first() -> None:
    assert n_m_mask(torch.ones(1, 4), 2, 4).tolist() == [[True, True, False, False]]
    counts = np.array([[3, 3, 3, 3, 0, 2, 2, 1]])
    assert n_m_global_mask(counts, 2, 4).tolist() == [
        [True, True, False, False, False, True, True, False]
    ]
    with pytest.raises(ValueError):
        n_m_mask(torch.ones(1, 6), 2, 4)


def test_outlier_ratio_matches_hand_computation() -> None:
    # mean of all ten scores = 2; M = 5 -> outliers above 10: one of ten
    scores = [torch.ones(2, 3), torch.tensor([[1.0, 1.0], [1.0, 11.0]])]
    assert outlier_ratio(scores, 5.0) == pytest.approx(10.0)
    assert outlier_ratio(scores, 6.0) == 0.0


def test_owl_sparsities_match_hand_computation() -> None:
    # ratios scaled to [0, 2 lambda] = [0, .2, .1]; mean .1; density = scaled - .1 + .5
    assert owl_sparsities([1, 3, 2], [10, 10, 10], 0.5, 0.1) == pytest.approx([0.6, 0.4, 0.5])
    weighted = owl_sparsities([1, 3, 2], [10, 20, 10], 0.5, 0.1)
    assert weighted == pytest.approx([0.625, 0.425, 0.525])
    assert owl_sparsities([2, 2], [5, 7], 0.6, 0.08) == [0.6, 0.6]


@settings(max_examples=60, deadline=None)
@given(
    ratios=st.lists(st.floats(0, 100), min_size=2, max_size=12),
    target=st.floats(0.2, 0.8),
    lam=st.floats(0, 0.1),
    seed=st.integers(0, 1000),
)
def test_owl_sparsities_average_to_the_target(ratios, target, lam, seed) -> None:
    sizes = np.random.default_rng(seed).integers(1, 1000, len(ratios)).tolist()
    sparsities = owl_sparsities(ratios, sizes, target, lam)
    assert np.dot(sparsities, sizes) / sum(sizes) == pytest.approx(target, abs=1e-12)
    assert max(sparsities) - min(sparsities) <= 2 * lam + 1e-12
    order = np.argsort(ratios, kind="stable")  # more outliers, never a higher sparsity
    assert all(
        sparsities[a] >= sparsities[b] - 1e-12 for a, b in zip(order, order[1:], strict=False)
    )


def test_dsnot_swaps_to_cancel_the_reconstruction_error() -> None:
    weight = torch.tensor([[1.0, 2.0, -1.0, 3.0], [1.0, 0.01, 2.0, 3.0]])
    mask = torch.tensor([[True, True, False, False], [False, True, False, True]])
    ones = torch.ones(4)
    refined = dsnot_refine(weight, mask, ones, ones, ones)
    # row 0: error 1 + 2 = 3 > 0: regrow the largest pruned (col 1, +2), prune the first kept
    # candidate (negatives first: col 2, -1): error 3 - 1 - 2 = 0, done.
    assert refined[0].tolist() == [True, False, True, False]
    # row 1: error 0.01 + 3 > 0: regrow col 3 (+3), prune the kept with negative metric first
    # (none), then positives by descending Wanda score, from the front: col 2; error 2.01. Then
    # regrow col 1 (+0.01), prune col 0 (+1): error 3.0; no pruned candidate is left: stop.
    assert refined[1].tolist() == [True, False, True, False]
    assert refined.sum(dim=1).tolist() == mask.sum(dim=1).tolist()  # one-for-one swaps
    small = dsnot_refine(weight * 0.01, mask, ones, ones, ones)
    assert torch.equal(small, mask)  # |error| <= 0.1 everywhere: nothing to refine


def test_implied_sparsity_is_the_mean_local_sparsity() -> None:
    counts = np.array([[2, 0, 1, 1]])  # two clients: 4 pruned bits of 8
    assert implied_sparsity(counts, 2) == 0.5
    assert implied_sparsity(counts * 10, 2) < 1.0


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--sparsity-type", "4:2"], "--sparsity-type must be unstructured or N:M"),
        (["--layerwise", "owl", "--sparsity-type", "2:4"], "--layerwise owl needs"),
        (["--refine", "dsnot", "--pruner", "magnitude"], "--refine dsnot needs"),
        (["--layerwise", "owl", "--owl-lambda", "0.3"], "--owl-lambda must lie in [0, 0.25)"),
        (["--aggregate", "stats", "--pruner", "magnitude"], "--aggregate stats needs"),
        (["--pruner", "sparsegpt"], "sparsegpt"),
    ],
)
def test_bad_method_flags_are_one_line_usage_errors(flags: list[str], says: str) -> None:
    from .test_cli import run_cli

    done = run_cli("simulate", *flags, "--clients", "2")
    assert done.returncode == 2
    assert says in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 or "sparsegpt" in says, done.stderr
