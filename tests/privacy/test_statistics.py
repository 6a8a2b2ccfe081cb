"""DP on activation statistics: clipping, noise scale, shared inputs, the release budget."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedprllm_secure.errors import ConfigError, PrivacyError
from fedprllm_secure.privacy.statistics import StatisticsBudget, StatisticsMechanism, clip_rows
from fedprllm_secure.randomness import SeededRandomSource


def test_clip_rows_bounds_every_sample_and_keeps_small_ones() -> None:
    vectors = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]], dtype=torch.float64)
    clipped = clip_rows(vectors, 1.0)
    assert torch.allclose(clipped[0], torch.tensor([0.6, 0.8], dtype=torch.float64))
    assert torch.equal(clipped[1:], vectors[1:])


def test_noise_has_the_budgeted_scale_and_shared_inputs_share_it() -> None:
    budget = StatisticsBudget(epsilon=2.0, delta=1e-5, clip=1.0, releases=1)
    mechanism = StatisticsMechanism(budget, SeededRandomSource("stats"))
    shared = torch.zeros(4, 5000, dtype=torch.float64)
    own = torch.zeros(4, 3000, dtype=torch.float64)
    out = mechanism(0, {"q": shared, "k": shared.clone(), "o": own})
    assert torch.equal(out["q"], out["k"])  # one release for one input, not two
    # Zero statistics + N(0, sigma^2 C^2) clamped at 0: half the entries are 0, the rest a
    # half-normal with mean sigma C sqrt(2/pi).
    values = np.concatenate([out["q"].numpy(), out["o"].numpy()])
    assert abs((values == 0).mean() - 0.5) < 0.03
    positive = values[values > 0]
    assert positive.mean() == pytest.approx(mechanism.sigma * math.sqrt(2 / math.pi), rel=0.05)
    with pytest.raises(PrivacyError, match="budget allows 1"):
        mechanism(1, {"q": shared})


def test_one_sample_moves_the_released_sum_by_at_most_clip() -> None:
    budget = StatisticsBudget(epsilon=1.0, delta=1e-5, clip=2.0, releases=2)
    big = torch.rand(6, 50, dtype=torch.float64) * 100
    with_sample = StatisticsMechanism(budget, SeededRandomSource("s"))(0, {"a": big})
    without = StatisticsMechanism(budget, SeededRandomSource("s"))(0, {"a": big[:5]})
    # Same noise (same source), so the difference is the clipped contribution of sample 5 (the
    # clamp at 0 only shrinks differences).
    assert float((with_sample["a"] - without["a"]).norm()) <= 2.0 + 1e-9


def test_report_states_the_spent_budget() -> None:
    budget = StatisticsBudget(epsilon=4.0, delta=1e-5, clip=1.0, releases=3)
    mechanism = StatisticsMechanism(budget, SeededRandomSource("r"))
    for block in range(3):
        mechanism(block, {"a": torch.ones(2, 4, dtype=torch.float64)})
    report = mechanism.report()
    assert report["releases_made"] == 3 and report["accountant"] == "rdp"
    assert report["epsilon_spent"] <= 4.0 * 1.01


@pytest.mark.parametrize("clip", [0.0, -1.0, float("nan")])
def test_bad_clip_is_a_config_error(clip: float) -> None:
    with pytest.raises(ConfigError, match="--dp-clip"):
        StatisticsBudget(epsilon=1.0, delta=1e-5, clip=clip, releases=1)


def test_per_sample_statistics_sum_to_the_exact_ones_and_an_identity_transform_changes_nothing() -> (
    None
):
    from fedprllm_secure.client.calibrate import (
        block_statistics,
        capture_block_inputs,
        local_masks,
    )
    from fedprllm_secure.model import block_linears, decoder_blocks

    from ..conftest import make_tiny_model

    model = make_tiny_model(layers=2)
    samples = torch.randint(0, 256, (5, 24), generator=torch.Generator().manual_seed(0))
    inputs = capture_block_inputs(model, samples, batch_size=2)
    stats, _ = block_statistics(
        decoder_blocks(model)[0], block_linears(model, 0), inputs, False, per_sample=True
    )
    for entry in stats.values():
        assert entry.per_sample is not None and entry.per_sample.shape[0] == 5
        assert torch.allclose(entry.per_sample.sum(dim=0), entry.sq_sum)
    calls: list[int] = []

    def identity(block: int, per_sample: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        calls.append(block)
        return {name: value.sum(dim=0) for name, value in per_sample.items()}

    exact, _ = local_masks(model, samples, 0.5, batch_size=2)
    transformed, _ = local_masks(model, samples, 0.5, batch_size=2, stats_transform=identity)
    assert calls == [0, 1]  # one release per block
    assert all(torch.equal(exact[n], transformed[n]) for n in exact)
    first, _ = local_masks(model, samples, 0.5, batch_size=2, max_blocks=1)
    assert set(first) == {layer.name for layer in block_linears(model, 0)}
    assert all(torch.equal(first[n], exact[n]) for n in first)
