"""Replay a session vector (session*.json) against protocols/additive.md sections 1-4.

Every message of the recorded transcript is decoded with the spec's codec, and every value in it
that the spec makes derivable from the recorded secrets (the clients' cipher keys, mask keys and
self-mask seeds, the inputs) is recomputed: config digest, graph seed and graph, public keys,
signatures, commitments, share-encryption keys and ciphertexts, Shamir shares (every t-subset of
each dealing), pairwise seeds, masked words and their bit packing, survivor and dead lists, the
released shares, the server's recovery and the final sums. No import from `fedprllm_secure`.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from itertools import combinations

from . import additive_spec as S
from .additive_codec import decode


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def default_params(n: int, options: dict) -> tuple[int, int, int]:
    """Section 2: (k, t, m) with the table's defaults."""
    k = options.get("neighbors")
    if k is None:
        k = n - 1 if n <= 32 else min(3 * math.ceil(math.log2(n)), n - 1)
        k += 1 if (k % 2 and n % 2) else 0
    t = options.get("threshold")
    if t is None:
        t = min(k + 1, max((k + 1) // 2 + 1, 2 * (k + 1) // 3 + 1))
    return k, t, options.get("min_contributors", 3)


class SessionCheck:
    """State of one replay; `run()` walks the transcript, then checks each aggregation's sum."""

    def __init__(self, data: dict, cov: Counter):
        self.data, self.cov = data, cov
        self.roster = list(data["roster"])
        assert self.roster == sorted(self.roster) and len(self.roster) >= 2
        self.n = len(self.roster)
        self.session_id = h(data["session_id"])
        self.identity = {c: h(data["identity_public_keys"][str(c)]) for c in self.roster}
        options = {**data["options"], "identity_public_keys": self.identity}  # roster order
        self.sid = S.config_digest(self.session_id, self.roster, options)
        assert self.sid.hex() == data["config_digest"], "config digest"
        self.k, self.t, self.m = default_params(self.n, data["options"])
        self.q = S.quorum(self.n, self.t)
        self.graph = S.harary(self.roster, self.k, S.graph_seed(self.sid))
        self.keys = data["client_keys"]
        self.cipher_public: dict[int, bytes] = {}
        self.advertised: dict[int, dict] = {}
        self.r = 0
        self.rounds: dict[int, dict] = defaultdict(self._fresh)
        cov.update(["session.config_digest", "session.graph"])

    @staticmethod
    def _fresh() -> dict:
        return {
            "asked": set(), "listed": {}, "mask_keys": {}, "sealed": {}, "received": {},
            "u2": set(), "view_of": {}, "words": defaultdict(dict), "u3": set(),
            "signatures": {}, "views": {}, "released": {}, "spec": None, "commitments": {},
        }  # fmt: skip

    def x(self, client: int) -> int:
        return 1 + self.roster.index(client)

    def secret(self, client: int, kind: str, r: int) -> bytes:
        return h(self.keys[str(client)][kind][str(r)])

    def holders(self, u: int) -> set[int]:
        return self.graph[u] | {u}

    def run(self) -> None:
        for entry in self.data["transcript"]:
            tag, fields = decode(h(entry["wire"]))
            self.cov["wire.decoded"] += 1
            assert fields["session_id"] == self.session_id, "session id"
            if "aggregation" in fields:
                self.r = fields["aggregation"]
            handler = getattr(self, tag.split("/")[1].replace("-", "_"))
            handler(entry["client"], fields, self.rounds[self.r])
        expected = self.data["aggregations"]
        assert sorted(self.rounds) == [a["index"] for a in expected]
        for aggregation in expected:
            self.finish(aggregation, self.rounds[aggregation["index"]])

    # -- round 0 --------------------------------------------------------------------------------

    def advertise_request(self, u: int, f: dict, st: dict) -> None:
        assert f["graph_seed"] == S.graph_seed(self.sid), "graph seed"
        self.cov["session.graph_seed"] += 1

    def advertise_keys(self, u: int, f: dict, st: dict) -> None:
        keys = f["keys"]
        assert keys["owner"] == u
        private = h(self.keys[str(u)]["cipher_private"])
        assert keys["cipher_public"] == S.x25519_public(private), "cipher public key"
        payload = S.advertise_payload(self.sid, u, keys["cipher_public"])
        assert S.ed25519_ok(self.identity[u], keys["signature"], payload), "advertise signature"
        self.cipher_public[u], self.advertised[u] = keys["cipher_public"], keys
        self.cov.update(["session.cipher_public", "session.advertise_signature"])

    # -- round 1 --------------------------------------------------------------------------------

    def share_keys_request(self, u: int, f: dict, st: dict) -> None:
        spec = f["spec"]
        assert spec["index"] == self.r and spec["chunks"] == self.data["chunks"]
        st["spec"] = spec
        live = set(self.advertised) if self.r == self.first() else self.rounds[self.prev()]["u3"]
        owners = [key["owner"] for key in f["keys"]]
        assert owners == sorted(self.holders(u) & live), "listed keys"
        assert all(key == self.advertised[key["owner"]] for key in f["keys"])
        st["asked"].add(u)
        st["listed"][u] = owners
        self.cov["session.share_keys_request"] += 1

    def share_keys(self, u: int, f: dict, st: dict) -> None:
        r, key = self.r, f["mask_key"]
        assert f["sender"] == u and key["owner"] == u and u in st["asked"]
        assert key["mask_public"] == S.x25519_public(self.secret(u, "mask_private", r))
        payload = S.mask_key_payload(self.sid, r, u, key["mask_public"])
        assert S.ed25519_ok(self.identity[u], key["signature"], payload), "mask-key signature"
        seed = self.secret(u, "self_seeds", r)
        assert f["commitment"] == S.self_mask_commitment(self.sid, r, u, seed), "commitment"
        st["mask_keys"][u], st["commitments"][u] = key, f["commitment"]
        recipients = [s["recipient"] for s in f["sealed"]]
        assert recipients == [v for v in st["listed"][u] if v != u], "sealed recipients"
        cipher_private = h(self.keys[str(u)]["cipher_private"])
        for sealed in f["sealed"]:
            v = sealed["recipient"]
            assert sealed["sender"] == u
            shared = S.x25519(cipher_private, self.cipher_public[v])
            share_key = S.kdf(shared, self.sid, b"share-key", u, v)
            plain = S.share_open(share_key, self.sid, r, u, v, sealed["ciphertext"])
            assert len(plain) == 2 * S.SHARE_BYTES
            st["sealed"][(u, v)] = sealed
            st["received"][(v, u)] = (plain[: S.SHARE_BYTES], plain[S.SHARE_BYTES :])
            self.cov["session.sealed_share"] += 1
        self.cov.update(["session.mask_public", "session.mask_key_signature", "session.commitment"])

    # -- round 2 --------------------------------------------------------------------------------

    def masked_input_request(self, u: int, f: dict, st: dict) -> None:
        if f["chunk_index"] > 0:
            assert f["mask_keys"] == [] and f["sealed"] == [] and u in st["u3"]
            return
        senders = [s["sender"] for s in f["sealed"]]
        u2 = set(st["mask_keys"])
        assert senders == sorted(u2 & self.graph[u]), "senders of the sealed shares"
        assert all(s == st["sealed"][(s["sender"], u)] for s in f["sealed"])
        assert f["mask_keys"] == [st["mask_keys"][v] for v in senders]
        st["view_of"][u] = set(senders) | {u}
        self.cov["session.masked_input_request"] += 1

    def masked_input(self, u: int, f: dict, st: dict) -> None:
        r, j = self.r, f["chunk_index"]
        assert f["sender"] == u
        chunk = st["spec"]["chunks"][j]
        max_sum = st["spec"]["bound"] * self.n
        _, per_word, bits = S.layout(max_sum)
        entries = self.data["inputs"][str(u)][str(r)][chunk["name"]]
        assert len(entries) == chunk["length"]
        assert all(0 <= e <= st["spec"]["bound"] for e in entries)
        words = S.pack_words(entries, max_sum)
        offset, count = chunk["offset"], len(words)
        y = S.prg_words(self.secret(u, "self_seeds", r), r, offset, count, bits)
        y = [a + b for a, b in zip(words, y, strict=True)]
        view = sorted(self.graph[u] & st["view_of"][u])
        private = self.secret(u, "mask_private", r)
        for v in view:
            shared = S.x25519(private, st["mask_keys"][v]["mask_public"])
            seed = S.kdf(shared, self.sid, b"mask-seed", u, v)
            sign = 1 if u < v else -1
            mask = S.prg_words(seed, r, offset, count, bits)
            y = [a + sign * b for a, b in zip(y, mask, strict=True)]
            self.cov["session.pairwise_seed"] += 1
        y = [a % 2**bits for a in y]
        assert f["data"] == S.bitpack(y, bits), "masked input"
        assert S.bitunpack(f["data"], count, bits) == y
        st["words"][u][j] = y
        if j == 0:
            assert len(f["view"]) == 1, "one signed view with chunk 0"
            signed = f["view"][0]
            assert signed["owner"] == u and signed["view"] == view, "masking view"
            payload = S.view_payload(self.sid, r, u, view)
            assert S.ed25519_ok(self.identity[u], signed["signature"], payload), "view signature"
            st["views"][u] = signed
            st["u3"].add(u)
            self.cov["session.view_signature"] += 1
        else:
            assert f["view"] == [] and u in st["u3"]
        self.cov["session.masked_input"] += 1

    # -- rounds 3 and 4 -------------------------------------------------------------------------

    def consistency_request(self, u: int, f: dict, st: dict) -> None:
        survivors = f["survivors"]
        assert survivors == sorted(st["u3"]) and u in survivors
        assert len(survivors) >= max(self.q, self.m)
        assert self.connected(set(survivors)), "survivor list disconnected"
        self.cov["session.survivors"] += 1

    def consistency_signature(self, u: int, f: dict, st: dict) -> None:
        signature = f["signature"]
        assert signature["signer"] == u
        payload = S.survivors_payload(self.sid, self.r, sorted(st["u3"]))
        assert S.ed25519_ok(self.identity[u], signature["signature"], payload), "list signature"
        st["signatures"][u] = signature
        self.cov["session.survivor_signature"] += 1

    def unmask_request(self, u: int, f: dict, st: dict) -> None:
        u2, u3 = set(st["mask_keys"]), st["u3"]
        assert f["survivors"] == sorted(u3) and f["dead"] == sorted(u2 - u3), "dead list"
        assert f["signatures"] == [st["signatures"][v] for v in sorted(st["signatures"])]
        assert len(f["signatures"]) >= self.q
        assert f["views"] == [st["views"][v] for v in sorted(self.graph[u] & u3)], "views"
        self.cov["session.unmask_request"] += 1

    def unmask_shares(self, u: int, f: dict, st: dict) -> None:
        assert f["sender"] == u
        u2, u3 = set(st["mask_keys"]), st["u3"]
        selfs, keys = f["self_mask_shares"], f["key_shares"]
        assert [s["owner"] for s in selfs] == sorted(u3 & st["view_of"][u])
        assert [s["owner"] for s in keys] == sorted((u2 - u3) & self.graph[u])
        for share in selfs:
            if share["owner"] != u:  # its own share of b_u was never sent; checked in finish
                assert share["value"] == st["received"][(u, share["owner"])][0]
        for share in keys:
            assert share["value"] == st["received"][(u, share["owner"])][1]
        st["released"][u] = f
        self.cov["session.released_shares"] += len(selfs) + len(keys)

    # -- end of an aggregation ------------------------------------------------------------------

    def finish(self, expected: dict, st: dict) -> None:
        """Dealings, the server's recovery (section 4 round 4) and the sums."""
        r, u3 = expected["index"], st["u3"]
        dead = set(st["mask_keys"]) - u3
        assert expected["contributors"] == sorted(u3)
        for u in st["mask_keys"]:
            self.check_dealing(u, r, st)
        recovered_b, recovered_s = self.recover(r, st, dead)
        max_sum = st["spec"]["bound"] * self.n
        _, _, bits = S.layout(max_sum)
        for j, chunk in enumerate(st["spec"]["chunks"]):
            total = [sum(col) for col in zip(*(st["words"][u][j] for u in u3), strict=True)]
            count, offset = len(total), chunk["offset"]
            for u in u3:
                mask = S.prg_words(recovered_b[u], r, offset, count, bits)
                total = [a - b for a, b in zip(total, mask, strict=True)]
                for v in sorted(self.graph[u] & dead):
                    shared = S.x25519(recovered_s[v], st["mask_keys"][u]["mask_public"])
                    seed = S.kdf(shared, self.sid, b"mask-seed", u, v)
                    sign = 1 if u < v else -1
                    mask = S.prg_words(seed, r, offset, count, bits)
                    total = [a - sign * b for a, b in zip(total, mask, strict=True)]
            sums = S.unpack_words([a % 2**bits for a in total], chunk["length"], max_sum)
            assert sums == expected["sums"][chunk["name"]], "sum"
            plain = [0] * chunk["length"]
            for u in u3:
                plain = [a + b for a, b in zip(plain, self.inputs(u, r, chunk), strict=True)]
            assert sums == plain, "sum of the contributors' inputs"
            self.cov["session.sum"] += 1

    def check_dealing(self, u: int, r: int, st: dict) -> None:
        """Every t-subset of u's shares (sent, plus its own b-share if released) gives its secret."""
        b_shares = {self.x(v): st["received"][(v, w)][0] for v, w in st["received"] if w == u}
        s_shares = {self.x(v): st["received"][(v, w)][1] for v, w in st["received"] if w == u}
        own = st["released"].get(u, {}).get("self_mask_shares", [])
        b_shares.update({self.x(u): s["value"] for s in own if s["owner"] == u})
        for shares, kind in ((b_shares, "self_seeds"), (s_shares, "mask_private")):
            secret = self.secret(u, kind, r)
            for points in combinations(sorted(shares), self.t):
                assert S.shamir_recover({x: shares[x] for x in points}, self.t) == secret
                self.cov[f"session.shamir_{kind}"] += 1

    def recover(self, r: int, st: dict, dead: set[int]) -> tuple[dict, dict]:
        """The server's recovery from the released shares, checked against commitments/keys."""
        b_shares: dict[int, dict] = defaultdict(dict)
        s_shares: dict[int, dict] = defaultdict(dict)
        for holder, reply in st["released"].items():
            for s in reply["self_mask_shares"]:
                b_shares[s["owner"]][self.x(holder)] = s["value"]
            for s in reply["key_shares"]:
                s_shares[s["owner"]][self.x(holder)] = s["value"]
        recovered_b, recovered_s = {}, {}
        for v in st["u3"]:
            seed = S.shamir_recover(b_shares[v], self.t)
            commitment = S.self_mask_commitment(self.sid, r, v, seed)
            assert commitment == st["commitments"][v], "recovered seed fails its commitment"
            assert seed == self.secret(v, "self_seeds", r)
            recovered_b[v] = seed
            self.cov["session.recovered_self_seed"] += 1
        for v in dead:
            key = S.shamir_recover(s_shares[v], self.t)
            assert S.x25519_public(key) == st["mask_keys"][v]["mask_public"]
            recovered_s[v] = key
            self.cov["session.recovered_mask_key"] += 1
        return recovered_b, recovered_s

    def inputs(self, u: int, r: int, chunk: dict) -> list[int]:
        return self.data["inputs"][str(u)][str(r)][chunk["name"]]

    def connected(self, nodes: set[int]) -> bool:
        start = min(nodes)
        seen, todo = {start}, [start]
        while todo:
            for v in self.graph[todo.pop()] & nodes - seen:
                seen.add(v)
                todo.append(v)
        return seen == nodes

    def first(self) -> int:
        return min(self.rounds)

    def prev(self) -> int:
        return max(i for i in self.rounds if i < self.r)


def verify_session(data: dict, cov: Counter) -> None:
    SessionCheck(data, cov).run()
