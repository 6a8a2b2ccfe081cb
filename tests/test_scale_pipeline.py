"""Issue 16 in the pipeline: the weights' dtype, one-shot masks summed block by block, the
blockwise client (one decoder block in memory)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fedprllm_secure.cli.options import build_run_config
from fedprllm_secure.config import RunConfig
from fedprllm_secure.errors import ConfigError
from fedprllm_secure.integrations.flower.settings import flower_run_config
from fedprllm_secure.pipeline import Pipeline
from fedprllm_secure.pipeline.server_step import global_masks
from fedprllm_secure.pipeline.strategies import Server, one_shot_masks
from fedprllm_secure.privacy.settings import PrivacySettings
from fedprllm_secure.secure_sum import transport
from fedprllm_secure.secure_sum.api import AggregationAborted
from fedprllm_secure.secure_sum.driver import DropPlan

from .conftest import add_fourth_client
from .test_pipeline import config_for, server_for


def test_dtype_is_a_run_setting_of_every_front_end() -> None:
    assert RunConfig().dtype == "auto"
    assert build_run_config({"dtype": "bfloat16"}, ["dtype"]).dtype == "bfloat16"
    assert flower_run_config({"dtype": "float16"})[0].dtype == "float16"
    with pytest.raises(ConfigError, match="unknown dtype 'int8'"):
        replace(RunConfig(), dtype="int8").validate()


def test_the_pipeline_loads_the_weights_in_the_asked_dtype(
    tiny_model_dir: Path, client_dir: Path
) -> None:
    auto = Pipeline(config_for(tiny_model_dir, client_dir))
    assert auto.bench.model.model.layers[0].mlp.up_proj.weight.dtype == torch.float32  # stored
    config = replace(config_for(tiny_model_dir, client_dir), dtype="bfloat16")
    bf16 = Pipeline(config)
    assert bf16.bench.model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    masks = bf16.fedprllm().masks
    assert all(m.mean() == pytest.approx(0.5, abs=0.02) for m in masks.values())
    with pytest.raises(ConfigError, match="keeps the pipeline's model, device, dtype"):
        auto.fedprllm(config)


class _DropInBlock(DropPlan):
    """Client c stops answering at round `at[c]` of aggregation `block` (block = aggregation
    index in masks mode), and for good after."""

    block = 1

    def silent(self, client: int, message: object) -> bool:
        if getattr(message, "aggregation", -1) == self.block:
            return super().silent(client, message)
        return client in self.stopped


def _expected_block_masks(pipe: Pipeline, server: Server, block: int, clients: list[int]):
    """The oracle: the global masks of `block` from the named clients' local masks."""
    local = pipe.local()
    names = [layer.name for layer in pipe.bench.block_layers(block)]
    counts = {n: sum(local[c][n].astype(np.int64) for c in clients).reshape(-1) for n in names}
    bench = pipe.bench
    return global_masks(server.rule, counts, bench.shapes, bench.index, len(clients))


def _dropping_pipeline(tiny_model_dir, client_dir, monkeypatch, min_cohort: int):
    add_fourth_client(client_dir)
    monkeypatch.setattr(transport, "DropPlan", _DropInBlock)
    config = config_for(
        tiny_model_dir, client_dir, protocol="additive", scaling=True,
        privacy=PrivacySettings(min_cohort=min_cohort), drop={1: "masked-input"},
    )  # fmt: skip
    # the tiny model is summed per block only when asked (a 7B model always is)
    config = replace(config, federation=replace(config.federation, sum_per_block_above=0))
    pipe = Pipeline(config)
    pipe.federation.simulate_drops(config.federation.drop)
    return pipe, server_for(pipe)


