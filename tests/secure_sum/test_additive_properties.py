"""Property: the result is the plaintext sum over the included clients, or a clean abort."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fedprllm_secure.errors import ProtocolError
from fedprllm_secure.randomness import SeededRandomSource
from fedprllm_secure.secure_sum.additive.graph import connected
from fedprllm_secure.secure_sum.additive.messages import ROUNDS
from fedprllm_secure.secure_sum.additive.params import min_threshold, quorum
from fedprllm_secure.secure_sum.api import AggregationSpec
from fedprllm_secure.secure_sum.session import SimulatedSession


@st.composite
def scenarios(draw):
    n = draw(st.integers(2, 12))
    k = draw(st.sampled_from([k for k in range(1, n) if not (k % 2 and n % 2)]))
    t = draw(st.integers(min_threshold(k), k + 1))
    m = draw(st.integers(1, min(n, 4)))  # min_contributors (larger ones mostly abort)
    droppers = draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n))
    drop_at = {c: draw(st.sampled_from(ROUNDS)) for c in droppers}
    bound = draw(st.sampled_from([1, 1, 3, 255]))
    lengths = draw(st.lists(st.integers(0, 40), min_size=1, max_size=3))
    aggregations = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**32))
    return n, k, t, m, drop_at, bound, lengths, aggregations, seed


def inputs_for(n, bound, seed):
    data_rng = np.random.default_rng(seed)  # test data only; protocol randomness is injected
    table = {}

    def provider(client):
        def read(index, chunk):
            key = (client, index, chunk.name)
            if key not in table:
                table[key] = data_rng.integers(0, bound + 1, chunk.length)
            return table[key]

        return read

    return {c: provider(c) for c in range(n)}, table


# A ring (k = 2) of 8 whose graph (seed 1) splits into {1, 5, 7} and {2, 3, 6} without 0 and 4:
# every survivor masks with a survivor, so only the connectivity check refuses the partial sums.
DISCONNECTED = (8, 2, 2, 3, {0: "masked-input", 4: "masked-input"}, 1, [5], 1, 1)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
@example(DISCONNECTED)
def test_sum_is_exact_or_the_protocol_aborts(scenario):
    """Either the exact sum over a survivor list that a quorum could sign, that reaches the minimum
    cohort and is connected in the graph (so the pairwise masks hide every partial sum), or a
    ProtocolError; on the complete graph the latter only when too few clients stay."""
    n, k, t, m, drop_at, bound, lengths, aggregations, seed = scenario
    inputs, table = inputs_for(n, bound, seed)
    session = SimulatedSession(
        "additive",
        inputs,
        SeededRandomSource(seed),
        options={"threshold": t, "neighbors": k, "min_contributors": m},
        drop_at=drop_at,
    )
    needed = max(quorum(n, t), m)
    never_dropped = set(range(n)) - set(drop_at)
    for index in range(aggregations):
        spec = AggregationSpec.from_lengths(
            index, {f"layer{index}.{i}": ln for i, ln in enumerate(lengths)}, bound
        )
        try:
            result = session.aggregate(spec)
        except ProtocolError:
            # with a complete graph an abort is only allowed when too few clients stay
            assert not (k == n - 1 and len(never_dropped) >= needed)
            return
        contributors = set(result.contributors)
        assert never_dropped <= contributors
        early = {c for c, r in drop_at.items() if r in ROUNDS[:3]}
        assert not contributors & early
        assert len(contributors) >= needed
        graph = session.bus.server.graph
        assert connected(contributors, graph)
        assert all(graph[c] & contributors for c in contributors)
        for chunk in spec.chunks:
            expected = np.zeros(chunk.length, dtype=np.int64)
            for c in contributors:
                expected += table[(c, index, chunk.name)]
            assert result.sums[chunk.name].dtype == np.dtype(
                np.uint8 if bound * n < 256 else np.uint16
            )
            assert np.array_equal(result.sums[chunk.name].astype(np.int64), expected)
