"""Fixed-point statistics: bounded by construction, refused outside the bound, overflow-free."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedprllm_secure.client.fixed_point import (
    EXPONENT_MIN,
    LIMB_BOUND,
    bound,
    check_capacity,
    decode,
    encode,
    exponent_of,
    exponent_one_hot,
    from_limbs,
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
    encoded = [encode(v, exponent, precision) for v in vectors]
    assert all(int(q.max()) <= bound(precision) for q in encoded)
    limbs = [to_limbs(q, precision) for q in encoded]
    assert all(int(part.max()) <= LIMB_BOUND for parts in limbs for part in parts)
    limb_sums = [np.sum([parts[k] for parts in limbs], axis=0) for k in range(len(limbs[0]))]
    assert np.array_equal(from_limbs(limb_sums), np.sum(encoded, axis=0, dtype=np.uint64))
    total = sum(int(q.max()) for q in encoded)
    assert total < 1 << 64  # the sum over clients cannot overflow
    exact = np.sum(vectors, axis=0)
    error = np.abs(decode(np.sum(encoded, axis=0), exponent, precision) - exact)
    assert (error <= len(vectors) * math.ldexp(1.0, exponent - precision) * 1.0001).all()


def test_exponent_is_the_smallest_binade_holding_the_value() -> None:
    assert exponent_of(1.0) == 0 and exponent_of(1.5) == 1 and exponent_of(0.25) == -2
    assert exponent_of(0.0) == EXPONENT_MIN
    for value in (3.7, 1e-9, 12345.0, 2.0**40):
        e = exponent_of(value)
        assert value <= 2.0**e and (e == EXPONENT_MIN or value > 2.0 ** (e - 1))


def test_values_outside_the_declared_bound_are_refused() -> None:
    with pytest.raises(ProtocolError):
        encode(np.array([0.5, 2.5]), 1, 20)  # 2.5 > 2^1
    with pytest.raises(ProtocolError):
        encode(np.array([-0.1]), 1, 20)
    with pytest.raises(ProtocolError):
        exponent_of(float("nan"))
    with pytest.raises(ConfigError):
        check_capacity(56, 1 << 9)
