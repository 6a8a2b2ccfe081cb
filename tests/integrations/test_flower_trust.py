"""What a Flower node pins and refuses (issue 12, items 3-5), without flwr: the pure checks of
`integrations/flower/{trust,node_ledger,settings}.py` that the ClientApp and ServerApp call.

A malicious server is played here by editing what it relays: substituted identity keys, its own
ckks public context, a lowered threshold or cohort. Each is refused before the node builds its
protocol client, so nothing is released.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedprllm_secure.errors import ConfigError, ProtocolError
from fedprllm_secure.integrations.flower import trust as T
from fedprllm_secure.integrations.flower.enrollment import node_enroll, prepare_options
from fedprllm_secure.integrations.flower.node_ledger import (
    LedgerFile,
    data_digest,
    round_fingerprint,
)
from fedprllm_secure.integrations.flower.settings import cohort_of, flower_run_config
from fedprllm_secure.randomness import SeededRandomSource
from fedprllm_secure.secure_sum import registry
from fedprllm_secure.secure_sum.api import SessionConfig, config_digest

ROSTER = (0, 1, 2)


class Federation:
    """Three honest nodes with pinned identities, and what an honest server relays."""

    def __init__(self, protocol: str, options: dict | None = None, authority: int = 0) -> None:
        self.protocol = protocol
        self.keys = {c: Ed25519PrivateKey.generate() for c in ROSTER}
        self.policy = T.TrustPolicy(
            nodes=frozenset(T.public_key(k) for k in self.keys.values()),
            ckks_authority=T.public_key(self.keys[authority]),
            protocols=("plaintext", "additive", "ckks"),
            source="trust.json",
        )
        info = registry.get(protocol)
        options = info.with_cohort(prepare_options(protocol, ROSTER, dict(options or {})), 3)
        self.draft = SessionConfig(b"d" * 32, ROSTER, options)
        self.publics: dict[int, bytes] = {}
        self.attestations: dict[int, tuple[bytes, bytes]] = {}
        rng = SeededRandomSource("trust-test")
        for c in ROSTER:
            _secret, public = node_enroll(protocol, self.draft, c, rng.child(str(c)))
            self.publics[c] = public
            self.attestations[c] = T.attest(self.keys[c], protocol, self.draft, c, public)

    def own(self, c: int) -> tuple[bytes, bytes]:
        return T.public_key(self.keys[c]), self.publics[c]

    def config_for(self, c: int, publics=None, attestations=None, policy=None, draft=None):
        return T.published_config(
            self.policy if policy is None else policy,
            self.protocol,
            self.draft if draft is None else draft,
            c,
            self.own(c),
            self.publics if publics is None else publics,
            self.attestations if attestations is None else attestations,
        )


@pytest.fixture(scope="module")
def additive() -> Federation:
    return Federation("additive")


@pytest.fixture(scope="module")
def ckks() -> Federation:
    return Federation("ckks")


def test_the_honest_pinned_enrollment_gives_every_node_the_same_config(
    additive: Federation, ckks: Federation
) -> None:
    for federation in (additive, ckks):
        digests = {config_digest(federation.config_for(c)) for c in ROSTER}
        assert len(digests) == 1


def test_a_substituted_additive_identity_key_is_refused(additive: Federation) -> None:
    server_key = Ed25519PrivateKey.generate()  # the server plays client 1 itself
    forged = T.public_key(Ed25519PrivateKey.generate())
    publics = {**additive.publics, 1: forged}
    # (a) the node's attestation kept: it does not cover the substituted key
    with pytest.raises(T.TrustRefusal, match="client 1's public part is not signed"):
        additive.config_for(0, publics=publics)
    # (b) attested by a key of the server's: not a pinned node key
    attestations = {
        **additive.attestations,
        1: T.attest(server_key, "additive", additive.draft, 1, forged),
    }
    with pytest.raises(T.TrustRefusal, match="not one of the node keys pinned"):
        additive.config_for(0, publics=publics, attestations=attestations)


def test_a_node_refuses_a_config_in_which_its_own_entry_is_not_its_own(
    additive: Federation,
) -> None:
    # the server swaps two nodes' (validly attested) entries: each sees someone else as itself
    publics = {**additive.publics, 0: additive.publics[1], 1: additive.publics[0]}
    attestations = {**additive.attestations, 0: additive.attestations[1]}
    attestations[1] = additive.attestations[0]
    with pytest.raises(T.TrustRefusal):
        additive.config_for(0, publics=publics, attestations=attestations)
    other = dataclasses.replace(additive.policy)
    with pytest.raises(T.TrustRefusal, match="not this node's own"):
        T.check_attestations(
            other, "additive", additive.draft, 0,
            (T.public_key(additive.keys[0]), b"x" * 32), additive.publics, additive.attestations,
        )  # fmt: skip


def test_one_identity_key_cannot_fill_two_roster_slots(additive: Federation) -> None:
    key = additive.keys[0]
    attestations = {
        **additive.attestations,
        2: T.attest(key, "additive", additive.draft, 2, additive.publics[2]),
    }
    with pytest.raises(T.TrustRefusal, match="same identity key"):
        additive.config_for(1, attestations=attestations)


def test_a_ckks_public_context_the_server_holds_the_secret_of_is_refused(ckks: Federation) -> None:
    server_public = node_enroll("ckks", ckks.draft, 0, SeededRandomSource("server"))[1]
    assert server_public and server_public != ckks.publics[0]
    publics = {**ckks.publics, 0: server_public}
    with pytest.raises(T.TrustRefusal, match="client 0's public part is not signed"):
        ckks.config_for(1, publics=publics)
    server_key = Ed25519PrivateKey.generate()
    attestations = {
        **ckks.attestations,
        0: T.attest(server_key, "ckks", ckks.draft, 0, server_public),
    }
    with pytest.raises(T.TrustRefusal, match="not one of the node keys pinned"):
        ckks.config_for(1, publics=publics, attestations=attestations)


def test_the_ckks_authority_must_be_the_pinned_one(ckks: Federation) -> None:
    # a trust file pinning node 2 as the authority refuses a session whose authority is node 0
    policy = dataclasses.replace(ckks.policy, ckks_authority=T.public_key(ckks.keys[2]))
    with pytest.raises(T.TrustRefusal, match="not the node pinned as ckks_authority"):
        ckks.config_for(1, policy=policy)
    with pytest.raises(T.TrustRefusal, match="pins no ckks_authority"):
        ckks.config_for(1, policy=dataclasses.replace(ckks.policy, ckks_authority=None))


def test_a_lowered_additive_threshold_is_refused(additive: Federation) -> None:
    low = SessionConfig(
        additive.draft.session_id, ROSTER, {**additive.draft.options, "threshold": 2}
    )
    with pytest.raises(T.TrustRefusal, match="threshold 2 is below the minimum 3"):
        T.check_draft(additive.policy, "additive", low, 0)
    T.check_draft(dataclasses.replace(additive.policy, min_threshold=2), "additive", low, 0)
    with pytest.raises(T.TrustRefusal, match="threshold 2 is below the minimum 3"):
        T.check_draft(dataclasses.replace(additive.policy, min_threshold=3), "additive", low, 0)


def test_any_protocol_reporting_trust_facts_gets_the_threshold_and_authority_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a third-party protocol (no name known to trust.py) reports its facts from the draft
    facts = ("threshold", "default_threshold", "authority")
    probe = dataclasses.replace(
        registry.get("plaintext"), name="probe", secure=True, cohort_option=None,
        trust_facts=lambda draft: {k: draft.options[k] for k in facts if k in draft.options},
    )  # fmt: skip
    monkeypatch.setitem(registry._PROTOCOLS, "probe", probe)
    keys = {c: Ed25519PrivateKey.generate() for c in ROSTER}
    policy = T.TrustPolicy(
        nodes=frozenset(T.public_key(k) for k in keys.values()),
        ckks_authority=T.public_key(keys[0]),
        protocols=("probe",),
        source="trust.json",
    )
    T.check_draft(policy, "probe", SessionConfig(b"p" * 32, ROSTER, {}), 0)  # no facts: no check
    low = SessionConfig(b"p" * 32, ROSTER, {"threshold": 2, "default_threshold": 3})
    with pytest.raises(T.TrustRefusal, match="probe threshold 2 is below the minimum 3"):
        T.check_draft(policy, "probe", low, 0)
    T.check_draft(dataclasses.replace(policy, min_threshold=2), "probe", low, 0)

    publics = {c: b"part-%d" % c for c in ROSTER}

    def check(authority: int) -> None:
        draft = SessionConfig(b"p" * 32, ROSTER, {"authority": authority})
        attested = {c: T.attest(keys[c], "probe", draft, c, publics[c]) for c in ROSTER}
        own = (T.public_key(keys[1]), publics[1])
        T.check_attestations(policy, "probe", draft, 1, own, publics, attested)

    check(0)  # the pinned authority
    with pytest.raises(T.TrustRefusal, match=r"probe key authority \(client 2\) is not the node"):
        check(2)


def test_a_lowered_cohort_is_refused(ckks: Federation) -> None:
    for protocol in registry.available():
        option = registry.get(protocol).cohort_option
        if option is None:
            continue
        draft = SessionConfig(b"c" * 32, ROSTER, {**_options(protocol), option: 2})
        with pytest.raises(T.TrustRefusal, match=f"{option} is 2, below the minimum cohort 3"):
            T.check_draft(ckks.policy, protocol, draft, 0)
        missing = SessionConfig(b"c" * 32, ROSTER, _options(protocol))
        with pytest.raises(T.TrustRefusal, match="below the minimum cohort"):
            T.check_draft(ckks.policy, protocol, missing, 0)
    small = SessionConfig(b"c" * 32, (0, 1), {"min_contributors": 3})
    with pytest.raises(T.TrustRefusal, match="roster has 2 clients, fewer than the minimum"):
        T.check_draft(ckks.policy, "additive", small, 0)


def _options(protocol: str) -> dict:
    return {"authority": 0} if protocol == "ckks" else {}


def test_without_a_trust_file_a_secure_protocol_is_refused_unless_the_server_is_trusted(
    additive: Federation,
) -> None:
    for protocol in ("additive", "ckks"):
        with pytest.raises(T.TrustRefusal, match="no trust file"):
            T.check_draft(None, protocol, additive.draft, 0)
    T.check_draft(None, "plaintext", SessionConfig(b"p" * 32, ROSTER), 0)
    trusting = T.load_trust("server")
    assert trusting is not None and trusting.server_trusted
    forged = {**additive.publics, 1: b"\x01" * 32}
    config = T.published_config(
        trusting, "additive", additive.draft, 0, None, forged, {}
    )  # trust='server': what the server relays is used as it is
    assert config.options["identity_public_keys"][1] == b"\x01" * 32
    with pytest.raises(T.TrustRefusal, match="not allowed by the trust file"):
        T.check_draft(
            dataclasses.replace(additive.policy, protocols=("additive",)),
            "plaintext", SessionConfig(b"p" * 32, ROSTER), 0,
        )  # fmt: skip


def test_identity_and_trust_files(tmp_path: Path) -> None:
    key, created = T.create_identity(tmp_path / "node" / "id.pem")
    again, created_again = T.create_identity(tmp_path / "node" / "id.pem")
    assert created and not created_again and T.public_key(key) == T.public_key(again)
    assert (tmp_path / "node" / "id.pem").stat().st_mode & 0o777 == 0o600
    other = T.public_key(Ed25519PrivateKey.generate())
    path = T.write_trust(tmp_path / "trust.json", [T.public_key(key), other], other, 4, 5)
    policy = T.load_trust(str(path))
    assert policy is not None and policy.nodes == {T.public_key(key), other}
    assert (policy.ckks_authority, policy.min_cohort, policy.min_threshold) == (other, 4, 5)
    for bad in ({"version": 2}, {"version": 1, "nodes": []}, {"version": 1, "nodes": ["ab"]},
                {"version": 1, "nodes": [other.hex()], "ckks_authority": "00" * 32},
                {"version": 1, "nodes": [other.hex()], "min_cohort": 0},
                {"version": 1, "nodes": [other.hex()], "extra": 1}):  # fmt: skip
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(ConfigError):
            T.load_trust(str(tmp_path / "bad.json"))
    with pytest.raises(ConfigError, match="node-key"):
        T.load_identity(tmp_path / "missing.pem")


def test_the_enrollment_relay_codec_refuses_garbage(additive: Federation) -> None:
    data = T.encode_enrollment(additive.publics, additive.attestations)
    assert T.decode_enrollment(data) == (additive.publics, additive.attestations)
    with pytest.raises(ProtocolError):
        T.decode_enrollment(data[:-2])


# --- the ledger file (item 3) ------------------------------------------------------------------


def test_a_layer_released_to_one_session_is_refused_to_any_other(tmp_path: Path) -> None:
    ledger = LedgerFile(tmp_path / "ledger", "f" * 64, "model M, data D")
    ledger.record(b"s1", 0, ["a", "b"])
    ledger.record(b"s1", 0, ["b"])  # the same (session, aggregation) may read it again
    again = LedgerFile(tmp_path / "ledger", "f" * 64)  # a new `flwr run`: a new process
    for binding, index, layers in ((b"s2", 0, ["b"]), (b"s1", 1, ["a"]), (b"s2", 0, ["c", "a"])):
        with pytest.raises(ProtocolError) as refused:
            again.record(binding, index, layers)
        message = str(refused.value)
        assert str(again.path) in message and "delete that file" in message
        assert "subtract" in message and "\n" not in message
    again.record(b"s2", 0, ["c"])  # a layer never released before is free
    with pytest.raises(ProtocolError, match="layer 'a'"):
        again.check_fresh(["c0", "a"])
    LedgerFile(tmp_path / "ledger", "e" * 64).check_fresh(["a"])  # another calibration


def test_the_pruning_round_is_the_model_and_the_text_not_the_servers_settings(
    tmp_path: Path,
) -> None:
    text = tmp_path / "alice.txt"
    text.write_text("some text")
    first = round_fingerprint("/m", "layout", data_digest(text))
    assert first == round_fingerprint("/m", "layout", data_digest(text))
    text.write_text("other text")
    assert round_fingerprint("/m", "layout", data_digest(text)) != first
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("x")
    assert data_digest(folder) != data_digest(folder / "a.txt")


# --- run config defaults (item 4) --------------------------------------------------------------


def test_secure_protocols_need_a_cohort_of_three_by_default() -> None:
    for protocol in ("additive", "ckks"):
        with pytest.raises(ConfigError, match="num-nodes 2 is below the minimum cohort 3"):
            flower_run_config({"protocol": protocol, "num-nodes": 2})
        config, options = flower_run_config({"protocol.name": protocol})
        assert (options.num_nodes, cohort_of(config)) == (3, 3)
    config, options = flower_run_config({"num-nodes": 1})  # plaintext
    assert cohort_of(config) == 1
    lowered, _ = flower_run_config({"protocol": "additive", "num-nodes": 2, "min-clients": 2})
    assert cohort_of(lowered) == 2


def test_the_run_config_takes_field_paths_and_names_a_bad_key() -> None:
    config, _ = flower_run_config(
        {"pruning.sparsity": 0.6, "mode": "iterative", "privacy.rr_epsilon": 2.0,
         "protocol-options": '{"threshold": 3}', "seed": 4}
    )  # fmt: skip
    assert (config.pruning.sparsity, config.pruning.mode, config.seed) == (0.6, "iterative", 4)
    assert config.privacy.rr_epsilon == 2.0 and config.protocol.options == {"threshold": 3}
    with pytest.raises(ConfigError, match="pruning.sparsity"):
        flower_run_config({"pruning.sparsity": 1.5})
    with pytest.raises(ConfigError, match="unknown setting 'pruning.nope'"):
        flower_run_config({"pruning.nope": 1})
    with pytest.raises(ConfigError, match="fedprllm only"):
        flower_run_config({"pruning.methods": ["fedprllm", "centralized"]})


def test_the_node_key_command_creates_a_key_once_and_prints_its_public_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedprllm_secure.cli import main

    path = tmp_path / "keys" / "node.pem"
    assert main(["node-key", str(path)]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["node-key", str(path)]) == 0
    assert capsys.readouterr().out.strip() == first == T.public_key(T.load_identity(path)).hex()