def test_a_dropout_in_block_l_keeps_blocks_before_l_and_sums_the_rest_over_survivors(
    tiny_model_dir: Path, client_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe, server = _dropping_pipeline(tiny_model_dir, client_dir, monkeypatch, min_cohort=2)
    masks, scales = one_shot_masks(server)
    assert server.contributors == [4, 3]  # block 0: everyone; block 1: client 1 dropped
    staged = pipe.federation.nodes[0].current.staged  # a node stages one block's bits only
    assert set(staged.arrays) == {layer.name for layer in pipe.bench.block_layers(1)}
    for block, clients in ((0, [0, 1, 2, 3]), (1, [0, 2, 3])):
        expected, expected_scales = _expected_block_masks(pipe, server, block, clients)
        for name, mask in expected.items():
            assert np.array_equal(masks[name], mask), name
            assert np.array_equal(scales[name], expected_scales[name]), name
    # block 1 is not the all-client result: its scales count 3 contributors, not 4
    _, everyone = _expected_block_masks(pipe, server, 1, [0, 1, 2, 3])
    assert all(not np.array_equal(scales[n], s) for n, s in everyone.items())


def test_a_dropout_below_the_cohort_in_block_l_aborts_the_run_cleanly(
    tiny_model_dir: Path, client_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe, server = _dropping_pipeline(tiny_model_dir, client_dir, monkeypatch, min_cohort=4)
    with pytest.raises(AggregationAborted, match="below the minimum cohort of 4"):
        one_shot_masks(server)
    assert server.contributors == [4]  # block 0 was released, block 1 refused, no mask made
    # the federation is usable again: a new run (new calibration, new session) gives the masks
    # of a run that never saw the dropout
    pipe.federation.simulate_drops({})
    again, _ = one_shot_masks(server_for(pipe))
    for block in (0, 1):
        expected, _ = _expected_block_masks(pipe, server, block, [0, 1, 2, 3])
        assert all(np.array_equal(again[n], m) for n, m in expected.items())


def _masks(config: RunConfig) -> dict[str, np.ndarray]:
    return Pipeline(config).fedprllm().masks


@pytest.mark.parametrize(
    "settings",
    [
        dict(),
        dict(protocol="additive", calibration="one-shot", scaling=True),
        dict(mode="iterative", group="row"),
        dict(mode="iterative", protocol="additive"),
        dict(pruner="magnitude"),
    ],
    ids=["one-shot-plaintext", "one-shot-additive", "iterative-plaintext", "iterative-additive",
         "magnitude"],
)  # fmt: skip
def test_blockwise_clients_give_the_whole_model_global_masks(
    tiny_model_dir: Path, client_dir: Path, settings: dict
) -> None:
    whole = config_for(tiny_model_dir, client_dir, **settings)
    blockwise = config_for(tiny_model_dir, client_dir, blockwise=True, **settings)
    pipe = Pipeline(blockwise)
    assert pipe.bench.blockwise
    assert all(p.is_meta for p in pipe.bench.model.model.layers.parameters())  # never loaded
    loaded = pipe.bench.bm.load_block
    layers = pipe.bench.model.model.layers

    def one_at_a_time(index: int) -> None:  # nothing else in memory when a block comes in
        assert all(p.is_meta for p in layers.parameters()), index
        loaded(index)

    pipe.bench.bm.load_block = one_at_a_time  # type: ignore[method-assign]
    expected, got = _masks(whole), pipe.fedprllm().masks
    assert set(got) == set(expected) and len(got) == 14
    for name, mask in expected.items():
        assert np.array_equal(got[name], mask), name
    assert all(p.is_meta for p in pipe.bench.model.model.layers.parameters())  # all released


def test_a_blockwise_run_streams_the_pruned_checkpoint(
    tiny_model_dir: Path, client_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    from fedprllm_secure.pipeline import run

    whole = config_for(tiny_model_dir, client_dir, scaling=True, eval_windows=3)
    reference = run(whole, save_model_to=tmp_path / "whole")
    blockwise = replace(whole, pruning=replace(whole.pruning, blockwise=True))
    results = run(blockwise, save_model_to=tmp_path / "blockwise")
    assert "block by block" in results["evaluation"]
    for key in ("perplexity", "perplexity_se", "bits_per_byte"):  # evaluated block by block
        assert set(results[key]) == {"dense", "fedprllm"}
        for label, value in results[key].items():
            assert value == pytest.approx(reference[key][label], rel=1e-5), (key, label)
    assert results["perplexity"]["fedprllm"] != pytest.approx(results["perplexity"]["dense"])
    assert results["sparsity"]["fedprllm"] == reference["sparsity"]["fedprllm"]
    expected = AutoModelForCausalLM.from_pretrained(tmp_path / "whole").state_dict()
    streamed = AutoModelForCausalLM.from_pretrained(tmp_path / "blockwise").state_dict()
    assert set(streamed) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(streamed[name], tensor), name


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(aggregate="stats"), "pruning.blockwise needs pruning.aggregate masks"),
        (dict(layerwise="owl"), "pruning.blockwise needs pruning.layerwise uniform"),
        (dict(methods=("fedprllm", "local")), "pruning.blockwise runs pruning.methods fedprllm"),
    ],
)
def test_blockwise_refuses_what_it_does_not_support(change: dict, message: str) -> None:
    config = RunConfig()
    config = replace(config, pruning=replace(config.pruning, blockwise=True, **change))
    with pytest.raises(ConfigError, match=message):
        config.validate()


