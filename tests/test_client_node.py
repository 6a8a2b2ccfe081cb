"""ClientNode: its commands, its save/restore (what a Flower ClientApp keeps in context.state),
and that the pipeline reaches nodes through NodeCommand / NodeAnswer only."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from fedprllm_secure import data
from fedprllm_secure.errors import ProtocolError
from fedprllm_secure.pipeline import Pipeline, Workbench
from fedprllm_secure.pipeline.client_step import ClientNode, NodeEnv
from fedprllm_secure.pipeline.federation import NodeAnswer, NodeCommand
from fedprllm_secure.pipeline.inprocess import InProcessFederation
from fedprllm_secure.pipeline.layout import pack
from fedprllm_secure.pipeline.texts import client_texts
from fedprllm_secure.privacy.noise_source import secret_source
from fedprllm_secure.privacy.settings import PrivacySettings
from fedprllm_secure.randomness import SeededRandomSource
from fedprllm_secure.secure_sum.api import ChunkSpec

from .test_pipeline import config_for

CALIBRATE = {
    "samples_per_client": 2, "seqlen": 32, "batch_size": 8, "pruner": "wanda",
    "calibration": "sequential", "sparsity": 0.5,
}  # fmt: skip


@pytest.fixture(scope="module")
def bench(tiny_model_dir: Path) -> Workbench:
    return Workbench(str(tiny_model_dir), "cpu")


def _env(bench: Workbench, client_dir: Path) -> NodeEnv:
    text = data.read_client_dir(str(client_dir))[0]
    return NodeEnv(bench, text, SeededRandomSource("node-under-test"))


def _roundtrip(node: ClientNode, env: NodeEnv) -> ClientNode:
    """Save, pass through JSON and plain arrays (as a RecordDict would), restore."""
    settings, arrays = node.save()
    settings = json.loads(json.dumps(settings))
    arrays = {name: np.array(value, copy=True) for name, value in arrays.items()}
    return ClientNode.restore(env, (settings, arrays))


def _upload(node: ClientNode, index: int, names: Mapping[str, int]) -> dict[str, np.ndarray]:
    return {name: node.provider(index, ChunkSpec(name, n, 0)) for name, n in names.items()}


def _chunks(node: ClientNode) -> dict[str, int]:
    staged = node.current.staged
    return {n: (v.size * 8 if staged.packed else v.size) for n, v in staged.arrays.items()}


@pytest.mark.parametrize("privacy", [{}, {"dp_stats_epsilon": 8.0, "dp_clip": 5.0}])
def test_a_restored_node_continues_a_stats_round_with_the_same_uploads(
    bench: Workbench, client_dir: Path, privacy: dict
) -> None:
    env = _env(bench, client_dir)
    calibrate = {**CALIBRATE, "walk": "blocks", "privacy": privacy}
    histogram = {"aggregation": 0, "upload": "histogram", "blocks": [0], "one_shot": False}
    nodes = [ClientNode(env, 0) for _ in range(2)]
    for node in nodes:
        node.handle(NodeCommand("calibrate", calibrate))
        answer = node.handle(NodeCommand("prepare", histogram))
    restored = _roundtrip(nodes[1], env)
    limbs = {"aggregation": 1, "upload": "limbs", "precision": 48,
             "exponents": {name: 4 for name in answer.settings["lengths"]}}  # fmt: skip
    for node in (nodes[0], restored):
        node.handle(NodeCommand("prepare", limbs))
    expected = _upload(nodes[0], 1, _chunks(nodes[0]))
    assert expected and all(np.array_equal(v, _upload(restored, 1, _chunks(restored))[k])
                            for k, v in expected.items())  # fmt: skip
    # The walk goes on alike: block 0 pruned by a global mask, then block 1's histogram.
    arrays = {f"mask/{layer.name}": pack(np.arange(layer.numel) % 2 == 0)
              for layer in bench.block_layers(0)}  # fmt: skip
    for node in (nodes[0], restored):
        node.handle(NodeCommand("apply", {"block": 0}, arrays))
        node.handle(NodeCommand("prepare", {**histogram, "aggregation": 2, "blocks": [1]}))
    assert all(np.array_equal(v, _upload(restored, 2, _chunks(restored))[k])
               for k, v in _upload(nodes[0], 2, _chunks(nodes[0])).items())  # fmt: skip
    assert (
        restored.handle(NodeCommand("report")).settings
        == nodes[0].handle(NodeCommand("report")).settings
    )


def test_a_restored_node_keeps_its_rr_key_and_its_ledger(
    bench: Workbench, client_dir: Path
) -> None:
    env = _env(bench, client_dir)
    node = ClientNode(env, 3)
    calibrate = {**CALIBRATE, "walk": "masks", "privacy": {"rr_epsilon": 1.0}}
    node.handle(NodeCommand("calibrate", calibrate))
    node.handle(NodeCommand("prepare", {"aggregation": 0, "upload": "masks"}))
    first = bench.layers[0]
    guarded = node.ledger.guard(node.provider, b"session-a")
    bits = guarded(0, ChunkSpec(first.name, first.numel, 0))
    restored = _roundtrip(node, env)
    assert restored.client_id == 3 and restored.calibrations == 1
    again = restored.ledger.guard(restored.provider, b"session-a")
    assert np.array_equal(bits, again(0, ChunkSpec(first.name, first.numel, 0)))  # same RR bits
    with pytest.raises(ProtocolError, match="already contributed"):
        restored.ledger.guard(restored.provider, b"session-b")(
            0, ChunkSpec(first.name, first.numel, 0)
        )
    local = restored.handle(NodeCommand("local-masks")).arrays
    assert all(
        np.array_equal(local[n], v)
        for n, v in node.handle(NodeCommand("local-masks")).arrays.items()
    )
    # A new calibration draws a new key: the same chunk's RR bits change.
    restored.handle(NodeCommand("calibrate", calibrate))
    restored.handle(NodeCommand("prepare", {"aggregation": 0, "upload": "masks"}))
    assert not np.array_equal(bits, restored.provider(0, ChunkSpec(first.name, first.numel, 0)))


def test_a_node_that_never_calibrated_round_trips_and_refuses_to_upload(
    bench: Workbench, client_dir: Path
) -> None:
    env = _env(bench, client_dir)
    node = ClientNode(env, 0)
    described = node.handle(NodeCommand("describe", {"samples_per_client": 2, "seqlen": 32}))
    restored = _roundtrip(node, env)
    assert restored.samples_built == (2, 32)
    assert described.settings["windows"] == [2, 32]
    with pytest.raises(ProtocolError, match="has not calibrated"):
        restored.provider(0, ChunkSpec("x", 8, 0))


class RecordingFederation(InProcessFederation):
    """The in-process engine, noting every command and answer that crosses the port."""

    seen: list[tuple[str, object, object]]

    def command(self, stage, commands, timeout_s):  # type: ignore[no-untyped-def]
        answers = super().command(stage, commands, timeout_s)
        for client, command in commands.items():
            self.seen.append((stage, command, answers.get(client)))
        return answers


@pytest.mark.parametrize(
    "overrides",
    [
        {"mode": "iterative", "scaling": True, "methods": ("fedprllm", "local", "centralized")},
        {
            "aggregate": "stats",
            "privacy": PrivacySettings(dp_stats_epsilon=8.0, dp_clip=5.0, reproducible_noise=True),
        },
    ],
)
def test_the_server_reaches_nodes_only_through_node_commands(
    bench: Workbench, tiny_model_dir: Path, client_dir: Path, overrides: dict
) -> None:
    """Every exchange is a NodeCommand out and a NodeAnswer back, with JSON settings and numpy
    arrays only (what a Flower Message carries); nodes stay behind the federation."""
    config = config_for(tiny_model_dir, client_dir, **overrides)
    texts = client_texts(config.data, config.seed)
    source = secret_source(config.seed, True, "simulate")  # as the Pipeline's own federation
    federation = RecordingFederation.build(bench, texts, source)
    federation.seen = []
    pipe = Pipeline(config, bench=bench, federation=federation)
    reference = Pipeline(config, bench=bench).fedprllm()
    result = pipe.fedprllm()
    if "local" in config.pruning.methods:
        pipe.local()
        pipe.centralized()
    assert all(np.array_equal(result.masks[n], m) for n, m in reference.masks.items())
    kinds = {command.kind for _, command, _ in federation.seen}
    expected = {"describe", "calibrate", "prepare"}
    expected |= {"report"} if config.privacy.dp_stats_epsilon is not None else set()  # DP only
    expected |= {"apply", "local-masks", "samples"} if "local" in config.pruning.methods else set()
    expected |= {"apply"} if config.pruning.calibration == "sequential" else set()
    assert kinds == expected
    for _, command, answer in federation.seen:
        assert isinstance(command, NodeCommand) and isinstance(answer, NodeAnswer)
        json.dumps(command.settings), json.dumps(answer.settings)
        assert all(isinstance(v, np.ndarray) for v in command.arrays.values())
        assert all(isinstance(v, np.ndarray) for v in answer.arrays.values())
