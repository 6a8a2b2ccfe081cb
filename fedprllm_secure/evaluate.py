"""Perplexity over non-overlapping windows (stride = window length), batch 1.

`evaluate` also reports the spread across windows and bits per byte:

* `perplexity` = exp(total NLL / predicted tokens), over all windows together;
* `perplexity_se`: the standard error of the mean per-window NLL (sample std / sqrt(windows)),
  carried to perplexity by the delta method (perplexity x SE); 0 for a single window;
* `bits_per_byte` = total NLL in bits / UTF-8 bytes of the text that was predicted (each
  window's tokens after its first, decoded: `predicted_bytes`), which compares across tokenizers
  (a per-token perplexity does not).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .errors import DataError


def eval_windows(tokens: torch.Tensor, window: int, max_windows: int) -> list[torch.Tensor]:
    """The first `max_windows` non-overlapping windows of `window` tokens."""
    available = tokens.numel() // window
    if available < 1:
        raise DataError(
            f"evaluation text has {tokens.numel()} tokens, fewer than one window of {window}"
        )
    count = min(available, max_windows) if max_windows > 0 else available
    return [tokens[i * window : (i + 1) * window] for i in range(count)]


@dataclass(frozen=True)
class Evaluation:
    perplexity: float
    perplexity_se: float
    bits_per_byte: float | None  # None when the text's byte count is unknown
    window_nll: tuple[float, ...]  # mean NLL (nats per predicted token) of each window

    def as_dict(self) -> dict[str, float | None]:
        return {
            "perplexity": self.perplexity,
            "perplexity_se": self.perplexity_se,
            "bits_per_byte": self.bits_per_byte,
        }


def summarize(
    window_nll_sums: Sequence[float], window_tokens: Sequence[int], text_bytes: int | None
) -> Evaluation:
    """The `Evaluation` of per-window NLL sums (nats) over `window_tokens` predicted tokens."""
    total_nll, total_tokens = sum(window_nll_sums), sum(window_tokens)
    ppl = math.exp(total_nll / total_tokens)
    means = [s / n for s, n in zip(window_nll_sums, window_tokens, strict=True)]
    se = 0.0
    if len(means) > 1:
        average = sum(means) / len(means)
        variance = sum((m - average) ** 2 for m in means) / (len(means) - 1)
        se = ppl * math.sqrt(variance / len(means))
    bpb = total_nll / math.log(2) / text_bytes if text_bytes else None
    return Evaluation(ppl, se, bpb, tuple(means))


def evaluate(
    model: nn.Module,
    windows: list[torch.Tensor],
    text_bytes: int | None = None,
    on_window: Callable[[], None] | None = None,
) -> Evaluation:
    """Perplexity, its per-window standard error and bits per byte (`text_bytes`: UTF-8 bytes
    of the predicted text, `predicted_bytes`)."""
    device = next(model.parameters()).device
    sums, counts = [], []
    with torch.no_grad():
        for window in windows:
            ids = window.unsqueeze(0).to(device)
            logits = model(ids, use_cache=False).logits[0, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum")
            sums.append(float(nll))
            counts.append(ids.shape[1] - 1)
            if on_window:
                on_window()
    return summarize(sums, counts, text_bytes)


def predicted_bytes(tokenizer: object, windows: list[torch.Tensor]) -> int:
    """UTF-8 bytes of the text each window predicts (its tokens after the first), decoded."""
    decode = tokenizer.decode  # type: ignore[attr-defined]
    return sum(len(decode(w[1:].tolist()).encode("utf-8")) for w in windows)


def perplexity(
    model: nn.Module,
    windows: list[torch.Tensor],
    on_window: Callable[[], None] | None = None,
) -> float:
    """exp(mean next-token NLL) over all predicted tokens of all windows."""
    return evaluate(model, windows, None, on_window).perplexity
