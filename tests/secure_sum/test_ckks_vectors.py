"""Known-answer tests: protocols/vectors/ckks/*.json, read (never copied) here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedprllm_secure.secure_sum.ckks import identity as ident
from fedprllm_secure.secure_sum.ckks.packing import center_offset2, pack, to_ckks_values, unpack
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


@pytest.mark.parametrize("case", load("packing.json")["cases"], ids=lambda c: c["name"])
def test_packing_matches_vectors(case: dict) -> None:
    base, per_slot, bound = case["base"], case["per_slot"], case["bound"]
    values = np.array(case["values"], dtype=np.uint64)
    packed = pack(values, base, per_slot)
    assert [int(v) for v in packed] == case["packed"]
    layout = Packing(base, per_slot, True, 0.0)
    assert center_offset2(layout, bound, 1) == case["offset2_one_client"]
    assert [int(round(2 * v)) for v in to_ckks_values(packed, layout, bound)] == case["centered_x2"]
    back = unpack(np.array(case["packed"], dtype=np.uint64), base, per_slot, len(values), base - 1)
    assert back.tolist() == case["values"]


def test_signed_upload_payloads_match_vectors() -> None:
    vectors = load("signing.json")
    with_context = ident.decode_identity(bytes.fromhex(vectors["identity_with_context"]))
    assert with_context == ident.Identity(bytes(32), b"ctx")
    for case in vectors["cases"]:
        key = bytes.fromhex(case["identity_private_key"])
        assert ident.public_key(key).hex() == case["identity_public_key"]
        assert ident.encode_identity(key).hex() == case["identity_bytes"]
        ciphertexts = tuple(bytes.fromhex(c) for c in case["ciphertexts"])
        digest = ident.ciphertexts_digest(ciphertexts)
        assert digest.hex() == case["ciphertexts_digest"], case["name"]
        chunk = case["chunk"]
        payload = ident.chunk_payload(
            bytes.fromhex(case["config_digest"]), case["aggregation"], case["sender"],
            chunk["name"], chunk["length"], chunk["offset"], case["bound"], case["base"],
            case["per_slot"], digest,
        )  # fmt: skip
        assert payload.hex() == case["payload"], case["name"]
        assert ident.sign(key, payload).hex() == case["signature"], case["name"]
        signature = bytes.fromhex(case["signature"])
        assert ident.verify(ident.public_key(key), signature, payload)
        assert not ident.verify(ident.public_key(key), signature, payload + b"\x00")
