"""Perplexity over non-overlapping windows (stride = window length), batch 1."""

from __future__ import annotations

import math
from collections.abc import Callable

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


def perplexity(
    model: nn.Module,
    windows: list[torch.Tensor],
    on_window: Callable[[], None] | None = None,
) -> float:
    """exp(mean next-token NLL) over all predicted tokens of all windows."""
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    with torch.no_grad():
        for window in windows:
            ids = window.unsqueeze(0).to(device)
            logits = model(ids, use_cache=False).logits[0, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum")
            total_nll += float(nll)
            total_tokens += ids.shape[1] - 1
            if on_window:
                on_window()
    return math.exp(total_nll / total_tokens)
