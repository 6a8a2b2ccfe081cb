"""Published known answers against the wrappers the protocols really call.

protocols/vectors/rfc7748_x25519.json (RFC 7748 sections 5.2 and 6.1) runs through
`additive.primitives` (`new_x25519`, `public_bytes`, `agree`) and the ckks pad-key helpers;
protocols/vectors/rfc5869_hkdf_sha256.json (RFC 5869 A.1-A.3) pins the RFC 5869 HKDF written out
in `additive_spec.hkdf_sha256`, which `derive_key` and the ckks `pad_key` must then equal on their
own info layouts (their info is fixed, so the RFC's info strings cannot pass through them).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedprllm_secure.errors import ProtocolError
from fedprllm_secure.secure_sum.additive import primitives as P
from fedprllm_secure.secure_sum.ckks import identity as ident
from fedprllm_secure.secure_sum.ckks import pads as pd

from .additive_spec import hkdf_extract, hkdf_sha256

VECTORS = Path(__file__).resolve().parents[2] / "protocols" / "vectors"
X25519 = json.loads((VECTORS / "rfc7748_x25519.json").read_text())
HKDF = json.loads((VECTORS / "rfc5869_hkdf_sha256.json").read_text())


def h(text: str) -> bytes:
    return bytes.fromhex(text)


class Fixed:
    """A RandomSource that hands out exactly one given byte string (a key from the RFC)."""

    def __init__(self, data: bytes):
        self.data = data

    def random_bytes(self, n: int) -> bytes:
        assert n == len(self.data)
        return self.data

    def child(self, label: str) -> Fixed:
        raise AssertionError("not used")


def x25519(scalar: bytes, u: bytes) -> bytes:
    """The protocol's own path: a key drawn by `new_x25519`, agreed with `agree`."""
    return P.agree(P.new_x25519(Fixed(scalar)), u)


def test_sources_cite_the_rfc_sections():
    assert "RFC 7748" in X25519["source"] and "5.2" in X25519["source"]
    assert "6.1" in X25519["source"]
    assert "RFC 5869" in HKDF["source"] and [c["case"] for c in HKDF["cases"]] == [1, 2, 3]


@pytest.mark.parametrize("case", X25519["scalar_multiplication"], ids=["vector1", "vector2"])
def test_x25519_scalar_multiplication(case):
    assert x25519(h(case["scalar"]), h(case["u"])).hex() == case["output"]


def iterate(count: int) -> bytes:
    k = u = h(X25519["iterated"]["start"])
    for _ in range(count):
        k, u = x25519(k, u), k
    return k


@pytest.mark.parametrize("count", [1, 1000])
def test_x25519_iterated(count):
    assert iterate(count).hex() == X25519["iterated"]["after"][str(count)]


@pytest.mark.slow
def test_x25519_iterated_one_million_times():
    assert iterate(1_000_000).hex() == X25519["iterated"]["after"]["1000000"]


def test_x25519_diffie_hellman_example():
    dh = X25519["diffie_hellman"]
    alice, bob = (
        P.new_x25519(Fixed(h(dh["alice_private"]))),
        P.new_x25519(Fixed(h(dh["bob_private"]))),
    )
    assert P.public_bytes(alice).hex() == dh["alice_public"]
    assert P.public_bytes(bob).hex() == dh["bob_public"]
    assert P.agree(alice, h(dh["bob_public"])).hex() == dh["shared"]
    assert P.agree(bob, h(dh["alice_public"])).hex() == dh["shared"]
    # the ckks pad keys are X25519 keys too (identity.pad_public, pads.client/authority_pad_key)
    assert ident.pad_public(h(dh["alice_private"])).hex() == dh["alice_public"]
    binding = bytes(range(32))
    client = pd.client_pad_key(h(dh["alice_private"]), h(dh["bob_public"]), binding, 7)
    info = P.PREFIX + b"ckks/pad-key" + (7).to_bytes(4, "big")
    assert client == hkdf_sha256(h(dh["shared"]), binding, info, 32)
    assert pd.authority_pad_key(h(dh["bob_private"]), h(dh["alice_public"]), binding, 7) == client


# u-coordinates whose multiple by every clamped scalar is the point at infinity (all-zero output):
# 0, 1, the two points of order 8, p - 1 (order 2), and the non-canonical p and p + 1 (= 0, 1).
LOW_ORDER = [
    "00" * 32,
    "01" + "00" * 31,
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ec" + "ff" * 30 + "7f",
    "ed" + "ff" * 30 + "7f",
    "ee" + "ff" * 30 + "7f",
]


@pytest.mark.parametrize("u", LOW_ORDER)
def test_agree_refuses_the_all_zero_output(u):
    """RFC 7748 section 6.1: check for the all-zero value; additive.md 3.1: it is an abort."""
    dh = X25519["diffie_hellman"]
    with pytest.raises(ProtocolError, match="low order"):
        x25519(h(dh["alice_private"]), h(u))


@pytest.mark.parametrize("case", HKDF["cases"], ids=lambda c: f"case{c['case']}")
def test_hkdf_reference_matches_rfc5869(case):
    ikm, salt, info = h(case["ikm"]), h(case["salt"]), h(case["info"])
    assert hkdf_extract(salt, ikm).hex() == case["prk"]
    assert hkdf_sha256(ikm, salt, info, case["length"]).hex() == case["okm"]


@pytest.mark.parametrize("case", HKDF["cases"], ids=lambda c: f"case{c['case']}")
@pytest.mark.parametrize(
    "label, a, b",
    [(P.LABEL_SHARE_KEY, 1, 2), (P.LABEL_MASK_SEED, 9, 3), (P.LABEL_MASK_SEED, 0, 2**32 - 1)],
)
def test_derive_key_is_rfc5869_hkdf_on_the_spec_info(case, label, a, b):
    """additive.md 3.1: KDF = HKDF-SHA256(salt = sid, info = PREFIX || label || u32(lo) || u32(hi))."""
    ikm, salt = h(case["ikm"]), h(case["salt"])
    info = P.PREFIX + label + min(a, b).to_bytes(4, "big") + max(a, b).to_bytes(4, "big")
    expected = hkdf_sha256(ikm, salt, info, 32)
    assert P.derive_key(ikm, salt, label, a, b) == expected
    assert P.derive_key(ikm, salt, label, b, a) == expected


def test_derive_key_on_the_rfc7748_shared_secret():
    """The whole 3.1 chain on published values: X25519 (RFC 7748 6.1), then HKDF (RFC 5869)."""
    dh = X25519["diffie_hellman"]
    alice = P.new_x25519(Fixed(h(dh["alice_private"])))
    sid = h(HKDF["cases"][0]["salt"])
    key = P.derive_key(P.agree(alice, h(dh["bob_public"])), sid, P.LABEL_MASK_SEED, 3, 5)
    info = P.PREFIX + P.LABEL_MASK_SEED + (3).to_bytes(4, "big") + (5).to_bytes(4, "big")
    assert key == hkdf_sha256(h(dh["shared"]), sid, info, 32)
