"""The stats upload under distributed DP: public release parameters, chunks, decoding, defaults."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from fedprllm_secure.errors import ConfigError
from fedprllm_secure.privacy import distributed_stats as ds
from fedprllm_secure.privacy.settings import PrivacySettings
from fedprllm_secure.randomness import SeededRandomSource

REFERENCE = {"a": np.array([[1.0, 3.0], [3.0, 5.0]]), "b": np.array([[2.0], [6.0]])}


@pytest.mark.parametrize(
    "domain, a_scale, b_scale",
    [("raw", [1.0, 1.0], [1.0]), ("group", [3.0, 3.0], [4.0]), ("feature", [2.0, 4.0], [4.0])],
)
def test_public_scales_by_domain(domain: str, a_scale: list, b_scale: list) -> None:
    scales = ds.public_scales(REFERENCE, domain)
    assert scales["a"].tolist() == a_scale and scales["b"].tolist() == b_scale


def test_stack_divides_by_the_scales_and_split_multiplies_back() -> None:
    spec = ds.public_spec(REFERENCE, ["a", "b"], "feature", clip=7.0)
    stacked = spec.stack(REFERENCE)
    assert stacked.tolist() == [[0.5, 0.75, 0.5], [1.5, 1.25, 1.5]]
    back = spec.split(stacked.sum(axis=0))
    assert back["a"].tolist() == [4.0, 8.0] and back["b"].tolist() == [8.0]
    assert spec.clip == 7.0 and spec.dimension == 3


def test_the_public_clip_is_the_median_normalised_window_norm_per_unit() -> None:
    spec = ds.public_spec(REFERENCE, ["a", "b"], "raw")
    norms = [math.sqrt(1 + 9 + 4), math.sqrt(9 + 25 + 36)]
    assert spec.clip == pytest.approx(np.median(norms))
    client = ds.public_spec(REFERENCE, ["a", "b"], "raw", windows_per_unit=32)
    assert client.clip == pytest.approx(32 * np.median(norms))


def _release(windows: int, clients: int, dimension: int, bits: int | None = None):
    rng = np.random.default_rng(0)
    widths = {"x": dimension // 2, "y": dimension - dimension // 2}
    reference = {k: rng.exponential(1.0, (8, w)) for k, w in widths.items()}
    spec = ds.public_spec(reference, ["x", "y"], "feature")
    plan = ds.plan_for(4.0, 1e-5, 1, spec.clip, spec.dimension, windows, clients, clients,
                       "skellam", "window")  # fmt: skip
    if bits is not None:  # a wider ring than needed: the residues travel in several limbs
        plan = replace(plan, encoding=replace(plan.encoding, modulus_bits=bits))
    data = [
        {k: rng.exponential(1.0, (windows, w)) * spec.scales[k] for k, w in widths.items()}
        for _ in range(clients)
    ]
    return spec, plan, data


@pytest.mark.parametrize("bits", [None, 40])
def test_summed_chunks_decode_to_the_clipped_sum_plus_the_planned_noise(bits: int | None) -> None:
    """Clients' chunks summed entry by entry (what the secure sum returns) decode to the exact
    clipped sum plus noise whose std is the plan's (chi-square bound, failure prob ~1e-6)."""
    spec, plan, data = _release(windows=4, clients=8, dimension=4000, bits=bits)
    sums: dict[str, np.ndarray] = {}
    for c, per_window in enumerate(data):
        chunks = ds.client_chunks(per_window, spec, plan, SeededRandomSource(f"c{c}"))
        assert set(chunks) == set(ds.chunk_lengths(spec, plan))
        for name, values in chunks.items():
            assert values.max() <= ds.chunk_bound(plan)
            sums[name] = sums.get(name, 0) + values.astype(np.uint64)
    assert len(sums) == 2 * ds.limbs(plan) and ds.limbs(plan) == (2 if bits else 1)
    from fedprllm_secure.privacy import distributed_encoding as de

    exact = sum(de.clip_windows(spec.stack(w), spec.clip).sum(axis=0) for w in data)
    count = ds.limbs(plan)
    joined = np.concatenate(
        [ds.fixed_point.from_limbs([sums[ds.chunk_name(k, i)] for i in range(count)])
         for k in spec.leaders]
    )  # fmt: skip
    error = de.decode_sum(joined, plan.encoding) - exact
    expected = plan.noise.sum_std(8) / plan.encoding.gamma
    ratio = error.var() / expected**2  # chi-square with 4000 dof / 4000: sd ~ 0.022
    assert abs(ratio - 1) < 5 * math.sqrt(2 / error.size) + 1e-3
    totals = ds.server_totals(sums, spec, plan, 8)
    floor = plan.noise.sum_std(8) / plan.encoding.gamma
    for leader, part in spec.split(np.maximum(exact + error, floor)).items():
        assert np.allclose(totals[leader], part)


def test_the_server_refuses_fewer_contributors_than_the_noise_was_sized_for() -> None:
    spec, plan, data = _release(windows=2, clients=4, dimension=10)
    chunks = ds.client_chunks(data[0], spec, plan, SeededRandomSource("one"))
    with pytest.raises(ConfigError, match="fewer than the 4 survivors"):
        ds.server_totals(chunks, spec, plan, 3)


@pytest.mark.parametrize(
    "protocol, options, clients, expected",
    [
        ("additive", {}, 8, 6),  # t = 6 of 8, quorum max(6, 16 // 3 + 1) = 6
        ("additive", {}, 64, 43),  # SecAgg+: quorum floor(128 / 3) + 1 = 43
        ("additive", {"threshold": 8}, 8, 8),
        ("ckks", {}, 8, 3),  # the key authority's minimum cohort
        ("ckks", {}, 2, 2),
    ],
)
def test_default_min_survivors_is_the_smallest_sum_the_protocol_releases(
    protocol: str, options: dict, clients: int, expected: int
) -> None:
    assert ds.default_min_survivors(protocol, options, clients, 3) == expected


def test_noise_kind_defaults_to_distributed_only_for_stats_under_a_secure_protocol() -> None:
    settings = PrivacySettings(dp_stats_epsilon=4.0)
    assert settings.noise_kind("additive", "stats") == "distributed"
    assert settings.noise_kind("ckks", "stats") == "distributed"
    assert settings.noise_kind("plaintext", "stats") == "local"
    assert settings.noise_kind("additive", "masks") == "local"
    assert PrivacySettings().noise_kind("additive", "stats") is None
    resolved = settings.resolved("additive", {}, 8, "stats")
    assert resolved.distributed and resolved.dp_min_survivors == 6
    explicit = replace(settings, dp_min_survivors=8).resolved("additive", {}, 8, "stats")
    assert explicit.dp_min_survivors == 8
    assert settings.resolved("plaintext", {}, 8, "stats").dp_noise == "local"
