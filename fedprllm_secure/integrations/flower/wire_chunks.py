"""Consecutive chunks of an aggregation travel as one protocol chunk on Flower.

The pipeline names one chunk per layer or statistic (SmolLM2: 210 per aggregation); each is one
masked-input round under `additive`, one Grid exchange, and on a deployment one ClientApp process
per node. `group(spec, entries)` joins consecutive chunks into wire chunks of about `entries`
entries, named "group:" + JSON [[name, length], ...] so that a node can split a request into the
pipeline's chunks itself (`parts`), read each from its node (each recorded in its ledgers under
its own name) and join them. `split` turns the sums of the wire chunks back into the pipeline's.
The grouping is the server's choice: it changes no value, and each pipeline chunk is still
released at most once. Pure: no flwr import.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np

from ...errors import ProtocolError
from ...secure_sum.api import AggregateResult, AggregationSpec, ChunkSpec

PREFIX = "group:"


def group(spec: AggregationSpec, entries: int) -> AggregationSpec:
    """`spec` with consecutive chunks joined into chunks of about `entries` entries."""
    chunks: list[ChunkSpec] = []
    members: list[ChunkSpec] = []
    offset = size = 0

    def close() -> None:
        nonlocal members, offset, size
        if members:
            name = PREFIX + json.dumps([[c.name, c.length] for c in members])
            chunks.append(ChunkSpec(name, size, offset))
            offset, members, size = offset + size, [], 0

    for chunk in spec.chunks:
        members.append(chunk)
        size += chunk.length
        if size >= entries:
            close()
    close()
    return AggregationSpec(spec.index, tuple(chunks), spec.bound)


def parts(chunk: ChunkSpec) -> list[ChunkSpec]:
    """The pipeline chunks of a wire chunk (itself if it is not a group)."""
    if not chunk.name.startswith(PREFIX):
        return [chunk]
    try:
        members = [(str(n), int(k)) for n, k in json.loads(chunk.name[len(PREFIX) :])]
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"malformed chunk group {chunk.name[:80]!r}") from exc
    if sum(k for _, k in members) != chunk.length or any(k < 0 for _, k in members):
        raise ProtocolError("a chunk group's lengths do not add up to its length")
    result, offset = [], chunk.offset
    for name, length in members:
        result.append(ChunkSpec(name, length, offset))
        offset += length
    return result


def joined(read: Callable[[int, ChunkSpec], np.ndarray]) -> Callable[[int, ChunkSpec], np.ndarray]:
    """An InputProvider for wire chunks over one for the pipeline's chunks."""

    def provider(index: int, chunk: ChunkSpec) -> np.ndarray:
        values = [np.asarray(read(index, part)).reshape(-1) for part in parts(chunk)]
        return np.concatenate(values) if values else np.zeros(0, dtype=np.uint8)

    return provider


def split(result: AggregateResult, spec: AggregationSpec) -> AggregateResult:
    """The result of the grouped aggregation as the result of `spec`."""
    sums: dict[str, np.ndarray] = {}
    for name, total in result.sums.items():
        position = 0
        for part in parts(ChunkSpec(name, int(total.size), 0)):
            sums[part.name] = total[position : position + part.length]
            position += part.length
    return AggregateResult(spec=spec, sums=sums, contributors=result.contributors)
