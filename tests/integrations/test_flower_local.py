"""The Flower ServerApp/ClientApp in one process (LocalGrid): same masks as `simulate`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr", reason="flwr is not installed (pip install '.[flower]')")

from fedprllm_secure.errors import FedPrError  # noqa: E402
from fedprllm_secure.integrations.flower import client_app as ca  # noqa: E402
from fedprllm_secure.integrations.flower import records as R  # noqa: E402
from fedprllm_secure.integrations.flower import trust as T  # noqa: E402
from fedprllm_secure.integrations.flower.client_app import app as client_app  # noqa: E402
from fedprllm_secure.integrations.flower.local import LocalGrid  # noqa: E402
from fedprllm_secure.integrations.flower.server_app import prune_with_flower  # noqa: E402
from fedprllm_secure.pipeline import Pipeline  # noqa: E402
from fedprllm_secure.secure_sum import registry  # noqa: E402

from ..conftest import add_fourth_client  # noqa: E402
from ..test_pipeline import config_for  # noqa: E402

pytestmark = pytest.mark.flower

ENTRIES = ("alice.txt", "bob.jsonl", "carol")
RUN_KEYS = {"options": "protocol-options", "group": "pruning.group"}


def simulated_masks(model: Path, clients: Path, **overrides) -> dict[str, np.ndarray]:
    """The in-process pipeline's global masks (`simulate`), same seed."""
    return Pipeline(config_for(model, clients, **overrides)).fedprllm().masks


def settings(**overrides) -> dict:
    """A Flower run config: keyword names as in the earlier settings (num_nodes, min_cohort,
    ...), or RunConfig paths passed as a dict."""
    base = {"num-nodes": 3, "samples-per-client": 2, "seqlen": 32, "round-timeout-s": 30}
    for key, value in overrides.items():
        base[RUN_KEYS.get(key, key.replace("_", "-"))] = value
    return base


def grid_for(
    model: Path, clients: Path, keys: Path, drop=None, entries=ENTRIES, **trust
) -> LocalGrid:
    """One node per entry, each pinning the others (`pinned_node_configs`: identity key files,
    one trust file, a ledger folder each; `trust` overrides the trust file's fields)."""
    trust.setdefault("protocols", ("plaintext", "additive", "ckks"))
    configs = T.pinned_node_configs(
        keys, [{"model": str(model), "data": str(clients / e)} for e in entries], **trust
    )
    return LocalGrid(client_app, {1000 + i: c for i, c in enumerate(configs)}, drop=drop)


@pytest.mark.parametrize(
    "protocol, options",
    [("plaintext", {}), ("additive", {}), ("ckks", {}), ("ckks", {"he_scheme": "bfv"})],
)
def test_flower_masks_equal_simulate(
    tiny_model_dir: Path, client_dir: Path, keys: Path, protocol: str, options: dict
) -> None:
    """The honest pinned run: every node checks the others' attested keys, and it works."""
    expected = simulated_masks(tiny_model_dir, client_dir, group="layer")
    grid = grid_for(tiny_model_dir, client_dir, keys)
    result, _ = prune_with_flower(
        grid, settings(protocol=protocol, options=options), str(tiny_model_dir)
    )
    assert result.contributors == [0, 1, 2] and not result.failures
    for name, mask in expected.items():
        assert np.array_equal(result.masks[name], mask), name
    option = registry.get(protocol).cohort_option
    for context in grid.contexts.values():  # the cohort reached the releasing party's config
        draft = R.decode_config(R.array_blob(context.state.array_records[ca.DRAFT]["config"]))
        assert option is None or draft.options[option] == 3


def test_small_chunks_row_group_and_send_and_receive(
    tiny_model_dir: Path, client_dir: Path, keys: Path
) -> None:
    expected = simulated_masks(tiny_model_dir, client_dir, group="row", protocol="additive")
    grid = grid_for(tiny_model_dir, client_dir, keys)
    s = settings(protocol="additive", group="row", chunk_entries=3000, poll_interval_s=0)
    result, _ = prune_with_flower(grid, s, str(tiny_model_dir))
    assert result.rounds > 5  # several masked-input chunks
    for name, mask in expected.items():
        assert np.array_equal(result.masks[name], mask), name


def test_a_node_dying_mid_round_leaves_a_correct_sum_over_survivors(
    tiny_model_dir: Path, client_dir: Path, keys: Path
) -> None:
    """Four nodes, so that three survivors still reach additive's quorum of signatures."""
    dead: set[int] = set()

    def drop(node: int, message) -> bool:
        if node == 1001 and message.metadata.message_type == "query.protocol":
            # dies after it shared its keys: its masks must be cancelled via key shares
            if message.metadata.group_id == "protocol-3":
                dead.add(node)
        return node in dead

    add_fourth_client(client_dir)
    grid = grid_for(tiny_model_dir, client_dir, keys, drop=drop, entries=(*ENTRIES, "dave.txt"))
    s = settings(protocol="additive", num_nodes=4, round_timeout_s=5)
    result, _ = prune_with_flower(grid, s, str(tiny_model_dir))
    assert result.contributors == [0, 2, 3]
    assert result.failures[1] == "no reply to protocol-3 within 5 s (dropped out)"
    rounds = [t for k, t in result.timings_s.items() if k.startswith("protocol-")]
    assert 5 <= max(rounds) < 5 + 3  # the round deadline is waited out, and no longer
    assert_counts_of(
        result.counts, tiny_model_dir, client_dir, {0: "alice.txt", 2: "carol", 3: "dave.txt"}
    )


