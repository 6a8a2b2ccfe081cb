"""The primitives of protocols/additive.md, written from the spec text alone (sections 1-3).

No import from `fedprllm_secure`: only `cryptography` (X25519, Ed25519, AES), `hashlib`/`hmac`
(HKDF is RFC 5869 written out, pinned by protocols/vectors/rfc5869_hkdf_sha256.json) and the
standard library. Integers are Python ints throughout; nothing here wraps silently.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

PREFIX = b"fedprllm-secure/additive/v1/"  # section 1, 28 bytes
PRIME = 2**521 - 1  # section 3.4
SHARE_BYTES = 66


def u32(x: int) -> bytes:
    assert 0 <= x < 2**32, x
    return struct.pack(">I", x)


def u64(x: int) -> bytes:
    assert 0 <= x < 2**64, x
    return struct.pack(">Q", x)


# -- 1. config digest ----------------------------------------------------------------------------


def config_digest(session_id: bytes, roster: list[int], options: dict) -> bytes:
    """Section 1: SHA-256(label || canonical JSON of session id, roster, non-local options)."""
    kept = sorted((k, v) for k, v in options.items() if not k.startswith("local."))
    body = {
        "session_id": session_id.hex(),
        "roster": list(roster),
        "options": [[k, _tagged(v)] for k, v in kept],
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(b"fedprllm-secure/session-config/v1\0" + canonical.encode()).digest()


def _tagged(value):
    """Section 1's tagged JSON: bytes {"$b": base64}, maps {"$d": [[k, v], ...]} in map order."""
    if isinstance(value, bytes):
        return {"$b": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {"$d": [[_tagged(k), _tagged(v)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"$t": [_tagged(v) for v in value]}
    if isinstance(value, list):
        return [_tagged(v) for v in value]
    assert value is None or isinstance(value, bool | int | float | str), value
    return value


# -- 2. parameters and word layout ---------------------------------------------------------------


def quorum(n: int, t: int) -> int:
    return max(t, 2 * n // 3 + 1)


def layout(max_sum: int) -> tuple[int, int, int]:
    """Section 2: (radix R, entries per word E, word bits b); fewer bits per entry wins, tie packed."""
    radix, plain_bits = max_sum + 1, max_sum.bit_length()
    assert plain_bits <= 64
    per_word = 1
    while radix ** (per_word + 1) <= 2**64:
        per_word += 1
    if per_word >= 2 and 64 / per_word <= plain_bits:
        return radix, per_word, 64
    return radix, 1, plain_bits


def pack_words(entries: list[int], max_sum: int) -> list[int]:
    """Striped radix packing: entry q*W + j is digit q of word j; digits past L are zero."""
    radix, per_word, _ = layout(max_sum)
    count = -(-len(entries) // per_word)
    digits = list(entries) + [0] * (count * per_word - len(entries))
    return [sum(digits[q * count + j] * radix**q for q in range(per_word)) for j in range(count)]


def unpack_words(words: list[int], length: int, max_sum: int) -> list[int]:
    """Inverse of pack_words; asserts every word is an E-digit number and padding digits are 0."""
    radix, per_word, _ = layout(max_sum)
    count = len(words)
    digits = [0] * (count * per_word)
    for j, word in enumerate(words):
        assert word < radix**per_word, "word is not an E-digit radix-R number"
        for q in range(per_word):
            word, digits[q * count + j] = divmod(word, radix)
    assert not any(digits[length:]), "non-zero padding digit"
    return digits[:length]


def word_bytes(bits: int) -> int:
    """Section 2: the keystream word size w, the smallest of 1, 2, 4, 8 bytes with 8w >= b."""
    return next(w for w in (1, 2, 4, 8) if 8 * w >= bits)


def bitpack(words: list[int], bits: int) -> bytes:
    """Section 4 round 2 `data`: word i at stream bits [i*b, (i+1)*b), LSB first, zero padding."""
    stream = sum(w << (i * bits) for i, w in enumerate(words))
    return stream.to_bytes(-(-len(words) * bits // 8), "little")


def bitunpack(data: bytes, count: int, bits: int) -> list[int]:
    assert len(data) == -(-count * bits // 8), "wrong data length"
    stream = int.from_bytes(data, "little")
    assert stream >> (count * bits) == 0, "non-zero padding"
    return [(stream >> (i * bits)) & ((1 << bits) - 1) for i in range(count)]


# -- 3.1 / 3.2 key agreement, derivation, share encryption ----------------------------------------


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 extract-then-expand with HMAC-SHA256 (an empty salt is HashLen zero bytes)."""
    prk = hkdf_extract(salt, ikm)
    okm, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
    return okm[:length]


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()


def kdf(secret: bytes, sid: bytes, label: bytes, a: int, b: int) -> bytes:
    """Section 3.1: HKDF-SHA256, salt sid, info PREFIX || label || u32(min) || u32(max), 32 bytes."""
    return hkdf_sha256(secret, sid, PREFIX + label + u32(min(a, b)) + u32(max(a, b)), 32)


def x25519_public(private: bytes) -> bytes:
    key = X25519PrivateKey.from_private_bytes(private).public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def x25519(private: bytes, public: bytes) -> bytes:
    shared = X25519PrivateKey.from_private_bytes(private).exchange(
        X25519PublicKey.from_public_bytes(public)
    )
    assert shared != bytes(32)
    return shared


def share_nonce(r: int, sender: int, recipient: int) -> bytes:
    return u32(r) + u32(0 if sender < recipient else 1) + u32(0)


def share_aad(sid: bytes, r: int, sender: int, recipient: int) -> bytes:
    return PREFIX + b"share-keys" + sid + u32(r) + u32(sender) + u32(recipient)


def share_seal(key: bytes, sid: bytes, r: int, sender: int, recipient: int, plain: bytes) -> bytes:
    nonce, aad = share_nonce(r, sender, recipient), share_aad(sid, r, sender, recipient)
    return AESGCM(key).encrypt(nonce, plain, aad)


def share_open(key: bytes, sid: bytes, r: int, sender: int, recipient: int, sealed: bytes) -> bytes:
    nonce, aad = share_nonce(r, sender, recipient), share_aad(sid, r, sender, recipient)
    return AESGCM(key).decrypt(nonce, sealed, aad)


# -- 3.3 PRG ------------------------------------------------------------------------------------


def prg_words(seed: bytes, r: int, offset: int, count: int, bits: int) -> list[int]:
    """Mask words [offset, offset+count): AES-256-CTR(seed), counter u32(r)||u32(0)||u64(0)."""
    assert len(seed) == 32
    w = word_bytes(bits)
    keystream = _ctr(seed, r << 96, (offset + count) * w)[offset * w :]
    return [
        int.from_bytes(keystream[i * w : (i + 1) * w], "little") % 2**bits for i in range(count)
    ]


def _ctr(key: bytes, counter: int, nbytes: int) -> bytes:
    """AES-256-CTR keystream from a 128-bit big-endian counter block (from the start, no skip)."""
    encryptor = Cipher(algorithms.AES(key), modes.CTR(counter.to_bytes(16, "big"))).encryptor()
    return encryptor.update(bytes(nbytes))


# -- 3.4 Shamir ---------------------------------------------------------------------------------


def shamir_eval(coefficients: list[int], x: int) -> bytes:
    value = sum(c * pow(x, i, PRIME) for i, c in enumerate(coefficients)) % PRIME
    return value.to_bytes(SHARE_BYTES, "big")


def shamir_recover(shares: dict[int, bytes], t: int) -> bytes:
    """Lagrange at 0 over the t shares with the smallest evaluation points; a 32-byte secret."""
    points = sorted(shares)[:t]
    assert len(points) == t, "fewer than t shares"
    values = {}
    for x in points:
        assert len(shares[x]) == SHARE_BYTES
        values[x] = int.from_bytes(shares[x], "big")
        assert values[x] < PRIME
    secret = 0
    for x in points:
        num = den = 1
        for other in points:
            if other != x:
                num = num * (-other) % PRIME
                den = den * (x - other) % PRIME
        secret = (secret + values[x] * num * pow(den, -1, PRIME)) % PRIME
    assert secret < 2**256, "recovered secret out of range"
    return secret.to_bytes(32, "big")


# -- 3.5 signatures and commitments --------------------------------------------------------------


def ed25519_ok(public: bytes, signature: bytes, payload: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, PREFIX + payload)
    except InvalidSignature:
        return False
    return True


def ids(values: list[int]) -> bytes:
    return u32(len(values)) + b"".join(u32(v) for v in values)


def advertise_payload(sid: bytes, owner: int, cipher_public: bytes) -> bytes:
    return b"advertise-keys" + sid + u32(owner) + cipher_public


def mask_key_payload(sid: bytes, r: int, owner: int, mask_public: bytes) -> bytes:
    return b"mask-key" + sid + u32(r) + u32(owner) + mask_public


def view_payload(sid: bytes, r: int, owner: int, view: list[int]) -> bytes:
    return b"masking-view" + sid + u32(r) + u32(owner) + ids(view)


def survivors_payload(sid: bytes, r: int, survivors: list[int]) -> bytes:
    return b"consistency-check" + sid + u32(r) + ids(survivors)


def self_mask_commitment(sid: bytes, r: int, owner: int, seed: bytes) -> bytes:
    return hashlib.sha256(
        PREFIX + b"self-mask-commitment" + sid + u32(r) + u32(owner) + seed
    ).digest()


# -- 3.6 communication graph ---------------------------------------------------------------------


def graph_seed(sid: bytes) -> bytes:
    return hashlib.sha256(PREFIX + b"graph-seed" + sid).digest()


def harary(roster: list[int], k: int, seed: bytes) -> dict[int, set[int]]:
    """Complete graph if k = n - 1; else H(n, k) on a Fisher-Yates order drawn from AES-CTR(seed)."""
    n = len(roster)
    if k == n - 1:
        return {u: set(roster) - {u} for u in roster}
    draws = _Draws(seed)
    order = sorted(roster)
    for i in range(n - 1, 0, -1):
        j = draws.below(i + 1)
        order[i], order[j] = order[j], order[i]
    graph: dict[int, set[int]] = {u: set() for u in roster}
    for i, u in enumerate(order):
        steps = list(range(1, k // 2 + 1)) + ([n // 2] if k % 2 else [])
        for d in steps:
            for v in (order[(i + d) % n], order[(i - d) % n]):
                graph[u].add(v)
                graph[v].add(u)
    return graph


class _Draws:
    """Successive 8-byte big-endian integers of AES-256-CTR(seed) from counter block 0."""

    def __init__(self, seed: bytes):
        self.seed, self.used = seed, 0

    def next(self) -> int:
        self.used += 8
        return int.from_bytes(_ctr(self.seed, 0, self.used)[-8:], "big")

    def below(self, m: int) -> int:
        limit = (2**64 // m) * m
        while True:
            draw = self.next()
            if draw < limit:
                return draw % m
