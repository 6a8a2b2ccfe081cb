"""A malicious `additive` server (alone, or with a few colluding clients) tries to unmask one
client's input by making honest clients act on inconsistent survivor lists or on a list that
leaves the victim masked only with peers it declares dead (issue 12, item 1).

The server is played by the test: the real AdditiveServer runs the honest setup (advertise-keys,
share-keys), then the attacker takes over and drives the honest client state machines directly
with the requests it chooses. Whatever the honest clients release is collected, and the attacker
tries to rebuild the victim's input from it: `b_v` and the seed `s_vw` of every peer `w` the victim
masked with. The controls run the same attacks against clients whose protections are switched off
(quorum back to t, no masking-view check) and show that they do recover the input exactly, so the
main tests are not vacuous.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from fedprllm_secure.errors import ProtocolError
from fedprllm_secure.randomness import SeededRandomSource
from fedprllm_secure.secure_sum.additive import client_steps
from fedprllm_secure.secure_sum.additive import primitives as P
from fedprllm_secure.secure_sum.additive.graph import ring_order
from fedprllm_secure.secure_sum.additive.layout import WordLayout
from fedprllm_secure.secure_sum.additive.messages import (
    ConsistencyRequest,
    MaskedInput,
    UnmaskRequest,
)
from fedprllm_secure.secure_sum.additive.params import Params, quorum
from fedprllm_secure.secure_sum.additive.shamir import combine
from fedprllm_secure.secure_sum.additive.transcript import add_masks
from fedprllm_secure.secure_sum.api import AggregationSpec, config_digest
from fedprllm_secure.secure_sum.packing import unpack_uint
from tests.tools.additive_harness import build, deliver

LENGTH = 8  # tiny vectors: the attack is about keys and shares, not data


def bits(seed: int, client: int) -> np.ndarray:
    return np.random.default_rng([seed, client]).integers(0, 2, LENGTH).astype(np.uint8)


@dataclass
class Attack:
    """One aggregation run by a malicious server up to the end of masked-input."""

    n: int
    seed: int
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        roster = tuple(range(self.n))
        self.inputs = {c: bits(self.seed, c) for c in roster}
        providers = {c: (lambda i, ch, c=c: self.inputs[c]) for c in roster}
        rng = SeededRandomSource(f"survivor-lists-{self.n}-{self.seed}")
        self.session = build(roster, providers, rng, self.options)
        self.params = self.session.server.params
        self.spec = AggregationSpec.from_lengths(0, {"w": LENGTH}, 1)
        self.sid = self.session.config.session_id
        self.binding = config_digest(self.session.config)
        advertise = self.session.server.begin(self.spec)
        self.graph_seed = next(iter(advertise.values())).graph_seed
        self.order = ring_order(roster, self.graph_seed)
        out = self.session.server.handle(deliver(self.session, advertise))
        shared = deliver(self.session, out)
        self.mask_public = {c: m.mask_key.mask_public for c, m in shared.items()}
        self.chunk0 = self.session.server.handle(shared)  # honest masked-input requests
        self.graph = self.session.server.graph
        self.released_on: dict[tuple[int, ...], set[int]] = {}
        self.refusals: dict[int, str] = {}
        self.b_shares: dict[int, dict[int, bytes]] = {}
        self.s_shares: dict[int, dict[int, bytes]] = {}
        self.known_keys: dict[int, P.X25519PrivateKey] = {}

    def around(self, v: int, *steps: int) -> list[int]:
        """The clients at ring offsets `steps` from v (the Harary graph joins offsets <= k/2)."""
        i = self.order.index(v)
        return [self.order[(i + s) % self.n] for s in steps]

    def masked_input(self, v: int, view: set[int]) -> dict[int, MaskedInput]:
        """Chunk 0 for everyone; v is shown only the keys and shares of `view`."""
        requests = dict(self.chunk0)
        r = requests[v]
        keep = [i for i, s in enumerate(r.sealed) if s.sender in view]
        requests[v] = type(r)(
            r.session_id,
            r.aggregation,
            r.chunk_index,
            tuple(r.mask_keys[i] for i in keep),
            tuple(r.sealed[i] for i in keep),
        )
        self.uploads = deliver(self.session, requests)
        return self.uploads

    def corrupt(self, clients: set[int]) -> None:
        """Colluding clients hand over everything they hold after masked-input."""
        for c in clients:
            client = self.session.clients[c]
            self.known_keys[c] = client.mask_key
            x = self.params.point(c)
            for owner, share in client.self_shares.items():
                self.b_shares.setdefault(owner, {})[x] = share
            for owner, share in client.key_shares.items():
                self.s_shares.setdefault(owner, {})[x] = share

    def consistency(self, lists: dict[int, tuple[int, ...]]) -> dict[tuple[int, ...], list]:
        """Show each client its list; gather the signatures per list."""
        signatures: dict[tuple[int, ...], list] = {}
        for c, survivors in sorted(lists.items()):
            try:
                reply = self.session.clients[c].handle(ConsistencyRequest(self.sid, 0, survivors))
            except ProtocolError as exc:
                self.refusals[c] = str(exc)
                continue
            signatures.setdefault(survivors, []).append(reply.signature)
        return signatures

    def unmask(self, lists: dict[int, tuple[int, ...]], signatures: dict) -> None:
        """Ask every signer for its shares with everything the server can show it."""
        views = {c: m.view[0] for c, m in self.uploads.items()}
        for c, survivors in sorted(lists.items()):
            if survivors not in signatures or c in self.refusals:
                continue
            alive = set(survivors)
            request = UnmaskRequest(
                self.sid,
                0,
                survivors,
                tuple(sorted(set(self.params.roster) - alive)),
                tuple(sorted(signatures[survivors], key=lambda s: s.signer)),
                tuple(views[w] for w in sorted(self.graph[c] & alive)),
            )
            try:
                reply = self.session.clients[c].handle(request)
            except ProtocolError as exc:
                self.refusals[c] = str(exc)
                continue
            self.released_on.setdefault(survivors, set()).add(c)
            x = self.params.point(c)
            for s in reply.self_mask_shares:
                self.b_shares.setdefault(s.owner, {})[x] = s.value
            for s in reply.key_shares:
                self.s_shares.setdefault(s.owner, {})[x] = s.value

    def recover(self, v: int) -> np.ndarray | None:
        """v's input if b_v and the seed of every pair v masked with can be rebuilt, else None."""
        t = self.params.threshold
        if len(self.b_shares.get(v, {})) < t:
            return None
        b_v = combine(self.b_shares[v], t)
        view = self.uploads[v].view[0].view
        pairs = {}
        for w in view:
            key = self.known_keys.get(w)
            if key is None and len(self.s_shares.get(w, {})) >= t:
                key = P.X25519PrivateKey.from_private_bytes(combine(self.s_shares[w], t))
            if key is None:
                return None
            secret = P.agree(key, self.mask_public[v])
            pairs[w] = P.derive_key(secret, self.binding, P.LABEL_MASK_SEED, v, w)
        layout = WordLayout.for_max_sum(self.params.n)
        y = unpack_uint(self.uploads[v].data, layout.bits, layout.words(LENGTH))
        y = y.astype(layout.dtype)
        add_masks(y, b_v, pairs, v, 0, 0, layout.bits, -1)
        y &= layout.word_mask
        return layout.unpack(y, LENGTH)


