"""The embedded defaults (slow: they fetch ~100 MB once and load a real 135M-parameter LLM)."""

from __future__ import annotations

import pytest
import torch

from fedprllm_secure import assets
from fedprllm_secure.data import heldout_split, load_corpus, split_clients
from fedprllm_secure.model import decoder_blocks, load_model, prunable_layers

pytestmark = pytest.mark.slow


def test_embedded_model_layout_matches_the_reference() -> None:
    loaded = load_model("smollm2-135m", "cpu")
    layers = prunable_layers(loaded.model)
    assert len(decoder_blocks(loaded.model)) == 30
    assert len(layers) == 210
    assert sum(layer.numel for layer in layers) == 106_168_320
    ids = loaded.tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = loaded.model(ids).logits
    assert torch.isfinite(logits).all()


def test_embedded_gguf_loads_from_its_path_too() -> None:
    path = assets.fetch("smollm2-135m")
    loaded = load_model(str(path), "cpu")
    assert len(prunable_layers(loaded.model)) == 210


def test_embedded_corpus_has_twelve_topics_and_a_heldout_set() -> None:
    articles = load_corpus("wiki-topics")
    assert len(articles) == 10_033
    assert len({a.topic for a in articles}) == 12
    pool, heldout = heldout_split(articles)
    assert 400 < len(heldout) < 700
    clients = split_clients(pool, 8, "topic", seed=0)
    assert all(1 <= len(c.topics) <= 2 for c in clients)
