"""The word layout of `additive`: packing n inputs and summing the words sums the entries."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedprllm_secure.errors import ProtocolError
from fedprllm_secure.secure_sum.additive.layout import WordLayout


@pytest.mark.parametrize(
    ("max_sum", "per_word", "bits"),
    [(8, 20, 64), (4, 27, 64), (2, 40, 64), (15, 16, 64), (32, 12, 64), (2**17, 1, 18)],
)
def test_layout_choice(max_sum, per_word, bits):
    layout = WordLayout.for_max_sum(max_sum)
    assert (layout.per_word, layout.bits) == (per_word, bits)
    assert layout.radix**layout.per_word <= 2**layout.bits


def test_packed_layout_beats_the_16x_cap_at_eight_clients():
    """n = 8 mask bits: 3.2 bits per entry, against 4 for one 4-bit word per entry."""
    layout = WordLayout.for_max_sum(8)
    assert layout.bits / layout.per_word == 3.2


def test_sums_wider_than_64_bits_are_refused():
    with pytest.raises(ProtocolError, match="64 bits"):
        WordLayout.for_max_sum(2**64)


@settings(max_examples=150, deadline=None)
@given(
    max_sum_exp=st.integers(1, 40),
    clients=st.integers(1, 9),
    length=st.integers(0, 300),
    seed=st.integers(0, 2**32 - 1),
)
def test_summing_packed_words_mod_2_to_the_b_sums_the_entries(max_sum_exp, clients, length, seed):
    rng = np.random.default_rng(seed)
    bound = max(1, (2**max_sum_exp) // clients)
    layout = WordLayout.for_max_sum(bound * clients)
    inputs = [rng.integers(0, bound + 1, length, dtype=np.uint64) for _ in range(clients)]
    total = np.zeros(layout.words(length), dtype=layout.dtype)
    for x in inputs:
        words = layout.pack(x)
        assert words.size == layout.words(length)
        assert np.array_equal(layout.unpack(words & layout.word_mask, length), x)
        mask = rng.integers(0, 2**63, words.size, dtype=np.uint64).astype(layout.dtype)
        total += words + mask  # wrapping, as masked uploads do
        total -= mask
    total &= layout.word_mask
    assert np.array_equal(layout.unpack(total, length), sum(inputs, np.zeros(length, np.uint64)))


def test_signed_inputs_pack_like_unsigned_ones():
    """int64 inputs must not go through float64 (which drops the low bits of 64-bit words)."""
    layout = WordLayout.for_max_sum(8)
    x = np.random.default_rng(3).integers(0, 9, 1000)
    assert np.array_equal(layout.pack(x), layout.pack(x.astype(np.uint8)))


def test_a_word_beyond_its_digits_or_with_padding_is_refused():
    layout = WordLayout.for_max_sum(4)  # radix 5, 27 digits
    words = layout.pack(np.full(30, 4, dtype=np.uint64))  # 2 words, 24 padding digits
    with pytest.raises(ProtocolError, match="cheated"):
        layout.unpack(words + np.uint64(5**26), 30)  # a padding digit is not zero
    with pytest.raises(ProtocolError, match="cheated"):
        layout.unpack(np.full(2, 5**27, dtype=np.uint64), 54)  # more than 27 digits


@settings(max_examples=100, deadline=None)
@given(
    max_sum=st.sampled_from([1, 4, 8, 15, 255, 2**17]),
    length=st.integers(0, 400),
    slice_words=st.integers(1, 9),
    seed=st.integers(0, 2**32 - 1),
)
def test_unpack_in_slices_equals_unpack(max_sum, length, slice_words, seed):
    """The server unpacks a chunk a few words at a time (bounded memory): same entries."""
    from fedprllm_secure.secure_sum.api import sum_dtype

    layout = WordLayout.for_max_sum(max_sum)
    x = np.random.default_rng(seed).integers(0, max_sum + 1, length, dtype=np.uint64)
    words = layout.pack(x)
    got = layout.unpack_to(words, length, sum_dtype(max_sum), slice_words)
    assert got.dtype == sum_dtype(max_sum)
    assert np.array_equal(got, layout.unpack(words, length))


def test_unpack_in_slices_refuses_what_unpack_refuses():
    layout = WordLayout.for_max_sum(4)  # radix 5, 27 digits
    words = layout.pack(np.full(60, 4, dtype=np.uint64))  # 3 words
    bad_padding = words.copy()
    bad_padding[2] += np.uint64(5**26)  # a padding digit of the last word
    too_wide = words.copy()
    too_wide[1] = np.uint64(5**27)  # more than 27 digits, in the second slice
    for bad in (bad_padding, too_wide):
        with pytest.raises(ProtocolError, match="cheated"):
            layout.unpack_to(bad, 60, np.dtype(np.uint8), slice_words=1)