def split_lists_attack(n: int) -> tuple[Attack, int]:
    """Issue 12 item 1: a server alone makes honest clients accept different survivor lists.

    v is shown only W (t - 1 neighbours), so it masks with W alone. W is split into two classes;
    each class, with helpers far from it, gets "roster minus the other class"; everyone else gets
    "roster minus W". Every holder of v sees v alive and releases a share of b_v; every w in W is
    seen dead by at least t of its holders, who release shares of s_w.
    """
    attack = Attack(n, seed=n)
    p = attack.params
    k, t = p.neighbors, p.threshold
    assert (k, t) == (18, 13) and k < n - 1  # the default sparse graph
    v = attack.order[0]
    near, far = list(range(4, 7)), list(range(7, 10))
    classes = [
        set(attack.around(v, *far, *(-s for s in far))),
        set(attack.around(v, *near, *(-s for s in near))),
    ]
    w_all = set().union(*classes)
    assert len(w_all) == t - 1 and w_all <= attack.graph[v]
    attack.masked_input(v, w_all)
    others = [c for c in attack.order if c != v and c not in w_all]
    lists: dict[int, tuple[int, ...]] = {}
    roster = set(p.roster)
    for members in classes:
        survivors = tuple(sorted(roster - (w_all - members)))
        # helpers: not holders of any member of the class (they must see the class dead)
        helpers = [
            c
            for c in others
            if c not in lists and c not in attack.graph[v] and not attack.graph[c] & members
        ][: t - len(members)]
        assert len(members) + len(helpers) == t
        for c in (*members, *helpers):
            lists[c] = survivors
    rest = tuple(sorted(roster - w_all))
    for c in others:
        lists.setdefault(c, rest)
    assert len(set(lists.values())) == 3
    attack.lists = lists
    return attack, v


