"""The one place randomness enters the project.

Protocol code never calls `os.urandom`, `random` or numpy's global state: it receives a
`RandomSource`. Production uses `SystemRandomSource` (the OS CSPRNG); tests and reproducible
simulations use `SeededRandomSource`, a ChaCha20 keystream keyed by SHA-256 of a seed, which is
deterministic and still a cryptographic generator.
"""

from __future__ import annotations

import hashlib
import os
from typing import Protocol

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms


class RandomSource(Protocol):
    """A source of uniformly random bytes."""

    def random_bytes(self, n: int) -> bytes: ...

    def child(self, label: str) -> RandomSource:
        """An independent source for a named sub-task (e.g. one client)."""
        ...


def random_below(source: RandomSource, upper: int) -> int:
    """A uniform integer in [0, upper) by rejection sampling (no modulo bias)."""
    if upper <= 0:
        raise ValueError("upper must be positive")
    nbytes = (upper.bit_length() + 7) // 8 + 1
    limit = (256**nbytes // upper) * upper
    while True:
        value = int.from_bytes(source.random_bytes(nbytes), "big")
        if value < limit:
            return value % upper


class SystemRandomSource:
    """The operating system's CSPRNG."""

    def random_bytes(self, n: int) -> bytes:
        return os.urandom(n)

    def child(self, label: str) -> SystemRandomSource:
        return self


class SeededRandomSource:
    """Deterministic ChaCha20 keystream keyed by SHA-256(seed); for tests and reproducible runs."""

    def __init__(self, seed: bytes | int | str) -> None:
        if isinstance(seed, int):
            seed = seed.to_bytes(16, "big", signed=True)
        elif isinstance(seed, str):
            seed = seed.encode()
        self._seed = bytes(seed)
        key = hashlib.sha256(b"fedprllm-secure/seeded-random\x00" + self._seed).digest()
        self._encryptor = Cipher(algorithms.ChaCha20(key, b"\x00" * 16), mode=None).encryptor()

    def random_bytes(self, n: int) -> bytes:
        return self._encryptor.update(b"\x00" * n)

    def child(self, label: str) -> SeededRandomSource:
        return SeededRandomSource(self._seed + b"\x00" + label.encode())
