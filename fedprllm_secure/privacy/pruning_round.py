"""What each client keeps for one pruning round (one calibration), across every session.

A pruning round is one calibration of every client: its masks, or its statistics. Whatever the
server asks, in how many aggregations or sessions, a client must release each chunk of that
calibration at most once (two sums over different contributor sets that both contain it give it
away by difference) and, under randomized response, the same noisy bits however often a chunk is
read (m independent noisy copies of one bit are m-fold the budget). So per client and round:

* one `ContributionLedger`, handed to every `SimulatedSession` of the round (`ledgers`);
* one secret randomized-response key, drawn once from the client's `RandomSource`, which keys
  the flips by chunk name only (`randomized_response.randomized_provider`).

A new calibration is a new round: new ledgers, new keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from ..randomness import RandomSource
from ..secure_sum.api import ChunkSpec, ClientId, InputProvider
from ..secure_sum.ledger import ContributionLedger
from .randomized_response import draw_rr_key
from .settings import PrivacySettings


class PruningRound:
    """Every client's ledger and randomized-response key for one calibration."""

    def __init__(
        self, clients: Iterable[ClientId], privacy: PrivacySettings, source: RandomSource
    ) -> None:
        self.privacy = privacy
        self.clients = tuple(clients)
        self.ledgers = {c: ContributionLedger() for c in self.clients}
        self._rr_keys = {c: draw_rr_key(source.child(f"rr-key/client-{c}")) for c in self.clients}

    def providers(
        self, read: Callable[[ClientId, ChunkSpec], np.ndarray]
    ) -> dict[ClientId, InputProvider]:
        """Each client's provider of `read(client, chunk)`, randomized under --rr-epsilon with
        the client's key of this round (the session guards it with `ledgers`)."""

        def plain(client: ClientId) -> InputProvider:
            return lambda _index, chunk: read(client, chunk)

        return {c: self.privacy.wrap_provider(plain(c), self._rr_keys[c]) for c in self.clients}
