"""TenSEAL at arm's length: build, publish, load contexts; encrypt, check, add, decrypt.

Every TenSEAL failure on untrusted bytes becomes a ProtocolError here, so the state machines never
see a library exception. Randomness: SEAL draws key-generation and encryption randomness from its
own CSPRNG (seeded by the OS); TenSEAL exposes no way to inject it, so ciphertexts are not
reproducible from the session seed, while decrypted counts are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tenseal as ts

from ...errors import ProtocolError
from .params import HEParams

Vector = Any  # ts.CKKSVector | ts.BFVVector


def new_secret_context(he: HEParams) -> ts.Context:
    """A fresh context holding the secret key: only the key authority ever calls this."""
    if he.scheme == "ckks":
        ctx = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=he.poly_modulus_degree,
            coeff_mod_bit_sizes=list(he.coeff_mod_bit_sizes),
        )
        ctx.global_scale = 2.0**he.scale_bits
    else:
        ctx = ts.context(
            ts.SCHEME_TYPE.BFV,
            poly_modulus_degree=he.poly_modulus_degree,
            plain_modulus=he.plain_modulus,
            coeff_mod_bit_sizes=list(he.coeff_mod_bit_sizes),
        )
    return ctx


def public_bytes(ctx: ts.Context) -> bytes:
    """The public part only: parameters and public key. No secret, relinearization or Galois
    keys (summation needs none, and fewer keys mean a smaller download)."""
    return ctx.serialize(save_secret_key=False, save_relin_keys=False, save_galois_keys=False)


def secret_bytes(ctx: ts.Context) -> bytes:
    return ctx.serialize(save_secret_key=True, save_relin_keys=False, save_galois_keys=False)


def load_context(data: bytes, *, private: bool) -> ts.Context:
    """Load a context; `private` states whether it must hold the secret key (it is checked)."""
    try:
        ctx = ts.context_from(bytes(data))
    except Exception as exc:  # TenSEAL raises several types on bad bytes
        raise ProtocolError(f"not a valid TenSEAL context: {exc}") from exc
    if ctx.is_private() != private:
        what = "holds a secret key" if ctx.is_private() else "lacks the secret key"
        raise ProtocolError(f"the context {what}; refusing it")
    return ctx


def encrypt(ctx: ts.Context, he: HEParams, values: np.ndarray) -> bytes:
    """Encrypt at most `he.slots` values into one serialized ciphertext."""
    if he.scheme == "ckks":
        vector = ts.ckks_vector(ctx, values.astype(np.float64).tolist())
    else:
        vector = ts.bfv_vector(ctx, values.astype(np.int64).tolist())
    return bytes(vector.serialize())


def load_ciphertext(ctx: ts.Context, he: HEParams, data: bytes, size: int) -> Vector:
    """Parse an untrusted serialized ciphertext and check it is a fresh one of this context
    holding exactly `size` slots; ProtocolError otherwise."""
    try:
        if he.scheme == "ckks":
            vector = ts.ckks_vector_from(ctx, bytes(data))
        else:
            vector = ts.bfv_vector_from(ctx, bytes(data))
        parts = vector.ciphertext()
        first = ctx.seal_context().data.first_parms_id()
        valid = (
            len(parts) == 1
            and parts[0].size() == 2
            and parts[0].parms_id() == first
            and not parts[0].is_transparent()
            and (he.scheme != "ckks" or parts[0].scale == 2.0**he.scale_bits)
        )
        length = vector.size()
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"malformed {he.scheme} ciphertext: {exc}") from exc
    if not valid:
        raise ProtocolError(
            f"the {he.scheme} ciphertext is not a fresh encryption under this session's parameters"
        )
    if length != size:
        raise ProtocolError(f"a ciphertext holds {length} slots, expected {size}")
    return vector


def add_into(total: Vector | None, vector: Vector) -> Vector:
    """total + vector (in place when possible); both already checked by `load_ciphertext`."""
    if total is None:
        return vector
    try:
        total.add_(vector)
    except Exception as exc:
        raise ProtocolError(f"ciphertexts cannot be added: {exc}") from exc
    return total


def serialize(vector: Vector) -> bytes:
    return bytes(vector.serialize())


def decrypt(ctx: ts.Context, he: HEParams, vector: Vector) -> np.ndarray:
    """Raw decryption (float64 for CKKS, uint64 residues mod t for BFV). Authority only: the
    result must go through packing checks before anything is released."""
    if not ctx.is_private():
        raise ProtocolError("decryption needs the secret key, which this party does not hold")
    try:
        values = vector.decrypt(ctx.secret_key())
    except Exception as exc:
        raise ProtocolError(f"decryption failed: {exc}") from exc
    if he.scheme == "ckks":
        return np.asarray(values, dtype=np.float64)
    # TenSEAL returns BFV values centred in (-t/2, t/2]; map them back to [0, t).
    residues = np.asarray(values, dtype=np.int64)
    residues[residues < 0] += he.plain_modulus
    return residues.astype(np.uint64)
