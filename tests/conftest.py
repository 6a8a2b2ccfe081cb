"""Shared fixtures: a tiny random LLaMA with a byte-level tokenizer, built locally (no download)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

WORDS = (
    "the river carries cold water from the mountains to the sea while farmers watch "
    "birds and count the seasons of rain sun and wind over the quiet green valley"
).split()


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: index for index, symbol in enumerate(sorted(alphabet))}
    vocab["<eos>"] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>")


def make_tiny_model(layers: int = 2, seed: int = 0, hidden: int = 32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=260,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


def save_tiny(folder: Path, layers: int = 2, seed: int = 0) -> Path:
    make_tiny_model(layers, seed).save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


def synthetic_text(seed: int, words: int = 400) -> str:
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(WORDS), (words,), generator=generator)
    return " ".join(WORDS[int(i)] for i in picks) + "."


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_one_block_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-llama-1"), layers=1)


def write_client_dir(root: Path) -> Path:
    """Write three clients under root/clients (a .txt file, a .jsonl file and a folder) and an
    evaluation text root/eval.txt; return the clients folder."""
    folder = root / "clients"
    folder.mkdir()
    (folder / "alice.txt").write_text(synthetic_text(1))
    (folder / "bob.jsonl").write_text(
        "\n".join(json.dumps({"text": synthetic_text(10 + i, 150)}) for i in range(3)) + "\n"
    )
    (folder / "carol").mkdir()
    (folder / "carol" / "a.txt").write_text(synthetic_text(3, 250))
    (folder / "carol" / "b.txt").write_text(synthetic_text(4, 250))
    (root / "eval.txt").write_text(synthetic_text(99, 800))
    return folder


def add_fourth_client(folder: Path) -> str:
    """Add client "dave" to a folder written by `write_client_dir` (additive needs four clients
    for one to drop: three survivors still reach its quorum of signatures); return its entry."""
    (folder / "dave.txt").write_text(synthetic_text(5))
    return "dave.txt"


@pytest.fixture()
def client_dir(tmp_path: Path) -> Path:
    return write_client_dir(tmp_path)


@pytest.fixture(autouse=True)
def _isolated_cache(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only `slow` tests (which use the embedded assets) see the real asset cache."""
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setenv("FEDPRLLM_SECURE_CACHE", str(tmp_path / "cache"))


@pytest.fixture()
def recorded_sessions(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every SimulatedSession built during the test, each recording the payloads it carries."""
    from fedprllm_secure.secure_sum import session as session_module

    recorded: list = []
    original = session_module.SimulatedSession.__init__

    def recording(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs["record_payloads"] = True
        original(self, *args, **kwargs)
        recorded.append(self)

    monkeypatch.setattr(session_module.SimulatedSession, "__init__", recording)
    return recorded
