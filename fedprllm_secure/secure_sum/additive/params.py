"""Session parameters of `additive` read from SessionConfig.options, with safe defaults.

Options: "threshold" (t, int or None), "neighbors" (k, int or None), "min_contributors" (the
smallest survivor list a client signs or unmasks, default 3), "identity_public_keys" ({client id:
32-byte Ed25519 public key}, put there by `enroll`). Each client's secrets are shared among its
holders = itself and its k graph neighbours (k + 1 holders); t of them recover a secret. t must
exceed half the holders (so a server that cheats cannot collect t shares of two kinds for one client
from honest holders that each answer one kind) and may not exceed k + 1.

The survivor list of an aggregation needs the signatures of `quorum` = max(t, floor(2n/3) + 1)
distinct roster clients: two lists that both have a quorum share at least 2 * quorum - n signers, so
with fewer corrupt clients than that some honest client would have signed both, which it never does
(protocols/additive.md section 4, "Why one list").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...errors import ConfigError
from ..api import SessionConfig
from .graph import check_degree
from .primitives import MAX_ID

COMPLETE_GRAPH_UP_TO = 32  # below this many clients every pair masks (Bonawitz); above, SecAgg+


def default_neighbors(n: int) -> int:
    """Complete graph for small cohorts; about 3 log2 n neighbours (made valid) for large ones."""
    if n <= COMPLETE_GRAPH_UP_TO:
        return n - 1
    k = min(n - 1, 3 * math.ceil(math.log2(n)))
    if k % 2 and n % 2:
        k += 1
    return k


def min_threshold(k: int) -> int:
    return (k + 1) // 2 + 1


def default_threshold(k: int) -> int:
    """Two thirds of the holders plus one (Bonawitz's bound for an active server), at least 2."""
    return min(k + 1, max(min_threshold(k), (2 * (k + 1)) // 3 + 1))


def quorum(n: int, t: int) -> int:
    """Signatures a survivor list needs: max(t, floor(2n/3) + 1) distinct roster clients."""
    return max(t, (2 * n) // 3 + 1)


DEFAULT_MIN_CONTRIBUTORS = 3  # the pipeline's default minimum cohort (privacy/cohort.py)


def _int_option(options: dict, name: str, flag: str) -> int | None:
    value = options.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{flag} must be an integer, got {value!r}")
    return value


@dataclass(frozen=True)
class Params:
    roster: tuple[int, ...]  # sorted
    neighbors: int
    threshold: int
    identity_keys: dict[int, bytes]
    min_contributors: int = DEFAULT_MIN_CONTRIBUTORS

    @property
    def n(self) -> int:
        return len(self.roster)

    @property
    def quorum(self) -> int:
        """Distinct roster signatures a survivor list needs before anyone unmasks with it."""
        return quorum(self.n, self.threshold)

    @property
    def min_survivors(self) -> int:
        """The smallest survivor list a client signs: the quorum and the minimum cohort."""
        return max(self.quorum, self.min_contributors)

    def point(self, client: int) -> int:
        """Shamir evaluation point of a client: 1 + its index in the sorted roster."""
        return self.roster.index(client) + 1


def read_params(config: SessionConfig, need_identities: bool = True) -> Params:
    """Validate the options; ConfigError with a one-line message on any bad value."""
    roster = tuple(sorted(config.roster))
    n = len(roster)
    if n < 2:
        raise ConfigError("the additive protocol needs at least 2 clients")
    if any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= MAX_ID for c in roster):
        raise ConfigError("additive needs client ids that are integers in [0, 2^32)")
    options = dict(config.options)
    k = _int_option(options, "neighbors", "--neighbors")
    k = default_neighbors(n) if k is None else k
    check_degree(n, k)
    t = _int_option(options, "threshold", "--threshold")
    t = default_threshold(k) if t is None else t
    if t > k + 1:
        raise ConfigError(f"--threshold {t} exceeds the {k + 1} holders of each client's shares")
    if t < min_threshold(k):
        raise ConfigError(
            f"--threshold {t} is unsafe: it must exceed half of the {k + 1} share holders "
            f"(at least {min_threshold(k)})"
        )
    m = _int_option(options, "min_contributors", "min_contributors")
    m = DEFAULT_MIN_CONTRIBUTORS if m is None else m
    if m < 1:
        raise ConfigError(f"min_contributors must be at least 1, got {m}")
    if m > n:
        raise ConfigError(
            f"min_contributors {m} exceeds the {n} clients of the session: no sum could be "
            "released (lower the minimum cohort explicitly if every client accepts that)"
        )
    keys = options.get("identity_public_keys")
    identities: dict[int, bytes] = {}
    if keys is not None or need_identities:
        if not isinstance(keys, dict):
            raise ConfigError("additive needs options['identity_public_keys'] (run enroll first)")
        for client in roster:
            key = keys.get(client)
            if not isinstance(key, bytes) or len(key) != 32:
                raise ConfigError(f"client {client} has no 32-byte identity public key")
            identities[client] = key
    return Params(
        roster=roster, neighbors=k, threshold=t, identity_keys=identities, min_contributors=m
    )
