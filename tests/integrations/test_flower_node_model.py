"""A Flower node loads its model's weights only for messages that compute on them: restoring the
node for describe, prepare or a masked-input round reads the tokenizer and config.json only
(each message may run in a fresh ClientApp process, where loading the weights dominates)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="flwr is not installed (pip install '.[flower]')")

from fedprllm_secure.data import ClientText, calibration_samples  # noqa: E402
from fedprllm_secure.integrations.flower import node_host  # noqa: E402
from fedprllm_secure.pipeline.workbench import Workbench  # noqa: E402

from ..conftest import synthetic_text  # noqa: E402


@pytest.fixture(autouse=True)
def no_loaded_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_host, "_BENCHES", {})


def test_the_tokenizer_and_block_count_come_without_the_weights(tiny_model_dir: Path) -> None:
    lazy = node_host.LazyBench(str(tiny_model_dir), "cpu")
    text = ClientText("node", (synthetic_text(1),))
    windows = calibration_samples(lazy.tokenizer, text, 2, 16)
    assert lazy.blocks == 2 and not node_host._BENCHES  # nothing loaded
    full = Workbench(str(tiny_model_dir), "cpu")
    assert windows.equal(calibration_samples(full.tokenizer, text, 2, 16))  # same samples
    assert lazy.lengths == full.lengths  # anything else loads the model, once
    assert list(node_host._BENCHES) == [(str(tiny_model_dir), "cpu", "auto", False)]
    assert (
        lazy.tokenizer is node_host._BENCHES[(str(tiny_model_dir), "cpu", "auto", False)].tokenizer
    )


def test_a_model_that_is_not_a_checkpoint_folder_is_loaded_whole(tmp_path: Path) -> None:
    lazy = node_host.LazyBench(str(tmp_path / "absent"), "cpu")
    with pytest.raises(Exception, match="absent"):
        lazy.tokenizer  # noqa: B018 - the load itself is the test


def test_a_block_s_layer_names_come_without_the_weights(tiny_model_dir: Path) -> None:
    """`prepare masks {block}` stages the block's layers: their names come from the skeleton."""
    lazy = node_host.LazyBench(str(tiny_model_dir), "cpu")
    names = [[layer.name for layer in lazy.block_layers(b)] for b in range(2)]
    assert not node_host._BENCHES and not lazy.blockwise  # nothing loaded
    full = Workbench(str(tiny_model_dir), "cpu")
    assert names == [[layer.name for layer in full.block_layers(b)] for b in range(2)]
