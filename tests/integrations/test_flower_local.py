"""The Flower ServerApp/ClientApp in one process (LocalGrid): same masks as `simulate`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr", reason="flwr is not installed (pip install '.[flower]')")

from fedprllm_secure.errors import FedPrError  # noqa: E402
from fedprllm_secure.integrations.flower.client_app import app as client_app  # noqa: E402
from fedprllm_secure.integrations.flower.local import LocalGrid  # noqa: E402
from fedprllm_secure.integrations.flower.server_app import (  # noqa: E402
    PruningSettings,
    prune_with_flower,
)
from fedprllm_secure.progress import SilentProgress  # noqa: E402
from fedprllm_secure.simulate import FederatedPruning, _Timer  # noqa: E402

from ..test_pipeline import config_for  # noqa: E402

pytestmark = pytest.mark.flower

ENTRIES = ("alice.txt", "bob.jsonl", "carol")


def simulated_masks(model: Path, clients: Path, **overrides) -> dict[str, np.ndarray]:
    config = config_for(model, clients, **overrides)
    masks, _ = FederatedPruning(config, SilentProgress(), _Timer()).run_fedprllm()
    return masks


def settings(**overrides) -> PruningSettings:
    base = dict(num_nodes=3, samples_per_client=2, seqlen=32, round_timeout_s=30)
    base.update(overrides)
    return PruningSettings(**base)


def grid_for(model: Path, clients: Path, drop=None, entries=ENTRIES) -> LocalGrid:
    nodes = {
        1000 + i: {"model": str(model), "data": str(clients / e)} for i, e in enumerate(entries)
    }
    return LocalGrid(client_app, nodes, drop=drop)


@pytest.mark.parametrize(
    "protocol, options",
    [("plaintext", {}), ("additive", {}), ("ckks", {}), ("ckks", {"he_scheme": "bfv"})],
)
def test_flower_masks_equal_simulate(
    tiny_model_dir: Path, client_dir: Path, protocol: str, options: dict
) -> None:
    expected = simulated_masks(tiny_model_dir, client_dir, group="layer")
    grid = grid_for(tiny_model_dir, client_dir)
    result, _ = prune_with_flower(
        grid, settings(protocol=protocol, options=options), str(tiny_model_dir)
    )
    assert result.contributors == [0, 1, 2] and not result.failures
    for name, mask in expected.items():
        assert np.array_equal(result.masks[name], mask), name


def test_small_chunks_row_group_and_send_and_receive(
    tiny_model_dir: Path, client_dir: Path
) -> None:
    expected = simulated_masks(tiny_model_dir, client_dir, group="row", protocol="additive")
    grid = grid_for(tiny_model_dir, client_dir)
    s = settings(protocol="additive", group="row", chunk_entries=3000, poll_interval_s=0)
    result, _ = prune_with_flower(grid, s, str(tiny_model_dir))
    assert result.rounds > 5  # several masked-input chunks
    for name, mask in expected.items():
        assert np.array_equal(result.masks[name], mask), name


def test_a_node_dying_mid_round_leaves_a_correct_sum_over_survivors(
    tiny_model_dir: Path, client_dir: Path
) -> None:
    dead: set[int] = set()

    def drop(node: int, message) -> bool:
        if node == 1001 and message.metadata.message_type == "query.protocol":
            # dies after it shared its keys: its masks must be cancelled via key shares
            if message.metadata.group_id == "protocol-3":
                dead.add(node)
        return node in dead

    grid = grid_for(tiny_model_dir, client_dir, drop=drop)
    s = settings(protocol="additive", options={"threshold": 2}, round_timeout_s=5)
    result, _ = prune_with_flower(grid, s, str(tiny_model_dir))
    assert result.contributors == [0, 2]
    assert result.failures[1] == "no reply to protocol-3 within 5 s (dropped out)"
    rounds = [t for k, t in result.timings_s.items() if k.startswith("protocol-")]
    assert 5 <= max(rounds) < 5 + 3  # the round deadline is waited out, and no longer
    assert_counts_of_alice_and_carol(result.counts, tiny_model_dir, client_dir)


def assert_counts_of_alice_and_carol(counts: dict, model: Path, clients: Path) -> None:
    """`counts` equal the sum of client 0's (alice) and client 2's (carol) masks alone."""
    single = {}
    for c, entry in ((0, "alice.txt"), (2, "carol")):
        solo = grid_for(model, clients, entries=(entry,))
        r, _ = prune_with_flower(solo, settings(protocol="plaintext", num_nodes=1), str(model))
        single[c] = r.counts
    for name, value in counts.items():
        assert np.array_equal(value, single[0][name] + single[2][name]), name


def test_a_node_dying_in_the_middle_of_the_masked_stream_restarts_the_sum_without_it(
    tiny_model_dir: Path, client_dir: Path
) -> None:
    """Its earlier chunks are inside the running sums, so that session aborts before any
    unmasking; one fresh session over the two others gives their exact sum."""
    dead: set[int] = set()

    def drop(node: int, message) -> bool:
        if node == 1001 and message.metadata.group_id == "protocol-4":  # masked chunk 1
            dead.add(node)
        return node in dead

    grid = grid_for(tiny_model_dir, client_dir, drop=drop)
    s = settings(protocol="additive", chunk_entries=3000, round_timeout_s=5)
    result, _ = prune_with_flower(grid, s, str(tiny_model_dir))
    assert result.contributors == [0, 2]
    assert result.failures[1] == "no reply to protocol-4 within 5 s (dropped out)"
    assert_counts_of_alice_and_carol(result.counts, tiny_model_dir, client_dir)


def test_a_node_without_data_is_left_out_with_its_reason(
    tiny_model_dir: Path, client_dir: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n")
    nodes = {
        1: {"model": str(tiny_model_dir), "data": str(client_dir / "alice.txt")},
        2: {"model": str(tiny_model_dir), "data": str(empty)},
        3: {"model": str(tiny_model_dir), "data": str(client_dir / "carol")},
    }
    result, _ = prune_with_flower(
        LocalGrid(client_app, nodes), settings(protocol="additive"), str(tiny_model_dir)
    )
    assert result.contributors == [0, 2]
    assert "holds no text" in result.failures[1]
    nodes[3]["data"] = str(tmp_path / "missing")
    with pytest.raises(FedPrError, match="only 1 of 3 nodes got through calibration.*not found"):
        prune_with_flower(
            LocalGrid(client_app, nodes),
            settings(protocol="additive", min_clients=2),
            str(tiny_model_dir),
        )
    del nodes[1]["data"]  # a SuperNode started without data= in its node config
    with pytest.raises(FedPrError) as error:
        prune_with_flower(
            LocalGrid(client_app, nodes), settings(protocol="additive"), str(tiny_model_dir)
        )
    message = str(error.value)
    assert "\n" not in message and message.startswith("only 0 of 3 nodes got through calibration")
    assert "no 'data' in its node config" in message
    assert "holds no text" in message and "not found" in message


def test_too_few_nodes_is_a_clear_error_within_the_wait(
    tiny_model_dir: Path, client_dir: Path
) -> None:
    grid = grid_for(tiny_model_dir, client_dir, entries=ENTRIES[:2])
    with pytest.raises(FedPrError, match="only 2 of 3 SuperNodes connected within 1 s"):
        prune_with_flower(grid, settings(node_wait_s=1), str(tiny_model_dir))


def test_node_secrets_stay_in_the_node_state(tiny_model_dir: Path, client_dir: Path) -> None:
    from fedprllm_secure.integrations.flower import client_app as ca
    from fedprllm_secure.integrations.flower import records as R
    from fedprllm_secure.secure_sum.additive import AdditiveClient

    grid = grid_for(tiny_model_dir, client_dir)
    grid.record_replies = True
    prune_with_flower(grid, settings(protocol="additive"), str(tiny_model_dir))
    sent = b"".join(b"".join(R.blobs_of(reply.content).values()) for _node, reply in grid.replies)
    assert sent
    for context in grid.contexts.values():
        identity = R.array_blob(context.state.array_records[ca.SECRET]["secret"])
        saved = R.array_blob(context.state.array_records[ca.CLIENT]["state"])
        client = AdditiveClient.from_state(saved, lambda i, c: None, None)
        secrets = [identity, client.cipher_key.private_bytes_raw()]
        assert len(identity) == 32 and all(secret not in sent for secret in secrets)
