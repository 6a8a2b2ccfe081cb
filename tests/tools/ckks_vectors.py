"""Generate the known-answer vectors of protocols/vectors/ckks/ (deterministic parts only).

    python -m tests.tools.ckks_vectors protocols/vectors/ckks

params.json pins the context parameters and the packing chosen for every client count 1..127
(bound 1) and a few larger bounds (with the pad modulus M); packing.json pins pack/unpack, the
one-time pads of a fixed pad key and the padded (CKKS: centred) slot values on boundary cases;
signing.json pins the identity encoding, the pad-key derivation (X25519 + HKDF) and the
signed-upload payload, digest and Ed25519 signature (deterministic) for fixed keys and stand-in
ciphertext bytes. Ciphertexts are
randomized inside SEAL, so they have no known answers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fedprllm_secure.secure_sum.ckks import identity as ident
from fedprllm_secure.secure_sum.ckks import pads as pd
from fedprllm_secure.secure_sum.ckks.packing import pack, padded_values
from fedprllm_secure.secure_sum.ckks.params import (
    SCHEMES,
    Packing,
    choose_packing,
    ckks_pad_modulus,
    he_params,
)

BOUNDS = ((1, range(1, 128)), (3, (1, 2, 8, 42)), (255, (1, 8, 64)))


def params_vectors() -> dict[str, Any]:
    out: dict[str, Any] = {"schemes": {}, "packings": []}
    for scheme in SCHEMES:
        he = he_params(scheme)
        out["schemes"][scheme] = {
            "poly_modulus_degree": he.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(he.coeff_mod_bit_sizes),
            "scale_bits": he.scale_bits,
            "plain_modulus": he.plain_modulus,
            "slots": he.slots,
        }
        for bound, counts in BOUNDS:
            for clients in counts:
                packing = choose_packing(he, clients, bound)
                out["packings"].append(
                    {
                        "scheme": scheme,
                        "clients": clients,
                        "bound": bound,
                        "base": packing.base,
                        "per_slot": packing.per_slot,
                        "centered": packing.centered,
                        "error_bound": packing.error_bound,
                        "pad_modulus": packing.pad_modulus,
                    }
                )
    return out


PAD_KEY = bytes(range(200, 232))  # a fixed k_j for the pad vectors


def _case(name: str, values: list[int], base: int, per_slot: int, bound: int) -> dict[str, Any]:
    packed = pack(np.array(values, dtype=np.uint64), base, per_slot)
    ckks, bfv = _fake(base, per_slot, True), _fake(base, per_slot, False)
    ckks_pads = pd.chunk_pads(PAD_KEY, name.encode(), packed.size, ckks.pad_modulus)
    bfv_pads = pd.chunk_pads(PAD_KEY, name.encode(), packed.size, bfv.pad_modulus)
    return {
        "name": name,
        "base": base,
        "per_slot": per_slot,
        "bound": bound,
        "values": values,
        "packed": [int(v) for v in packed],
        "pad_key": PAD_KEY.hex(),
        "ckks_pad_modulus": ckks.pad_modulus,
        "ckks_pads": [int(v) for v in ckks_pads],
        # One client's centred CKKS slot values ((packed + pad) mod M - M/2: integers).
        "ckks_values": [int(v) for v in padded_values(packed, ckks_pads, ckks)],
        "bfv_pad_modulus": bfv.pad_modulus,
        "bfv_pads": [int(v) for v in bfv_pads],
        "bfv_values": [int(v) for v in padded_values(packed, bfv_pads, bfv)],
    }


def _fake(base: int, per_slot: int, ckks: bool) -> Packing:
    """A packing with the given base and K (only the layout and pad modulus matter here)."""
    modulus = ckks_pad_modulus(base**per_slot - 1) if ckks else he_params("bfv").plain_modulus
    return Packing(base, per_slot, ckks, 0.0, modulus)


def packing_vectors() -> dict[str, Any]:
    cases = [
        _case("empty", [], 2, 3, 1),
        _case("one entry", [1], 2, 49, 1),
        _case("exactly one slot", [1, 0, 1], 2, 3, 1),
        _case("one slot plus one", [1, 1, 1, 1], 2, 3, 1),
        _case("all max, 127 clients", [127] * 14, 128, 7, 1),
        _case("all max plus padding", [127] * 15, 128, 7, 1),
        _case("digit order", [1, 2, 3, 4, 5, 6, 7], 128, 7, 1),
        _case("zeros", [0] * 10, 9, 15, 1),
        _case("bound 3, 4 clients", [12, 0, 7, 3, 12], 13, 5, 3),
        _case("bfv all max, 127 clients", [127] * 9, 128, 8, 1),
    ]
    return {
        "layout": "slot[j] = sum_k x[j*K+k] * B**k, least significant digit first",
        "cases": cases,
    }


def _signing_case(
    name: str,
    aggregation: int,
    sender: int,
    chunk: tuple[str, int, int],
    packing: tuple[int, int, int],
    ciphertexts: list[bytes],
) -> dict[str, Any]:
    key = bytes(range(sender, sender + 32))
    binding = bytes(range(100, 132))
    chunk_name, length, offset = chunk
    bound, base, per_slot = packing
    digest = ident.ciphertexts_digest(tuple(ciphertexts))
    pad_private = bytes(range(sender + 50, sender + 82))
    authority_private = bytes(range(150, 182))
    pad_public = ident.pad_public(pad_private)
    payload = ident.chunk_payload(
        binding,
        aggregation,
        sender,
        chunk_name,
        length,
        offset,
        bound,
        base,
        per_slot,
        pad_public,
        digest,
    )
    return {
        "name": name,
        "identity_private_key": key.hex(),
        "identity_public_key": ident.public_key(key).hex(),
        "identity_bytes": ident.encode_identity(key).hex(),
        "config_digest": binding.hex(),
        "aggregation": aggregation,
        "sender": sender,
        "chunk": {"name": chunk_name, "length": length, "offset": offset},
        "bound": bound,
        "base": base,
        "per_slot": per_slot,
        "ciphertexts": [c.hex() for c in ciphertexts],
        "pad_private_key": pad_private.hex(),
        "pad_public_key": pad_public.hex(),
        "authority_pad_private_key": authority_private.hex(),
        "authority_pad_public_key": ident.pad_public(authority_private).hex(),
        "pad_key": pd.client_pad_key(
            pad_private, ident.pad_public(authority_private), binding, sender
        ).hex(),
        "ciphertexts_digest": digest.hex(),
        "payload": payload.hex(),
        "signature": ident.sign(key, payload).hex(),
    }


def signing_vectors() -> dict[str, Any]:
    return {
        "signed_message": "'fedprllm-secure/additive/v1/' || payload (the project's Ed25519 helper)",
        "identity_with_context": ident.encode_identity(bytes(32), b"ctx", bytes(range(32))).hex(),
        "cases": [
            _signing_case("one ciphertext", 0, 1, ("0.q", 331776, 0), (1, 9, 15), [b"\x01\x02"]),
            _signing_case("no ciphertexts", 3, 7, ("", 0, 5), (255, 1786, 6), []),
            _signing_case(
                "two ciphertexts, unicode name",
                2**32 - 1,
                0,
                ("mlp.down\u00e9", 70000, 123),
                (3, 25, 12),
                [b"", b"\xff" * 5],
            ),
        ],
    }


def main(argv: list[str]) -> None:
    target = Path(argv[0] if argv else "protocols/vectors/ckks")
    target.mkdir(parents=True, exist_ok=True)
    files = (
        ("params.json", params_vectors()),
        ("packing.json", packing_vectors()),
        ("signing.json", signing_vectors()),
    )
    for name, data in files:
        (target / name).write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
