"""What `simulate` leaves behind: the saved model (its dtype, its card), the masks file, the
`--json` summary, perplexity with its standard error and bits per byte (tiny model)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fedprllm_secure.cli import main
from fedprllm_secure.cli.simulate import protocol_label
from fedprllm_secure.errors import DataError
from fedprllm_secure.evaluate import summarize
from fedprllm_secure.mask_file import load_masks, save_masks
from fedprllm_secure.model import load_model, prunable_layers
from fedprllm_secure.saving import checkpoint_dtype

from .conftest import make_tiny_model, make_tokenizer


@pytest.fixture(scope="module")
def bf16_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-bf16")
    make_tiny_model().to(torch.bfloat16).save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


def _args(model: Path, client_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        "simulate", "--model", str(model), "--client-data", str(client_dir),
        "--eval-text", str(client_dir.parent / "eval.txt"), "--samples-per-client", "2",
        "--seqlen", "32", "--eval-windows", "3", "--device", "cpu", "--out", str(out),
        "--no-progress", *extra,
    ]  # fmt: skip


def test_summarize_by_hand() -> None:
    # Two windows of 2 predicted tokens, NLL sums 2 and 4 nats: means 1 and 2.
    evaluation = summarize([2.0, 4.0], [2, 2], text_bytes=6)
    assert evaluation.perplexity == pytest.approx(math.exp(1.5))
    # sample std of (1, 2) = 1/sqrt(2); SE = std/sqrt(2) = 0.5; delta method: ppl x 0.5
    assert evaluation.perplexity_se == pytest.approx(math.exp(1.5) * 0.5)
    assert evaluation.bits_per_byte == pytest.approx(6.0 / math.log(2) / 6)
    assert summarize([3.0], [3], None).perplexity_se == 0.0


def test_masks_file_round_trip_is_packed_bits(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    masks = {"a.q": rng.random((7, 5)) < 0.5, "a.k": rng.random((3, 11)) < 0.3}
    save_masks(tmp_path / "masks.npz", masks)
    loaded = load_masks(tmp_path / "masks.npz")
    assert set(loaded) == set(masks)
    for name, mask in masks.items():
        assert loaded[name].shape == mask.shape and np.array_equal(loaded[name], mask)
    with np.load(tmp_path / "masks.npz") as raw:
        assert raw["a.q"].dtype == np.uint8 and raw["a.q"].size == math.ceil(35 / 8)
        assert np.array_equal(raw["a.q"], np.packbits(masks["a.q"].reshape(-1)))
    # Flower's plain archive of boolean masks reads too; garbage is one DataError.
    np.savez_compressed(tmp_path / "flower.npz", **masks)
    assert np.array_equal(load_masks(tmp_path / "flower.npz")["a.k"], masks["a.k"])
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError):
        load_masks(tmp_path / "bad.npz")


def test_protocol_label_shows_the_scheme() -> None:
    assert protocol_label({"name": "ckks", "options": {"he_scheme": "bfv"}}) == "ckks (bfv)"
    assert protocol_label({"name": "additive", "options": {}}) == "additive"


def test_saved_model_keeps_the_checkpoint_dtype_with_card_and_masks(
    bf16_model_dir: Path, client_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = _args(bf16_model_dir, client_dir, out, "--save-model", "--save-masks", "--json")
    assert checkpoint_dtype(str(bf16_model_dir)) == "bfloat16"
    assert main(args) == 0
    stdout = capsys.readouterr().out
    summary = json.loads(stdout)  # the whole of stdout is one JSON object
    results = json.loads((out / "results.json").read_text())
    assert summary["perplexity"] == results["perplexity"]
    assert summary["saved_masks"] == str(out / "masks.npz")
    # Saved in the checkpoint's dtype (bf16), loadable, with a model card.
    config = json.loads((out / "model" / "config.json").read_text())
    assert (config.get("dtype") or config.get("torch_dtype")) == "bfloat16"
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(out / "model")
    assert next(saved.parameters()).dtype == torch.bfloat16
    card = (out / "model" / "README.md").read_text()
    for fragment in (str(bf16_model_dir), "fedprllm", "0.5", "plaintext", "seed", "--save-masks"):
        assert fragment in card, fragment
    assert f"{results['perplexity']['fedprllm']:.4f}" in card
    # The masks file holds the saved model's zeros exactly.
    masks = load_masks(out / "masks.npz")
    layers = prunable_layers(saved)
    assert set(masks) == {layer.name for layer in layers}
    for layer in layers:
        assert torch.equal(layer.module.weight == 0, torch.from_numpy(masks[layer.name]))
    # Perplexity comes with its spread and bits per byte.
    for key in ("dense", "fedprllm"):
        assert results["perplexity_se"][key] > 0
        assert 0 < results["bits_per_byte"][key] < 20
    # A float32 checkpoint stays float32 (the dtype is read, not assumed).
    assert checkpoint_dtype(str(tmp_path)) is None


def test_bits_per_byte_is_the_nll_over_the_predicted_bytes(
    tiny_model_dir: Path, client_dir: Path
) -> None:
    from fedprllm_secure.pipeline.workbench import Workbench

    bench = Workbench(str(tiny_model_dir), "cpu")
    bench.use_eval_text((client_dir.parent / "eval.txt").read_text(), 32, 3)
    evaluation = bench.evaluation()
    tokens = sum(int(w.numel()) - 1 for w in bench.windows)
    # The byte-level tokenizer without merges: one token per byte.
    assert bench.window_bytes == tokens
    expected = math.log(evaluation.perplexity) * tokens / math.log(2) / tokens
    assert evaluation.bits_per_byte == pytest.approx(expected)
    assert load_model(str(tiny_model_dir), "cpu").model is not None


def test_save_masks_needs_a_global_mask(
    tiny_model_dir: Path, client_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = _args(tiny_model_dir, client_dir, out, "--method", "local", "--save-masks")
    assert main(args) == 2
    assert "--save-masks needs --method fedprllm or centralized" in capsys.readouterr().err
    assert not out.exists()


def test_json_keeps_stdout_clean_while_progress_goes_to_stderr(
    tiny_model_dir: Path, client_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [a for a in _args(tiny_model_dir, client_dir, tmp_path / "run") if a != "--no-progress"]
    assert main([*args, "--json", "--method", "fedprllm,local"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert set(summary["perplexity"]) == {"dense", "fedprllm", "local", "local_mean"}
    assert len(summary["bits_per_byte"]["local"]) == 3
    assert summary["protocol"]["name"] == "plaintext" and summary["protocol"]["he_scheme"] is None
    assert "phase 5 of 5: local" in captured.err and "ETA" in captured.err
