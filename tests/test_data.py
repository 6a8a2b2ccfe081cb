"""Client splits, the held-out text and user-supplied client folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedprllm_secure.data import (
    Article,
    ClientText,
    calibration_samples,
    heldout_split,
    is_heldout,
    read_client_dir,
    split_clients,
)
from fedprllm_secure.errors import ConfigError, DataError

from .conftest import make_tokenizer

TOPICS = [f"topic-{i}" for i in range(12)]
ARTICLES = [Article(f"title {i}", f"text {i} " * 5, TOPICS[i % 12]) for i in range(600)]


@pytest.mark.parametrize("split", ["iid", "topic"])
@pytest.mark.parametrize("clients", [1, 3, 8, 30])
def test_splits_are_disjoint_and_seeded(split: str, clients: int) -> None:
    parts = split_clients(ARTICLES, clients, split, seed=4)
    assert len(parts) == clients
    seen = [doc for part in parts for doc in part.documents]
    assert len(seen) == len(set(seen))
    assert all(part.documents for part in parts)
    assert parts == split_clients(ARTICLES, clients, split, seed=4)
    if split == "topic":
        for part in parts:
            assert 1 <= len(part.topics) <= 2
            topics = {a.topic for a in ARTICLES if a.text in set(part.documents)}
            assert topics <= set(part.topics)


def test_heldout_is_disjoint_fixed_and_about_five_percent() -> None:
    pool, heldout = heldout_split(ARTICLES)
    assert not {a.title for a in pool} & {a.title for a in heldout}
    assert 0.02 < len(heldout) / len(ARTICLES) < 0.09
    assert all(is_heldout(a) for a in heldout)


def test_bad_splits_are_refused() -> None:
    with pytest.raises(ConfigError):
        split_clients(ARTICLES[:3], 4, "iid", 0)
    with pytest.raises(ConfigError):
        split_clients(ARTICLES, 2, "dirichlet", 0)


def test_client_dir_reads_txt_jsonl_and_folders(client_dir: Path) -> None:
    clients = read_client_dir(client_dir)
    assert [c.name for c in clients] == ["alice", "bob", "carol"]
    assert len(clients[1].documents) == 3 and len(clients[2].documents) == 2
    (client_dir / "dave.jsonl").write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(DataError, match="dave.jsonl:2"):
        read_client_dir(client_dir)
    with pytest.raises(DataError):
        read_client_dir(client_dir / "missing")


def test_calibration_samples_shape_and_shortage() -> None:
    tokenizer = make_tokenizer()
    client = ClientText("c", ("abc " * 100, "def " * 100))
    samples = calibration_samples(tokenizer, client, 3, 50)
    assert tuple(samples.shape) == (3, 50)
    with pytest.raises(DataError, match="needs 5000"):
        calibration_samples(tokenizer, client, 10, 500)