def run_split_lists(attack: Attack) -> None:
    signatures = attack.consistency(attack.lists)
    attack.unmask(attack.lists, signatures)


@pytest.mark.parametrize("n", [48, 64])
def test_a_server_alone_cannot_make_clients_act_on_two_survivor_lists(n):
    attack, v = split_lists_attack(n)
    run_split_lists(attack)
    assert attack.recover(v) is None
    # rule 1: honest clients released shares for at most one survivor list of this aggregation
    assert len(attack.released_on) <= 1
    assert any("quorum" in reason for reason in attack.refusals.values())


def single_list_attack(n: int) -> tuple[Attack, int]:
    """One agreed list, but v is left masked only with peers that are dead on it or colluding.

    v is shown only W = W_h + W_c (t - 1 neighbours): the honest W_h are declared dead (their
    holders release s_w), the colluding W_c stay alive and hand over their keys and their shares
    of b_v; the honest rest R of v's neighbours is alive and releases the missing shares of b_v.
    |W_c| = 7 < t holders and fewer than 2q - n clients in all: inside the threat model.
    """
    attack = Attack(n, seed=100 + n)
    p = attack.params
    k, t = p.neighbors, p.threshold
    assert (k, t) == (18, 13)
    v = attack.order[0]
    w_c = set(attack.around(v, 4, 5, 6, -4, -5, -6, 7))
    w_h = set(attack.around(v, 8, 9, -7, -8, -9))
    w_all = w_c | w_h
    assert len(w_all) == t - 1 and len(w_c) < t and len(w_c) < 2 * quorum(n, t) - n
    attack.masked_input(v, w_all)
    attack.corrupt(w_c)
    survivors = tuple(sorted(set(p.roster) - w_h))
    assert len(survivors) >= p.min_survivors
    attack.lists = {c: survivors for c in survivors if c != v and c not in w_c}
    attack.colluders = w_c
    return attack, v


def run_single_list(attack: Attack) -> None:
    signatures = attack.consistency(attack.lists)
    survivors = next(iter(attack.lists.values()))
    for c in sorted(attack.colluders):  # colluders sign the list too (they would sign anything)
        reply = attack.session.clients[c].handle(ConsistencyRequest(attack.sid, 0, survivors))
        signatures[survivors].append(reply.signature)
    attack.unmask(attack.lists, signatures)


@pytest.mark.parametrize("n", [48, 64])
def test_a_survivor_is_never_left_masked_only_by_dead_or_colluding_peers(n):
    attack, v = single_list_attack(n)
    run_single_list(attack)
    assert attack.recover(v) is None
    assert len(attack.released_on) == 1  # one list, and honest clients act on it
    # the honest holders of v on the list refuse: v did not mask with them
    honest_holders = (attack.graph[v] & set(attack.lists)) - attack.colluders
    assert honest_holders
    for c in honest_holders:
        assert "did not mask with its neighbours" in attack.refusals[c]


# --- controls: the same attacks succeed against clients without the protections -----------------


@pytest.fixture
def unprotected(monkeypatch):
    """Clients as before issue 12: t signatures suffice and masking views are not checked."""
    monkeypatch.setattr(Params, "quorum", property(lambda self: self.threshold))
    monkeypatch.setattr(client_steps, "check_views", lambda ctx, peers, index, views, alive: None)


@pytest.mark.parametrize("n", [48, 64])
def test_control_the_split_lists_attack_recovers_the_input_of_unprotected_clients(n, unprotected):
    attack, v = split_lists_attack(n)
    run_split_lists(attack)
    assert len(attack.released_on) == 3
    assert np.array_equal(attack.recover(v), attack.inputs[v])


def test_control_the_single_list_attack_recovers_the_input_of_unprotected_clients(unprotected):
    attack, v = single_list_attack(48)
    run_single_list(attack)
    assert np.array_equal(attack.recover(v), attack.inputs[v])
