"""Every mode and privacy mechanism of `simulate` on Flower (LocalGrid, in one process): the global
masks equal the in-process pipeline's with the same seed. Randomized response and DP statistics
draw their noise from the seed here (privacy.reproducible_noise, not private), so that both runs
draw the same; each Flower node takes the seed's child of its data index (node config
partition-id), as the in-process client of that text does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr", reason="flwr is not installed (pip install '.[flower]')")

from fedprllm_secure.errors import FedPrError  # noqa: E402
from fedprllm_secure.integrations.flower.client_app import app as client_app  # noqa: E402
from fedprllm_secure.integrations.flower.local import LocalGrid  # noqa: E402
from fedprllm_secure.integrations.flower.server_app import (  # noqa: E402
    FlowerResult,
    prune_with_flower,
)
from fedprllm_secure.pipeline import Pipeline  # noqa: E402
from fedprllm_secure.privacy.settings import PrivacySettings  # noqa: E402

from ..test_pipeline import config_for  # noqa: E402

pytestmark = pytest.mark.flower

ENTRIES = ("alice.txt", "bob.jsonl", "carol")
BASE = {"num-nodes": 3, "samples-per-client": 2, "seqlen": 32, "round-timeout-s": 30}

# mode -> (Flower run config, the same for the in-process pipeline's config_for)
MODES = {
    "iterative": ({"pruning.mode": "iterative"}, {"mode": "iterative"}),
    "stats-one-shot": (
        {"pruning.aggregate": "stats", "pruning.calibration": "one-shot"},
        {"aggregate": "stats", "calibration": "one-shot"},
    ),
    "stats-sequential": ({"pruning.aggregate": "stats"}, {"aggregate": "stats"}),
    # blockwise nodes and server (one block in memory) give the whole-model pipeline's masks
    "blockwise-one-shot": ({"pruning.blockwise": True, "pruning.scaling": True}, {"scaling": True}),
    "blockwise-iterative": (
        {"pruning.blockwise": True, "pruning.mode": "iterative"}, {"mode": "iterative"}
    ),
    "rr-epsilon": (
        {"privacy.rr_epsilon": 1.0, "privacy.reproducible_noise": True, "pruning.group": "row"},
        {"privacy": PrivacySettings(rr_epsilon=1.0, reproducible_noise=True), "group": "row"},
    ),
    "dp-stats-epsilon": (
        {"pruning.aggregate": "stats", "privacy.dp_stats_epsilon": 0.5,
         "privacy.dp_clip": 5.0, "privacy.reproducible_noise": True},
        {"aggregate": "stats",
         "privacy": PrivacySettings(dp_stats_epsilon=0.5, dp_clip=5.0, reproducible_noise=True)},
    ),
    "dp-distributed": (
        {"pruning.aggregate": "stats", "pruning.calibration": "one-shot", "protocol": "additive",
         "privacy.dp_stats_epsilon": 4.0, "privacy.reproducible_noise": True,
         "data.eval_text": "EVAL"},  # the public text of the release's scale and clip
        {"aggregate": "stats", "calibration": "one-shot", "protocol": "additive",
         "privacy": PrivacySettings(dp_stats_epsilon=4.0, reproducible_noise=True)},
    ),
}  # fmt: skip


def flower_result(model: Path, clients: Path, run: dict) -> FlowerResult:
    nodes = {
        1000 + i: {
            "model": str(model),
            "data": str(clients / e),
            "partition-id": i,
            "reproducible-noise": "allow",
            # secure protocols: keys from the server; a ledger file per run (it outlives the run)
            **(
                {
                    "trust": "server",
                    "ledger": str(clients.parent / f"ledger-{run.get('seed', 0)}-{i}"),
                }
                if "protocol" in run
                else {}
            ),
        }
        for i, e in enumerate(ENTRIES)
    }
    run = {**BASE, **run}
    if run.get("data.eval_text") == "EVAL":
        run["data.eval_text"] = str(clients.parent / "eval.txt")
    grid = LocalGrid(client_app, nodes, run_config=run)  # what Flower hands each node's context
    result, _ = prune_with_flower(grid, run, str(model))
    assert result.contributors == [0, 1, 2] and not result.failures
    return result


def test_a_node_refuses_noise_the_server_could_recompute(
    tiny_model_dir: Path, client_dir: Path
) -> None:
    nodes = {i: {"model": str(tiny_model_dir), "data": str(client_dir / e)}
             for i, e in enumerate(ENTRIES)}  # fmt: skip
    run = {**BASE, **MODES["rr-epsilon"][0]}
    with pytest.raises(FedPrError, match="reproducible noise .* own CSPRNG"):
        prune_with_flower(LocalGrid(client_app, nodes, run_config=run), run, str(tiny_model_dir))


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_on_flower_equals_the_in_process_pipeline(
    tiny_model_dir: Path, client_dir: Path, mode: str
) -> None:
    flower_run, inprocess = MODES[mode]
    reference = Pipeline(config_for(tiny_model_dir, client_dir, **inprocess)).fedprllm()
    expected = reference.masks
    result = flower_result(tiny_model_dir, client_dir, flower_run)
    masks = result.masks
    assert result.privacy == reference.privacy  # one privacy_summary, DP report included
    assert sorted(masks) == sorted(expected)
    for name, mask in expected.items():
        assert np.array_equal(masks[name], mask), name
    if "reproducible" in str(flower_run):  # the noise is the seed's, not one fixed draw
        other = flower_result(tiny_model_dir, client_dir, {**flower_run, "seed": 1}).masks
        assert any(not np.array_equal(other[n], masks[n]) for n in masks)


def test_a_blockwise_flower_server_streams_the_same_pruned_checkpoint(
    tiny_model_dir: Path, client_dir: Path, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from fedprllm_secure.integrations.flower.server_app import evaluate, save_model
    from fedprllm_secure.integrations.flower.settings import flower_run_config

    nodes = {i: {"model": str(tiny_model_dir), "data": str(client_dir / e)}
             for i, e in enumerate(ENTRIES)}  # fmt: skip
    saved, evaluated = {}, {}
    for blockwise in (False, True):
        run = {
            **BASE,
            "pruning.scaling": True,
            "pruning.blockwise": blockwise,
            "data.eval_text": str(client_dir.parent / "eval.txt"),
            "data.eval_windows": 3,
        }
        grid = LocalGrid(client_app, nodes, run_config=run)
        result, bench = prune_with_flower(grid, run, str(tiny_model_dir))
        assert bench.blockwise == blockwise
        assert len(result.counts) == (0 if blockwise else 14)  # blockwise: no sums kept
        config, _ = flower_run_config({**run, "model": str(tiny_model_dir)})
        evaluated[blockwise] = evaluate(config, bench, result)
        save_model(bench, result, tmp_path / str(blockwise))
        saved[blockwise] = AutoModelForCausalLM.from_pretrained(tmp_path / str(blockwise))
    for label, value in evaluated[False]["perplexity"].items():  # evaluated block by block
        assert evaluated[True]["perplexity"][label] == pytest.approx(value, rel=1e-5), label
    assert evaluated[True]["sparsity"]["fedprllm"]["overall"] == pytest.approx(
        evaluated[False]["sparsity"]["fedprllm"]["overall"], abs=1e-6
    )
    expected, streamed = saved[False].state_dict(), saved[True].state_dict()
    assert set(streamed) == set(expected)
    assert all(torch.equal(streamed[n], t) for n, t in expected.items())
    zeros = saved[True].model.layers[1].mlp.up_proj.weight.eq(0).float().mean()
    assert float(zeros) == pytest.approx(0.5, abs=0.01)
