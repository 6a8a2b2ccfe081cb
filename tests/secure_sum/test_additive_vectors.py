"""Known-answer tests: protocols/vectors/additive/*.json, read (never copied) here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedprllm_secure.randomness import SeededRandomSource
from fedprllm_secure.secure_sum.additive import primitives as P
from fedprllm_secure.secure_sum.additive.graph import harary
from fedprllm_secure.secure_sum.additive.layout import WordLayout
from fedprllm_secure.secure_sum.additive.shamir import PRIME, combine, evaluate
from fedprllm_secure.secure_sum.api import AggregateResult, AggregationSpec, config_digest
from fedprllm_secure.secure_sum.messages import decode, round_of
from fedprllm_secure.secure_sum.packing import pack_uint
from tests.tools.additive_harness import build, deliver

VECTORS = Path(__file__).resolve().parents[2] / "protocols" / "vectors" / "additive"


def load(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def test_x25519_and_hkdf_vectors():
    for case in load("kdf.json")["x25519_hkdf"]:
        a = X25519PrivateKey.from_private_bytes(h(case["private_a"]))
        b = X25519PrivateKey.from_private_bytes(h(case["private_b"]))
        assert P.public_bytes(a).hex() == case["public_a"]
        assert P.agree(a, h(case["public_b"])).hex() == case["shared"]
        assert P.agree(b, h(case["public_a"])).hex() == case["shared"]
        key = P.derive_key(
            h(case["shared"]),
            h(case["session_id"]),
            case["label"].encode(),
            case["id_a"],
            case["id_b"],
        )
        assert key.hex() == case["key"]
        # both orders of the pair give one key; another session gives another
        swapped = P.derive_key(
            h(case["shared"]),
            h(case["session_id"]),
            case["label"].encode(),
            case["id_b"],
            case["id_a"],
        )
        assert swapped == key
        other = P.derive_key(h(case["shared"]), bytes(32), case["label"].encode(), 1, 2)
        assert other != key


def test_aes_gcm_share_vector():
    case = load("kdf.json")["aes_gcm_share"]
    args = (
        h(case["key"]),
        h(case["session_id"]),
        case["aggregation"],
        case["sender"],
        case["recipient"],
    )
    assert P.share_nonce(*args[2:]).hex() == case["nonce"]
    assert P.share_aad(*args[1:]).hex() == case["aad"]
    assert P.seal(*args, h(case["plaintext"])).hex() == case["ciphertext"]
    assert P.open_sealed(*args, h(case["ciphertext"])).hex() == case["plaintext"]


def test_prg_vectors_and_chunk_independence():
    for case in load("prg.json")["cases"]:
        seed, agg, bits = h(case["seed"]), case["aggregation"], case["bits"]
        words = P.keystream_words(seed, agg, case["offset"], case["length"], bits)
        assert [int(w) for w in words] == case["words"]
        assert all(0 <= w < 2**bits for w in case["words"])
        # any sub-chunk is the slice of a longer expansion (counter offset)
        longer = P.keystream_words(seed, agg, 0, case["offset"] + case["length"], bits)
        assert np.array_equal(longer[case["offset"] :], words)


def test_shamir_vectors():
    data = load("shamir.json")
    assert int(data["prime"], 16) == PRIME
    for case in data["cases"]:
        coefficients = [int(c, 16) for c in case["coefficients"]]
        assert coefficients[0] == int(case["secret"], 16)
        points = [int(x) for x in case["shares"]]
        shares = evaluate(coefficients, points)
        assert {str(x): s.hex() for x, s in shares.items()} == case["shares"]
        t = case["threshold"]
        for start in range(len(points) - t + 1):
            subset = {x: shares[x] for x in points[start : start + t]}
            assert combine(subset, t).hex() == case["secret"]


def test_graph_vectors():
    for case in load("graph.json")["cases"]:
        graph = harary(case["roster"], case["k"], h(case["seed"]))
        assert {str(u): sorted(vs) for u, vs in graph.items()} == case["neighbours"]
        assert all(len(vs) == case["k"] for vs in graph.values())


@pytest.mark.parametrize("name", ["session.json", "session_dropout.json"])
def test_session_transcript_is_reproduced_byte_for_byte(name):
    data = load(name)
    roster = tuple(data["roster"])
    chunks = {c["name"]: c["length"] for c in data["chunks"]}

    def provider(client):
        inputs = data["inputs"][str(client)]
        return lambda index, chunk: np.array(inputs[str(index)][chunk.name], dtype=np.uint8)

    session = build(
        roster,
        {c: provider(c) for c in roster},
        SeededRandomSource(h(data["seed"])),
        data["options"],
        record=True,
    )
    assert config_digest(session.config).hex() == data["config_digest"]
    gone: set[int] = set()
    drop_plan = {int(c): r for c, r in data["drop"].items()}

    def drop(client, msg):
        if drop_plan.get(client) == round_of(msg):
            gone.add(client)
        return client in gone

    for expected in data["aggregations"]:
        out = session.server.begin(AggregationSpec.from_lengths(expected["index"], chunks, 1))
        while not isinstance(out, AggregateResult):
            out = session.server.handle(deliver(session, out, drop))
        assert list(out.contributors) == expected["contributors"]
        assert {k: [int(v) for v in s] for k, s in out.sums.items()} == expected["sums"]
        for chunk_name, sums in expected["sums"].items():
            plain = sum(
                np.array(data["inputs"][str(c)][str(expected["index"])][chunk_name])
                for c in expected["contributors"]
            )
            assert list(plain) == sums
    assert [(d, c, w.hex()) for d, c, w in session.transcript] == [
        (t["direction"], t["client"], t["wire"]) for t in data["transcript"]
    ]


def spec_layout(max_sum: int) -> tuple[int, int, int]:
    """(radix, entries per word, bits) as protocols/additive.md section 2 states it."""
    radix, plain = max_sum + 1, max_sum.bit_length()
    packed = max(e for e in range(1, 65) if radix**e <= 2**64)
    if packed > 1 and 64 <= plain * packed:
        return radix, packed, 64
    return radix, 1, plain


def spec_words(entries: list[int], max_sum: int) -> list[int]:
    """Striped radix packing in plain integers: entry q*W + j is digit q of word j."""
    radix, per_word, _ = spec_layout(max_sum)
    count = -(-len(entries) // per_word)
    digits = entries + [0] * (count * per_word - len(entries))
    return [sum(digits[q * count + j] * radix**q for q in range(per_word)) for j in range(count)]


def test_layout_vectors():
    for case in load("layout.json")["cases"]:
        max_sum, entries = case["max_sum"], case["entries"]
        layout = WordLayout.for_max_sum(max_sum)
        assert (layout.radix, layout.per_word, layout.bits) == spec_layout(max_sum)
        assert (case["radix"], case["per_word"], case["bits"]) == spec_layout(max_sum)
        assert spec_words(entries, max_sum) == case["words"]
        words = layout.pack(np.array(entries, dtype=np.uint64))
        assert [int(w) for w in words] == case["words"]
        assert all(w < 2 ** case["bits"] for w in case["words"])
        assert [int(v) for v in layout.unpack(words, len(entries))] == entries


@pytest.mark.parametrize("name", ["session.json", "session_dropout.json"])
def test_masked_inputs_follow_the_spec_from_fixed_keys(name):
    """Recompute every masked chunk from the recorded keys with the spec's formula alone, in plain
    integers (layout, PRG words, signs), and compare with the recorded upload."""
    data = load(name)
    sid = h(data["config_digest"])  # the HKDF salt (protocols/additive.md 3.1)
    max_sum = len(data["roster"])  # bound 1
    _, _, bits = spec_layout(max_sum)
    keys = data["client_keys"]

    def mask_private(client, aggregation):
        return X25519PrivateKey.from_private_bytes(
            h(keys[str(client)]["mask_private"][str(aggregation)])
        )

    def prg(seed, agg, offset, count):
        return [int(w) for w in P.keystream_words(seed, agg, offset, count, bits)]

    checked = 0
    for entry in data["transcript"]:
        if entry["direction"] != "up":
            continue
        msg = decode(h(entry["wire"]))
        if type(msg).__name__ != "MaskedInput":
            continue
        u, agg = msg.sender, msg.aggregation
        # who shared keys in each aggregation = who has a self-mask seed recorded for it
        peers = [v for v in map(int, keys) if v != u and str(agg) in keys[str(v)]["self_seeds"]]
        chunk = data["chunks"][msg.chunk_index]
        words = spec_words(data["inputs"][str(u)][str(agg)][chunk["name"]], max_sum)
        offset = chunk["offset"]  # PRG words are indexed from the chunk's entry offset
        own = prg(h(keys[str(u)]["self_seeds"][str(agg)]), agg, offset, len(words))
        y = [w + m for w, m in zip(words, own, strict=True)]
        private = mask_private(u, agg)
        for v in peers:
            peer_public = P.public_bytes(mask_private(v, agg))
            seed = P.derive_key(P.agree(private, peer_public), sid, b"mask-seed", u, v)
            sign = 1 if u < v else -1
            y = [a + sign * m for a, m in zip(y, prg(seed, agg, offset, len(words)), strict=True)]
        expected = np.array([a % 2**bits for a in y], dtype=np.uint64)
        assert msg.data == pack_uint(expected, bits)
        checked += 1
    assert checked >= 4
