"""Distributed DP inside the secure sum, end to end on the tiny model (`--dp-noise distributed`).

What the server sees is the secure sum of noisy residues; what it releases has the central
mechanism's noise; plaintext is refused; a dropout below the minimum survivors aborts, above it
keeps the reported guarantee; the noise never comes from --seed unless reproducible noise is
asked for; a client never uploads unnoised statistics (no exponent round) under this mechanism.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedprllm_secure.cli import main
from fedprllm_secure.errors import ConfigError, PrivacyError
from fedprllm_secure.pipeline import Pipeline, dp_rounds
from fedprllm_secure.privacy import distributed_encoding as de
from fedprllm_secure.privacy import distributed_stats as ds
from fedprllm_secure.privacy.settings import PrivacySettings

from ..test_pipeline import config_for

DP = PrivacySettings(dp_stats_epsilon=4.0)


def _config(tiny_model_dir: Path, client_dir: Path, privacy=DP, **overrides):
    settings = dict(aggregate="stats", protocol="additive", calibration="one-shot")
    settings.update(overrides)
    return config_for(tiny_model_dir, client_dir, privacy=privacy, **settings)


@pytest.mark.parametrize(
    "protocol, calibration", [("additive", "one-shot"), ("additive", "sequential"),
                              ("ckks", "one-shot")]
)  # fmt: skip
def test_distributed_noise_runs_under_secure_protocols_without_an_exponent_round(
    tiny_model_dir: Path, client_dir: Path, protocol: str, calibration: str
) -> None:
    config = _config(tiny_model_dir, client_dir, protocol=protocol, calibration=calibration)
    fed = Pipeline(config).fedprllm()
    report = fed.privacy["distributed_dp"]
    releases = 1 if calibration == "one-shot" else 2  # the tiny model has two blocks
    assert report["releases"] == report["releases_made"] == releases
    assert report["epsilon_spent"] <= 4.0 and report["epsilon_if_one_share_is_seen"] > 4.0
    assert report["contributors_per_release"] == [3] * releases
    assert fed.server.contributors == [3] * releases  # one aggregation per release: no histogram
    assert not fed.server.stats_exponents
    assert fed.privacy["statistics_dp"] is None  # no client added local noise
    text = " ".join(g["guarantee"] for g in fed.privacy["guarantees"])
    assert "inside the secure sum" in text and "honest clients' noise shares" in text
    assert set(fed.masks) == set(fed.server.bench.lengths)


def test_plaintext_is_refused_with_one_line(
    tiny_model_dir: Path, client_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    explicit = replace(DP, dp_noise="distributed")
    with pytest.raises(ConfigError, match="needs a secure protocol"):
        _config(tiny_model_dir, client_dir, explicit, protocol="plaintext").validate()
    # without --dp-noise, plaintext gets local noise (which needs a clip), never distributed
    assert DP.noise_kind("plaintext", "stats") == "local"
    args = ["simulate", "--model", str(tiny_model_dir), "--protocol", "plaintext",
            "--aggregate", "stats", "--dp-stats-epsilon", "4", "--dp-noise", "distributed"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--dp-noise distributed needs a secure protocol" in err[0]


def test_the_released_aggregate_carries_the_planned_noise(
    tiny_model_dir: Path, client_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's decoded sum minus the exact clipped sum of what the clients held has the
    plan's standard deviation (chi-square bound over every entry of every release, failure
    probability ~1e-6): the central mechanism's noise, not n times it and not less."""
    held: list[tuple] = []
    summed: list[tuple] = []
    real_chunks, real_decode = ds.client_chunks, dp_rounds.ServerRelease.decode

    def recording_chunks(per_window, spec, plan, source):
        held.append((dict(per_window), spec))
        return real_chunks(per_window, spec, plan, source)

    def recording_decode(self, sums, spec, contributors):
        summed.append((dict(sums), spec, self.plan(spec), contributors))
        return real_decode(self, sums, spec, contributors)

    monkeypatch.setattr(ds, "client_chunks", recording_chunks)
    monkeypatch.setattr(dp_rounds.ServerRelease, "decode", recording_decode)
    config = _config(tiny_model_dir, client_dir, calibration="sequential")
    Pipeline(config).fedprllm()
    ratios, entries = [], 0
    for release, (sums, spec, plan, contributors) in enumerate(summed):
        mine = held[release * contributors : (release + 1) * contributors]
        exact = sum(de.clip_windows(s.stack(w), s.clip).sum(axis=0) for w, s in mine)
        count = ds.limbs(plan)
        joined = np.concatenate(
            [ds.fixed_point.from_limbs([sums[ds.chunk_name(k, i)] for i in range(count)])
             for k in spec.leaders]
        )  # fmt: skip
        error = de.decode_sum(joined, plan.encoding) - exact
        expected = plan.noise.sum_std(contributors) / plan.encoding.gamma
        ratios.append(float(np.sum(error**2)) / expected**2)
        entries += error.size
    variance_ratio = sum(ratios) / entries
    assert abs(variance_ratio - 1) < 5 * math.sqrt(2 / entries)  # ~5 sd of a chi-square mean
    local = 3  # local DP would carry 3 clients' full noise: variance ratio ~3
    assert variance_ratio < local / 2


