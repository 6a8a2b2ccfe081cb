"""Client text: the embedded corpus split over clients, or users' own files; token samples.

Held-out evaluation text (documented, fixed): an article of the corpus is held out when the first
byte of SHA-256(title) is below 13 (about 5% of articles, ~500 of 10,033), whatever the seed or the
client count, so it is disjoint from every client's calibration articles by construction. The
evaluation text is those articles ordered by SHA-256(title), joined by blank lines.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from . import assets
from .errors import ConfigError, DataError

HELDOUT_BYTE_BELOW = 13
SPLITS = ("iid", "topic")


@dataclass(frozen=True)
class Article:
    title: str
    text: str
    topic: str


@dataclass(frozen=True)
class ClientText:
    """One client's calibration text, as an ordered list of documents."""

    name: str
    documents: tuple[str, ...]
    topics: tuple[str, ...] = ()


def _title_hash(title: str) -> bytes:
    return hashlib.sha256(title.encode("utf-8")).digest()


def load_corpus(spec: str = "wiki-topics") -> list[Article]:
    """Articles of the embedded corpus, or of a JSON file in the same {title: {...}} format."""
    path = assets.fetch(spec) if spec in assets.ASSETS else Path(spec).expanduser()
    if not path.is_file():
        raise DataError(f"corpus file not found: {spec}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read corpus {spec}: {exc}") from exc
    if not isinstance(raw, dict):
        raise DataError(f"corpus {spec} is not a JSON object of articles")
    articles = []
    for title, entry in raw.items():
        if isinstance(entry, dict) and isinstance(entry.get("extract"), str) and entry["extract"]:
            articles.append(Article(title, entry["extract"], str(entry.get("topic") or "none")))
    if not articles:
        raise DataError(f"corpus {spec} holds no articles with an 'extract'")
    return sorted(articles, key=lambda a: a.title)


def is_heldout(article: Article) -> bool:
    return _title_hash(article.title)[0] < HELDOUT_BYTE_BELOW


def heldout_split(articles: Sequence[Article]) -> tuple[list[Article], list[Article]]:
    """(calibration pool, held-out articles ordered by title hash)."""
    pool = [a for a in articles if not is_heldout(a)]
    heldout = sorted((a for a in articles if is_heldout(a)), key=lambda a: _title_hash(a.title))
    return pool, heldout


def heldout_text(articles: Sequence[Article]) -> str:
    _, heldout = heldout_split(articles)
    return "\n\n".join(a.text for a in heldout)


def split_clients(
    articles: Sequence[Article], clients: int, split: str, seed: int
) -> list[ClientText]:
    """Deal the articles to `clients` disjoint clients.

    iid: articles shuffled (seeded) and dealt round-robin. topic (non-IID): client i draws from
    topic number (i + offset) mod T and, with probability 1/2, one more random topic; each topic's
    articles are shuffled and divided evenly among the clients that drew it.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r} (use {' or '.join(SPLITS)})")
    if clients < 1:
        raise ConfigError("--clients must be at least 1")
    if clients > len(articles):
        raise ConfigError(f"more clients ({clients}) than articles ({len(articles)})")
    rng = random.Random(seed)
    if split == "iid":
        shuffled = list(articles)
        rng.shuffle(shuffled)
        return [
            ClientText(f"client-{i}", tuple(a.text for a in shuffled[i::clients]))
            for i in range(clients)
        ]
    by_topic: dict[str, list[Article]] = {}
    for article in articles:
        by_topic.setdefault(article.topic, []).append(article)
    topics = sorted(by_topic)
    offset = rng.randrange(len(topics))
    chosen: list[list[str]] = []
    for i in range(clients):
        mine = [topics[(i + offset) % len(topics)]]
        others = [t for t in topics if t != mine[0]]
        if others and rng.random() < 0.5:
            mine.append(rng.choice(others))
        chosen.append(mine)
    documents: list[list[Article]] = [[] for _ in range(clients)]
    for topic in topics:
        takers = [i for i in range(clients) if topic in chosen[i]]
        if not takers:
            continue
        pool = list(by_topic[topic])
        if len(pool) < len(takers):
            raise ConfigError(f"topic {topic!r} has fewer articles than the clients that draw it")
        rng.shuffle(pool)
        for rank, client in enumerate(takers):
            documents[client].extend(pool[rank :: len(takers)])
    result = []
    for i in range(clients):
        docs = documents[i]
        rng.shuffle(docs)
        result.append(ClientText(f"client-{i}", tuple(a.text for a in docs), tuple(chosen[i])))
    return result


def refuse_binary(text: str, name: str) -> None:
    """DataError when `text` holds NUL bytes: binary data, not text (valid UTF-8 all the same)."""
    if "\x00" in text:
        raise DataError(f"{name} holds NUL bytes: binary data, not text")


def _read_text_file(path: Path) -> list[str]:
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    refuse_binary(content, str(path))
    if path.suffix == ".txt":
        return [content] if content.strip() else []
    documents = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        text = item.get("text") if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise DataError(f"{path}:{number}: expected a string or an object with 'text'")
        documents.append(text)
    return documents


def read_client_dir(folder: str | Path) -> list[ClientText]:
    """One client per entry of `folder` (sorted): a .txt file, a .jsonl file, or a folder of them."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"client data folder not found: {folder}")
    clients = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            files = sorted(p for p in entry.rglob("*") if p.suffix in (".txt", ".jsonl"))
        elif entry.suffix in (".txt", ".jsonl"):
            files = [entry]
        else:
            continue
        documents = [doc for path in files for doc in _read_text_file(path)]
        if not documents:
            raise DataError(f"client {entry.name} has no text (.txt or .jsonl) in {entry}")
        clients.append(ClientText(entry.stem if entry.is_file() else entry.name, tuple(documents)))
    if not clients:
        raise DataError(
            f"{folder} holds no client data (one .txt/.jsonl file or folder per client)"
        )
    return clients


def tokenize(tokenizer: object, text: str) -> torch.Tensor:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    return torch.tensor(ids, dtype=torch.long)


def calibration_samples(
    tokenizer: object, client: ClientText, samples: int, seqlen: int
) -> torch.Tensor:
    """`samples` consecutive windows of `seqlen` tokens from the client's documents: [samples, seqlen].

    Documents are tokenized in order, joined by blank lines, until enough tokens are read.
    """
    if samples < 1 or seqlen < 2:
        raise ConfigError("--samples-per-client must be >= 1 and --seqlen >= 2")
    needed = samples * seqlen
    pieces: list[torch.Tensor] = []
    have = 0
    separator = tokenize(tokenizer, "\n\n")
    batch = 32
    for start in range(0, len(client.documents), batch):
        encoded = tokenizer(  # type: ignore[operator]
            list(client.documents[start : start + batch]), add_special_tokens=False
        )["input_ids"]
        for ids in encoded:
            pieces += [torch.tensor(ids, dtype=torch.long), separator]
            have += len(ids) + len(separator)
        if have >= needed:
            break
    if have < needed:
        raise DataError(
            f"{client.name} has {have} tokens of text, needs {needed} "
            f"({samples} samples x {seqlen}); use fewer samples, a shorter --seqlen or fewer clients"
        )
    stream = torch.cat(pieces)[:needed]
    return stream.view(samples, seqlen)
