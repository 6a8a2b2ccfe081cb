"""Where privacy noise and protocol secrets come from: the OS CSPRNG unless asked otherwise.

Randomized-response keys, DP noise on statistics and every protocol secret (session ids, keys,
masks) must be unpredictable to the server. A run seeded from `--seed`, which results.json
records, lets anyone holding the results redraw, hence remove, every noise draw and key: that is
reproducible, and not private. Non-secret randomness (data splits, tie-breaking among equal
counts, dealing public articles) stays seeded by `--seed`.
"""

from __future__ import annotations

from ..randomness import RandomSource, SeededRandomSource, SystemRandomSource

OS_CSPRNG = "os-csprng"
SEEDED = "reproducible (seeded: not private)"


def describe(reproducible: bool) -> str:
    """What results.json and the reports say about the noise source."""
    return SEEDED if reproducible else OS_CSPRNG


def secret_source(seed: int, reproducible: bool, purpose: str) -> RandomSource:
    """The source of privacy noise and protocol secrets: `SystemRandomSource`, or, only when
    `reproducible`, a source seeded from (`purpose`, `seed`)."""
    if reproducible:
        return SeededRandomSource(f"fedprllm-secure/{purpose}/{seed}")
    return SystemRandomSource()
