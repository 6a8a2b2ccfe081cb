"""Every client must build the same communication graph (issue 12 review, additive).

The graph seed used to come from the server in the advertise request, unsigned and outside the
config digest. A server alone could then hand each client its own seed, ground so that every
client's own graph is a connected ring over the whole roster while the masks actually pair up
only inside two halves P and Q: every client's checks pass (keys within its holders, a connected
survivor list of the whole roster, a quorum of signatures, every neighbour's view), and the
server unmasks sum(P) and sum(Q) separately although every client required the whole roster as
its minimum cohort. The seed is now derived from the config digest and a client refuses any other.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedprllm_secure.errors import ProtocolError
from fedprllm_secure.randomness import SeededRandomSource
from fedprllm_secure.secure_sum.additive import client_steps as client_module
from fedprllm_secure.secure_sum.additive import enroll
from fedprllm_secure.secure_sum.additive.client import AdditiveClient
from fedprllm_secure.secure_sum.additive.graph import ring_order
from fedprllm_secure.secure_sum.additive.layout import WordLayout
from fedprllm_secure.secure_sum.additive.messages import (
    AdvertiseRequest,
    ConsistencyRequest,
    MaskedInputRequest,
    ShareKeysRequest,
    UnmaskRequest,
)
from fedprllm_secure.secure_sum.additive.shamir import combine
from fedprllm_secure.secure_sum.additive.transcript import add_masks
from fedprllm_secure.secure_sum.api import AggregationSpec, ChunkSpec, SessionConfig
from fedprllm_secure.secure_sum.packing import unpack_uint

N, K, LENGTH = 10, 2, 8
ROSTER = tuple(range(N))
HALVES = ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])


def _ground_seeds() -> dict[int, bytes]:
    """For each client, a seed whose ring puts, around it, its two neighbours of its own half."""

    def segment(x: int) -> list[int]:
        half = HALVES[0] if x in HALVES[0] else HALVES[1]
        i = half.index(x)
        return [half[(i + d) % len(half)] for d in (-2, -1, 0, 1, 2)]

    def placed(order: list[int], wanted: list[int]) -> bool:
        m = len(order)
        return any(
            all(order[(p + j) % m] == s[j] for j in range(5))
            for s in (wanted, wanted[::-1])
            for p in range(m)
        )

    seeds = {}
    for x in ROSTER:
        tries = 0
        while True:
            seed = x.to_bytes(4, "big") + tries.to_bytes(28, "big")
            if placed(list(ring_order(ROSTER, seed)), segment(x)):
                seeds[x] = seed
                break
            tries += 1
    return seeds


def _session():
    rng = SeededRandomSource(b"graph-seed")
    options = {"neighbors": K, "min_contributors": N}
    config, identities = enroll(SessionConfig(b"S" * 32, ROSTER, options), rng.child("enroll"))
    inputs = {c: np.random.default_rng(c).integers(0, 2, LENGTH) for c in ROSTER}

    def provider(c: int):
        return lambda _index, _chunk: inputs[c]

    clients = {
        c: AdditiveClient(config, c, rng.child(f"c{c}"), provider(c), identities[c]) for c in ROSTER
    }
    return config, clients, inputs


def _partial_sums_by_seed_splitting(config, clients, seeds) -> dict[int, np.ndarray]:
    """The attack: each client its own seed; returns what the server unmasks per half."""
    sid = config.session_id
    advertised = {c: clients[c].handle(AdvertiseRequest(sid, 0, seeds[c])) for c in ROSTER}
    spec = AggregationSpec(0, (ChunkSpec("layer", LENGTH, 0),), 1)
    shares = {
        c: clients[c].handle(
            ShareKeysRequest(
                sid, 0, spec, tuple(advertised[h].keys for h in sorted(clients[c].holders))
            )
        )
        for c in ROSTER
    }
    masked = {}
    for c in ROSTER:
        sealed = tuple(
            sorted(
                (s for h in ROSTER for s in shares[h].sealed if s.recipient == c),
                key=lambda s: s.sender,
            )
        )
        keys = tuple(shares[s.sender].mask_key for s in sealed)
        masked[c] = clients[c].handle(MaskedInputRequest(sid, 0, 0, keys, sealed))
    signatures = tuple(
        clients[c].handle(ConsistencyRequest(sid, 0, ROSTER)).signature for c in ROSTER
    )
    views = {c: masked[c].view[0] for c in ROSTER}
    unmasked = {
        c: clients[c].handle(
            UnmaskRequest(
                sid,
                0,
                ROSTER,
                (),
                signatures,
                tuple(views[v] for v in sorted(set(ROSTER) & clients[c].graph[c])),
            )
        )  # fmt: skip
        for c in ROSTER
    }
    layout = WordLayout.for_max_sum(N)
    t = clients[0].params.threshold
    partial = {}
    for number, half in enumerate(HALVES):
        words = [unpack_uint(masked[c].data, layout.bits, layout.words(LENGTH)) for c in half]
        total = sum(w.astype(layout.dtype) for w in words).astype(layout.dtype)
        for v in half:
            held = {
                ROSTER.index(c) + 1: s.value
                for c in ROSTER
                for s in unmasked[c].self_mask_shares
                if s.owner == v
            }
            add_masks(total, combine(held, t), {}, v, 0, 0, layout.bits, -1)
        total &= layout.word_mask
        partial[number] = layout.unpack(total, LENGTH)
    return partial


def test_a_client_refuses_a_graph_seed_other_than_the_sessions() -> None:
    config, clients, _inputs = _session()
    seeds = _ground_seeds()
    for c in ROSTER:
        with pytest.raises(ProtocolError, match="graph seed is not the session's"):
            clients[c].handle(AdvertiseRequest(config.session_id, 0, seeds[c]))
        assert clients[c].state == "aborted"


def test_control_per_client_seeds_split_one_sum_into_partial_sums(monkeypatch) -> None:
    """Without the check (each client taking the seed it is sent), the server alone unmasks the
    sums of both halves exactly, although every client asked for the whole roster as cohort."""
    config, clients, inputs = _session()
    seeds = _ground_seeds()

    class AnySeed:  # the check removed: whatever seed the server sends is "the session's"
        def __eq__(self, other: object) -> bool:
            return True

        def __ne__(self, other: object) -> bool:
            return False

    monkeypatch.setattr(client_module, "graph_seed", lambda _binding: AnySeed())
    partial = _partial_sums_by_seed_splitting(config, clients, seeds)
    for number, half in enumerate(HALVES):
        assert np.array_equal(partial[number], sum(inputs[c] for c in half))
