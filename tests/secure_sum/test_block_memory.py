"""The `additive` server's memory grows with the largest block, not with the model: one session,
one aggregation per block, each block's sums released before the next (issue 16)."""

from __future__ import annotations

import tracemalloc

import numpy as np

from fedprllm_secure.randomness import SeededRandomSource
from fedprllm_secure.secure_sum.api import AggregationSpec, ChunkSpec
from fedprllm_secure.secure_sum.session import SimulatedSession

CLIENTS = 4
CHUNKS = {"q": 120_000, "k": 60_000, "up": 250_000, "down": 250_000}  # one block's layers


def _bits(client: int, index: int, chunk: ChunkSpec) -> np.ndarray:
    return np.random.default_rng([client, index, chunk.offset]).integers(0, 2, chunk.length)


def _peak_over_blocks(blocks: int, keep_results: bool = False) -> int:
    """Peak traced bytes while one session sums `blocks` blocks (all parties in this process)."""
    inputs = {c: (lambda i, ch, c=c: _bits(c, i, ch)) for c in range(CLIENTS)}
    session = SimulatedSession("additive", inputs, SeededRandomSource("block-memory"))
    kept = []
    tracemalloc.start()
    try:
        for block in range(blocks):
            spec = AggregationSpec.from_lengths(
                block, {f"b{block}.{k}": v for k, v in CHUNKS.items()}, 1
            )
            result = session.aggregate(spec)
            chunk = spec.chunks[1]
            expected = sum(_bits(c, block, chunk) for c in range(CLIENTS))
            assert np.array_equal(result.sums[chunk.name], expected)
            if keep_results:
                kept.append(result)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_server_peak_stays_flat_as_blocks_are_added() -> None:
    block_bytes = sum(CHUNKS.values())  # one block's result alone is this many uint8 sums
    four, sixteen = _peak_over_blocks(4), _peak_over_blocks(16)
    assert sixteen < four * 1.15 + 256 * 1024, (four, sixteen)
    # the measurement sees held sums: keeping every block's result grows the peak by 12 blocks
    kept = _peak_over_blocks(16, keep_results=True)
    assert kept > sixteen + 10 * block_bytes, (sixteen, kept)
