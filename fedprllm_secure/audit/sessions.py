"""The audit's client calibrations (packed masks, optional DP statistics) and its secure sums
(one simulated session over every client's 0/1 vector)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch

from ..client.calibrate import local_masks
from ..pipeline.layout import Packed, pack_masks
from ..privacy.statistics import StatisticsBudget, StatisticsMechanism
from ..randomness import RandomSource
from ..secure_sum.api import AggregateResult, AggregationSpec, InputProvider
from ..secure_sum.registry import get
from ..secure_sum.session import SimulatedSession
from .config import AuditConfig


def calibrate(
    model: torch.nn.Module,
    samples: torch.Tensor,
    config: AuditConfig,
    *,
    dp_epsilon: float | None = None,
    releases: int = 1,
    source: RandomSource | None = None,
    max_blocks: int | None = None,
) -> tuple[Packed, dict[str, Any] | None]:
    """One client's packed masks, optionally with DP statistics (one release per block), and
    with DP the mechanism's report; `max_blocks` stops after the first blocks."""
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
        model, samples, config.sparsity, "wanda", config.calibration, config.batch_size, **extra
    )
    return pack_masks(masks), (mechanism.report() if mechanism else None)


def sum_bits(
    protocol: str,
    providers: Mapping[int, InputProvider],
    lengths: dict[str, int],
    source: RandomSource,
    *,
    record_payloads: bool = False,
) -> tuple[AggregateResult, SimulatedSession, float]:
    """Sum the clients' 0/1 vectors in one aggregation (index 0, bound 1) of `protocol`.

    `providers[c](0, chunk)` is client c's bits for each chunk named in `lengths` (name ->
    length); the session draws all its randomness from `source`, no dropouts. The audit sums
    exactly the cohort it is given (an experiment's setting), so the protocol's own minimum cohort
    (its `cohort_option`, e.g. additive's clients or the ckks authority) is set to that cohort.
    Returns the result, the session (its bus log holds what was sent, with the payloads when
    `record_payloads`) and the seconds the aggregation took (enrollment not counted).
    """
    options = get(protocol).with_cohort({}, len(providers))
    session = SimulatedSession(
        protocol, providers, source, options=options, record_payloads=record_payloads
    )
    started = time.perf_counter()
    result = session.aggregate(AggregationSpec.from_lengths(0, lengths, bound=1))
    return result, session, time.perf_counter() - started