def test_simulate_blockwise_on_the_command_line(
    tiny_model_dir: Path, client_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from fedprllm_secure.cli import main

    out = tmp_path / "run"
    args = [
        "simulate", "--model", str(tiny_model_dir), "--client-data", str(client_dir),
        "--eval-text", str(client_dir.parent / "eval.txt"), "--samples-per-client", "2",
        "--seqlen", "32", "--device", "cpu", "--dtype", "float32", "--blockwise", "--save-model",
        "--save-masks", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    assert main(args) == 0
    assert "evaluation: block by block" in " ".join(capsys.readouterr().out.split())
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["pruning"]["blockwise"] and results["config"]["dtype"] == "float32"
    assert (out / "model" / "model.safetensors.index.json").is_file()
    assert (out / "masks.npz").is_file()
    assert main([*args[:-3], "--method", "fedprllm,local", "--out", str(tmp_path / "x")]) == 2
    assert "--blockwise runs --method fedprllm only" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["one-shot", "iterative"])
def test_blockwise_run_gives_the_whole_model_masks_on_the_embedded_model(mode: str) -> None:
    from fedprllm_secure.config import DataConfig, PruningConfig

    config = RunConfig(
        device="cpu",
        data=DataConfig(clients=3, samples_per_client=1, seqlen=64, eval_windows=1),
        pruning=PruningConfig(mode=mode),
    )
    expected = Pipeline(config).fedprllm().masks
    blockwise = replace(config, pruning=replace(config.pruning, blockwise=True))
    got = Pipeline(blockwise).fedprllm().masks
    assert list(got) == list(expected) and len(got) == 30 * 7
    for name, mask in expected.items():
        assert np.array_equal(got[name], mask), name


def test_blockwise_evaluation_reads_an_untied_head_and_equals_the_whole_model(
    tmp_path: Path,
) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from fedprllm_secure.pipeline.blockwise_bench import BlockwiseBench
    from fedprllm_secure.pipeline.blockwise_eval import BlockwiseEvaluation
    from fedprllm_secure.pipeline.workbench import Workbench

    from .conftest import make_tokenizer, synthetic_text

    torch.manual_seed(3)
    config = LlamaConfig(vocab_size=260, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                         tie_word_embeddings=False)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    make_tokenizer().save_pretrained(tmp_path)
    whole, blockwise = Workbench(str(tmp_path), "cpu"), BlockwiseBench(str(tmp_path), "cpu")
    for bench in (whole, blockwise):
        bench.use_eval_text(synthetic_text(5, 600), 24, 4)
    masks = {n: np.random.default_rng(0).random(s) < 0.5 for n, s in whole.shapes.items()}
    walk = BlockwiseEvaluation(blockwise)
    assert blockwise.model.get_output_embeddings().weight.is_meta  # read only at the end
    for block in range(blockwise.blocks):
        walk.block(block, {x.name: masks[x.name] for x in blockwise.block_layers(block)}, None)
    dense, pruned = walk.finish()
    assert dense.perplexity == pytest.approx(whole.evaluate()[0], rel=1e-5)
    assert pruned.perplexity == pytest.approx(whole.evaluate(masks)[0], rel=1e-5)
    assert pruned.perplexity != pytest.approx(dense.perplexity)