def assert_counts_of(counts: dict, model: Path, clients: Path, entries: dict[int, str]) -> None:
    """`counts` equal the sum of the masks of the clients `entries` names, each run alone."""
    single = {}
    for c, entry in entries.items():
        solo = LocalGrid(client_app, {1: {"model": str(model), "data": str(clients / entry)}})
        r, _ = prune_with_flower(solo, settings(protocol="plaintext", num_nodes=1), str(model))
        single[c] = r.counts
    assert set(counts) == set(single[next(iter(entries))]) and len(counts) == 14  # every block
    for name, value in counts.items():
        assert np.array_equal(value, sum(single[c][name] for c in entries)), name


def test_a_node_lost_in_the_masked_stream_ends_the_run_and_no_new_session_gets_its_chunks(
    tiny_model_dir: Path, client_dir: Path, keys: Path
) -> None:
    """Its earlier chunks are inside the running sums, so that session aborts. No fresh session
    is started: the others already released their first chunk, and their ledgers (files, kept
    across runs) refuse it to any other session, in this run or the next."""
    dead: set[int] = set()

    def drop(node: int, message) -> bool:
        if node == 1001 and message.metadata.group_id == "protocol-4":  # masked chunk 1
            dead.add(node)
        return node in dead

    grid = grid_for(tiny_model_dir, client_dir, keys, drop=drop)
    s = settings(protocol="additive", chunk_entries=3000, round_timeout_s=2)
    with pytest.raises(FedPrError) as error:
        prune_with_flower(grid, s, str(tiny_model_dir))
    message = str(error.value)
    assert "\n" not in message and "lost in the middle of the masked-input stream" in message
    assert "client(s) [1]" in message and "no reply to protocol-4 within 2 s" in message
    # the next run (new processes, new node state), same nodes, same text: refused by every
    # node that released a chunk, before it builds its protocol client
    again = grid_for(tiny_model_dir, client_dir, keys)
    again.record_replies = True
    with pytest.raises(FedPrError) as error:
        prune_with_flower(again, settings(protocol="additive"), str(tiny_model_dir))
    message = str(error.value)
    assert "already released layer" in message and "delete that file" in message
    assert str(keys / "node-0" / "ledger") in message
    assert_nothing_masked(again)


def assert_nothing_masked(grid: LocalGrid) -> None:
    """No node answered a protocol message with a protocol message of its own."""
    for _node, reply in grid.replies:
        if reply.metadata.message_type == "query.protocol" and not reply.has_error():
            assert "message" not in R.blobs_of(reply.content), "a node answered the protocol"


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
    for i, node in enumerate(nodes.values()):  # trusting the server, explicitly
        node.update(trust="server", ledger=str(tmp_path / f"ledger-{i}"))
    lowered = settings(protocol="additive", min_cohort=2)
    result, _ = prune_with_flower(LocalGrid(client_app, nodes), lowered, str(tiny_model_dir))
    assert result.contributors == [0, 2]
    assert "holds no text" in result.failures[1]
    nodes[3]["data"] = str(tmp_path / "missing")
    with pytest.raises(FedPrError, match="only 1 of 3 nodes got through calibration.*not found"):
        prune_with_flower(LocalGrid(client_app, nodes), lowered, str(tiny_model_dir))
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
    tiny_model_dir: Path, client_dir: Path, keys: Path
) -> None:
    grid = grid_for(tiny_model_dir, client_dir, keys, entries=ENTRIES[:2])
    with pytest.raises(FedPrError, match="only 2 of 3 SuperNodes connected within 1 s"):
        prune_with_flower(grid, settings(node_wait_s=1), str(tiny_model_dir))


def test_node_secrets_stay_in_the_node_state(
    tiny_model_dir: Path, client_dir: Path, keys: Path
) -> None:
    from fedprllm_secure.secure_sum.additive import AdditiveClient

    grid = grid_for(tiny_model_dir, client_dir, keys)
    grid.record_replies = True
    prune_with_flower(grid, settings(protocol="additive"), str(tiny_model_dir))
    sent = b"".join(b"".join(R.blobs_of(reply.content).values()) for _node, reply in grid.replies)
    assert sent
    for context in grid.contexts.values():
        identity = R.array_blob(context.state.array_records[ca.SECRET]["secret"])
        saved = R.array_blob(context.state.array_records[ca.CLIENT]["state"])
        client = AdditiveClient.from_state(saved, lambda i, c: None, None)
        long_term = T.load_identity(str(context.node_config["identity"])).private_bytes_raw()
        secrets = [identity, client.cipher_key.private_bytes_raw(), long_term]
        assert len(identity) == 32 and all(secret not in sent for secret in secrets)
