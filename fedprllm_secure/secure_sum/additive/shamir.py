"""t-of-n Shamir secret sharing of 32-byte secrets over GF(p), p = 2^521 - 1 (a Mersenne prime).

A secret is the big-endian integer of its 32 bytes (< 2^256 < p). The polynomial is
f(x) = secret + a_1 x + ... + a_{t-1} x^{t-1} with a_i uniform in [0, p) from the injected source,
and the share of the holder with evaluation point x is f(x), encoded as SHARE_BYTES big-endian bytes.
Evaluation points are 1 + the holder's index in the sorted roster (never 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ...errors import ProtocolError
from ...randomness import RandomSource, random_below

PRIME = 2**521 - 1
SHARE_BYTES = 66
SECRET_BYTES = 32


def split(
    secret: bytes, threshold: int, points: Sequence[int], rng: RandomSource
) -> dict[int, bytes]:
    """Shares of `secret` for each evaluation point; any `threshold` of them recover it."""
    if len(secret) != SECRET_BYTES:
        raise ProtocolError("a Shamir secret must be 32 bytes")
    if not 1 <= threshold <= len(points):
        raise ProtocolError(f"threshold {threshold} impossible with {len(points)} holders")
    if len(set(points)) != len(points) or any(not 0 < x < PRIME for x in points):
        raise ProtocolError("Shamir evaluation points must be distinct and non-zero")
    coefficients = [int.from_bytes(secret, "big")]
    coefficients += [random_below(rng, PRIME) for _ in range(threshold - 1)]
    return evaluate(coefficients, points)


def evaluate(coefficients: Sequence[int], points: Sequence[int]) -> dict[int, bytes]:
    """Encoded shares f(x) for the polynomial with `coefficients` (constant term first)."""
    shares = {}
    for x in points:
        value = 0
        for coefficient in reversed(coefficients):  # Horner
            value = (value * x + coefficient) % PRIME
        shares[x] = value.to_bytes(SHARE_BYTES, "big")
    return shares


def parse_share(raw: bytes) -> int:
    """The field element of an encoded share; ProtocolError unless exactly one valid encoding."""
    if len(raw) != SHARE_BYTES:
        raise ProtocolError(f"a share must be {SHARE_BYTES} bytes")
    value = int.from_bytes(raw, "big")
    if value >= PRIME:
        raise ProtocolError("a share is not a field element")
    return value


def combine(shares: Mapping[int, bytes], threshold: int) -> bytes:
    """Recover the secret from the `threshold` shares with the smallest evaluation points.

    Raises ProtocolError with fewer shares or when the result is not a 32-byte secret (a sign of
    tampered shares).
    """
    if len(shares) < threshold:
        raise ProtocolError(f"{len(shares)} shares cannot recover a {threshold}-of-n secret")
    points = sorted(shares)[:threshold]
    values = {x: parse_share(shares[x]) for x in points}
    secret = 0
    for i in points:
        numerator, denominator = 1, 1
        for j in points:
            if j != i:
                numerator = numerator * j % PRIME
                denominator = denominator * (j - i) % PRIME
        secret = (secret + values[i] * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >> (8 * SECRET_BYTES):
        raise ProtocolError("recovered value is not a 32-byte secret (tampered shares?)")
    return secret.to_bytes(SECRET_BYTES, "big")
