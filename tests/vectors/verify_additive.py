"""Independent verifier of protocols/vectors/additive/*.json, written from protocols/additive.md.

    python -m tests.vectors.verify_additive [protocols/vectors/additive]

Recomputes every value the spec makes derivable from a vector file and raises AssertionError at
the first disagreement; returns a Counter of what it checked (the coverage, per field). Imports
nothing from `fedprllm_secure`: the primitives are `additive_spec.py`, the wire format
`additive_codec.py`, both written from the spec text.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from . import additive_spec as S
from .session_check import verify_session

DEFAULT = Path(__file__).resolve().parents[2] / "protocols" / "vectors" / "additive"


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def verify_kdf(data: dict, cov: Counter) -> None:
    """kdf.json: X25519 publics and shared secrets, the section 3.1 KDF, the 3.2 share seal."""
    for case in data["x25519_hkdf"]:
        a, b = h(case["private_a"]), h(case["private_b"])
        assert S.x25519_public(a).hex() == case["public_a"]
        assert S.x25519_public(b).hex() == case["public_b"]
        assert S.x25519(a, h(case["public_b"])).hex() == case["shared"]
        assert S.x25519(b, h(case["public_a"])).hex() == case["shared"]
        label = case["label"].encode()
        assert label in (b"share-key", b"mask-seed")
        key = S.kdf(h(case["shared"]), h(case["session_id"]), label, case["id_a"], case["id_b"])
        assert key.hex() == case["key"]
        cov.update(["kdf.public", "kdf.shared", "kdf.key"])
    seal = data["aes_gcm_share"]
    args = (seal["aggregation"], seal["sender"], seal["recipient"])
    sid = h(seal["session_id"])
    assert S.share_nonce(*args).hex() == seal["nonce"]
    assert S.share_aad(sid, *args).hex() == seal["aad"]
    sealed = S.share_seal(h(seal["key"]), sid, *args, h(seal["plaintext"]))
    assert sealed.hex() == seal["ciphertext"]
    assert S.share_open(h(seal["key"]), sid, *args, sealed).hex() == seal["plaintext"]
    cov.update(["seal.nonce", "seal.aad", "seal.ciphertext"])


def verify_prg(data: dict, cov: Counter) -> None:
    """prg.json: section 3.3 mask words at an entry offset, any aggregation index."""
    for case in data["cases"]:
        words = S.prg_words(
            h(case["seed"]), case["aggregation"], case["offset"], case["length"], case["bits"]
        )
        assert words == case["words"], case
        cov["prg.words"] += 1


def verify_layout(data: dict, cov: Counter) -> None:
    """layout.json: section 2 radix, entries per word, word bits and striped packing."""
    for case in data["cases"]:
        max_sum = case["max_sum"]
        assert (case["radix"], case["per_word"], case["bits"]) == S.layout(max_sum)
        assert S.pack_words(case["entries"], max_sum) == case["words"]
        assert all(w < 2 ** case["bits"] for w in case["words"])
        assert S.unpack_words(case["words"], len(case["entries"]), max_sum) == case["entries"]
        cov.update(["layout.params", "layout.words"])


def verify_shamir(data: dict, cov: Counter) -> None:
    """shamir.json: section 3.4 shares f(x) (66 bytes) and recovery from the t smallest points."""
    assert int(data["prime"], 16) == S.PRIME and data["share_bytes"] == S.SHARE_BYTES
    for case in data["cases"]:
        coefficients = [int(c, 16) for c in case["coefficients"]]
        assert len(coefficients) == case["threshold"]
        assert coefficients[0] == int(case["secret"], 16) < 2**256
        assert all(0 <= c < S.PRIME for c in coefficients)
        shares = {int(x): h(v) for x, v in case["shares"].items()}
        for x, share in shares.items():
            assert S.shamir_eval(coefficients, x) == share
        t = case["threshold"]
        assert S.shamir_recover(shares, t).hex() == case["secret"]
        points = sorted(shares)
        for start in range(len(points) - t + 1):
            subset = {x: shares[x] for x in points[start : start + t]}
            assert S.shamir_recover(subset, t).hex() == case["secret"]
        cov.update(["shamir.shares", "shamir.recovery"])


def verify_graph(data: dict, cov: Counter) -> None:
    """graph.json: section 3.6 Harary graph on the seed's Fisher-Yates order."""
    for case in data["cases"]:
        graph = S.harary(case["roster"], case["k"], h(case["seed"]))
        assert {str(u): sorted(vs) for u, vs in graph.items()} == case["neighbours"]
        cov["graph.neighbours"] += 1


CHECKS = {
    "kdf.json": verify_kdf,
    "prg.json": verify_prg,
    "layout.json": verify_layout,
    "shamir.json": verify_shamir,
    "graph.json": verify_graph,
}


def verify_file(path: Path, cov: Counter | None = None) -> Counter:
    """Check one vector file (a session file when its name starts with `session`)."""
    cov = Counter() if cov is None else cov
    data = json.loads(path.read_text())
    if path.name.startswith("session"):
        verify_session(data, cov)
    else:
        CHECKS[path.name](data, cov)
    cov["files"] += 1
    return cov


def verify_dir(folder: Path = DEFAULT) -> Counter:
    """Check every *.json in `folder`; an unknown file name is an error (nothing goes unchecked)."""
    cov: Counter = Counter()
    for path in sorted(folder.glob("*.json")):
        verify_file(path, cov)
    return cov


def main(argv: list[str]) -> None:
    folder = Path(argv[0]) if argv else DEFAULT
    for name, count in sorted(verify_dir(folder).items()):
        print(f"{name:32} {count}")


if __name__ == "__main__":
    main(sys.argv[1:])
