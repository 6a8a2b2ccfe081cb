"""The server states of `additive` and the outcomes of its transitions (protocols/additive.md 5).

One frozen type per round, holding exactly what that round needs: what the server keeps for the
whole session (`Roster`), what it gathered in share-keys (`Collected`), and the round's own fields.
`ROUND` is the name `AdditiveServer.state` reports.

    Idle --begin--> Advertising --advertise-keys--> SharingKeys
    Completed --begin--> SharingKeys --share-keys--> FirstChunk
    FirstChunk --masked-input 0--> Summing (or Checking after the last chunk)
    Summing --masked-input j--> Summing (or Checking after the last chunk)
    Checking --consistency-signature--> Unmasking --unmask-shares--> Completed
    any state --a reply or begin it cannot accept--> Aborted (final)

A transition ends in one of three outcomes: `Send` (the next messages), `Finished` (the sum), or
`AbortAggregation` (nothing is output; every client is told). `DropClient` is not an outcome of
the aggregation: it leaves one client out (it sent an `Abort`: it refused), exactly as if it had
stopped answering, and the aggregation goes on if enough clients remain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..api import AggregateResult, AggregationSpec, ClientId
from ..messages import Abort
from .messages import (
    ADVERTISE,
    CONSISTENCY,
    MASKED,
    SHARE,
    UNMASK,
    Signature,
    SignedKeys,
    SignedMaskKey,
    SignedView,
)

IDLE = "idle"
COMPLETED = "completed"
ABORTED = "aborted"


@dataclass(frozen=True)
class Roster:
    """What the server keeps for the whole session once the clients advertised their keys."""

    graph: Mapping[int, frozenset[int]]
    keys: Mapping[int, SignedKeys]  # each client's signed session key
    alive: frozenset[int]  # the clients the next aggregation asks
    dead: frozenset[int]  # clients whose mask key was revealed: never asked again
    left: frozenset[int]  # clients that refused (sent an Abort): never asked again

    def holders(self, client: int) -> frozenset[int]:
        return self.graph[client] | {client}


@dataclass(frozen=True)
class Collected:
    """What share-keys gathered for the running aggregation."""

    spec: AggregationSpec
    u2: frozenset[int]  # the clients that shared keys
    commitments: Mapping[int, bytes]  # to each client's self-mask seed
    mask_keys: Mapping[int, SignedMaskKey]  # each client's signed mask key


@dataclass(frozen=True)
class Idle:
    ROUND: ClassVar[str] = IDLE


@dataclass(frozen=True)
class Advertising:
    ROUND: ClassVar[str] = ADVERTISE
    roster: Roster
    spec: AggregationSpec


@dataclass(frozen=True)
class SharingKeys:
    ROUND: ClassVar[str] = SHARE
    roster: Roster
    spec: AggregationSpec
    u1: frozenset[int]  # the clients asked


@dataclass(frozen=True)
class FirstChunk:
    """Chunk 0 asked of every client in u2, with the shares addressed to it."""

    ROUND: ClassVar[str] = MASKED
    roster: Roster
    collected: Collected


@dataclass(frozen=True)
class Summing:
    """Chunk `chunk_index` (> 0) asked of u3; one running sum per chunk so far."""

    ROUND: ClassVar[str] = MASKED
    roster: Roster
    collected: Collected
    u3: frozenset[int]  # the clients that sent chunk 0
    views: Mapping[int, SignedView]
    sums: Mapping[str, np.ndarray]  # packed words, wrapping
    chunk_index: int


@dataclass(frozen=True)
class Checking:
    ROUND: ClassVar[str] = CONSISTENCY
    roster: Roster
    collected: Collected
    u3: frozenset[int]
    views: Mapping[int, SignedView]
    sums: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Unmasking:
    ROUND: ClassVar[str] = UNMASK
    roster: Roster
    collected: Collected
    u3: frozenset[int]
    sums: Mapping[str, np.ndarray]
    signatures: Mapping[int, Signature]  # the signers are the clients asked for shares


@dataclass(frozen=True)
class Completed:
    ROUND: ClassVar[str] = COMPLETED
    roster: Roster
    last: int  # the index of the last aggregation: the next must exceed it


@dataclass(frozen=True)
class Aborted:
    ROUND: ClassVar[str] = ABORTED
    reason: str


ServerState = (
    Idle
    | Advertising
    | SharingKeys
    | FirstChunk
    | Summing
    | Checking
    | Unmasking
    | Completed
    | Aborted
)
RoundState = Advertising | SharingKeys | FirstChunk | Summing | Checking | Unmasking
ROUND_TYPES = (Advertising, SharingKeys, FirstChunk, Summing, Checking, Unmasking)


# --- outcomes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DropClient:
    """One client left out of the aggregation (and the session): it refused with an `Abort`."""

    client: ClientId
    reason: str


@dataclass(frozen=True)
class Send:
    """The next round's messages, by recipient."""

    messages: Mapping[ClientId, Any]
    dropped: tuple[DropClient, ...] = ()


@dataclass(frozen=True)
class Finished:
    result: AggregateResult
    dropped: tuple[DropClient, ...] = ()


@dataclass(frozen=True)
class AbortAggregation:
    """The aggregation ends without a sum; `notices` tells every client it was talking to."""

    reason: str
    notices: Mapping[ClientId, Abort]


Outcome = Send | Finished | AbortAggregation
