"""Known-answer tests: protocols/vectors/ckks/*.json, read (never copied) here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedprllm_secure.secure_sum.ckks import identity as ident
from fedprllm_secure.secure_sum.ckks import pads as pd
from fedprllm_secure.secure_sum.ckks.packing import pack, padded_values, unpack
from fedprllm_secure.secure_sum.ckks.params import Packing, choose_packing, he_params

VECTORS = Path(__file__).resolve().parents[2] / "protocols" / "vectors" / "ckks"


def load(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


def test_context_parameters_match_vectors() -> None:
    for scheme, expected in load("params.json")["schemes"].items():
        he = he_params(scheme)
        assert he.poly_modulus_degree == expected["poly_modulus_degree"]
        assert list(he.coeff_mod_bit_sizes) == expected["coeff_mod_bit_sizes"]
        assert he.scale_bits == expected["scale_bits"]
        assert he.plain_modulus == expected["plain_modulus"]
        assert he.slots == expected["slots"]


def test_parameter_choice_matches_vectors() -> None:
    rows = load("params.json")["packings"]
    assert {r["clients"] for r in rows if r["bound"] == 1} == set(range(1, 128))
    for row in rows:
        packing = choose_packing(he_params(row["scheme"]), row["clients"], row["bound"])
        assert packing.base == row["base"], row
        assert packing.per_slot == row["per_slot"], row
        assert packing.centered == row["centered"], row
        assert packing.error_bound == pytest.approx(row["error_bound"], rel=1e-12, abs=0)
        assert packing.pad_modulus == row["pad_modulus"], row


@pytest.mark.parametrize("case", load("packing.json")["cases"], ids=lambda c: c["name"])
def test_packing_matches_vectors(case: dict) -> None:
    base, per_slot = case["base"], case["per_slot"]
    values = np.array(case["values"], dtype=np.uint64)
    packed = pack(values, base, per_slot)
    assert [int(v) for v in packed] == case["packed"]
    key = bytes.fromhex(case["pad_key"])
    for scheme, centered in (("ckks", True), ("bfv", False)):
        modulus = case[f"{scheme}_pad_modulus"]
        pads = pd.chunk_pads(key, case["name"].encode(), packed.size, modulus)
        assert [int(v) for v in pads] == case[f"{scheme}_pads"]
        layout = Packing(base, per_slot, centered, 0.0, modulus)
        assert [int(v) for v in padded_values(packed, pads, layout)] == case[f"{scheme}_values"]
    back = unpack(np.array(case["packed"], dtype=np.uint64), base, per_slot, len(values), base - 1)
    assert back.tolist() == case["values"]


def test_signed_upload_payloads_match_vectors() -> None:
    vectors = load("signing.json")
    with_context = ident.decode_identity(bytes.fromhex(vectors["identity_with_context"]))
    assert with_context == ident.Identity(bytes(32), b"ctx", bytes(range(32)))
    for case in vectors["cases"]:
        key = bytes.fromhex(case["identity_private_key"])
        assert ident.public_key(key).hex() == case["identity_public_key"]
        assert ident.encode_identity(key).hex() == case["identity_bytes"]
        ciphertexts = tuple(bytes.fromhex(c) for c in case["ciphertexts"])
        digest = ident.ciphertexts_digest(ciphertexts)
        assert digest.hex() == case["ciphertexts_digest"], case["name"]
        chunk = case["chunk"]
        binding = bytes.fromhex(case["config_digest"])
        pad_private = bytes.fromhex(case["pad_private_key"])
        authority_private = bytes.fromhex(case["authority_pad_private_key"])
        pad_public = ident.pad_public(pad_private)
        assert pad_public.hex() == case["pad_public_key"]
        authority_public = ident.pad_public(authority_private)
        assert authority_public.hex() == case["authority_pad_public_key"]
        # Both ends of the X25519 agreement derive the same pad key.
        k = pd.client_pad_key(pad_private, authority_public, binding, case["sender"])
        assert k.hex() == case["pad_key"], case["name"]
        assert pd.authority_pad_key(authority_private, pad_public, binding, case["sender"]) == k
        payload = ident.chunk_payload(
            binding, case["aggregation"], case["sender"],
            chunk["name"], chunk["length"], chunk["offset"], case["bound"], case["base"],
            case["per_slot"], pad_public, digest,
        )  # fmt: skip
        assert payload.hex() == case["payload"], case["name"]
        assert ident.sign(key, payload).hex() == case["signature"], case["name"]
        signature = bytes.fromhex(case["signature"])
        assert ident.verify(ident.public_key(key), signature, payload)
        assert not ident.verify(ident.public_key(key), signature, payload + b"\x00")
