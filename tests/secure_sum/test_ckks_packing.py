"""Pure parts of `ckks`: parameter choice, base-B packing, one-time pads, centring and the
rounding checks."""

from __future__ import annotations

import numpy as np
import pytest

from fedprllm_secure.errors import ConfigError, ProtocolError
from fedprllm_secure.secure_sum.ckks import pads as pd
from fedprllm_secure.secure_sum.ckks.packing import (
    ciphertext_sizes,
    pack,
    padded_values,
    sum_residues,
    unpack,
)
from fedprllm_secure.secure_sum.ckks.params import (
    FP_FACTOR,
    ROUNDING_LIMIT,
    batching_prime,
    choose_packing,
    ckks_pad_modulus,
    he_params,
)

CKKS, BFV = he_params("ckks"), he_params("bfv")


@pytest.mark.parametrize("clients", range(1, 128))
def test_packing_for_every_client_count_fits_and_is_maximal(clients: int) -> None:
    ckks = choose_packing(CKKS, clients, 1)
    assert ckks.base == clients + 1
    assert ckks.error_bound <= ROUNDING_LIMIT < 0.5
    # The pad modulus holds every packed value; a sum of `clients` padded slots is exact.
    assert ckks.base**ckks.per_slot - 1 < ckks.pad_modulus <= 2 * (ckks.base**ckks.per_slot)
    assert clients * ckks.pad_modulus < 2**52
    # One more digit would break the error budget (the choice is the densest exact one).
    denser = clients * ckks_pad_modulus(ckks.base ** (ckks.per_slot + 1) - 1) / 2
    assert FP_FACTOR * 2.0**-53 * denser > ROUNDING_LIMIT - 1e-3
    bfv = choose_packing(BFV, clients, 1)
    assert bfv.base**bfv.per_slot <= BFV.plain_modulus < bfv.base ** (bfv.per_slot + 1)


def test_reference_points() -> None:
    # The pads cost about log2(clients) bits of CKKS capacity: 14 counts per slot at 8 clients
    # (15 without pads), 5 at 121..127 (7 and 6 without).
    assert choose_packing(CKKS, 8, 1).per_slot == 14
    assert choose_packing(CKKS, 121, 1).per_slot == 5
    assert choose_packing(CKKS, 127, 1).per_slot == 5
    assert choose_packing(BFV, 8, 1).per_slot == 18  # BFV: no loss (the pad lives mod t)
    assert choose_packing(CKKS, 127, 1, max_per_slot=1).per_slot == 1
    assert choose_packing(BFV, 127, 1).per_slot == 8


def test_too_many_clients_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        choose_packing(CKKS, 2**60, 1)
    with pytest.raises(ConfigError):
        choose_packing(CKKS, 0, 1)


def test_bfv_plain_modulus_is_a_batching_prime() -> None:
    t = BFV.plain_modulus
    assert t % (2 * BFV.poly_modulus_degree) == 1 and t.bit_length() == 58
    assert batching_prime(20, 4096) % 8192 == 1


