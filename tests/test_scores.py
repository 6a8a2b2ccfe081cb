"""Wanda scores, statistics and local masks against hand computations."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedprllm_secure.client.calibrate import BlockInputs, block_statistics
from fedprllm_secure.client.scores import magnitude_scores, row_mask, wanda_scores
from fedprllm_secure.model import PrunableLayer


def test_wanda_scores_match_hand_computation() -> None:
    weight = torch.tensor([[1.0, -2.0, 3.0], [-4.0, 0.5, 0.0]])
    sq_mean = torch.tensor([4.0, 1.0, 0.25])
    expected = torch.tensor([[2.0, 2.0, 1.5], [8.0, 0.5, 0.0]])
    assert torch.equal(wanda_scores(weight, sq_mean), expected)
    assert torch.equal(magnitude_scores(weight), weight.abs())


def test_row_mask_prunes_exactly_k_lowest_with_lower_index_first_on_ties() -> None:
    scores = torch.tensor([[3.0, 1.0, 1.0, 2.0], [5.0, 5.0, 5.0, 5.0], [0.0, 9.0, -1.0, 4.0]])
    mask = row_mask(scores, 0.5)
    assert mask.sum(dim=1).tolist() == [2, 2, 2]
    assert mask.tolist() == [
        [False, True, True, False],
        [True, True, False, False],  # all tied: the lowest column indices go
        [True, False, True, False],
    ]
    assert row_mask(scores, 0.3).sum(dim=1).tolist() == [1, 1, 1]  # int(4 * 0.3) = 1


def test_block_statistics_are_sum_of_squares_per_input_feature() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(3, 2, bias=False)
    block = torch.nn.Sequential(linear)
    x = [torch.randn(2, 5, 3), torch.randn(1, 5, 3)]
    layers = [PrunableLayer("0", 0, linear)]
    stats, outputs = block_statistics(block, layers, BlockInputs(x, [{}, {}]), keep_outputs=True)
    flat = torch.cat([t.reshape(-1, 3) for t in x]).double()
    assert stats["0"].tokens == 15
    assert torch.allclose(stats["0"].sq_sum, (flat**2).sum(0))
    assert torch.allclose(stats["0"].sq_mean, (flat**2).mean(0))
    assert outputs is not None and torch.allclose(outputs.hidden[0], linear(x[0]))


@settings(max_examples=300, deadline=None)
@given(
    rows=st.integers(1, 6),
    columns=st.integers(1, 12),
    levels=st.integers(1, 5),
    sparsity=st.floats(0.01, 0.99),
    seed=st.integers(0, 1000),
)
def test_row_mask_equals_the_stable_sort_reference(
    rows: int, columns: int, levels: int, sparsity: float, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, levels, (rows, columns), generator=generator).float()
    k = int(columns * sparsity)
    expected = torch.zeros_like(scores, dtype=torch.bool)
    if k:
        expected.scatter_(1, torch.sort(scores, dim=1, stable=True).indices[:, :k], True)
    assert torch.equal(row_mask(scores, sparsity), expected)
