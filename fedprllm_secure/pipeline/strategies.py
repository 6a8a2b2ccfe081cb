"""One strategy per mode, each talking only to a `Federation` (commands and secure sums).

* `one_shot_masks`: every client calibrates its local masks; one secure sum of all the bits.
* `iterative_masks`: one secure sum per decoder block; the clients run their samples through
  the globally pruned block before the next one.
* `stats_one_shot` / `stats_sequential`: clients sum activation statistics in fixed point
  (exponent histogram, then limbs); the server computes centralized Wanda masks. One-shot: one
  round over every block on dense activations; sequential: one round per block, the clients
  propagating through the globally pruned block.

A strategy returns the global masks (and scaling factors); `Server` keeps what the run reports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..client import fixed_point
from ..config import RunConfig
from ..errors import DataError, ProtocolError
from ..progress import Progress
from ..secure_sum import registry
from ..secure_sum.api import AggregationSpec, ClientId
from .federation import Federation, NodeAnswer, NodeCommand, SecureSumSession
from .layout import pack
from .server_step import (
    MaskRule,
    common_exponents,
    decode_statistics,
    global_masks,
    limb_lengths,
    stats_masks,
)
from .timer import Timer
from .workbench import Workbench

Masks = dict[str, np.ndarray]
Scales = dict[str, np.ndarray] | None


@dataclass
class Server:
    """The server side of one fedprllm run: the global model, the federation, what was summed."""

    config: RunConfig
    bench: Workbench
    federation: Federation
    timer: Timer
    progress: Progress
    described: Mapping[ClientId, Mapping[str, Any]] = field(default_factory=dict)
    contributors: list[int] = field(default_factory=list)  # per aggregation
    last_contributors: tuple[ClientId, ...] = ()
    session: SecureSumSession | None = None
    stats_exponents: dict[str, dict[str, int]] = field(default_factory=dict)
    stats_totals: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def rule(self) -> MaskRule:
        p = self.config.pruning
        return MaskRule(p.sparsity, p.group, self.config.seed, p.scaling)

    def command(
        self, kind: str, settings: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None
    ) -> dict[ClientId, NodeAnswer]:
        """The same command to every client still in; their answers."""
        command = NodeCommand(kind, dict(settings), dict(arrays or {}))
        timeout = self.config.federation.calibrate_timeout_s
        return self.federation.command(kind, {c: command for c in self.federation.alive()}, timeout)

    def calibrate(self, walk: str) -> None:
        d, p = self.config.data, self.config.pruning
        settings = {
            "samples_per_client": d.samples_per_client, "seqlen": d.seqlen,
            "batch_size": p.batch_size, "pruner": p.pruner, "calibration": p.calibration,
            "sparsity": p.sparsity, "walk": walk, "privacy": asdict(self.config.privacy),
        }  # fmt: skip
        clients = len(self.federation.alive())
        with self.timer.phase("calibration_clients"):
            with self.progress.stage(f"calibrate {clients} clients", 1) as advance:
                self.command("calibrate", settings)
                advance()

    def open_session(self) -> SecureSumSession:
        protocol = self.config.protocol
        info = registry.get(protocol.name)
        options = info.with_cohort(
            dict(protocol.options), self.config.privacy.cohort_minimum(info.secure)
        )
        self.session = self.federation.open_session(protocol.name, options, self.federation.alive())
        return self.session

    def sum(
        self, session: SecureSumSession, spec: AggregationSpec
    ) -> tuple[dict[str, np.ndarray], int]:
        """The released sums of one aggregation (minimum cohort, RR debiasing) and the exact
        contributor count."""
        with self.timer.phase("secure_sum"):
            result = session.aggregate(spec)
        if not result.contributors:
            raise ProtocolError("no client contributed to the sum (all dropped out)")
        self.contributors.append(len(result.contributors))
        self.last_contributors = tuple(result.contributors)
        secure = registry.get(self.config.protocol.name).secure
        return self.config.privacy.release(result, secure), len(result.contributors)

    def apply_block(self, block: int, masks: Masks, scales: Scales) -> None:
        """Every client moves on through `block` pruned by the global mask (and scaled)."""
        arrays = {f"mask/{layer.name}": pack(masks[layer.name])
                  for layer in self.bench.block_layers(block)}  # fmt: skip
        if scales is not None:
            arrays.update({f"scale/{layer.name}": scales[layer.name]
                           for layer in self.bench.block_layers(block)})  # fmt: skip
        with self.timer.phase("calibration_clients"):
            self.command("apply", {"block": block}, arrays)


def one_shot_masks(server: Server) -> tuple[Masks, Scales]:
    bench = server.bench
    server.calibrate("masks")
    session = server.open_session()
    server.command("prepare", {"aggregation": 0, "upload": "masks"})
    spec = AggregationSpec.from_lengths(0, bench.lengths, bound=1)
    with server.progress.stage(f"secure sum ({server.config.protocol.name})", 1) as advance:
        sums, contributors = server.sum(session, spec)
        advance()
    with server.timer.phase("server_prune"):
        return global_masks(server.rule, sums, bench.shapes, bench.index, contributors)


def iterative_masks(server: Server) -> tuple[Masks, Scales]:
    """One session (keys set up once), one aggregation per block under its own index."""
    bench, sparsity = server.bench, server.config.pruning.sparsity
    server.calibrate("blocks")
    session = server.open_session()
    masks: Masks = {}
    scales: Scales = {} if server.rule.scaling else None
    with server.progress.stage("iterative (per block)", bench.blocks) as advance:
        for block in range(bench.blocks):
            prepare = {"aggregation": block, "upload": "block-masks", "block": block,
                       "sparsity": sparsity}  # fmt: skip
            with server.timer.phase("calibration_clients"):
                server.command("prepare", prepare)
            lengths = {layer.name: layer.numel for layer in bench.block_layers(block)}
            sums, contributors = server.sum(
                session, AggregationSpec.from_lengths(block, lengths, 1)
            )
            with server.timer.phase("server_prune"):
                block_masks, block_scales = global_masks(
                    server.rule, sums, bench.shapes, bench.index, contributors
                )
            masks.update(block_masks)
            if scales is not None and block_scales is not None:
                scales.update(block_scales)
            server.apply_block(block, block_masks, block_scales)
            advance()
    return masks, scales


def _window_tokens(server: Server) -> int:
    """The public token count of one client: samples_per_client full windows of seqlen.

    Stats mode uploads no token count (an exact count is data-dependent and unnoised, and would
    break add/remove-one DP); the server derives it from this public number.
    """
    d = server.config.data
    expected = [d.samples_per_client, d.seqlen]
    for client, answer in sorted(server.described.items()):
        if list(answer["windows"]) != expected:
            raise DataError(
                f"client {client} has {tuple(answer['windows'])} calibration windows, stats mode "
                f"needs exactly {expected[0]} full windows of {expected[1]} tokens"
            )
    return expected[0] * expected[1]


def _agreed(answers: Mapping[ClientId, NodeAnswer], key: str) -> Any:
    """The value every client answered for `key` (architecture facts: they must agree)."""
    values = [answers[c].settings[key] for c in sorted(answers)]
    if not values or any(v != values[0] for v in values):
        raise ProtocolError(f"the clients disagree on {key} (different models?)")
    return values[0]


def _stats(server: Server, one_shot: bool) -> tuple[Masks, Scales]:
    bench, precision = server.bench, server.config.pruning.stats_precision_bits
    fixed_point.check_capacity(precision, len(server.federation.alive()))
    window_tokens = _window_tokens(server)
    server.calibrate("blocks")
    session = server.open_session()
    weights = {layer.name: layer.module.weight.data for layer in bench.layers}
    rounds = [list(range(bench.blocks))] if one_shot else [[b] for b in range(bench.blocks)]
    masks: Masks = {}
    with server.progress.stage("stats (per round)", len(rounds)) as advance:
        for number, blocks in enumerate(rounds):
            prepare = {"aggregation": 2 * number, "upload": "histogram", "blocks": blocks,
                       "one_shot": one_shot}  # fmt: skip
            with server.timer.phase("calibration_clients"):
                answers = server.command("prepare", prepare)
            groups, lengths = _agreed(answers, "groups"), _agreed(answers, "lengths")
            slots = {name: fixed_point.EXPONENT_SLOTS for name in lengths}
            histograms, _ = server.sum(session, AggregationSpec.from_lengths(2 * number, slots, 1))
            exponents, report = common_exponents(histograms)
            server.stats_exponents.update(report)
            limbs = {"aggregation": 2 * number + 1, "upload": "limbs", "exponents": exponents,
                     "precision": precision}  # fmt: skip
            with server.timer.phase("calibration_clients"):
                server.command("prepare", limbs)
            spec = AggregationSpec.from_lengths(
                2 * number + 1, limb_lengths(lengths, precision), fixed_point.LIMB_BOUND
            )
            sums, contributors = server.sum(session, spec)
            with server.timer.phase("server_prune"):
                for leader in lengths:
                    server.stats_totals[leader] = decode_statistics(
                        sums, leader, exponents[leader], precision
                    )
                round_masks = stats_masks(
                    groups, server.stats_totals, contributors * window_tokens, weights,
                    server.config.pruning.sparsity,
                )  # fmt: skip
            masks.update(round_masks)
            if not one_shot:
                server.apply_block(blocks[0], round_masks, None)
            advance()
    return masks, None


def stats_one_shot(server: Server) -> tuple[Masks, Scales]:
    return _stats(server, one_shot=True)


def stats_sequential(server: Server) -> tuple[Masks, Scales]:
    return _stats(server, one_shot=False)


Strategy = Callable[[Server], tuple[Masks, Scales]]


def strategy_for(config: RunConfig) -> Strategy:
    """The strategy of `config.pruning` (aggregate, mode, calibration)."""
    p = config.pruning
    if p.aggregate == "stats":
        return stats_one_shot if p.calibration == "one-shot" else stats_sequential
    return iterative_masks if p.mode == "iterative" else one_shot_masks
