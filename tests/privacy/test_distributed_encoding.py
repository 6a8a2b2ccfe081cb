"""Distributed-DP encoding: exact round trip, unbiased decoding, the per-entry bound and the
per-window norm bound (the sensitivity's base) hold for every input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fedprllm_secure.errors import ConfigError, ProtocolError
from fedprllm_secure.privacy import distributed_encoding as de
from fedprllm_secure.privacy.discrete_noise import skellam
from fedprllm_secure.randomness import SeededRandomSource


def encoding(dimension: int = 6, windows: int = 3, clients: int = 4, noise_std: float = 50.0):
    return de.plan_encoding(2.0, dimension, windows, clients, noise_std, norm_units=64.0)


def secure_sum(residues: list[np.ndarray]) -> np.ndarray:
    """What the secure sum returns: the exact integer sum of every client's residues."""
    return np.sum(np.stack(residues).astype(np.uint64), axis=0)


def test_round_trip_is_exact_without_noise_and_with_cancelling_noise() -> None:
    enc = encoding()
    assert enc.gamma == 32.0
    source = SeededRandomSource("round-trip")
    # dyadic statistics with window norms <= clip: gamma * x are integers, rounding is exact
    clients = [
        np.array([[0.5, 0.25, 0.0, 1.0, 0.125, 0.0]] * 3),
        np.array([[0.0, 1.5, 0.03125, 0.0, 0.0, 0.5]] * 3),
    ]
    ints = [de.integer_statistics(c, enc, source) for c in clients]
    truth = sum(c.sum(axis=0) for c in clients)
    zero = np.zeros(enc.dimension, dtype=np.int64)
    plain = secure_sum([de.encode_noisy(i, zero, enc) for i in ints])
    assert np.array_equal(de.decode_sum(plain, enc), truth)
    # shares that cancel exactly (and make each client's value negative) decode exactly too
    noise = np.array([-5000, -7, 3, -100, 0, -4000], dtype=np.int64)
    masked = secure_sum(
        [de.encode_noisy(ints[0], noise, enc), de.encode_noisy(ints[1], -noise, enc)]
    )
    assert np.array_equal(de.decode_sum(masked, enc), truth)


def test_negative_noisy_sums_decode_to_negative_values() -> None:
    enc = encoding()
    ints = np.zeros(enc.dimension, dtype=np.int64)
    noise = np.array([-1, -enc.low // 2, enc.low, 0, 7, enc.low + 1], dtype=np.int64)
    assert np.array_equal(de.lift_sum(secure_sum([de.encode_noisy(ints, noise, enc)]), enc), noise)


def test_decoded_sum_is_unbiased() -> None:
    """Mean over R encodings of fixed non-dyadic statistics equals gamma * the clipped sum, within
    a Bonferroni-corrected 1e-6 normal interval (rounding variance <= windows / 4 per entry)."""
    enc = de.plan_encoding(1.0, 50, 4, 1, 0.0, norm_units=16.0)
    rng = np.random.default_rng(3)
    windows = rng.exponential(1.0, (4, 50)) * np.array([[1.0], [0.01], [3.0], [0.2]])
    truth = de.clip_windows(windows, 1.0).sum(axis=0)
    repeats = 4000
    source = SeededRandomSource("unbiased")
    zero = np.zeros(50, dtype=np.int64)
    draws = np.stack(
        [
            de.decode_sum(
                de.encode_noisy(de.integer_statistics(windows, enc, source), zero, enc), enc
            )
            for _ in range(repeats)
        ]
    )
    z = stats.norm.isf(1e-6 / 2 / 50)
    tolerance = z * math.sqrt(4 / 4 / repeats) / enc.gamma
    assert np.all(np.abs(draws.mean(axis=0) - truth) <= tolerance)
    assert draws.std(axis=0).max() > 0  # the rounding is random, not a fixed rule


def test_conditional_rounding_enforces_the_norm_bound() -> None:
    scaled = np.full((200, 100), 0.5)  # rounded norms ~ sqrt(Binomial(100, 1/2)) ~ 7.07
    rounded = de.conditional_round(scaled, 7.0, SeededRandomSource("tight"))
    norms = np.linalg.norm(rounded, axis=1)
    assert norms.max() <= 7.0 and rounded.min() >= 0
    assert set(np.unique(rounded)) <= {0, 1}


@settings(max_examples=60, deadline=None)
@given(
    dimension=st.integers(1, 40),
    windows=st.integers(1, 5),
    clients=st.integers(1, 6),
    clip=st.floats(1e-3, 1e3),
    units=st.sampled_from([4.0, 64.0, 1024.0]),
    magnitudes=st.lists(st.floats(-30, 30), min_size=1, max_size=5),
    noise_std=st.floats(1.0, 1e4),
    seed=st.integers(0, 2**32),
)
def test_entries_never_exceed_the_bound_and_the_sum_decodes(
    dimension, windows, clients, clip, units, magnitudes, noise_std, seed
) -> None:
    enc = de.plan_encoding(clip, dimension, windows, clients, noise_std, norm_units=units)
    source = SeededRandomSource(seed)
    rng = np.random.default_rng(seed)
    residues, exact = [], np.zeros(dimension, dtype=np.int64)
    for c in range(clients):
        scale = 2.0 ** magnitudes[c % len(magnitudes)]
        stats_ = rng.exponential(scale, (windows, dimension))
        scaled = de.clip_windows(stats_, clip) * enc.gamma
        rounded = de.conditional_round(scaled, enc.window_bound, source)
        assert np.linalg.norm(rounded, axis=1).max() <= enc.window_bound and rounded.min() >= 0
        ints = rounded.sum(axis=0)
        noise = skellam(source, (noise_std**2) / clients, dimension)
        noise = np.clip(noise, -int(de.TAIL_SDS * noise_std) // clients, None)  # keep in window
        vector = de.encode_noisy(ints, noise, enc)
        assert vector.min() >= 0 and int(vector.max()) <= enc.bound
        residues.append(vector)
        exact += ints + noise
    lifted = de.lift_sum(secure_sum(residues), enc)
    assert np.array_equal(lifted, exact)
    assert np.allclose(de.decode_sum(secure_sum(residues), enc), exact / enc.gamma)


def test_the_modulus_is_the_smallest_that_holds_signal_and_tails() -> None:
    enc = de.plan_encoding(1.0, 3264, 32, 64, 9000.0)
    assert enc.norm_units == 1024.0  # 16 sqrt(3264) = 914 -> 1024
    span = 64 * 32 * math.floor(enc.window_bound) + 2 * math.ceil(de.TAIL_SDS * 9000.0) + 1
    assert 1 << (enc.modulus_bits - 1) <= span < 1 << enc.modulus_bits
    assert enc.low == -math.ceil(de.TAIL_SDS * 9000.0) and enc.bound == (1 << enc.modulus_bits) - 1


def test_refuses_bad_statistics_and_shapes() -> None:
    enc = encoding()
    source = SeededRandomSource("bad")
    for bad in (np.full((3, 6), -1.0), np.full((3, 6), np.nan)):
        with pytest.raises(ProtocolError):
            de.integer_statistics(bad, enc, source)
    with pytest.raises(ProtocolError):
        de.integer_statistics(np.ones((2, 6)), enc, source)
    with pytest.raises(ConfigError):
        de.plan_encoding(0.0, 6, 3, 4, 1.0)
    with pytest.raises(ConfigError):
        de.plan_encoding(1.0, 6, 3, 1 << 20, 1e15)
