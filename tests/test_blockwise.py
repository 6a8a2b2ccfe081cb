"""Block-by-block client calibration (fedprllm_secure/blockwise.py, checkpoint.py) against the
whole-model path: identical statistics and masks, sharded checkpoints, pruned checkpoints that
reload with from_pretrained, and only one block's weights in memory at a time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedprllm_secure.blockwise import blockwise_local_masks, iter_block_masks, open_blockwise
from fedprllm_secure.checkpoint import (
    INDEX_FILE,
    CheckpointReader,
    PrunedCheckpointWriter,
    resolve_checkpoint,
)
from fedprllm_secure.client.calibrate import local_masks
from fedprllm_secure.client.methods import PruneMethod
from fedprllm_secure.errors import ConfigError, ModelError
from fedprllm_secure.model import decoder_blocks, load_model

from .conftest import make_tiny_model, make_tokenizer, save_tiny


def _samples(n: int = 5, seqlen: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 260, (n, seqlen), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def tiny3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny3"), layers=3, seed=4)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sharded")
    make_tiny_model(layers=3, seed=5).save_pretrained(folder, max_shard_size="40KB")
    make_tokenizer().save_pretrained(folder)
    return folder


def _assert_same(whole: tuple, blockwise: tuple) -> None:
    (m1, s1), (m2, s2) = whole, blockwise
    assert list(m1) == list(m2)
    for name in m1:
        assert torch.equal(m1[name], m2[name]), name
    assert list(s1) == list(s2)
    for name in s1:
        assert s2[name].sq_sum.dtype == torch.float64
        assert torch.equal(s1[name].sq_sum, s2[name].sq_sum), name
        assert s1[name].tokens == s2[name].tokens


@pytest.mark.parametrize("calibration", ["sequential", "one-shot"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_blockwise_equals_whole_model(tiny3: Path, calibration: str, dtype: str) -> None:
    samples = _samples()
    whole = load_model(str(tiny3), "cpu", dtype)
    assert next(whole.model.parameters()).dtype == getattr(torch, dtype)
    expected = local_masks(whole.model, samples, 0.5, calibration=calibration, batch_size=2)
    bm = open_blockwise(str(tiny3), "cpu", dtype)
    got = blockwise_local_masks(bm, samples, 0.5, calibration=calibration, batch_size=2)
    _assert_same(expected, got)
    assert all(m.float().mean() == 0.5 for m in got[0].values())  # masks are not vacuous


def test_blockwise_magnitude_equals_whole_model(tiny3: Path) -> None:
    whole = load_model(str(tiny3), "cpu")
    expected = local_masks(whole.model, None, 0.3, pruner="magnitude")
    got = blockwise_local_masks(open_blockwise(str(tiny3), "cpu", "float32"), None, 0.3,
                                pruner="magnitude")  # fmt: skip
    _assert_same(expected, got)


def test_sharded_checkpoint(sharded: Path) -> None:
    shards = sorted(p.name for p in sharded.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 3 and (sharded / INDEX_FILE).is_file()
    samples = _samples(seed=1)
    whole = load_model(str(sharded), "cpu")
    for calibration in ("sequential", "one-shot"):
        expected = local_masks(whole.model, samples, 0.5, calibration=calibration, batch_size=3)
        bm = open_blockwise(str(sharded), "cpu", "auto")
        got = blockwise_local_masks(bm, samples, 0.5, calibration=calibration, batch_size=3)
        _assert_same(expected, got)


def test_only_the_current_block_is_in_memory(tiny3: Path) -> None:
    bm = open_blockwise(str(tiny3), "cpu", "float32")
    blocks = decoder_blocks(bm.model)
    assert all(p.device.type == "meta" for p in blocks.parameters())
    assert bm.model.get_input_embeddings().weight.device.type == "cpu"
    seen = []
    original = bm.load_block

    def load(index: int) -> None:
        assert all(p.device.type == "meta" for p in blocks.parameters())  # previous one released
        original(index)
        loaded = [i for i, b in enumerate(blocks) if next(b.parameters()).device.type != "meta"]
        assert loaded == [index]
        seen.append(index)

    bm.load_block = load  # type: ignore[method-assign]
    for result in iter_block_masks(bm, _samples(), 0.5):
        assert all(p.device.type == "meta" for p in blocks.parameters())
        assert result.masks and all(m.dtype == torch.bool for m in result.masks.values())
    assert seen == [0, 1, 2]


def test_auto_dtype_is_the_checkpoint_dtype(tmp_path: Path) -> None:
    folder = tmp_path / "bf16"
    make_tiny_model(layers=2).to(torch.bfloat16).save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    assert next(load_model(str(folder), "cpu", "auto").model.parameters()).dtype == torch.bfloat16
    assert next(load_model(str(folder), "cpu").model.parameters()).dtype == torch.float32
    bm = open_blockwise(str(folder), "cpu", "auto")
    assert bm.dtype == torch.bfloat16
    assert bm.model.get_input_embeddings().weight.dtype == torch.bfloat16
    with pytest.raises(ModelError, match="unknown dtype"):
        load_model(str(folder), "cpu", "float8")


@pytest.mark.parametrize("source", ["tiny3", "sharded"])
def test_pruned_checkpoint_reloads(source: str, request: pytest.FixtureRequest, tmp_path: Path):
    from transformers import AutoModelForCausalLM

    folder = request.getfixturevalue(source)
    bm = open_blockwise(str(folder), "cpu", "float32")
    writer = PrunedCheckpointWriter(bm.reader, tmp_path / "pruned", bm.prefix, bm.blocks)
    masks = {}
    for result in iter_block_masks(bm, _samples(), 0.5, calibration="one-shot"):
        writer.write_block(result.index, result.masks)
        masks.update(result.masks)
    out = writer.finish()
    assert (out / INDEX_FILE).is_file() and (out / "config.json").is_file()
    assert (out / "tokenizer.json").is_file()
    pruned = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    dense = load_model(str(folder), "cpu").model
    expected = dict(dense.named_parameters())
    for name, param in pruned.named_parameters():
        layer = name.removesuffix(".weight")
        if layer in masks:
            assert torch.equal(param, expected[name].masked_fill(masks[layer], 0)), name
            assert int((param == 0).sum()) >= int(masks[layer].sum())
        else:
            assert torch.equal(param, expected[name]), name
    assert len(json.loads((out / INDEX_FILE).read_text())["weight_map"]) == len(
        CheckpointReader(folder).names
    )


def test_writer_refuses_an_incomplete_checkpoint(tiny3: Path, tmp_path: Path) -> None:
    reader = CheckpointReader(tiny3)
    writer = PrunedCheckpointWriter(reader, tmp_path / "out", "model.layers", 3)
    writer.write_block(0, {})
    with pytest.raises(ModelError, match=r"blocks \[1, 2\] were never written"):
        writer.finish()
    with pytest.raises(ModelError, match="already written"):
        writer.write_block(0, {})
    with pytest.raises(ModelError, match="fits no weight"):
        writer.write_block(1, {"model.layers.1.mlp.up_proj": torch.zeros(3, 3, dtype=torch.bool)})
    writer.abort()
    assert not (tmp_path / "out").exists()


def test_bad_checkpoints_are_one_clear_error(tmp_path: Path, tiny3: Path) -> None:
    with pytest.raises(ModelError, match="not GGUF"):
        resolve_checkpoint(str(tmp_path / "m.gguf"))
    with pytest.raises(ModelError, match="no config.json"):
        resolve_checkpoint(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="has no model.safetensors"):
        CheckpointReader(tmp_path)
    with pytest.raises(ModelError, match="holds no tensor"):
        CheckpointReader(tiny3).read(["model.layers.9.mlp.up_proj.weight"])


def test_hub_id_resolves_to_the_cached_snapshot(
    tiny3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelError, match="not in the Hugging Face cache"):
        resolve_checkpoint("someone/tiny-llama")
    revision = "0" * 40
    repo = tmp_path / "models--someone--tiny-llama"
    shutil.copytree(tiny3, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    assert resolve_checkpoint("someone/tiny-llama") == repo / "snapshots" / revision
    bm = open_blockwise("someone/tiny-llama", "cpu", "float32")
    whole = load_model(str(tiny3), "cpu")
    samples = _samples(seed=2)
    _assert_same(local_masks(whole.model, samples, 0.5), blockwise_local_masks(bm, samples, 0.5))


@pytest.mark.slow
@pytest.mark.parametrize("calibration", ["sequential", "one-shot"])
def test_blockwise_equals_whole_model_embedded(calibration: str) -> None:
    whole = load_model("smollm2-135m", "cpu")
    samples = _samples(n=2, seqlen=64, seed=7)
    samples = samples % whole.model.config.vocab_size
    expected = local_masks(whole.model, samples, 0.5, calibration=calibration, batch_size=2)
    del whole
    got = blockwise_local_masks(open_blockwise("smollm2-135m", "cpu", "auto"), samples, 0.5,
                                calibration=calibration, batch_size=2)  # fmt: skip
    _assert_same(expected, got)


def test_an_untied_output_head_is_never_loaded(tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(3)
    config = LlamaConfig(vocab_size=260, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         tie_word_embeddings=False)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    make_tokenizer().save_pretrained(tmp_path)
    bm = open_blockwise(str(tmp_path), "cpu", "float32")
    assert "lm_head.weight" in bm.reader.names
    assert bm.model.get_output_embeddings().weight.device.type == "meta"
    samples = _samples(seed=3)
    whole = load_model(str(tmp_path), "cpu")
    _assert_same(local_masks(whole.model, samples, 0.5), blockwise_local_masks(bm, samples, 0.5))


def test_writer_prunes_and_scales_as_apply_masks_does(tiny3: Path, tmp_path: Path) -> None:
    """Server-side use: numpy global masks and scaling factors, as `server.apply.apply_masks`."""
    import numpy as np
    from transformers import AutoModelForCausalLM

    from fedprllm_secure.model import block_linears
    from fedprllm_secure.server.apply import apply_masks

    dense = load_model(str(tiny3), "cpu").model
    rng = np.random.default_rng(0)
    layers = [layer for b in range(3) for layer in block_linears(dense, b)]
    masks = {la.name: rng.random(tuple(la.module.weight.shape)) < 0.4 for la in layers}
    scales = {la.name: rng.uniform(0.5, 2.0, (la.module.weight.shape[0], 1)) for la in layers}
    writer = PrunedCheckpointWriter(CheckpointReader(tiny3), tmp_path / "p", "model.layers", 3)
    for block in range(3):
        mine = [la.name for la in layers if la.block == block]
        writer.write_block(block, {n: masks[n] for n in mine}, {n: scales[n] for n in mine})
    pruned = dict(AutoModelForCausalLM.from_pretrained(writer.finish()).named_parameters())
    apply_masks(layers, masks, scales)
    for name, param in dense.named_parameters():
        assert torch.equal(pruned[name], param), name


@pytest.mark.parametrize(
    "method",
    [PruneMethod(pruner="ria"), PruneMethod(sparsity_type="2:4"), PruneMethod(refine="dsnot")],
    ids=["ria", "2:4", "dsnot"],
)
def test_iter_block_masks_follows_the_prune_method(tiny3: Path, method: PruneMethod) -> None:
    samples = _samples()
    whole = load_model(str(tiny3), "cpu")
    expected, _ = local_masks(whole.model, samples, 0.5, batch_size=2, method=method)
    bm = open_blockwise(str(tiny3), "cpu", "float32")
    got = {n: m for r in iter_block_masks(bm, samples, 0.5, batch_size=2, method=method)
           for n, m in r.masks.items()}  # fmt: skip
    assert list(got) == list(expected)
    assert all(torch.equal(got[n], expected[n]) for n in expected)
    plain, _ = local_masks(whole.model, samples, 0.5, batch_size=2)
    assert any(not torch.equal(plain[n], expected[n]) for n in expected)  # the method mattered


def test_iter_block_masks_refuses_owl(tiny3: Path) -> None:
    bm = open_blockwise(str(tiny3), "cpu", "float32")
    with pytest.raises(ConfigError, match="does not support OWL"):
        next(iter_block_masks(bm, _samples(), 0.5, method=PruneMethod(layerwise="owl")))
