"""A client's record of which chunks it has already released: each at most once per pruning round.

Two sums over different contributor sets that both contain the same client input reveal, by
difference, that input (the server aggregates a chunk once with everyone and once without the
victim). No protocol can stop this inside one aggregation; the client stops it by never releasing
one chunk of its calibration to two aggregations, in this session or any other.

A ledger belongs to one pruning round of one client (one calibration: its masks or statistics).
`guard(provider, binding)` wraps the client's InputProvider for a session whose parties agreed on
`binding` (`api.config_digest`): the first read of a chunk name records (binding, aggregation);
a read of the same name under another session or aggregation raises ProtocolError, so the
protocol client aborts and submits nothing. A re-read within the same aggregation is allowed (it
returns what the provider returns, which the caller keeps deterministic). Flower nodes save the
ledger with `to_bytes` in their node state, so a new session cannot reset it.
"""

from __future__ import annotations

from ..errors import ProtocolError
from .api import ChunkSpec, InputProvider, decode_state, encode_state

_STATE_NAME = "contribution-ledger"


class ContributionLedger:
    """Chunk name -> (session binding, aggregation index) of its one release."""

    def __init__(self, released: dict[str, tuple[bytes, int]] | None = None) -> None:
        self._released: dict[str, tuple[bytes, int]] = dict(released or {})

    def record(self, binding: bytes, aggregation: int, chunk: ChunkSpec) -> None:
        """Note that `chunk` goes to (binding, aggregation); ProtocolError if it went elsewhere."""
        where = (bytes(binding), int(aggregation))
        earlier = self._released.setdefault(chunk.name, where)
        if earlier != where:
            raise ProtocolError(
                f"chunk {chunk.name!r} was already contributed to another aggregation of this "
                "pruning round; contributing it again would let two sums be subtracted"
            )

    def released(self, name: str) -> bool:
        return name in self._released

    def guard(self, provider: InputProvider, binding: bytes) -> InputProvider:
        """`provider`, refusing any chunk already released to another (session, aggregation)."""

        def guarded(index: int, chunk: ChunkSpec):  # type: ignore[no-untyped-def]
            self.record(binding, index, chunk)
            return provider(index, chunk)

        return guarded

    def to_bytes(self) -> bytes:
        return encode_state(_STATE_NAME, {"released": dict(self._released)})

    @classmethod
    def from_bytes(cls, data: bytes) -> ContributionLedger:
        fields = decode_state(_STATE_NAME, data)
        released = fields.get("released")
        if not isinstance(released, dict) or not all(
            isinstance(name, str)
            and isinstance(where, tuple)
            and len(where) == 2
            and isinstance(where[0], bytes)
            and isinstance(where[1], int)
            for name, where in released.items()
        ):
            raise ProtocolError("saved contribution ledger is corrupt")
        return cls(released)
