"""The independent verifier (written from protocols/additive.md alone) over the committed vectors."""

from __future__ import annotations

import ast
import copy
import json
from collections import Counter
from pathlib import Path

import pytest

from .additive_codec import decode, encode
from .session_check import verify_session
from .verify_additive import CHECKS, DEFAULT, main, verify_dir

HERE = Path(__file__).resolve().parent
VERIFIER = ["additive_spec.py", "additive_codec.py", "session_check.py", "verify_additive.py"]

# what every run must have recomputed at least once (the verifier's coverage)
COVERED = [
    "kdf.public", "kdf.shared", "kdf.key", "seal.nonce", "seal.aad", "seal.ciphertext",
    "prg.words", "layout.params", "layout.words", "shamir.shares", "shamir.recovery",
    "graph.neighbours", "wire.decoded", "session.config_digest", "session.graph",
    "session.graph_seed", "session.cipher_public", "session.advertise_signature",
    "session.share_keys_request", "session.mask_public", "session.mask_key_signature",
    "session.commitment", "session.sealed_share", "session.masked_input_request",
    "session.pairwise_seed", "session.masked_input", "session.view_signature",
    "session.survivors", "session.survivor_signature", "session.unmask_request",
    "session.released_shares", "session.shamir_self_seeds", "session.shamir_mask_private",
    "session.recovered_self_seed", "session.recovered_mask_key", "session.sum",
]  # fmt: skip


def test_every_committed_vector_file_is_recomputed():
    files = sorted(p.name for p in DEFAULT.glob("*.json"))
    assert set(CHECKS) <= set(files)
    assert all(name in CHECKS or name.startswith("session") for name in files)
    coverage = verify_dir(DEFAULT)
    assert coverage["files"] == len(files)
    assert [name for name in COVERED if coverage[name] == 0] == []
    # every message of every session transcript was decoded
    sessions = [json.loads((DEFAULT / n).read_text()) for n in files if n.startswith("session")]
    assert coverage["wire.decoded"] == sum(len(s["transcript"]) for s in sessions)


def test_command_prints_the_coverage(capsys):
    main([str(DEFAULT)])
    assert "session.sum" in capsys.readouterr().out


def test_the_verifier_imports_nothing_of_the_implementation():
    for name in VERIFIER:
        tree = ast.parse((HERE / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert not node.module.startswith(("fedprllm_secure", "tests")), (name, node.module)
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("fedprllm_secure") for a in node.names), name


def load(name: str) -> dict:
    return json.loads((DEFAULT / name).read_text())


def flip_masked_input(data: dict) -> None:
    """Re-encode the first masked-input upload with one bit of its masked words flipped."""
    for entry in data["transcript"]:
        tag, fields = decode(bytes.fromhex(entry["wire"]))
        if tag == "additive/masked-input":
            fields["data"] = bytes([fields["data"][0] ^ 1]) + fields["data"][1:]
            entry["wire"] = encode(tag, fields).hex()
            return
    raise AssertionError("no masked input")


SESSION_TAMPERING = {
    "sum": lambda d: d["aggregations"][0]["sums"]["layer.0"].__setitem__(0, 9),
    "contributors": lambda d: d["aggregations"][1]["contributors"].pop(),
    "config digest": lambda d: d.__setitem__("config_digest", "00" * 32),
    "threshold option": lambda d: d["options"].__setitem__("threshold", 4),
    "self seed": lambda d: d["client_keys"]["5"]["self_seeds"].__setitem__("1", "11" * 32),
    "mask key": lambda d: d["client_keys"]["3"]["mask_private"].__setitem__("0", "22" * 32),
    "cipher key": lambda d: d["client_keys"]["13"].__setitem__("cipher_private", "33" * 32),
    "input": lambda d: d["inputs"]["5"]["0"]["layer.1"].__setitem__(
        0, 1 - d["inputs"]["5"]["0"]["layer.1"][0]
    ),
    "masked input": flip_masked_input,
}


@pytest.mark.parametrize(
    "name", ["session.json", "session_dropout.json", "session_sparse_dropout.json"]
)
@pytest.mark.parametrize("change", SESSION_TAMPERING, ids=str)
def test_a_changed_session_vector_is_refused(name, change):
    data = copy.deepcopy(load(name))
    verify_session(copy.deepcopy(data), Counter())  # the control passes
    SESSION_TAMPERING[change](data)
    with pytest.raises(AssertionError):
        verify_session(data, Counter())


FILE_TAMPERING = {
    "kdf.json": lambda d: d["x25519_hkdf"][1].__setitem__("key", "00" * 32),
    "prg.json": lambda d: d["cases"][2]["words"].__setitem__(3, 0),
    "layout.json": lambda d: d["cases"][4]["words"].__setitem__(0, 1),
    "shamir.json": lambda d: d["cases"][1]["shares"].__setitem__("4", "00" * 66),
    "graph.json": lambda d: d["cases"][0]["neighbours"]["100"].reverse(),
}


@pytest.mark.parametrize("name", sorted(FILE_TAMPERING))
def test_a_changed_primitive_vector_is_refused(name):
    data = load(name)
    CHECKS[name](copy.deepcopy(data), Counter())
    FILE_TAMPERING[name](data)
    with pytest.raises(AssertionError):
        CHECKS[name](data, Counter())
