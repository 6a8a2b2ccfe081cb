"""Fixed-point statistics: bounded by construction, saturating at the common scale, overflow-free."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedprllm_secure.client.fixed_point import (
    EXPONENT_HEADROOM,
    EXPONENT_MIN,
    EXPONENT_QUORUM,
    EXPONENT_SLOTS,
    LIMB_BOUND,
    bound,
    check_capacity,
    decode,
    encode,
    exponent_of,
    exponent_one_hot,
    from_limbs,
    largest_exponent_gap,
    layer_exponent,
    to_limbs,
)
from fedprllm_secure.errors import ConfigError, ProtocolError

positive = st.floats(min_value=0.0, max_value=1e30, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(
    clients=st.lists(st.lists(positive, min_size=1, max_size=20), min_size=1, max_size=12),
    precision=st.integers(8, 52),
)
def test_encoded_values_never_exceed_the_bound_and_sums_fit(clients, precision) -> None:
    width = min(len(v) for v in clients)
    vectors = [np.array(v[:width]) for v in clients]
    histogram = sum(exponent_one_hot(v) for v in vectors)
    exponent = layer_exponent(histogram)
    try:
        check_capacity(precision, len(vectors))
    except ConfigError:
        return
    # A client whose largest value lies more than P/2 binades below the common exponent refuses.
    gap = largest_exponent_gap(precision)
    accepted = [v for v in vectors if v.max() == 0 or exponent - exponent_of(v.max()) <= gap]
    for v in vectors:
        if not any(v is a for a in accepted):
            with pytest.raises(ProtocolError, match="binades above"):
                encode(v, exponent, precision)
    if not accepted:
        return
    encoded = [encode(v, exponent, precision) for v in accepted]
    assert all(int(q.max()) <= bound(precision) for q in encoded)
    limbs = [to_limbs(q, precision) for q in encoded]
    assert all(int(part.max()) <= LIMB_BOUND for parts in limbs for part in parts)
    limb_sums = [np.sum([parts[k] for parts in limbs], axis=0) for k in range(len(limbs[0]))]
    assert np.array_equal(from_limbs(limb_sums), np.sum(encoded, axis=0, dtype=np.uint64))
    total = sum(int(q.max()) for q in encoded)
    assert total < 1 << 64  # the sum over clients cannot overflow
    # Exact up to rounding for the values at most 2^e; larger ones saturate at 2^e.
    exact = np.sum([np.minimum(v, 2.0**exponent) for v in accepted], axis=0)
    error = np.abs(decode(np.sum(encoded, axis=0), exponent, precision) - exact)
    # n quantization steps, plus the float64 rounding of the decoded sum itself (at 52 bits a
    # step is below one ulp of the sum: hypothesis found [[1.0]] * 3 off by 4 ulp of 1).
    step = math.ldexp(1.0, exponent - precision)
    assert (error <= len(accepted) * step * 1.0001 + 2 * np.spacing(np.abs(exact))).all()


def test_exponent_is_the_smallest_binade_holding_the_value() -> None:
    assert exponent_of(1.0) == 0 and exponent_of(1.5) == 1 and exponent_of(0.25) == -2
    assert exponent_of(0.0) == EXPONENT_MIN
    for value in (3.7, 1e-9, 12345.0, 2.0**40):
        e = exponent_of(value)
        assert value <= 2.0**e and (e == EXPONENT_MIN or value > 2.0 ** (e - 1))


def test_values_above_the_common_scale_saturate_and_bad_values_are_refused() -> None:
    assert encode(np.array([0.5, 2.5]), 1, 20).tolist() == [1 << 18, (1 << 20) - 1]  # 2.5 -> 2^1
    with pytest.raises(ProtocolError):
        encode(np.array([-0.1]), 1, 20)
    with pytest.raises(ProtocolError):
        encode(np.array([float("inf")]), 1, 20)
    with pytest.raises(ProtocolError):
        exponent_of(float("nan"))
    with pytest.raises(ConfigError):
        check_capacity(56, 1 << 9)


def test_the_common_exponent_is_the_quorum_report_plus_headroom_capped_at_the_highest() -> None:
    def histogram(*binades: int) -> np.ndarray:
        counts = np.zeros(EXPONENT_SLOTS, dtype=np.int64)
        for b in binades:
            counts[b - EXPONENT_MIN] += 1
        return counts

    assert EXPONENT_QUORUM == 2 and EXPONENT_HEADROOM == 1
    assert layer_exponent(histogram(3, 5, 5)) == 5  # two at the top: exact for everyone
    assert layer_exponent(histogram(3, 4, 9)) == 5  # 9 alone: 2nd highest (4) + 1
    assert layer_exponent(histogram(3, 4, 5)) == 5  # capped at the highest report
    assert layer_exponent(histogram(7)) == 7  # one client: its own scale
    assert layer_exponent(histogram(1, 2, 3, 4), quorum=3, headroom=0) == 2
    with pytest.raises(ProtocolError):
        layer_exponent(np.zeros(EXPONENT_SLOTS))
