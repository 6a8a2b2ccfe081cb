"""Wanda scores, statistics and local masks against hand computations."""

from __future__ import annotations

import torch

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
