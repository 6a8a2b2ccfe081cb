"""Client masks for the audit: one calibration per client and noise setting, kept bit-packed."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..client.calibrate import local_masks
from ..privacy.statistics import StatisticsBudget, StatisticsMechanism
from ..randomness import RandomSource
from .config import AuditConfig

PackedMasks = dict[str, np.ndarray]  # layer name -> np.packbits of the flattened 0/1 mask


def pack(masks: dict[str, torch.Tensor]) -> PackedMasks:
    return {name: np.packbits(m.reshape(-1).numpy().astype(np.uint8)) for name, m in masks.items()}


def unpack(packed: np.ndarray, length: int) -> np.ndarray:
    return np.unpackbits(packed, count=length)


def calibrate(
    model: torch.nn.Module,
    samples: torch.Tensor,
    config: AuditConfig,
    *,
    dp_epsilon: float | None = None,
    releases: int = 1,
    source: RandomSource | None = None,
    max_blocks: int | None = None,
) -> tuple[PackedMasks, dict[str, Any] | None]:
    """One client's packed masks, optionally with DP statistics (one release per block).

    Returns the masks and, with DP, the mechanism's report.
    """
    extra: dict[str, Any] = {}
    mechanism = None
    if dp_epsilon is not None:
        if source is None:
            raise ValueError("DP statistics need a random source")
        budget = StatisticsBudget(
            dp_epsilon, config.dp_delta, config.dp_clip, releases, config.accountant
        )
        mechanism = StatisticsMechanism(budget, source)
        extra["stats_transform"] = mechanism
    if max_blocks is not None:
        extra["max_blocks"] = max_blocks
    masks, _ = local_masks(
        model,
        samples,
        config.sparsity,
        "wanda",
        config.calibration,
        config.batch_size,
        **extra,
    )
    return pack(masks), (mechanism.report() if mechanism else None)
