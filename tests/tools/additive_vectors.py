"""Generate the known-answer vectors of protocols/vectors/additive/*.json.

    python -m tests.tools.additive_vectors --out protocols/vectors/additive

Every value derives from fixed seeds, so rerunning the command reproduces the files byte for byte.
Byte strings are hex; vectors of integers are lists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fedprllm_secure.randomness import SeededRandomSource, random_below
from fedprllm_secure.secure_sum.additive import primitives as P
from fedprllm_secure.secure_sum.additive.graph import harary
from fedprllm_secure.secure_sum.additive.layout import WordLayout
from fedprllm_secure.secure_sum.additive.shamir import PRIME, combine, evaluate
from fedprllm_secure.secure_sum.api import (
    AggregateResult,
    AggregationSpec,
    ChunkSpec,
    config_digest,
)
from fedprllm_secure.secure_sum.messages import round_of, tag_of
from tests.tools.additive_harness import build, deliver


def _seed(label: str) -> bytes:
    return hashlib.sha256(b"additive-vectors/" + label.encode()).digest()


def kdf_vectors() -> dict[str, Any]:
    cases = []
    for i, (label, a, b) in enumerate(
        [(P.LABEL_SHARE_KEY, 1, 2), (P.LABEL_MASK_SEED, 7, 3), (P.LABEL_MASK_SEED, 0, 2**32 - 1)]
    ):
        rng = SeededRandomSource(_seed(f"kdf-{i}"))
        ka, kb = P.new_x25519(rng), P.new_x25519(rng)
        session_id = rng.random_bytes(32)
        shared = P.agree(ka, P.public_bytes(kb))
        cases.append(
            {
                "private_a": ka.private_bytes_raw().hex(),
                "private_b": kb.private_bytes_raw().hex(),
                "public_a": P.public_bytes(ka).hex(),
                "public_b": P.public_bytes(kb).hex(),
                "shared": shared.hex(),
                "session_id": session_id.hex(),
                "label": label.decode(),
                "id_a": a,
                "id_b": b,
                "key": P.derive_key(shared, session_id, label, a, b).hex(),
            }
        )
    rng = SeededRandomSource(_seed("seal"))
    key, session_id = rng.random_bytes(32), rng.random_bytes(32)
    plain = rng.random_bytes(67)
    seal = {
        "key": key.hex(),
        "session_id": session_id.hex(),
        "aggregation": 5,
        "sender": 9,
        "recipient": 4,
        "plaintext": plain.hex(),
        "nonce": P.share_nonce(5, 9, 4).hex(),
        "aad": P.share_aad(session_id, 5, 9, 4).hex(),
        "ciphertext": P.seal(key, session_id, 5, 9, 4, plain).hex(),
    }
    return {"x25519_hkdf": cases, "aes_gcm_share": seal}


def prg_vectors() -> dict[str, Any]:
    cases = []
    rng = SeededRandomSource(_seed("prg"))
    for aggregation, offset, length, bits in [
        (0, 0, 40, 4),
        (0, 13, 21, 4),
        (3, 5, 17, 12),
        (1, 7, 9, 33),
        (2**32 - 1, 1000, 8, 64),
        (0, 3, 24, 1),
    ]:
        seed = rng.random_bytes(32)
        words = P.keystream_words(seed, aggregation, offset, length, bits)
        cases.append(
            {
                "seed": seed.hex(),
                "aggregation": aggregation,
                "offset": offset,
                "length": length,
                "bits": bits,
                "words": [int(w) for w in words],
            }
        )
    return {"cases": cases}


LAYOUT_MAX_SUMS = (2, 3, 4, 8, 15, 16, 32, 4096, 2**17, 2**27, 2**63)


def layout_vectors() -> dict[str, Any]:
    """The word layout for several largest sums, each with one packed chunk (section 2)."""
    cases = []
    rng = SeededRandomSource(_seed("layout"))
    for max_sum in LAYOUT_MAX_SUMS:
        layout = WordLayout.for_max_sum(max_sum)
        length = 2 * layout.per_word + 3  # three words; the top digit rows are padding
        entries = np.array([random_below(rng, max_sum + 1) for _ in range(length)], np.uint64)
        cases.append(
            {
                "max_sum": max_sum,
                "radix": layout.radix,
                "per_word": layout.per_word,
                "bits": layout.bits,
                "entries": [int(v) for v in entries],
                "words": [int(w) for w in layout.pack(entries)],
            }
        )
    return {"cases": cases}


def shamir_vectors() -> dict[str, Any]:
    cases = []
    rng = SeededRandomSource(_seed("shamir"))
    for threshold, points in [(2, [1, 2, 3]), (3, [1, 2, 4, 5, 8]), (5, [1, 2, 3, 4, 5, 6, 7])]:
        secret = rng.random_bytes(32)
        coefficients = [int.from_bytes(secret, "big")]
        coefficients += [random_below(rng, PRIME) for _ in range(threshold - 1)]
        shares = evaluate(coefficients, points)
        assert combine(shares, threshold) == secret
        cases.append(
            {
                "secret": secret.hex(),
                "threshold": threshold,
                "coefficients": [hex(c) for c in coefficients],
                "shares": {str(x): shares[x].hex() for x in points},
            }
        )
    return {"prime": hex(PRIME), "share_bytes": 66, "cases": cases}


def graph_vectors() -> dict[str, Any]:
    cases = []
    for n, k in [(10, 4), (12, 5), (40, 6), (5, 4)]:
        seed = _seed(f"graph-{n}-{k}")
        roster = list(range(100, 100 + n))
        graph = harary(roster, k, seed)
        cases.append(
            {
                "seed": seed.hex(),
                "roster": roster,
                "k": k,
                "neighbours": {str(u): sorted(graph[u]) for u in roster},
            }
        )
    return {"cases": cases}


SESSION_ROSTER = (3, 5, 8, 13)
SPARSE_ROSTER = (2, 3, 5, 7, 11, 13)
SESSION_CHUNKS = {"layer.0": 75, "layer.1": 6}  # 3 words and 1 at n = 4 (27 entries a word)


def session_inputs(client: int, aggregation: int) -> dict[str, np.ndarray]:
    """The fixed input vectors of the session vector (bits, a function of client and index)."""
    rng = SeededRandomSource(_seed(f"input-{client}-{aggregation}"))
    return {
        name: np.frombuffer(rng.random_bytes(length), dtype=np.uint8) & 1
        for name, length in SESSION_CHUNKS.items()
    }


def _provider(client: int) -> Callable[[int, ChunkSpec], np.ndarray]:
    return lambda index, chunk: session_inputs(client, index)[chunk.name]


def session_vector(
    drop: dict[int, str],
    roster: tuple[int, ...] = SESSION_ROSTER,
    options: dict[str, int] | None = None,
    label: str = "session",
) -> dict[str, Any]:
    """A session over `roster` (default: 4 clients, t = 3, quorum 3, the complete graph), two
    aggregations, client c dropping for good at round `drop[c]`; every secret from `label`."""
    inputs = {c: _provider(c) for c in roster}
    options = options or {"threshold": 3, "neighbors": 3}
    session = build(roster, inputs, SeededRandomSource(_seed(label)), options, record=True)
    keys: dict[str, dict[str, Any]] = {
        str(c): {"self_seeds": {}, "mask_private": {}} for c in roster
    }
    aggregations = []
    gone: set[int] = set()

    def dropper(client: int, msg: Any) -> bool:
        if drop.get(client) == round_of(msg):
            gone.add(client)
        return client in gone

    for index in (0, 1):
        spec = AggregationSpec.from_lengths(index, SESSION_CHUNKS, 1)
        outgoing: Any = session.server.begin(spec)
        while True:
            replies = deliver(session, outgoing, dropper)
            for c, reply in replies.items():  # only the clients' read-only key views are used
                client, mine = session.clients[c], keys[str(c)]
                if tag_of(reply) == "additive/share-keys":  # b_u^r, s_u^r drawn for this reply
                    mine["self_seeds"][str(index)] = client.self_seed.hex()
                    mine["mask_private"][str(index)] = client.mask_key.private_bytes_raw().hex()
                if getattr(client, "cipher_key", None) is not None:
                    mine["cipher_private"] = client.cipher_key.private_bytes_raw().hex()
            outgoing = session.server.handle(replies)
            if isinstance(outgoing, AggregateResult):
                break
        aggregations.append(
            {
                "index": index,
                "contributors": list(outgoing.contributors),
                "sums": {name: [int(v) for v in s] for name, s in outgoing.sums.items()},
            }
        )
    return {
        "seed": _seed(label).hex(),
        "roster": list(roster),
        "options": options,
        "drop": {str(c): r for c, r in drop.items()},
        "chunks": [
            {"name": c.name, "length": c.length, "offset": c.offset}
            for c in AggregationSpec.from_lengths(0, SESSION_CHUNKS, 1).chunks
        ],
        "inputs": {
            str(c): {
                str(i): {n: [int(v) for v in x] for n, x in session_inputs(c, i).items()}
                for i in (0, 1)
            }
            for c in roster
        },
        "session_id": session.config.session_id.hex(),
        "config_digest": config_digest(session.config).hex(),
        "identity_public_keys": {
            str(c): k.hex() for c, k in session.config.options["identity_public_keys"].items()
        },
        "client_keys": keys,
        "aggregations": aggregations,
        "transcript": [
            {"direction": d, "client": c, "wire": w.hex()} for d, c, w in session.transcript
        ],
    }


def generate() -> dict[str, Any]:
    """File name -> JSON object of every vector file."""
    return {
        "kdf.json": kdf_vectors(),
        "prg.json": prg_vectors(),
        "layout.json": layout_vectors(),
        "shamir.json": shamir_vectors(),
        "graph.json": graph_vectors(),
        "session.json": session_vector({}),
        "session_dropout.json": session_vector({8: "masked-input"}),
        # a sparse graph (a ring, k = 2, t = 2, quorum 5): views, shares and recovery per neighbour
        "session_sparse_dropout.json": session_vector(
            {7: "masked-input"}, SPARSE_ROSTER, {"neighbors": 2, "threshold": 2}, "session-sparse"
        ),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("protocols/vectors/additive"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, content in generate().items():
        (args.out / name).write_text(json.dumps(content, indent=1, sort_keys=True) + "\n")
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
