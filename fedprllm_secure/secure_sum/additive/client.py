"""The client state machine of `additive` (one state per round, plus completed and aborted).

Transitions (anything else aborts with ProtocolError and leaves the client in "aborted"):

    advertise-keys    + AdvertiseRequest   -> share-keys         (once per session)
    share-keys        + ShareKeysRequest   -> masked-input
    completed         + ShareKeysRequest   -> masked-input       (next aggregation)
    masked-input      + MaskedInputRequest -> masked-input | consistency-check (after last chunk)
    consistency-check + ConsistencyRequest -> unmasking
    unmasking         + UnmaskRequest      -> completed
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...errors import ProtocolError
from ...randomness import RandomSource
from ..api import (
    AggregationSpec,
    ClientId,
    ClientProtocol,
    InputProvider,
    SessionConfig,
    config_digest,
    decode_state,
    encode_state,
    read_checked_input,
)
from ..packing import pack_uint
from . import primitives as P
from .graph import connected, harary
from .layout import WordLayout
from .messages import (
    AdvertiseKeys,
    AdvertiseRequest,
    ConsistencyRequest,
    ConsistencySignature,
    MaskedInput,
    MaskedInputRequest,
    Sealed,
    Share,
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
from .shamir import split
from .transcript import (
    add_masks,
    advertise_payload,
    graph_seed,
    mask_key_payload,
    parse_share_plaintext,
    share_plaintext,
    survivors_payload,
    view_payload,
)


def _check_ids(ids: tuple[int, ...], what: str, roster: tuple[int, ...]) -> None:
    """Refuse unsorted, duplicate or unknown ids (the canonical form is strictly ascending)."""
    if any(a >= b for a, b in zip(ids, ids[1:], strict=False)):
        raise ProtocolError(f"{what} is not a strictly ascending list of ids")
    unknown = set(ids) - set(roster)
    if unknown:
        raise ProtocolError(f"{what} names clients not on the roster: {sorted(unknown)}")


class AdditiveClient(ClientProtocol):
    """One client of one session. Memory is O(one chunk) plus O(neighbours) keys and shares."""

    def __init__(
        self,
        config: SessionConfig,
        client_id: ClientId,
        rng: RandomSource,
        inputs: InputProvider,
        identity: bytes | None,
    ) -> None:
        self.params = read_params(config)
        if client_id not in self.params.roster:
            raise ProtocolError(f"client {client_id} is not on the roster")
        if identity is None or len(identity) != 32:
            raise ProtocolError(f"client {client_id} has no 32-byte identity key")
        self.config = config
        # what every signature, key derivation and commitment binds (protocols/additive.md 1)
        self.binding = config_digest(config)
        self.client_id = client_id
        self.rng = rng
        self.inputs = inputs
        self.identity = P.Ed25519PrivateKey.from_private_bytes(identity)
        if P.public_bytes(self.identity) != self.params.identity_keys[client_id]:
            raise ProtocolError(f"client {client_id}: identity key does not match the roster")
        self._state = "advertise-keys"
        self.first_aggregation: int | None = None
        self.last_aggregation: int | None = None
        self.graph: dict[int, frozenset[int]] = {}
        self.peer_keys: dict[int, SignedKeys] = {}
        self.dead: set[int] = set()  # peers whose mask key was revealed: never again
        self.share_keys: dict[int, bytes] = {}  # AES-GCM key per peer, one per session (3.2)
        self._reset_aggregation()

    def _reset_aggregation(self) -> None:
        self.spec: AggregationSpec | None = None
        self.aggregation = -1
        self.self_seed: bytes | None = None
        # fresh per aggregation, so revealing it (if this client drops) exposes no other one
        self.mask_key: P.X25519PrivateKey | None = None
        self.self_shares: dict[int, bytes] = {}
        self.key_shares: dict[int, bytes] = {}  # mask-key shares this client holds, by owner
        self.peer_masks: dict[int, bytes] = {}  # peers' mask public keys, this aggregation
        self.pair_seeds: dict[int, bytes] = {}
        self.listed: set[int] = set()
        self.u2: set[int] = set()
        self.next_chunk = 0
        self.signed_survivors: tuple[int, ...] | None = None

    @property
    def state(self) -> str:
        return self._state

    # --- saving and restoring (a client process per message, e.g. Flower) ---------------------

    def to_state(self) -> bytes:
        """All of this client's state, secrets included: keep the bytes on the client's node."""

        def keys(k: SignedKeys) -> tuple[int, bytes, bytes]:
            return (k.owner, k.cipher_public, k.signature)

        cipher_key = getattr(self, "cipher_key", None)
        own_keys = getattr(self, "own_keys", None)
        fields = {
            "config": self.config,
            "client_id": self.client_id,
            "identity": self.identity.private_bytes_raw(),
            "state": self._state,
            "first_aggregation": self.first_aggregation,
            "last_aggregation": self.last_aggregation,
            "graph": self.graph,
            "peer_keys": {c: keys(k) for c, k in self.peer_keys.items()},
            "dead": self.dead,
            "cipher_key": cipher_key.private_bytes_raw() if cipher_key is not None else None,
            "share_keys": self.share_keys,
            "own_keys": keys(own_keys) if own_keys is not None else None,
            "spec": self.spec,
            "aggregation": self.aggregation,
            "self_seed": self.self_seed,
            "mask_key": self.mask_key.private_bytes_raw() if self.mask_key is not None else None,
            "self_shares": self.self_shares,
            "key_shares": self.key_shares,
            "peer_masks": self.peer_masks,
            "pair_seeds": self.pair_seeds,
            "listed": self.listed,
            "u2": self.u2,
            "next_chunk": self.next_chunk,
            "signed_survivors": self.signed_survivors,
        }
        return encode_state("additive", fields)

    @classmethod
    def from_state(cls, data: bytes, inputs: InputProvider, rng: RandomSource) -> AdditiveClient:
        """The client `to_state` saved; it draws any fresh randomness from `rng`."""
        f = decode_state("additive", data)
        try:
            client = cls(f["config"], f["client_id"], rng, inputs, f["identity"])
            client._state = str(f["state"])
            client.first_aggregation = f["first_aggregation"]
            client.last_aggregation = f["last_aggregation"]
            client.graph = {int(c): frozenset(peers) for c, peers in f["graph"].items()}
            client.peer_keys = {int(c): SignedKeys(*k) for c, k in f["peer_keys"].items()}
            client.dead = set(f["dead"])
            client.share_keys = dict(f["share_keys"])
            if f["cipher_key"] is not None:
                client.cipher_key = P.X25519PrivateKey.from_private_bytes(f["cipher_key"])
            if f["own_keys"] is not None:
                client.own_keys = SignedKeys(*f["own_keys"])
            client.spec = f["spec"]
            client.aggregation = int(f["aggregation"])
            client.self_seed = f["self_seed"]
            if f["mask_key"] is not None:
                client.mask_key = P.X25519PrivateKey.from_private_bytes(f["mask_key"])
            client.self_shares = dict(f["self_shares"])
            client.key_shares = dict(f["key_shares"])
            client.peer_masks = dict(f["peer_masks"])
            client.pair_seeds = dict(f["pair_seeds"])
            client.listed = set(f["listed"])
            client.u2 = set(f["u2"])
            client.next_chunk = int(f["next_chunk"])
            survivors = f["signed_survivors"]
            client.signed_survivors = tuple(survivors) if survivors is not None else None
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"saved additive client state is corrupt: {exc}") from exc
        return client

    @property
    def layout(self) -> WordLayout:
        """How this aggregation's entries are packed into masked words (protocols/additive.md 2)."""
        assert self.spec is not None
        return WordLayout.for_max_sum(self.spec.bound * self.params.n)

    @property
    def holders(self) -> frozenset[int]:
        return self.graph[self.client_id] | {self.client_id}

    def handle(self, message: Any) -> Any:
        step = _TRANSITIONS.get((self._state, type(message)))
        try:
            if step is None:
                raise ProtocolError(
                    f"client {self.client_id}: {type(message).__name__} is not expected in "
                    f"state {self._state!r}"
                )
            if getattr(message, "session_id", None) != self.config.session_id:
                raise ProtocolError(f"client {self.client_id}: message for another session")
            return step(self, message)
        except ProtocolError:
            self._state = "aborted"
            self._reset_aggregation()
            raise

    # --- rounds -------------------------------------------------------------------------------

    def _advertise(self, msg: AdvertiseRequest) -> AdvertiseKeys:
        if not 0 <= msg.aggregation <= P.MAX_AGGREGATION or len(msg.graph_seed) != 32:
            raise ProtocolError("malformed advertise request")
        if msg.graph_seed != graph_seed(self.binding):
            raise ProtocolError(
                "the graph seed is not the session's (derived from its config digest): clients "
                "on different graphs could have one sum split into partial sums"
            )
        self.graph = harary(self.params.roster, self.params.neighbors, msg.graph_seed)
        self.first_aggregation = msg.aggregation
        self.cipher_key = P.new_x25519(self.rng)
        cpk = P.public_bytes(self.cipher_key)
        signature = P.sign(self.identity, advertise_payload(self.binding, self.client_id, cpk))
        self.own_keys = SignedKeys(self.client_id, cpk, signature)
        self._state = "share-keys"
        return AdvertiseKeys(self.config.session_id, self.own_keys)

    def _check_keys(self, keys: tuple[SignedKeys, ...], first: bool) -> set[int]:
        owners = tuple(k.owner for k in keys)
        _check_ids(owners, "the key list", self.params.roster)
        if not set(owners) <= self.holders:
            raise ProtocolError("the key list names clients that are not my neighbours")
        if set(owners) & self.dead:
            raise ProtocolError("the key list names a client already declared dead")
        if self.client_id not in owners:
            raise ProtocolError("the key list leaves me out")
        if len(owners) < self.params.threshold:
            raise ProtocolError(
                f"only {len(owners)} holders are live, below the threshold {self.params.threshold}"
            )
        sid = self.binding
        for k in keys:
            if k.owner == self.client_id:
                if k != self.own_keys:
                    raise ProtocolError("the key list alters my own keys")
                continue
            if first:
                payload = advertise_payload(sid, k.owner, k.cipher_public)
                if not P.verify(self.params.identity_keys[k.owner], k.signature, payload):
                    raise ProtocolError(f"bad signature on the keys of client {k.owner}")
                if k.cipher_public == self.own_keys.cipher_public:
                    raise ProtocolError(f"client {k.owner} advertises my own key")
                self.peer_keys[k.owner] = k
            elif self.peer_keys.get(k.owner) != k:
                raise ProtocolError(f"keys of client {k.owner} changed within the session")
        return set(owners)

    def _share(self, msg: ShareKeysRequest) -> ShareKeys:
        first = self._state == "share-keys"
        if first and msg.aggregation != self.first_aggregation:
            raise ProtocolError("share-keys request for another aggregation than advertised")
        if not first and (
            self.last_aggregation is None
            or not self.last_aggregation < msg.aggregation <= P.MAX_AGGREGATION
        ):
            raise ProtocolError("aggregation index is not fresh (replay?)")
        spec = msg.spec
        if spec.index != msg.aggregation or not spec.chunks:
            raise ProtocolError("aggregation spec does not match the request")
        WordLayout.for_max_sum(spec.bound * self.params.n)  # refuses sums wider than 64 bits
        listed = self._check_keys(msg.keys, first)
        self._reset_aggregation()
        self.spec, self.aggregation, self.listed = spec, msg.aggregation, listed
        points = {self.params.point(c): c for c in listed}
        self.self_seed = self.rng.random_bytes(32)
        self.mask_key = P.new_x25519(self.rng)
        t = self.params.threshold
        self_shares = split(self.self_seed, t, sorted(points), self.rng)
        key_shares = split(self.mask_key.private_bytes_raw(), t, sorted(points), self.rng)
        sid, me = self.binding, self.client_id
        sealed = []
        for x, peer in sorted(points.items(), key=lambda item: item[1]):
            if peer == me:
                self.self_shares[me], self.key_shares[me] = self_shares[x], key_shares[x]
                continue
            key = self._share_key(peer)
            plain = share_plaintext(self_shares[x], key_shares[x])
            sealed.append(Sealed(me, peer, P.seal(key, sid, msg.aggregation, me, peer, plain)))
        commitment = P.commitment(sid, msg.aggregation, me, self.self_seed)
        mpk = P.public_bytes(self.mask_key)
        signature = P.sign(self.identity, mask_key_payload(sid, msg.aggregation, me, mpk))
        self._state = "masked-input"
        return ShareKeys(
            self.config.session_id,
            msg.aggregation,
            me,
            SignedMaskKey(me, mpk, signature),
            commitment,
            tuple(sealed),
        )

    def _share_key(self, peer: int) -> bytes:
        """K_uv of the session, computed once (sealing and opening use the same key)."""
        if peer not in self.share_keys:
            secret = P.agree(self.cipher_key, self.peer_keys[peer].cipher_public)
            self.share_keys[peer] = P.derive_key(
                secret, self.binding, P.LABEL_SHARE_KEY, self.client_id, peer
            )
        return self.share_keys[peer]

    def _pair_seed(self, peer: int) -> bytes:
        if peer not in self.pair_seeds:
            assert self.mask_key is not None
            secret = P.agree(self.mask_key, self.peer_masks[peer])
            self.pair_seeds[peer] = P.derive_key(
                secret, self.binding, P.LABEL_MASK_SEED, self.client_id, peer
            )
        return self.pair_seeds[peer]

    def _receive_shares(
        self, mask_keys: tuple[SignedMaskKey, ...], sealed: tuple[Sealed, ...]
    ) -> None:
        senders = tuple(s.sender for s in sealed)
        _check_ids(senders, "the relayed shares", self.params.roster)
        if not set(senders) <= self.listed - {self.client_id}:
            raise ProtocolError("relayed shares come from clients outside my key list")
        if tuple(k.owner for k in mask_keys) != senders:
            raise ProtocolError("relayed mask keys do not match the relayed shares")
        assert self.mask_key is not None
        own_mask = P.public_bytes(self.mask_key)
        for k in mask_keys:
            payload = mask_key_payload(self.binding, self.aggregation, k.owner, k.mask_public)
            if not P.verify(self.params.identity_keys[k.owner], k.signature, payload):
                raise ProtocolError(f"bad signature on the mask key of client {k.owner}")
            if k.mask_public == own_mask:
                raise ProtocolError(f"client {k.owner} reuses my mask key")
            self.peer_masks[k.owner] = k.mask_public
        for s in sealed:
            if s.recipient != self.client_id:
                raise ProtocolError("a relayed share is addressed to another client")
            plain = P.open_sealed(
                self._share_key(s.sender),
                self.binding,
                self.aggregation,
                s.sender,
                self.client_id,
                s.ciphertext,
            )
            self.self_shares[s.sender], self.key_shares[s.sender] = parse_share_plaintext(plain)
        self.u2 = set(senders) | {self.client_id}
        if len(self.u2) < self.params.threshold:
            raise ProtocolError(f"only {len(self.u2)} holders shared keys, below the threshold")

    def _masked(self, msg: MaskedInputRequest) -> MaskedInput:
        assert self.spec is not None and self.self_seed is not None
        if msg.aggregation != self.aggregation or msg.chunk_index != self.next_chunk:
            raise ProtocolError("masked-input request out of order (replay?)")
        view: tuple[SignedView, ...] = ()
        if msg.chunk_index == 0:
            self._receive_shares(msg.mask_keys, msg.sealed)
            # the neighbours this client masks with, signed: holders check it before releasing a
            # share of b_u (protocols/additive.md section 4, "Why every survivor stays masked")
            mine = tuple(sorted(self.u2 & self.graph[self.client_id]))
            payload = view_payload(self.binding, self.aggregation, self.client_id, mine)
            view = (SignedView(self.client_id, mine, P.sign(self.identity, payload)),)
        elif msg.sealed or msg.mask_keys:
            raise ProtocolError("shares may only be relayed with the first chunk")
        chunk = self.spec.chunks[msg.chunk_index]
        x = read_checked_input(self.inputs, self.aggregation, chunk, self.spec.bound)
        layout = self.layout
        peers = {v: self._pair_seed(v) for v in sorted(self.u2 - {self.client_id})}
        y = layout.pack(x)
        add_masks(
            y, self.self_seed, peers, self.client_id, self.aggregation, chunk.offset, layout.bits
        )
        y &= layout.word_mask
        self.next_chunk += 1
        if self.next_chunk == len(self.spec.chunks):
            self._state = "consistency-check"
        return MaskedInput(
            self.config.session_id,
            self.aggregation,
            self.client_id,
            msg.chunk_index,
            pack_uint(y, layout.bits),
            view,
        )

    def _check_survivors(self, survivors: tuple[int, ...]) -> None:
        _check_ids(survivors, "the survivor list", self.params.roster)
        alive = set(survivors)
        if self.client_id not in alive:
            raise ProtocolError("the survivor list leaves me out")
        self._check_cohort(alive)
        if alive & self.graph[self.client_id] - self.u2:
            raise ProtocolError("the survivor list names neighbours that never shared keys")
        if alive & self.dead:
            raise ProtocolError("the survivor list names a client already declared dead")
        if not connected(alive, self.graph):
            raise ProtocolError("survivors are disconnected in the graph (partial sums would leak)")

    def _check_cohort(self, alive: set[int]) -> None:
        """The survivor list must be able to carry a quorum and reach the minimum cohort."""
        p = self.params
        if len(alive) < p.quorum:
            raise ProtocolError(
                f"only {len(alive)} survivors, below the quorum {p.quorum} of signatures a list needs"
            )
        if len(alive) < p.min_contributors:
            raise ProtocolError(
                f"only {len(alive)} survivors, below the minimum cohort of {p.min_contributors}"
            )

    def _consistency(self, msg: ConsistencyRequest) -> ConsistencySignature:
        if msg.aggregation != self.aggregation:
            raise ProtocolError("consistency request for another aggregation (replay?)")
        self._check_survivors(msg.survivors)
        self.signed_survivors = msg.survivors
        payload = survivors_payload(self.binding, self.aggregation, msg.survivors)
        self._state = "unmasking"
        return ConsistencySignature(
            self.config.session_id,
            self.aggregation,
            Signature(self.client_id, P.sign(self.identity, payload)),
        )

    def _unmask(self, msg: UnmaskRequest) -> UnmaskShares:
        if msg.aggregation != self.aggregation:
            raise ProtocolError("unmasking request for another aggregation (replay?)")
        if msg.survivors != self.signed_survivors:
            raise ProtocolError("the survivor list differs from the one I signed")
        _check_ids(msg.dead, "the dead list", self.params.roster)
        alive, dead = set(msg.survivors), set(msg.dead)
        self._check_cohort(alive)
        if alive & dead:
            raise ProtocolError(
                f"request names clients {sorted(alive & dead)} as both alive and dead"
            )
        if self.client_id in dead:
            raise ProtocolError("request declares me dead")
        neighbours = self.graph[self.client_id]
        if dead & neighbours != (self.u2 & neighbours) - alive:
            raise ProtocolError("the dead list disagrees with the neighbours that shared keys")
        self._check_signatures(msg)
        self._check_views(msg.views, alive)
        self_shares = tuple(
            Share(v, self.self_shares[v]) for v in sorted(alive & self.u2) if v in self.self_shares
        )
        if len(self_shares) != len(alive & self.u2):
            raise ProtocolError("asked for a self-mask share I do not hold")
        key_owners = sorted(dead & neighbours)
        if any(v not in self.key_shares for v in key_owners):
            raise ProtocolError("asked for a key share I do not hold")
        key_shares = tuple(Share(v, self.key_shares[v]) for v in key_owners)
        self.dead |= dead
        reply = UnmaskShares(
            self.config.session_id, self.aggregation, self.client_id, self_shares, key_shares
        )
        self.last_aggregation = self.aggregation
        self._reset_aggregation()
        self._state = "completed"
        return reply

    def _check_signatures(self, msg: UnmaskRequest) -> None:
        signers = tuple(s.signer for s in msg.signatures)
        _check_ids(signers, "the signer list", self.params.roster)
        if not set(signers) <= set(msg.survivors):
            raise ProtocolError("a consistency signature comes from a non-survivor")
        if len(signers) < self.params.quorum:
            raise ProtocolError(
                f"only {len(signers)} consistency signatures, below the quorum {self.params.quorum}"
            )
        payload = survivors_payload(self.binding, self.aggregation, msg.survivors)
        for s in msg.signatures:
            if not P.verify(self.params.identity_keys[s.signer], s.signature, payload):
                raise ProtocolError(f"bad consistency signature of client {s.signer}")

    def _check_views(self, views: tuple[SignedView, ...], alive: set[int]) -> None:
        """Release b_v only for survivors v that masked with every neighbour on the list.

        One signed view per neighbour on the list; each must name a subset of the owner's graph
        neighbours containing all of its neighbours on the list, and at least one. Then the honest
        survivors' pairwise masks span the (connected) survivor list, and a survivor's vector is
        never left masked only by peers whose keys are revealed as dead.
        """
        owners = tuple(v.owner for v in views)
        expected = tuple(sorted(alive & self.graph[self.client_id]))
        if owners != expected:
            raise ProtocolError("the masking views do not match my neighbours on the list")
        for v in views:
            payload = view_payload(self.binding, self.aggregation, v.owner, v.view)
            if not P.verify(self.params.identity_keys[v.owner], v.signature, payload):
                raise ProtocolError(f"bad signature on the masking view of client {v.owner}")
            neighbours = self.graph[v.owner]
            _check_ids(v.view, "a masking view", self.params.roster)
            if not set(v.view) <= neighbours:
                raise ProtocolError(f"client {v.owner} claims to mask with non-neighbours")
            listed = alive & neighbours
            if not listed or not listed <= set(v.view):
                raise ProtocolError(
                    f"survivor {v.owner} did not mask with its neighbours on the list: its input "
                    "would be exposed by the shares asked for"
                )


_Step = Callable[[AdditiveClient, Any], Any]
_TRANSITIONS: dict[tuple[str, type], _Step] = {
    ("advertise-keys", AdvertiseRequest): AdditiveClient._advertise,
    ("share-keys", ShareKeysRequest): AdditiveClient._share,
    ("completed", ShareKeysRequest): AdditiveClient._share,
    ("masked-input", MaskedInputRequest): AdditiveClient._masked,
    ("consistency-check", ConsistencyRequest): AdditiveClient._consistency,
    ("unmasking", UnmaskRequest): AdditiveClient._unmask,
}
CLIENT_TRANSITIONS = frozenset(_TRANSITIONS)
