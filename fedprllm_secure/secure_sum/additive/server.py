"""The server state machine of `additive`.

States: idle -> advertise-keys (first aggregation only) -> share-keys -> masked-input (one step
per chunk) -> consistency-check -> unmasking -> completed -> (begin) share-keys -> ...; any error
-> aborted. In each round-state the only acceptable reply type is that round's client message;
anything else aborts. Memory: one running masked sum per chunk, in the packed words of
`layout.WordLayout` (O(d) words, never O(d x clients)).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ...errors import ProtocolError
from ...randomness import RandomSource
from ..api import (
    AggregateResult,
    AggregationSpec,
    ClientId,
    ServerProtocol,
    SessionConfig,
    config_digest,
    sum_dtype,
)
from ..packing import unpack_uint
from . import primitives as P
from .graph import harary
from .layout import WordLayout
from .messages import (
    AdvertiseKeys,
    AdvertiseRequest,
    ConsistencyRequest,
    ConsistencySignature,
    MaskedInput,
    MaskedInputRequest,
    Sealed,
    ShareKeys,
    ShareKeysRequest,
    Signature,
    SignedKeys,
    SignedMaskKey,
    SignedView,
    UnmaskRequest,
    UnmaskShares,
)
from .params import read_params
from .shamir import combine
from .transcript import (
    add_masks,
    advertise_payload,
    graph_seed,
    mask_key_payload,
    survivors_payload,
    view_payload,
)

ROUND_STATES = ("advertise-keys", "share-keys", "masked-input", "consistency-check", "unmasking")


class AdditiveServer(ServerProtocol):
    def __init__(self, config: SessionConfig, rng: RandomSource) -> None:
        self.config = config
        self.binding = config_digest(config)  # bound into every signature and derivation
        self.params = read_params(config)
        self.rng = rng
        self._state = "idle"
        self.alive: set[int] = set(self.params.roster)
        self.dead: set[int] = set()
        self.keys: dict[int, SignedKeys] = {}
        self.graph: dict[int, frozenset[int]] = {}
        self.last_index: int | None = None
        self._clear()

    def _clear(self) -> None:
        self.spec: AggregationSpec | None = None
        self.u1: set[int] = set()
        self.u2: set[int] = set()
        self.u3: set[int] = set()
        self.commitments: dict[int, bytes] = {}
        self.mask_keys: dict[int, SignedMaskKey] = {}  # this aggregation's, by owner
        self.sealed: dict[int, list[Sealed]] = {}
        self.sums: dict[str, np.ndarray] = {}
        self.chunk_index = 0
        self.signatures: dict[int, Signature] = {}
        self.views: dict[int, SignedView] = {}  # each survivor's signed masking view

    @property
    def state(self) -> str:
        return self._state

    def _abort(self, reason: str) -> ProtocolError:
        self._state = "aborted"
        self._clear()
        return ProtocolError(reason)

    @property
    def layout(self) -> WordLayout:
        """How this aggregation's entries are packed into masked words (protocols/additive.md 2)."""
        assert self.spec is not None
        return WordLayout.for_max_sum(self.spec.bound * self.params.n)

    def holders(self, client: int) -> frozenset[int]:
        return self.graph[client] | {client}

    def begin(self, spec: AggregationSpec) -> dict[ClientId, Any]:
        if self._state not in ("idle", "completed"):
            raise self._abort(f"cannot begin an aggregation in state {self._state!r}")
        if self.last_index is not None and spec.index <= self.last_index:
            raise self._abort("aggregation indices must increase within a session")
        if spec.index > P.MAX_AGGREGATION or not spec.chunks:
            raise self._abort("aggregation index out of range or nothing to aggregate")
        try:
            WordLayout.for_max_sum(spec.bound * self.params.n)  # refuses sums wider than 64 bits
        except ProtocolError as exc:
            raise self._abort(str(exc)) from exc
        self._clear()
        self.spec = spec
        self.last_index = spec.index
        sid = self.config.session_id
        if not self.keys:
            seed = graph_seed(self.binding)
            self.graph = harary(self.params.roster, self.params.neighbors, seed)
            self._state = "advertise-keys"
            request = AdvertiseRequest(sid, spec.index, seed)
            return {c: request for c in sorted(self.alive)}
        self.u1 = set(self.alive)
        try:
            return self._share_requests()
        except ProtocolError as exc:
            raise self._abort(str(exc)) from exc

    def handle(self, replies: dict[ClientId, Any]) -> dict[ClientId, Any] | AggregateResult:
        if self._state not in ROUND_STATES:
            raise self._abort(f"no round is running (state {self._state!r})")
        expected = _EXPECTED[self._state]
        try:
            for client, reply in replies.items():
                fields: Any = reply  # checked against `expected` just below
                if client not in self._asked():
                    raise ProtocolError(f"reply from client {client}, who was not asked")
                if type(reply) is not expected:
                    raise ProtocolError(
                        f"client {client} sent {type(reply).__name__} in state {self._state!r}"
                    )
                if fields.session_id != self.config.session_id:
                    raise ProtocolError(f"client {client} answered for another session")
                index = self.spec.index if self.spec is not None else None
                if self._state != "advertise-keys" and fields.aggregation != index:
                    raise ProtocolError(f"client {client} answered for another aggregation")
            return _STEPS[self._state](self, replies)
        except ProtocolError as exc:
            raise self._abort(str(exc)) from exc

    def _asked(self) -> set[int]:
        return {
            "advertise-keys": self.alive,
            "share-keys": self.u1,
            "masked-input": self.u2 if self.chunk_index == 0 else self.u3,
            "consistency-check": self.u3,
            "unmasking": set(self.signatures),
        }[self._state]

    def _need(self, count: int, what: str, whole_list: bool = True) -> None:
        """Abort early when the aggregation can no longer produce a list clients accept
        (`whole_list`: the count is of a survivor list or its signers, not of share holders)."""
        p = self.params
        if count < p.threshold:
            raise ProtocolError(f"only {count} clients {what}, below the threshold {p.threshold}")
        if not whole_list:
            return
        if count < p.quorum:
            raise ProtocolError(f"only {count} clients {what}, below the quorum {p.quorum}")
        if count < p.min_contributors:
            raise ProtocolError(
                f"only {count} clients {what}, below the minimum cohort of {p.min_contributors}"
            )

    # --- rounds -------------------------------------------------------------------------------

    def _on_advertise(self, replies: dict[int, AdvertiseKeys]) -> dict[ClientId, Any]:
        seen: set[bytes] = set()
        for client, reply in replies.items():
            k = reply.keys
            payload = advertise_payload(self.binding, client, k.cipher_public)
            if k.owner != client or not P.verify(
                self.params.identity_keys[client], k.signature, payload
            ):
                raise ProtocolError(f"client {client} advertised keys with a bad signature")
            if len(k.cipher_public) != 32:
                raise ProtocolError(f"client {client} advertised a malformed key")
            if k.cipher_public in seen:
                raise ProtocolError(f"client {client} advertised another client's key")
            seen.add(k.cipher_public)
            self.keys[client] = k
        self.u1 = set(replies)
        self.alive = set(self.u1)
        self._need(len(self.u1), "advertised keys")
        return self._share_requests()

    def _share_requests(self) -> dict[ClientId, ShareKeysRequest]:
        assert self.spec is not None
        self._need(len(self.u1), "are alive")
        self._state = "share-keys"
        out = {}
        for c in sorted(self.u1):
            keys = tuple(self.keys[v] for v in sorted(self.holders(c) & self.u1))
            out[c] = ShareKeysRequest(self.config.session_id, self.spec.index, self.spec, keys)
        return out

    def _on_share(self, replies: dict[int, ShareKeys]) -> dict[ClientId, Any]:
        self.sealed = {c: [] for c in replies}
        for client, reply in sorted(replies.items()):
            if reply.sender != client or len(reply.commitment) != 32:
                raise ProtocolError(f"client {client} sent a malformed share-keys message")
            allowed = self.holders(client) & self.u1 - {client}
            recipients = [s.recipient for s in reply.sealed]
            if len(set(recipients)) != len(recipients) or set(recipients) != allowed:
                raise ProtocolError(f"client {client} did not send one share to each holder")
            if any(s.sender != client for s in reply.sealed):
                raise ProtocolError(f"client {client} relayed shares in another's name")
            self._accept_mask_key(client, reply.mask_key)
            self.commitments[client] = reply.commitment
            for s in reply.sealed:
                if s.recipient in self.sealed:
                    self.sealed[s.recipient].append(s)
        self.u2 = set(replies)
        self.alive = set(self.u2)
        self._need(len(self.u2), "shared keys")
        self._state = "masked-input"
        self.chunk_index = 0
        self.sums = {}
        return self._chunk_requests()

    def _accept_mask_key(self, client: int, key: SignedMaskKey) -> None:
        assert self.spec is not None
        payload = mask_key_payload(self.binding, self.spec.index, client, key.mask_public)
        if key.owner != client or len(key.mask_public) != 32:
            raise ProtocolError(f"client {client} sent a malformed mask key")
        if not P.verify(self.params.identity_keys[client], key.signature, payload):
            raise ProtocolError(f"client {client} sent a mask key with a bad signature")
        if any(k.mask_public == key.mask_public for k in self.mask_keys.values()):
            raise ProtocolError(f"client {client} reuses another client's mask key")
        self.mask_keys[client] = key

    def _chunk_requests(self) -> dict[ClientId, MaskedInputRequest]:
        assert self.spec is not None
        sid, index = self.config.session_id, self.spec.index
        if self.chunk_index == 0:
            out = {}
            for c in sorted(self.u2):
                sealed = tuple(sorted(self.sealed[c], key=lambda s: s.sender))
                keys = tuple(self.mask_keys[s.sender] for s in sealed)
                out[c] = MaskedInputRequest(sid, index, 0, keys, sealed)
            return out
        request = MaskedInputRequest(sid, index, self.chunk_index, (), ())
        return {c: request for c in sorted(self.u3)}

    def _on_masked(self, replies: dict[int, MaskedInput]) -> dict[ClientId, Any]:
        assert self.spec is not None
        if self.chunk_index == 0:
            self.u3 = set(replies)
            self.sealed = {}
            self._need(len(self.u3), "sent masked input")
        elif set(replies) != self.u3:
            missing = sorted(self.u3 - set(replies))
            raise ProtocolError(
                f"clients {missing} stopped in the middle of the masked-input stream; "
                "their earlier chunks cannot be separated from the sum"
            )
        chunk = self.spec.chunks[self.chunk_index]
        layout = self.layout
        words = layout.words(chunk.length)
        total = np.zeros(words, dtype=layout.dtype)
        for client, reply in sorted(replies.items()):
            if reply.sender != client or reply.chunk_index != self.chunk_index:
                raise ProtocolError(f"client {client} sent the wrong chunk")
            if self.chunk_index == 0:
                self._accept_view(client, reply.view)
            elif reply.view:
                raise ProtocolError(f"client {client} sent a masking view after chunk 0")
            total += unpack_uint(reply.data, layout.bits, words).astype(layout.dtype, copy=False)
        self.sums[chunk.name] = total
        self.chunk_index += 1
        if self.chunk_index < len(self.spec.chunks):
            return self._chunk_requests()
        self._state = "consistency-check"
        request = ConsistencyRequest(
            self.config.session_id, self.spec.index, tuple(sorted(self.u3))
        )
        return {c: request for c in sorted(self.u3)}

    def _accept_view(self, client: int, views: tuple[SignedView, ...]) -> None:
        assert self.spec is not None
        if len(views) != 1 or views[0].owner != client:
            raise ProtocolError(f"client {client} sent no masking view with its first chunk")
        view = views[0]
        payload = view_payload(self.binding, self.spec.index, client, view.view)
        if not P.verify(self.params.identity_keys[client], view.signature, payload):
            raise ProtocolError(f"client {client} sent a masking view with a bad signature")
        self.views[client] = view

    def _on_consistency(self, replies: dict[int, ConsistencySignature]) -> dict[ClientId, Any]:
        assert self.spec is not None
        survivors = tuple(sorted(self.u3))
        payload = survivors_payload(self.binding, self.spec.index, survivors)
        for client, reply in replies.items():
            s = reply.signature
            if s.signer != client or not P.verify(
                self.params.identity_keys[client], s.signature, payload
            ):
                raise ProtocolError(f"client {client} sent a bad consistency signature")
            self.signatures[client] = s
        self._need(len(self.signatures), "signed the survivor list")
        self._state = "unmasking"
        dead = tuple(sorted(self.u2 - self.u3))
        signatures = tuple(self.signatures[c] for c in sorted(self.signatures))
        sid, index = self.config.session_id, self.spec.index
        return {
            c: UnmaskRequest(
                sid,
                index,
                survivors,
                dead,
                signatures,
                tuple(self.views[v] for v in sorted(self.graph[c] & self.u3)),
            )
            for c in sorted(self.signatures)
        }

    def _on_unmask(self, replies: dict[int, UnmaskShares]) -> AggregateResult:
        assert self.spec is not None
        dead = self.u2 - self.u3
        self_shares: dict[int, dict[int, bytes]] = {c: {} for c in self.u3}
        key_shares: dict[int, dict[int, bytes]] = {c: {} for c in dead}
        for client, reply in replies.items():
            if reply.sender != client:
                raise ProtocolError(f"client {client} sent shares in another's name")
            x = self.params.point(client)
            for shares, owners, into in (
                (reply.self_mask_shares, self.u3 & self.holders(client), self_shares),
                (reply.key_shares, dead & self.graph[client], key_shares),
            ):
                if sorted(s.owner for s in shares) != sorted(owners):
                    raise ProtocolError(f"client {client} sent shares for the wrong clients")
                for s in shares:
                    into[s.owner][x] = s.value
        self._need(len(replies), "sent their shares", whole_list=False)
        t = self.params.threshold
        seeds = {}
        for owner, held in self_shares.items():
            seed = combine(held, t)
            if (
                P.commitment(self.binding, self.spec.index, owner, seed)
                != (self.commitments[owner])
            ):
                raise ProtocolError(f"self-mask seed of client {owner} fails its commitment")
            seeds[owner] = seed
        pair_seeds: dict[int, dict[int, bytes]] = {u: {} for u in self.u3}
        for owner, held in key_shares.items():
            neighbours = self.graph[owner] & self.u3
            if not neighbours:
                continue
            private = P.X25519PrivateKey.from_private_bytes(combine(held, t))
            if P.public_bytes(private) != self.mask_keys[owner].mask_public:
                raise ProtocolError(f"recovered mask key of client {owner} is wrong")
            for u in neighbours:
                secret = P.agree(private, self.mask_keys[u].mask_public)
                seed = P.derive_key(secret, self.binding, P.LABEL_MASK_SEED, u, owner)
                pair_seeds[u][owner] = seed
        return self._finish(seeds, pair_seeds)

    def _finish(
        self, seeds: dict[int, bytes], pair_seeds: dict[int, dict[int, bytes]]
    ) -> AggregateResult:
        assert self.spec is not None
        spec, layout = self.spec, self.layout
        limit = spec.bound * len(self.u3)
        out_dtype = sum_dtype(spec.bound * self.params.n)
        sums = {}
        for chunk in spec.chunks:
            total = self.sums.pop(chunk.name)
            for u in sorted(self.u3):
                add_masks(
                    total, seeds[u], pair_seeds[u], u, spec.index, chunk.offset, layout.bits, -1
                )
            total &= layout.word_mask
            entries = layout.unpack(total, chunk.length)
            if entries.size and int(entries.max()) > limit:
                raise ProtocolError("unmasked sum exceeds its bound: a participant cheated")
            sums[chunk.name] = entries.astype(out_dtype)
        contributors = tuple(sorted(self.u3))
        self.dead |= self.u2 - self.u3
        self.alive = set(self.u3) - self.dead
        self._clear()
        self._state = "completed"
        return AggregateResult(spec=spec, sums=sums, contributors=contributors)


_EXPECTED: dict[str, type] = {
    "advertise-keys": AdvertiseKeys,
    "share-keys": ShareKeys,
    "masked-input": MaskedInput,
    "consistency-check": ConsistencySignature,
    "unmasking": UnmaskShares,
}
_STEPS: dict[str, Callable[[AdditiveServer, Any], Any]] = {
    "advertise-keys": AdditiveServer._on_advertise,
    "share-keys": AdditiveServer._on_share,
    "masked-input": AdditiveServer._on_masked,
    "consistency-check": AdditiveServer._on_consistency,
    "unmasking": AdditiveServer._on_unmask,
}