def test_a_dropout_below_min_survivors_aborts_and_above_keeps_the_guarantee(
    tiny_model_dir: Path, client_dir: Path
) -> None:
    """ckks releases a sum of 2 clients (minimum cohort 2); noise sized for 3 honest shares must
    then not be decoded (the guarantee would be weaker than reported); sized for 2 it holds."""
    tight = replace(DP, dp_min_survivors=3, min_cohort=2)
    config = _config(
        tiny_model_dir, client_dir, tight, protocol="ckks", drop={1: "encrypted-input"}
    )
    with pytest.raises((ConfigError, PrivacyError), match="fewer than the 3 survivors"):
        Pipeline(config).fedprllm()
    margin = replace(tight, dp_min_survivors=2)
    config = _config(
        tiny_model_dir, client_dir, margin, protocol="ckks", drop={1: "encrypted-input"}
    )
    report = Pipeline(config).fedprllm().privacy["distributed_dp"]
    assert report["contributors_per_release"] == [2] and report["min_survivors"] == 2
    assert report["epsilon_spent"] <= 4.0


@pytest.mark.parametrize("reproducible", [False, True])
def test_noise_comes_from_the_seed_only_when_reproducible_noise_is_asked(
    tiny_model_dir: Path, client_dir: Path, reproducible: bool
) -> None:
    privacy = replace(DP, reproducible_noise=reproducible)
    totals = []
    for _ in range(2):
        server = Pipeline(_config(tiny_model_dir, client_dir, privacy)).fedprllm().server
        totals.append(np.concatenate([server.stats_totals[k] for k in sorted(server.stats_totals)]))
    assert np.array_equal(totals[0], totals[1]) == reproducible


def test_a_client_refuses_to_upload_unnoised_statistics_under_distributed_noise(
    tiny_model_dir: Path, client_dir: Path
) -> None:
    pipe = Pipeline(_config(tiny_model_dir, client_dir))
    server = pipe.fedprllm().server
    node_settings = {"aggregation": 9, "upload": "histogram", "blocks": [0], "one_shot": True}
    with pytest.raises(PrivacyError, match="unnoised statistics"):
        server.command("prepare", node_settings)


def test_a_client_refuses_more_releases_than_its_plan_certifies() -> None:
    per_window = {"a": np.ones((2, 3))}
    settings = {"leaders": ["a"], "clip": 1.0, "clients": 3, "aggregation": 1}
    arrays = {"dp-scale/a": np.ones(3)}
    privacy = replace(DP, dp_noise="distributed", dp_min_survivors=3)
    from fedprllm_secure.randomness import SeededRandomSource

    released: list[int] = []
    chunks = dp_rounds.client_release(
        privacy, per_window, (settings, arrays), released, 1, SeededRandomSource("x")
    )
    assert set(chunks) == {"a#0"} and released == [1]
    with pytest.raises(PrivacyError, match="budget allows 1"):
        dp_rounds.client_release(
            privacy, per_window, (settings, arrays), released, 1, SeededRandomSource("x")
        )
