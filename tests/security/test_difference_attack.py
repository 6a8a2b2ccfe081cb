"""Issue 12, item 3: the same chunk summed twice gives a difference attack.

A server aggregates a chunk once with everyone and once more with the victim dropped before it
shares keys: the difference of the two sums is the victim's input. A client releases each chunk
of a pruning round at most once, in any aggregation of any session of that round (one
`ContributionLedger` per client and calibration, the `ClientNode`'s, shared by every session), so the
second aggregation is refused by the clients. Randomized response is keyed by the chunk alone, so
reading one chunk again (m times) gives the same noisy bits, not m independent copies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedprllm_secure.client.fixed_point import LIMB_BOUND
from fedprllm_secure.errors import PrivacyError, ProtocolError
from fedprllm_secure.pipeline import Pipeline
from fedprllm_secure.privacy.randomized_response import (
    draw_rr_key,
    flip_probability,
    randomized_provider,
)
from fedprllm_secure.randomness import SeededRandomSource
from fedprllm_secure.secure_sum.api import AggregationSpec, ChunkSpec
from fedprllm_secure.secure_sum.ledger import ContributionLedger
from fedprllm_secure.secure_sum.session import SimulatedSession

from ..conftest import add_fourth_client
from ..test_pipeline import config_for, server_for

CLIENTS = 4
VICTIM = 1
LENGTH = 24
# The round before which the victim is dropped in the second aggregation: before it shares keys
# (additive) or before it submits its ciphertext (ckks).
DROP_ROUND = {"additive": "share-keys", "ckks": "encrypted-input"}


def _inputs() -> dict[int, np.ndarray]:
    generator = np.random.default_rng(7)
    return {c: generator.integers(0, 2, LENGTH).astype(np.uint8) for c in range(CLIENTS)}


def _spec(index: int) -> AggregationSpec:
    return AggregationSpec.from_lengths(index, {"layer": LENGTH}, bound=1)


def _session(protocol: str, ledgers: dict[int, ContributionLedger], label: str) -> SimulatedSession:
    truth = _inputs()
    return SimulatedSession(
        protocol,
        {c: (lambda _index, _chunk, v=truth[c]: v) for c in range(CLIENTS)},
        SeededRandomSource(f"difference/{protocol}/{label}"),
        ledgers=ledgers,
    )


def _round() -> dict[int, ContributionLedger]:
    """Every client's ledger of one calibration (a pruning round)."""
    return {c: ContributionLedger() for c in range(CLIENTS)}


@pytest.mark.parametrize("protocol", ["additive", "ckks"])
def test_the_same_chunk_in_a_second_aggregation_is_refused(protocol: str) -> None:
    """Aggregation 2r with everyone, 2r+1 without the victim, one session, one chunk."""
    session = _session(protocol, _round(), "one")
    everyone = session.aggregate(_spec(0))
    assert everyone.contributors == tuple(range(CLIENTS))
    assert np.array_equal(
        everyone.sums["layer"], sum(v.astype(np.int64) for v in _inputs().values())
    )
    session.bus.drops.at[VICTIM] = DROP_ROUND[protocol]
    with pytest.raises(ProtocolError, match="already (contributed|signed)"):
        session.aggregate(_spec(1))


@pytest.mark.parametrize("protocol", ["additive", "ckks"])
def test_a_second_session_of_the_same_pruning_round_is_refused(protocol: str) -> None:
    """A new session (new keys, new session id) for the same calibration collects nothing."""
    pruning_round = _round()
    first = _session(protocol, pruning_round, "first")
    first.aggregate(_spec(0))
    second = _session(protocol, pruning_round, "second")
    second.bus.drops.at[VICTIM] = DROP_ROUND[protocol]
    with pytest.raises(ProtocolError, match="already (contributed|signed)"):
        second.aggregate(_spec(0))


@pytest.mark.parametrize("aggregate", ["masks", "stats"])
def test_the_pipeline_never_lets_a_second_session_collect_a_calibration(
    tiny_model_dir: Path, client_dir: Path, aggregate: str
) -> None:
    """simulate's pipeline: after the federated sum, a server that opens another session of the
    same pruning round, the victim dropped, gets nothing: the sessions share the round's ledgers.
    (Before, each session had its own ledger, and the two sums' difference was the victim's
    mask.)"""
    # A fourth client, so that three survivors still reach additive's quorum of signatures and
    # the ledger is what refuses the second collection.
    add_fourth_client(client_dir)
    config = config_for(tiny_model_dir, client_dir, protocol="additive", aggregate=aggregate)
    pipe = Pipeline(config)
    if aggregate == "masks":
        server = server_for(pipe)
        server.calibrate("masks")
        server.command("prepare", {"aggregation": 0, "upload": "masks"})
        spec = AggregationSpec.from_lengths(0, pipe.bench.lengths, bound=1)
        server.sum(server.open_session(), spec)
        pipe.federation.simulate_drops({VICTIM: "share-keys"})
        with pytest.raises(ProtocolError, match="already (contributed|signed)"):
            server.sum(server.open_session(), spec)  # the same round, the victim dropped
        lengths = pipe.bench.lengths
    else:
        server = pipe.fedprllm().server
        staged = pipe.federation.nodes[0].current.staged  # the last upload (limbs)
        lengths = {name: value.size for name, value in staged.arrays.items()}
    pipe.federation.simulate_drops({VICTIM: "share-keys"})
    session = server.open_session()
    bound = 1 if aggregate == "masks" else LIMB_BOUND
    with pytest.raises((ProtocolError, PrivacyError)):
        server.sum(session, AggregationSpec.from_lengths(7, lengths, bound))


def test_randomized_response_rereads_give_the_same_bits() -> None:
    """101 aggregations of one chunk, read past the ledger straight from the RR provider: one
    noisy copy, so a majority vote recovers no more than a single read (keep rate p)."""
    epsilon, length = 1.0, 20_000
    truth = (np.arange(length) % 3 == 0).astype(np.uint8)
    provider = randomized_provider(
        lambda _i, _chunk: truth, epsilon, draw_rr_key(SeededRandomSource("victim"))
    )
    chunk = ChunkSpec("model.layers.0.self_attn.q_proj", length, 0)
    reads = np.stack([provider(index, chunk) for index in range(101)])
    assert (reads == reads[0]).all()
    vote = (reads.sum(axis=0) > 50).astype(np.uint8)
    recovered = float(np.mean(vote == truth))
    p = 1 - flip_probability(epsilon)  # 0.731 at eps 1; independent copies gave ~0.98
    assert abs(recovered - p) < 0.02
    # Another chunk name draws other flips (the key is per client, the flips per chunk).
    other = provider(0, ChunkSpec("model.layers.0.self_attn.k_proj", length, 0))
    assert np.mean(other != reads[0]) > 0.1
