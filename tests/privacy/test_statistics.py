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
    # Zero statistics + N(0, s^2) floored at s = sigma sqrt(2) C (replace-one sensitivity):
    # Phi(1) = 84% of the entries are the floor, the rest s z for z ~ N(0, 1) above 1, of mean
    # s phi(1) / (1 - Phi(1)).
    values = np.concatenate([out["q"].numpy(), out["o"].numpy()])
    s = mechanism.sigma * math.sqrt(2) * budget.clip
    assert mechanism.floor == pytest.approx(s) and mechanism.noise_std == pytest.approx(s)
    assert values.min() == mechanism.floor
    phi_1 = math.exp(-0.5) / math.sqrt(2 * math.pi)
    tail = 0.5 * math.erfc(1 / math.sqrt(2))  # 1 - Phi(1)
    assert abs((values == mechanism.floor).mean() - (1 - tail)) < 0.02
    above = values[values > mechanism.floor]
    assert above.mean() == pytest.approx(s * phi_1 / tail, rel=0.05)
    with pytest.raises(PrivacyError, match="budget allows 1"):
        mechanism(1, {"q": shared})


def test_one_sample_moves_the_released_sum_by_at_most_clip() -> None:
    budget = StatisticsBudget(epsilon=1.0, delta=1e-5, clip=2.0, releases=2)
    big = torch.rand(6, 50, dtype=torch.float64) * 100
    with_sample = StatisticsMechanism(budget, SeededRandomSource("s"))(0, {"a": big})
    without = StatisticsMechanism(budget, SeededRandomSource("s"))(0, {"a": big[:5]})
    # Same noise (same source), so the difference is the clipped contribution of sample 5 (the
    # floor only shrinks differences).
    assert float((with_sample["a"] - without["a"]).norm()) <= 2.0 + 1e-9


def test_huge_noise_never_releases_below_the_floor_nor_prunes_a_whole_column() -> None:
    from fedprllm_secure.client.scores import row_mask, wanda_scores

    budget = StatisticsBudget(epsilon=0.2, delta=1e-5, clip=1.0, releases=1)
    mechanism = StatisticsMechanism(budget, SeededRandomSource("huge"))
    assert mechanism.sigma > 10  # against clipped sums of at most 4 (4 samples, C = 1)
    per_sample = torch.rand(4, 512, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    released = mechanism(0, {"a": per_sample})["a"]
    assert float(released.min()) >= mechanism.floor > 0
    # Noise-dominated features share the floor: their Wanda scores are |W| times one constant, so
    # the mask is close to magnitude pruning, not whole columns scored 0 and pruned in every row.
    weight = torch.randn(64, 512, generator=torch.Generator().manual_seed(2))
    scores = wanda_scores(weight, released / 1024)
    assert bool((scores > 0).all())
    mask = row_mask(scores, 0.5)
    assert not bool(mask.all(dim=0).any())
    magnitude = row_mask(weight.abs(), 0.5)
    assert float((mask == magnitude).double().mean()) > 0.8


@pytest.mark.parametrize("sigma", [0.0, 1e-9])
def test_without_noise_the_release_is_the_clipped_sum(sigma: float) -> None:
    budget = StatisticsBudget(epsilon=4.0, delta=1e-5, clip=2.0, releases=1)
    mechanism = StatisticsMechanism(budget, SeededRandomSource("quiet"))
    mechanism.sigma = sigma  # the floor, sigma * sqrt(2) C, vanishes with the noise
    per_sample = torch.rand(5, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    per_sample[:, :3] = 0  # features no sample touches: released at the floor, i.e. ~0
    released = mechanism(0, {"a": per_sample})["a"]
    clipped = clip_rows(per_sample, 2.0).sum(dim=0)
    assert mechanism.floor == pytest.approx(math.sqrt(2) * 2.0 * sigma)
    assert torch.allclose(released, clipped, rtol=0, atol=1e-7)
    if sigma == 0.0:
        assert torch.equal(released, clipped)


def test_the_floor_is_post_processing_of_the_gaussian_release(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fedprllm_secure.privacy import statistics
    from fedprllm_secure.privacy.accounting import get
    from fedprllm_secure.privacy.sampling import standard_normal

    budget = StatisticsBudget(epsilon=8.0, delta=1e-5, clip=3.0, releases=2)
    per_sample = torch.rand(4, 300, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    source = SeededRandomSource("post")
    clipped = clip_rows(per_sample, 3.0).sum(dim=0).numpy()
    sigma = budget.noise_multiplier()
    # The Gaussian mechanism's output, drawn from the very stream the mechanism uses.
    std = sigma * (math.sqrt(2) * 3.0)  # replace-one sensitivity sqrt(2) C
    gaussian = clipped + std * standard_normal(source.child("block-0"), clipped.size)
    reports = {}
    for floor_stds in (0.0, 1.0, 3.0):
        monkeypatch.setattr(statistics, "FLOOR_STDS", floor_stds)
        mechanism = StatisticsMechanism(budget, source)
        released = mechanism(0, {"a": per_sample})["a"].numpy()
        # A function of the Gaussian output and the public sigma and C only...
        assert np.array_equal(released, np.maximum(gaussian, floor_stds * std))
        reports[floor_stds] = mechanism.report()
        assert reports[floor_stds]["release_floor"] == pytest.approx(floor_stds * std, abs=1e-6)
    # ...so neither the noise nor the accounted epsilon depends on it.
    spent = {r["epsilon_spent"] for r in reports.values()}
    assert {r["noise_multiplier"] for r in reports.values()} == {round(sigma, 6)}
    assert spent == {round(get("rdp").epsilon(sigma, 1e-5, 1), 6)}


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
