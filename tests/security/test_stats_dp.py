"""Issue 12, item 7: the DP accounting of the statistics states the adjacency it certifies.

Every client calibrates on a public number of full windows and uploads no token count, so the
neighbouring datasets differ in one window's content (replace-one); the L2 sensitivity of a sum
of non-negative vectors clipped to C is then sqrt(2) C, not C. Reported eps 8 over 30 releases
with noise calibrated for sensitivity C was really about 12.3 (eps 4: 6.0; eps 1: 1.47).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fedprllm_secure.client import fixed_point
from fedprllm_secure.pipeline import Pipeline
from fedprllm_secure.pipeline.client_step import ClientNode
from fedprllm_secure.privacy import statistics
from fedprllm_secure.privacy.accounting import get
from fedprllm_secure.privacy.settings import PrivacySettings
from fedprllm_secure.privacy.statistics import StatisticsBudget, StatisticsMechanism, clip_rows
from fedprllm_secure.randomness import SeededRandomSource

from ..test_pipeline import config_for


@pytest.mark.parametrize("epsilon", [8.0, 1.0])
def test_the_reported_epsilon_is_the_replace_one_epsilon_of_the_noise_added(
    epsilon: float,
) -> None:
    """Measure the noise the mechanism adds and account it for replace-one adjacency (exact
    Gaussian profile): it must give the epsilon the report states, not 1.5x more."""
    clip, delta, releases = 2.0, 1e-5, 30
    budget = StatisticsBudget(epsilon, delta, clip, releases, accountant="gaussian")
    mechanism = StatisticsMechanism(budget, SeededRandomSource("measure"))
    # 4000 windows whose statistics have norm C each: sums far above the noise (no flooring).
    samples, width = 4000, 100
    per_sample = torch.full((samples, width), clip / math.sqrt(width), dtype=torch.float64)
    clipped = clip_rows(per_sample, clip).sum(dim=0).numpy()
    noise = np.concatenate(
        [mechanism(block, {"a": per_sample})["a"].numpy() - clipped for block in range(releases)]
    )
    assert noise.min() > mechanism.floor - clipped.min()  # nothing was floored
    measured_std = float(noise.std())
    sensitivity = math.sqrt(2) * clip  # replace one non-negative vector of norm <= C
    true_epsilon = get("gaussian").epsilon(measured_std / sensitivity, delta, releases)
    report = mechanism.report()
    assert true_epsilon == pytest.approx(epsilon, rel=0.06)
    assert report["epsilon_spent"] == pytest.approx(epsilon, rel=0.01)
    assert report["sensitivity"] == pytest.approx(sensitivity, abs=1e-6)
    assert report["noise_std"] == pytest.approx(measured_std, rel=0.03)
    assert report["adjacency"].startswith("replace-one")


def test_the_privacy_report_states_replace_one_adjacency(
    tiny_model_dir: Path, client_dir: Path
) -> None:
    config = config_for(
        tiny_model_dir,
        client_dir,
        aggregate="stats",
        privacy=PrivacySettings(dp_stats_epsilon=8.0, dp_clip=5.0),
    )
    report = Pipeline(config).fedprllm().privacy
    dp = report["statistics_dp"]
    assert dp["sensitivity"] == pytest.approx(math.sqrt(2) * 5.0, abs=1e-6)
    assert dp["adjacency"] == statistics.ADJACENCY
    text = " ".join(g["guarantee"] for g in report["guarantees"])
    assert "replacing one calibration window" in text and "sqrt(2) C" in text


@pytest.mark.parametrize("calibration", ["one-shot", "sequential"])
def test_no_upload_carries_an_unnoised_data_dependent_value_when_dp_is_on(
    tiny_model_dir: Path, client_dir: Path, monkeypatch: pytest.MonkeyPatch, calibration: str
) -> None:
    """Every value a client uploads in stats mode under DP is recomputed here from its noisy
    (released) statistics and public numbers alone: no token count, no exact statistic."""
    released: list[tuple[object, dict[str, torch.Tensor]]] = []
    original_call = StatisticsMechanism.__call__

    def spy(self, block, per_sample):  # type: ignore[no-untyped-def]
        out = original_call(self, block, per_sample)
        released.append((self, {k: v.clone() for k, v in out.items()}))
        return out

    uploads: list[tuple[int, str, np.ndarray]] = []
    original_provider = ClientNode.provider

    def recording(self, index, chunk):  # type: ignore[no-untyped-def]
        value = original_provider(self, index, chunk)
        uploads.append((self.client_id, chunk.name, np.array(value, copy=True)))
        return value

    monkeypatch.setattr(StatisticsMechanism, "__call__", spy)
    monkeypatch.setattr(ClientNode, "provider", recording)
    precision = 48
    config = config_for(
        tiny_model_dir,
        client_dir,
        aggregate="stats",
        calibration=calibration,
        stats_precision_bits=precision,
        privacy=PrivacySettings(dp_stats_epsilon=8.0, dp_clip=5.0),
    )
    pipe = Pipeline(config)
    server = pipe.fedprllm().server
    owner = {id(node.current.dp): c for c, node in pipe.federation.nodes.items()}
    noisy: dict[int, dict[str, torch.Tensor]] = {}
    for mechanism, out in released:
        noisy.setdefault(owner[id(mechanism)], {}).update(out)
    assert uploads and {name for _, name, _ in uploads} <= {
        name for leader in server.stats_exponents for name in _chunks(leader, precision)
    }
    for client, name, value in uploads:
        leader, _, limb = name.partition("#")
        statistic = noisy[client][leader].numpy()
        if not limb:
            expected = fixed_point.exponent_one_hot(statistic)
        else:
            exponent = server.stats_exponents[leader]["common"]
            encoded = fixed_point.encode(statistic, exponent, precision)
            expected = fixed_point.to_limbs(encoded, precision)[int(limb)]
        assert np.array_equal(value, expected), (client, name)


def _chunks(leader: str, precision: int) -> list[str]:
    return [leader] + [f"{leader}#{k}" for k in range(fixed_point.limb_count(precision))]
