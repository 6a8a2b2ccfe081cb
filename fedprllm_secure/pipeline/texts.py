"""Where the clients' calibration text and the evaluation text come from (`DataConfig`)."""

from __future__ import annotations

from pathlib import Path

from .. import data
from ..config import DataConfig
from ..errors import DataError


def client_texts(config: DataConfig, seed: int) -> list[data.ClientText]:
    """One text per client: the entries of `client_data`, or the corpus split `clients` ways."""
    if config.client_data:
        return data.read_client_dir(config.client_data)
    pool, _ = data.heldout_split(data.load_corpus(config.corpus))
    return data.split_clients(pool, config.clients, config.split, seed)


def eval_text(config: DataConfig) -> str:
    """The evaluation text: `eval_text` if set, else the corpus' held-out part."""
    if not config.eval_text:
        return data.heldout_text(data.load_corpus(config.corpus))
    path = Path(config.eval_text).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read data.eval_text {config.eval_text}: {exc}") from exc
    data.refuse_binary(text, f"data.eval_text {config.eval_text}")
    return text
