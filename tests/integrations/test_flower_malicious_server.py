"""A ServerApp that substitutes keys, lowers the threshold or the cohort: every pinned node refuses
before it builds its protocol client, so nothing is masked or released (issue 12, items 4 and 5).
In process (LocalGrid) with the real ClientApp; the pure checks are in test_flower_trust.py."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="flwr is not installed (pip install '.[flower]')")

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from fedprllm_secure.errors import FedPrError  # noqa: E402
from fedprllm_secure.integrations.flower import client_app as ca  # noqa: E402
from fedprllm_secure.integrations.flower import records as R  # noqa: E402
from fedprllm_secure.integrations.flower import trust as T  # noqa: E402
from fedprllm_secure.integrations.flower.enrollment import node_enroll  # noqa: E402
from fedprllm_secure.integrations.flower.federation import FlowerFederation  # noqa: E402
from fedprllm_secure.integrations.flower.local import LocalGrid  # noqa: E402
from fedprllm_secure.integrations.flower.server_app import prune_with_flower  # noqa: E402
from fedprllm_secure.randomness import SystemRandomSource  # noqa: E402

from .test_flower_local import assert_nothing_masked, grid_for, settings  # noqa: E402

pytestmark = pytest.mark.flower


def attack(grid: LocalGrid, model: Path, **overrides) -> str:
    grid.record_replies = True
    with pytest.raises(FedPrError) as error:
        prune_with_flower(grid, settings(**overrides), str(model))
    assert_nothing_masked(grid)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_substituted_additive_identity_key_is_refused(
    tiny_model_dir: Path, client_dir: Path, keys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    honest_relay = FlowerFederation.relay
    server_key = Ed25519PrivateKey.generate()

    def relay(self, replies):  # the server plays client 1 with a key of its own
        publics, attestations = honest_relay(self, replies)
        draft = R.decode_config(R.array_blob(_node_state(self, 0)["config"]))
        forged = T.public_key(Ed25519PrivateKey.generate())
        publics[1] = forged
        attestations[1] = T.attest(server_key, "additive", draft, 1, forged)
        return publics, attestations

    monkeypatch.setattr(FlowerFederation, "relay", relay)
    grid = grid_for(tiny_model_dir, client_dir, keys)
    message = attack(grid, tiny_model_dir, protocol="additive")
    assert "not one of the node keys pinned in the trust file" in message


def _node_state(run: FlowerFederation, client: int):
    grid = run.grid
    assert isinstance(grid, LocalGrid)
    return grid.contexts[run.node_of[client]].state.array_records[ca.DRAFT]


def test_a_ckks_public_context_of_the_servers_own_is_refused(
    tiny_model_dir: Path, client_dir: Path, keys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    honest_relay = FlowerFederation.relay

    def relay(self, replies):  # the server's own context (it holds the secret key)
        publics, attestations = honest_relay(self, replies)
        draft = R.decode_config(R.array_blob(_node_state(self, 0)["config"]))
        authority = int(draft.options["authority"])
        publics[authority] = node_enroll("ckks", draft, authority, SystemRandomSource())[1]
        return publics, attestations

    monkeypatch.setattr(FlowerFederation, "relay", relay)
    grid = grid_for(tiny_model_dir, client_dir, keys)
    message = attack(grid, tiny_model_dir, protocol="ckks")
    assert "public part is not signed by its identity key" in message


def test_a_ckks_authority_other_than_the_pinned_one_is_refused(
    tiny_model_dir: Path, client_dir: Path, keys: Path
) -> None:
    grid = grid_for(tiny_model_dir, client_dir, keys)  # the trust file pins node-0
    pinned = T.public_key(T.load_identity(keys / "node-0" / "identity.pem"))
    other = next(
        c for c, n in enumerate(sorted(grid.contexts))
        if T.public_key(T.load_identity(str(grid.contexts[n].node_config["identity"]))) != pinned
    )  # fmt: skip
    message = attack(grid, tiny_model_dir, protocol="ckks", options={"authority": other})
    assert "is not the node pinned as ckks_authority" in message


def test_a_lowered_threshold_or_cohort_is_refused_at_enrollment(
    tiny_model_dir: Path, client_dir: Path, keys: Path
) -> None:
    grid = grid_for(tiny_model_dir, client_dir, keys)
    message = attack(grid, tiny_model_dir, protocol="additive", options={"threshold": 2})
    assert "did not enroll" in message and "threshold 2 is below the minimum 3" in message
    grid = grid_for(tiny_model_dir, client_dir, keys)
    message = attack(grid, tiny_model_dir, protocol="ckks", options={"min_contributors": 1})
    assert "min_contributors is 1, below the minimum cohort 3" in message
    grid = grid_for(tiny_model_dir, client_dir, keys)
    message = attack(grid, tiny_model_dir, protocol="additive", min_cohort=2, num_nodes=2)
    assert "roster has 2 clients, fewer than the minimum cohort 3" in message


def test_a_node_without_a_trust_file_refuses_a_secure_protocol(
    tiny_model_dir: Path, client_dir: Path, tmp_path: Path
) -> None:
    nodes = {
        i: {"model": str(tiny_model_dir), "data": str(client_dir / e), "ledger": str(tmp_path)}
        for i, e in enumerate(("alice.txt", "bob.jsonl", "carol"))
    }
    message = attack(LocalGrid(ca.app, nodes), tiny_model_dir, protocol="additive")
    assert "no trust file" in message and "trust='server'" in message


def test_the_server_never_publishes_a_sum_over_fewer_than_the_cohort(
    tiny_model_dir: Path, client_dir: Path, keys: Path
) -> None:
    """`simulate`'s release guard on Flower: with one node lost, 2 contributors are below the
    cohort of 3. Under plaintext the ServerApp's guard is the only one; under additive (threshold
    2) the releasing parties refuse first: 2 survivors are below the quorum of 3 signatures
    a survivor list needs and below the cohort."""

    def lose(round_name: str):
        dead: set[int] = set()

        def drop(node: int, message) -> bool:
            if node == 1001 and message.metadata.group_id == round_name:
                dead.add(node)
            return node in dead

        return drop

    grid = grid_for(tiny_model_dir, client_dir, keys, drop=lose("protocol-1"))
    with pytest.raises(FedPrError, match="fewer than the minimum cohort of 3"):
        prune_with_flower(
            grid, settings(protocol="plaintext", min_cohort=3, round_timeout_s=2),
            str(tiny_model_dir),
        )  # fmt: skip
    grid = grid_for(tiny_model_dir, client_dir, keys, drop=lose("protocol-3"), min_threshold=2)
    with pytest.raises(FedPrError, match="minimum cohort|min_contributors|quorum"):
        prune_with_flower(
            grid,
            settings(protocol="additive", options={"threshold": 2}, round_timeout_s=2),
            str(tiny_model_dir),
        )
