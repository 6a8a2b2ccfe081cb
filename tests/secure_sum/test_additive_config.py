"""Options, defaults, registry wiring and per-aggregation freshness."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import pytest

from fedprllm_secure.errors import ConfigError, ProtocolError
from fedprllm_secure.randomness import SeededRandomSource
from fedprllm_secure.secure_sum.additive import enroll
from fedprllm_secure.secure_sum.additive.graph import connected, harary
from fedprllm_secure.secure_sum.additive.params import (
    default_neighbors,
    default_threshold,
    read_params,
)
from fedprllm_secure.secure_sum.api import AggregateResult, AggregationSpec, SessionConfig
from fedprllm_secure.secure_sum.registry import available, get
from fedprllm_secure.secure_sum.session import SimulatedSession
from tests.tools.additive_harness import build, deliver, run


def config(n, **options):
    return SessionConfig(bytes(32), tuple(range(n)), options)


def test_registered_as_a_secure_protocol():
    assert "additive" in available()
    info = get("additive")
    assert info.secure and info.name == "additive"


@pytest.mark.parametrize(
    "n, options, match",
    [
        (8, {"threshold": 9}, "exceeds"),
        (8, {"threshold": 4}, "unsafe"),
        (8, {"threshold": "5"}, "integer"),
        (8, {"neighbors": 0}, "between 1 and 7"),
        (8, {"neighbors": 8}, "between 1 and 7"),
        (9, {"neighbors": 3}, "odd"),
        (1, {}, "at least 2"),
        (10, {"neighbors": 4, "threshold": 6}, "exceeds"),
        (10, {"neighbors": 4, "threshold": 2}, "unsafe"),
        (8, {"min_contributors": 0}, "at least 1"),
        (8, {"min_contributors": 9}, "exceeds the 8 clients"),
        (8, {"min_contributors": "3"}, "integer"),
        (8, {"min_contributors": True}, "integer"),
    ],
)
def test_bad_options_raise_a_one_line_config_error(n, options, match):
    with pytest.raises(ConfigError, match=match) as info:
        enroll(config(n, **options), SeededRandomSource(0))
    assert "\n" not in str(info.value)


def test_defaults_are_safe():
    """Default k and t: complete graph up to 32 clients, O(log n) neighbours beyond; t above two
    thirds of the k + 1 holders (Bonawitz's bound against a server colluding with clients); a
    survivor list needs signatures from more than two thirds of the whole roster, so two lists
    cannot both be accepted while fewer than 2q - n (more than n/3) clients are corrupt; clients
    refuse lists of fewer than 3 members unless told otherwise."""
    assert default_neighbors(8) == 7  # complete graph for small cohorts
    assert default_neighbors(1000) < 40  # O(log n) for large ones
    for n in (2, 3, 8, 9, 33, 48, 64, 100, 1000):
        k = default_neighbors(n)
        t = default_threshold(k)
        assert (k + 1) / 2 < t <= k + 1
        assert 3 * t > 2 * (k + 1) or t == k + 1  # the 2/3 rule, where k + 1 holders allow it
        options = {"min_contributors": 2} if n == 2 else {}
        params = read_params(config(n, **options), need_identities=False)
        assert (params.neighbors, params.threshold) == (k, t)
        q = params.quorum
        assert q == max(t, 2 * n // 3 + 1) and 3 * q > 2 * n and q <= n
        assert 2 * q - n - 1 >= n // 3 - 1  # corrupt clients tolerated: about a third
        assert params.min_contributors == (2 if n == 2 else 3)
        assert params.min_survivors == max(q, params.min_contributors)
    with pytest.raises(ConfigError, match="min_contributors 3 exceeds the 2 clients"):
        read_params(config(2), need_identities=False)
    assert get("additive").cohort_option == "min_contributors"


def test_harary_graph_is_regular_symmetric_and_connected():
    for n, k in [(10, 4), (11, 4), (12, 5), (50, 6)]:
        graph = harary(range(n), k, bytes(32))
        assert all(len(vs) == k and u not in vs for u, vs in graph.items())
        assert all(u in graph[v] for u, vs in graph.items() for v in vs)
        assert connected(range(n), graph)


def test_identity_must_match_the_roster():
    cfg, identities = enroll(config(3, threshold=2), SeededRandomSource(1))
    info = get("additive")
    with pytest.raises(ProtocolError, match="does not match"):
        info.make_client(cfg, 0, SeededRandomSource(2), lambda i, c: None, identities[1])


def test_simulated_session_with_drops_over_several_aggregations():
    """n = 9: the quorum floor(2n/3) + 1 = 7 still holds after two clients are gone for good.
    Each aggregation sums chunks of its own (a client releases a chunk name once)."""
    n = 9
    rng = np.random.default_rng(3)
    data = {c: rng.integers(0, 2, 500) for c in range(n)}
    inputs = {c: (lambda i, ch, c=c: data[c][ch.offset : ch.offset + ch.length]) for c in range(n)}
    session = SimulatedSession(
        "additive",
        inputs,
        SeededRandomSource(4),
        options={"threshold": 5},
        drop_at={1: "masked-input", 4: "unmasking"},
    )
    everyone_but_1 = tuple(c for c in range(n) if c != 1)
    later = tuple(c for c in everyone_but_1 if c != 4)
    for index, expected in [(0, everyone_but_1), (1, later), (2, later)]:
        lengths = {f"q{index}": 200, f"k{index}": 300}
        spec = AggregationSpec.from_lengths(index, lengths, 1)
        result = session.aggregate(spec)
        assert result.contributors == expected
        total = sum(data[c] for c in expected)
        sums = np.concatenate([result.sums[f"q{index}"], result.sums[f"k{index}"]])
        assert np.array_equal(sums, total)
        assert result.sums[f"q{index}"].dtype == np.uint8


def test_each_aggregation_uses_fresh_self_masks_and_fresh_keystream():
    inputs = {c: (lambda i, ch: np.zeros(ch.length, dtype=np.uint8)) for c in range(3)}
    session = build((0, 1, 2), inputs, SeededRandomSource(5), {"threshold": 2}, record=True)
    seeds = []
    for index in range(2):
        spec = AggregationSpec.from_lengths(index, {"a": 64}, 1)
        out = session.server.begin(spec)
        out = session.server.handle(deliver(session, out))
        seeds.append(session.clients[0].self_seed)
        run_rest(session, out)
    assert seeds[0] != seeds[1]
    masked = [w for d, c, w in session.transcript if d == "up" and c == 0 and b"masked-input" in w]
    assert len(masked) == 2 and masked[0][-32:] != masked[1][-32:]


def run_rest(session, out):
    while not isinstance(out, AggregateResult):
        out = session.server.handle(deliver(session, out))


def test_sparse_graph_session_sums_exactly():
    n = 14
    data = {c: np.full(30, c % 2, dtype=np.uint8) for c in range(n)}
    inputs = {c: (lambda i, ch, c=c: data[c][: ch.length]) for c in range(n)}
    session = build(tuple(range(n)), inputs, SeededRandomSource(6), {"neighbors": 4})
    result = run(session, AggregationSpec.from_lengths(0, {"a": 30}, 1), drop_at={3: "share-keys"})
    assert result.contributors == tuple(c for c in range(n) if c != 3)
    assert np.all(result.sums["a"] == sum(c % 2 for c in range(n) if c != 3))


def test_server_keeps_one_running_sum_per_chunk_in_packed_words():
    """Server memory: O(d) packed words (20 entries per 64-bit word at n = 8), never one vector
    per client."""
    n = 8
    inputs = {c: (lambda i, ch: np.ones(ch.length, dtype=np.uint8)) for c in range(n)}
    session = build(tuple(range(n)), inputs, SeededRandomSource(8))
    spec = AggregationSpec.from_lengths(0, {"a": 1000, "b": 500}, 1)
    out = session.server.begin(spec)
    while session.server.state != "consistency-check":
        out = session.server.handle(deliver(session, out))
    sums = session.server.sums
    assert {k: (v.dtype, v.shape) for k, v in sums.items()} == {
        "a": (np.dtype(np.uint64), (50,)),
        "b": (np.dtype(np.uint64), (25,)),
    }
    held = arrays(session.server.current)
    assert sorted(held) == ["sums.a", "sums.b"]  # nothing else vector-sized
    run_rest(session, out)


def arrays(value, path=""):
    """The path of every ndarray reachable from a (frozen dataclass) state."""
    if isinstance(value, np.ndarray):
        return [path]
    if dataclasses.is_dataclass(value):
        items = [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
    elif isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (tuple, list, set, frozenset)):
        items = list(enumerate(value))
    else:
        return []
    return [p for k, v in items for p in arrays(v, f"{path}.{k}" if path else str(k))]
