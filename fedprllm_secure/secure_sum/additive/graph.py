"""The SecAgg+ communication graph: a Harary graph H(n, k) on a random ordering of the roster.

Node at position i of the permutation is joined to positions i +- 1..k//2 (mod n) and, for odd k,
to i + n/2. Every node has exactly k neighbours and the graph is k-connected. The permutation is a
Fisher-Yates shuffle driven by `graph_stream(seed)`, so anyone holding the seed rebuilds the same
graph (the seed comes from the server's injected RandomSource and is public).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ...errors import ConfigError

GRAPH_BYTES_PER_DRAW = 8


class _SeedStream:
    """AES-256-CTR(seed, counter 0) read 8 bytes at a time as big-endian integers."""

    def __init__(self, seed: bytes) -> None:
        self._encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()

    def below(self, upper: int) -> int:
        """Uniform in [0, upper) by rejection sampling of 64-bit draws."""
        limit = (2**64 // upper) * upper
        while True:
            value = int.from_bytes(self._encryptor.update(bytes(GRAPH_BYTES_PER_DRAW)), "big")
            if value < limit:
                return value % upper


def check_degree(n: int, k: int) -> None:
    """ConfigError unless a k-regular graph on n nodes exists and is useful (k >= 1)."""
    if not 1 <= k <= n - 1:
        raise ConfigError(f"--neighbors must be between 1 and {n - 1} for {n} clients, got {k}")
    if k % 2 and n % 2:
        raise ConfigError(
            f"--neighbors {k} is odd, which needs an even number of clients (got {n})"
        )


def ring_order(roster: Sequence[int], seed: bytes) -> list[int]:
    """The roster in the Fisher-Yates order of `seed`: the positions of the Harary graph."""
    stream = _SeedStream(seed)
    order = sorted(roster)
    for i in range(len(order) - 1, 0, -1):
        j = stream.below(i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def harary(roster: Sequence[int], k: int, seed: bytes) -> dict[int, frozenset[int]]:
    """Neighbour sets (excluding the node itself) of the graph for `roster` and `seed`."""
    nodes = sorted(roster)
    n = len(nodes)
    check_degree(n, k)
    if k == n - 1:
        return {u: frozenset(v for v in nodes if v != u) for u in nodes}
    order = ring_order(nodes, seed)
    neighbours: dict[int, set[int]] = {u: set() for u in nodes}
    for i, u in enumerate(order):
        steps = list(range(1, k // 2 + 1))
        if k % 2:
            steps.append(n // 2)
        for step in steps:
            v = order[(i + step) % n]
            neighbours[u].add(v)
            neighbours[v].add(u)
    return {u: frozenset(vs) for u, vs in neighbours.items()}


def connected(nodes: Iterable[int], graph: dict[int, frozenset[int]]) -> bool:
    """True iff the subgraph induced by `nodes` is connected (the empty set counts as connected)."""
    remaining = set(nodes)
    if not remaining:
        return True
    frontier = [remaining.pop()]
    while frontier:
        u = frontier.pop()
        reached = graph[u] & remaining
        remaining -= reached
        frontier.extend(reached)
    return not remaining
