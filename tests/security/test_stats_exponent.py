"""Issue 12, item 6: in `--aggregate stats` one client's exponent report must not set the scale.

Before: the common exponent was the highest binade any client reported, so one client reporting
binade 159 (a valid one-hot) made every honest statistic encode to 0 and the summed statistics
its own. Now the exponent is the 2nd-highest report plus one binade of headroom, capped at the
highest (`fixed_point.layer_exponent`), values above it saturate, and an honest client refuses
to encode under an exponent more than P/2 binades above its own largest statistic
(`fixed_point.encode`): a forged histogram can then only abort the round.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedprllm_secure.client import fixed_point
from fedprllm_secure.client.fixed_point import (
    EXPONENT_HEADROOM,
    EXPONENT_MIN,
    EXPONENT_SLOTS,
    LIMB_BOUND,
    layer_exponent,
)
from fedprllm_secure.client.scores import row_mask, wanda_scores
from fedprllm_secure.errors import ProtocolError
from fedprllm_secure.pipeline import Pipeline
from fedprllm_secure.pipeline.client_step import ClientNode
from fedprllm_secure.pipeline.strategies import Server

from ..test_pipeline import config_for

LIAR = 0


def _histogram(*binades: int) -> np.ndarray:
    counts = np.zeros(EXPONENT_SLOTS, dtype=np.int64)
    for b in binades:
        counts[b - EXPONENT_MIN] += 1
    return counts


def test_one_lying_report_does_not_set_the_common_exponent() -> None:
    honest = (10, 11, 11, 8)
    assert layer_exponent(_histogram(*honest)) == 11  # two reports at the top: exact for all
    # A liar at the top binade (159) moves e by the headroom at most, never to 159...
    assert layer_exponent(_histogram(*honest, 159)) == 11 + EXPONENT_HEADROOM
    assert layer_exponent(_histogram(10, 11, 8, 159)) == 11 + EXPONENT_HEADROOM
    # ...and a liar at the bottom (-96) not below the second-highest honest report.
    assert layer_exponent(_histogram(10, 11, 8, -96)) == 11
    for liar in range(EXPONENT_MIN, EXPONENT_MIN + EXPONENT_SLOTS):
        e = layer_exponent(_histogram(10, 13, 8, liar))
        assert 10 <= e <= 13 + EXPONENT_HEADROOM


def _play(
    tiny_model_dir: Path,
    client_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    histogram_lie,
    protocol: str = "plaintext",
) -> tuple[Server, dict, dict]:
    """A stats-mode run in which client LIAR submits `histogram_lie(one_hot)` as its exponent
    report and the largest encodable value (every limb at its bound) for every statistic."""
    honest: dict = {}
    original = ClientNode.provider

    def read_or_lie(self, index, chunk):  # type: ignore[no-untyped-def]
        value = original(self, index, chunk)
        if self.client_id != LIAR:
            honest.setdefault(chunk.name, {})[self.client_id] = value
            return value
        if "#" in chunk.name:
            return np.full_like(value, LIMB_BOUND)
        return histogram_lie(value)

    monkeypatch.setattr(ClientNode, "provider", read_or_lie)
    config = config_for(
        tiny_model_dir,
        client_dir,
        protocol=protocol,
        aggregate="stats",
        calibration="one-shot",
        stats_precision_bits=48,
    )
    result = Pipeline(config).fedprllm()
    return result.server, result.masks, honest


def test_a_client_reporting_binade_159_cannot_erase_the_honest_statistics(
    tiny_model_dir: Path, client_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def top_binade(one_hot: np.ndarray) -> np.ndarray:
        lie = np.zeros_like(one_hot)
        lie[-1] = 1  # binade 159: a valid one-hot
        return lie

    run, masks, honest = _play(tiny_model_dir, client_dir, monkeypatch, top_binade)
    precision = 48
    limbs = fixed_point.limb_count(precision)
    agree = total_weights = 0
    for leader, exponents in run.stats_exponents.items():
        reports = [int(np.flatnonzero(v)[0]) + EXPONENT_MIN for v in honest[leader].values()]
        assert exponents["highest_reported"] == 159  # the lie reached the server...
        assert exponents["common"] <= max(reports) + EXPONENT_HEADROOM  # ...not the scale
        e = exponents["common"]
        honest_sum = sum(
            fixed_point.from_limbs([honest[f"{leader}#{k}"][c] for k in range(limbs)])
            for c in honest[f"{leader}#0"]
        )
        honest_total = fixed_point.decode(honest_sum, e, precision)
        # The server's statistics are the honest ones plus at most 2^e per entry (the liar's).
        liar = fixed_point.decode(np.uint64(fixed_point.bound(precision)), e, precision)
        assert np.allclose(run.stats_totals[leader] - liar, honest_total, rtol=1e-12, atol=0)
        assert honest_total.max() > liar / 4  # the honest statistics are of the same scale
    # Measured influence on the masks: agreement with the mask of the two honest clients alone.
    by_name = {layer.name: layer for layer in run.bench.layers}
    for leader in run.stats_exponents:
        e = run.stats_exponents[leader]["common"]
        honest_sum = sum(
            fixed_point.from_limbs([honest[f"{leader}#{k}"][c] for k in range(limbs)])
            for c in honest[f"{leader}#0"]
        )
        mean = fixed_point.decode(honest_sum, e, precision)
        weight = by_name[leader].module.weight.data
        reference = row_mask(wanda_scores(weight, torch.from_numpy(mean)), 0.5).numpy()
        agree += int((masks[leader] == reference).sum())
        total_weights += reference.size
    assert agree / total_weights > 0.5


def test_a_forged_histogram_makes_the_honest_clients_refuse(
    tiny_model_dir: Path, client_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two ones at the two top binades (each entry 0/1, which the protocol accepts) count as
    two reports there: the server's exponent becomes 159, and the honest clients, whose own
    statistics lie far more than P/2 binades below, refuse to encode instead of sending zeros."""

    def two_top_binades(one_hot: np.ndarray) -> np.ndarray:
        lie = np.zeros_like(one_hot)
        lie[-2:] = 1
        return lie

    with pytest.raises(ProtocolError, match="binades above this client's largest statistic"):
        _play(tiny_model_dir, client_dir, monkeypatch, two_top_binades)