@pytest.mark.parametrize("clients", [1, 2, 7, 8, 9, 42, 43, 69, 70, 127])
@pytest.mark.parametrize("length", [0, 1, 6, 7, 8, 100])
def test_pack_unpack_roundtrip(clients: int, length: int) -> None:
    packing = choose_packing(CKKS, clients, 1)
    rng = np.random.default_rng(clients * 1000 + length)
    values = rng.integers(0, clients + 1, length)
    packed = pack(values, packing.base, packing.per_slot)
    assert packed.size == -(-length // packing.per_slot)
    assert np.array_equal(unpack(packed, packing.base, packing.per_slot, length, clients), values)


def test_ciphertext_boundaries() -> None:
    k, slots = 7, 4096
    assert ciphertext_sizes(0, k, slots) == []
    assert ciphertext_sizes(k * slots, k, slots) == [slots]
    assert ciphertext_sizes(k * slots + 1, k, slots) == [slots, 1]
    assert ciphertext_sizes(k * slots - 1, k, slots) == [slots]


def test_unpack_refuses_bad_slots() -> None:
    with pytest.raises(ProtocolError):
        unpack(np.array([2**3], dtype=np.uint64), 2, 3, 3, 1)  # beyond base**K - 1
    with pytest.raises(ProtocolError):
        unpack(np.array([2], dtype=np.uint64), 3, 2, 2, 1)  # digit 2 > max sum 1
    with pytest.raises(ProtocolError):
        unpack(np.array([4], dtype=np.uint64), 2, 3, 2, 1)  # non-zero padding digit
    with pytest.raises(ProtocolError):
        unpack(np.array([1, 1], dtype=np.uint64), 2, 3, 2, 1)  # wrong slot count


@pytest.mark.parametrize("clients", [1, 2, 3, 8, 127])
@pytest.mark.parametrize("bound", [1, 3])
@pytest.mark.parametrize("scheme", ["ckks", "bfv"])
def test_padded_sum_roundtrip_for_any_contributor_count(
    scheme: str, clients: int, bound: int
) -> None:
    """Each client adds its pad mod M; the sum, rounded (CKKS, with noise below the bound),
    reduced mod M and stripped of the sum of the pads, is the packed sum."""
    packing = choose_packing(he_params(scheme), 127, bound)
    modulus = packing.pad_modulus
    rng = np.random.default_rng(clients)
    inputs = rng.integers(0, bound + 1, (clients, 50))
    inputs[0, : packing.per_slot] = bound  # a full slot of maximal digits
    slots = -(-50 // packing.per_slot)
    pads = [pd.chunk_pads(bytes([c]) * 32, b"x", slots, modulus) for c in range(clients)]
    values = [
        padded_values(pack(x, packing.base, packing.per_slot), p, packing)
        for x, p in zip(inputs, pads, strict=True)
    ]
    if packing.centered:
        total = sum(values)
        total = total + rng.uniform(-0.9, 0.9, total.shape) * packing.error_bound
    else:
        total = np.zeros(slots, dtype=np.uint64)
        for v in values:
            total = pd.add_mod(total, v, modulus)
    residues = sum_residues(total, packing, clients)
    pad_sum = np.zeros(slots, dtype=np.uint64)
    for p in pads:
        pad_sum = pd.add_mod(pad_sum, p, modulus)
    packed = pd.sub_mod(residues, pad_sum, modulus)
    counts = unpack(packed, packing.base, packing.per_slot, 50, clients * bound)
    assert np.array_equal(counts, inputs.sum(axis=0))


def test_pads_are_uniform_below_the_modulus_and_differ_per_chunk_and_key() -> None:
    t = BFV.plain_modulus
    a = pd.chunk_pads(bytes(32), b"a", 20000, t)
    assert int(a.max()) < t and a.max() > t // 2  # fills the range
    assert not np.array_equal(a[:100], pd.chunk_pads(bytes(32), b"b", 100, t))
    assert not np.array_equal(a[:100], pd.chunk_pads(bytes([1]) * 32, b"a", 100, t))
    m = 2**45
    c = pd.chunk_pads(bytes(32), b"a", 20000, m)
    assert int(c.max()) < m and abs(float(c.mean()) / m - 0.5) < 0.01


def test_rounding_refuses_values_off_the_lattice_or_out_of_range() -> None:
    packing = choose_packing(CKKS, 8, 1)
    one = padded_values(
        pack(np.ones(14), packing.base, packing.per_slot), np.zeros(1, np.uint64), packing
    )
    with pytest.raises(ProtocolError, match="error bound"):
        sum_residues(one + 0.45, packing, 1)
    with pytest.raises(ProtocolError):
        sum_residues(one + 2.0**49, packing, 1)
    with pytest.raises(ProtocolError):
        sum_residues(np.array([np.nan]), packing, 1)
