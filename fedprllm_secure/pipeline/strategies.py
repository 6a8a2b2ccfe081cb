"""One strategy per mode, each talking only to a `Federation` (commands and secure sums).

* `one_shot_masks`: every client calibrates its local masks; one secure sum per decoder block
  (one session), the server holding one block's sums at a time.
* `iterative_masks`: one secure sum per decoder block; the clients run their samples through
  the globally pruned block before the next one.
* `stats_one_shot` / `stats_sequential`: clients sum activation statistics in fixed point
  (exponent histogram, then limbs); the server computes centralized Wanda masks. One-shot: one
  round over every block on dense activations; sequential: one round per block, the clients
  propagating through the globally pruned block. Under distributed DP each round is one noisy
  release instead (`dp_rounds`: public scale, no exponent histogram).

A strategy returns the global masks (and scaling factors); `Server` keeps what the run reports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..client import fixed_point
from ..client.methods import PruneMethod
from ..config import RunConfig
from ..errors import DataError, ProtocolError
from ..privacy import distributed_stats
from ..privacy.settings import PrivacySettings
from ..progress import Progress
from ..secure_sum import registry
from ..secure_sum.api import AggregationSpec, ClientId
from .dp_reference import reference_statistics
from .dp_rounds import ServerRelease
from .federation import Federation, NodeAnswer, NodeCommand, SecureSumSession
from .layout import pack
from .server_step import (
    MaskRule,
    common_exponents,
    decode_statistics,
    global_masks,
    limb_lengths,
    owl_stats_sparsities,
    stats_masks,
)
from .texts import eval_text
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
    stats_groups: list[list[str]] = field(default_factory=list)  # input groups summed so far
    privacy: PrivacySettings | None = None  # the resolved settings sent at the last calibrate
    dp_release: ServerRelease | None = None  # distributed DP: the releases' public parameters
    sink: Callable[[int, Masks, Scales], None] | None = None  # each block's global masks, once
    keep_masks: bool = True  # False: masks mode returns no masks (the sink had every block)

    @property
    def method(self) -> PruneMethod:
        return PruneMethod.of(self.config.pruning)

    @property
    def rule(self) -> MaskRule:
        p, method = self.config.pruning, self.method
        implied = method.layerwise == "owl"
        return MaskRule(p.sparsity, p.group, self.config.seed, p.scaling, method.n_m, implied)

    def command(
        self, kind: str, settings: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None
    ) -> dict[ClientId, NodeAnswer]:
        """The same command to every client still in; their answers."""
        command = NodeCommand(kind, dict(settings), dict(arrays or {}))
        timeout = self.config.federation.calibrate_timeout_s
        return self.federation.command(kind, {c: command for c in self.federation.alive()}, timeout)

    def calibrate(self, walk: str) -> None:
        d, p = self.config.data, self.config.pruning
        clients = len(self.federation.alive())
        protocol = self.config.protocol
        self.privacy = self.config.privacy.resolved(
            protocol.name, dict(protocol.options), clients, p.aggregate
        )
        settings = {
            "samples_per_client": d.samples_per_client, "seqlen": d.seqlen,
            "batch_size": p.batch_size, "pruner": p.pruner, "calibration": p.calibration,
            "sparsity": p.sparsity, "walk": walk, "privacy": asdict(self.privacy),
            "method": self.method.settings(),
        }  # fmt: skip
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
    """Every client calibrates its local masks at once; then one session (keys set up once).
    Up to `federation.sum_per_block_above` prunable weights (and not blockwise): one aggregation
    of every layer. Above: one aggregation per block under its own index, each block's counts
    turned into its global masks (and scales) and dropped before the next block's sums exist: the
    server holds one block's sums, never the model's. A client dropping in block l then leaves
    blocks < l as released (their cohort) and blocks >= l summed over the survivors, or the run
    aborts (cohort guard)."""
    bench, config = server.bench, server.config
    server.calibrate("masks")
    session = server.open_session()
    if not bench.blockwise and bench.weights <= config.federation.sum_per_block_above:
        server.command("prepare", {"aggregation": 0, "upload": "masks"})
        spec = AggregationSpec.from_lengths(0, bench.lengths, bound=1)
        with server.progress.stage(f"secure sum ({config.protocol.name})", 1) as advance:
            sums, contributors = server.sum(session, spec)
            advance()
        with server.timer.phase("server_prune"):
            masks, scales = global_masks(server.rule, sums, bench.shapes, bench.index, contributors)
        for block in range(bench.blocks) if server.sink is not None else ():
            names = [layer.name for layer in bench.block_layers(block)]
            server.sink(block, {n: masks[n] for n in names},
                        None if scales is None else {n: scales[n] for n in names})  # fmt: skip
        return masks, scales
    masks: Masks = {}
    scales: Scales = {} if server.rule.scaling else None
    stage = f"secure sum ({config.protocol.name}, per block)"
    with server.progress.stage(stage, bench.blocks) as advance:
        for block in range(bench.blocks):
            with server.timer.phase("calibration_clients"):
                server.command("prepare", {"aggregation": block, "upload": "masks", "block": block})
            block_masks, block_scales = _block_global_masks(server, session, block)
            _keep(server, block, (masks, scales), block_masks, block_scales)
            advance()
    return masks, scales


def _keep(
    server: Server, block: int, kept: tuple[Masks, Scales], masks: Masks, scales: Scales
) -> None:
    """Hand block `block`'s global masks to the server's sink and keep them (`keep_masks`)."""
    if server.sink is not None:
        server.sink(block, masks, scales)
    if server.keep_masks:
        kept[0].update(masks)
        if kept[1] is not None and scales is not None:
            kept[1].update(scales)


def _block_global_masks(
    server: Server, session: SecureSumSession, block: int
) -> tuple[Masks, Scales]:
    """Aggregation `block` of `session` (the block's layers, bits) -> the block's global masks;
    its sums go out of scope on return."""
    bench = server.bench
    lengths = {layer.name: layer.numel for layer in bench.block_layers(block)}
    sums, contributors = server.sum(session, AggregationSpec.from_lengths(block, lengths, 1))
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
            block_masks, block_scales = _block_global_masks(server, session, block)
            _keep(server, block, (masks, scales), block_masks, block_scales)
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


def _stats_rounds(
    server: Server, one_shot: bool, sparsities: dict[str, float] | None, masks_wanted: bool = True
) -> Masks:
    """One calibration and session of stats rounds (one round over every block when `one_shot`,
    else one per block); the server's summed statistics end in `server.stats_totals`. Masks at
    `sparsities` (per layer; None: `pruning.sparsity`, or OWL's from the one-shot round)."""
    bench, p = server.bench, server.config.pruning
    method = server.method
    window_tokens = _window_tokens(server)
    server.calibrate("blocks")
    session = server.open_session()
    weights = {layer.name: layer.module.weight.data for layer in bench.layers}
    rounds = [list(range(bench.blocks))] if one_shot else [[b] for b in range(bench.blocks)]
    masks: Masks = {}
    server.stats_groups = []
    distributed = server.privacy is not None and server.privacy.distributed
    release = _dp_release(server, len(rounds)) if distributed else None
    with server.progress.stage("stats (per round)", len(rounds)) as advance:
        for number, blocks in enumerate(rounds):
            if release is None:
                groups, contributors = _fixed_point_round(server, session, number, blocks, one_shot)
            else:
                groups, contributors = _distributed_round(
                    server, session, release, number, blocks, one_shot
                )
            server.stats_groups += groups
            tokens = contributors * window_tokens
            samples = contributors * server.config.data.samples_per_client
            with server.timer.phase("server_prune"):
                if masks_wanted and sparsities is None and method.layerwise == "owl":
                    block_of = {layer.name: layer.block for layer in bench.layers}
                    sparsities = owl_stats_sparsities(
                        method, groups, server.stats_totals, tokens, weights, block_of, p.sparsity
                    )
                round_masks = {} if not masks_wanted else stats_masks(
                    groups, server.stats_totals, tokens, weights,
                    p.sparsity if sparsities is None else sparsities, method, samples,
                )  # fmt: skip
            masks.update(round_masks)
            if not one_shot:
                server.apply_block(blocks[0], round_masks, None)
            advance()
    return masks


def _fixed_point_round(
    server: Server, session: SecureSumSession, number: int, blocks: list[int], one_shot: bool
) -> tuple[list[list[str]], int]:
    """One exact round (`protocols/stats.md`): exponent histogram, then the fixed-point limbs;
    the decoded totals go to `server.stats_totals`. Returns (input groups, contributors)."""
    precision = server.config.pruning.stats_precision_bits
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
    return groups, contributors


def _dp_release(server: Server, releases: int) -> ServerRelease:
    """The public parameters of a distributed-DP calibration: statistics of public text."""
    d, p = server.config.data, server.config.pruning
    assert server.privacy is not None
    with server.timer.phase("dp_reference"):
        if server.bench.eval_tokens is None:
            server.bench.use_public_text(eval_text(d))
        reference, groups = reference_statistics(server.bench, d.seqlen, p.batch_size)
    clients = len(server.federation.alive())
    server.dp_release = ServerRelease(
        server.privacy, reference, groups, d.samples_per_client, clients, releases
    )
    return server.dp_release


def _distributed_round(
    server: Server,
    session: SecureSumSession,
    release: ServerRelease,
    number: int,
    blocks: list[int],
    one_shot: bool,
) -> tuple[list[list[str]], int]:
    """One noisy release of `blocks` (`dp_rounds`); totals to `server.stats_totals`."""
    spec = release.spec([group[0] for block in blocks for group in release.groups[block]])
    settings, arrays = release.command(spec, 2 * number + 1, blocks, one_shot)
    with server.timer.phase("calibration_clients"):
        answers = server.command("prepare", settings, arrays)
    groups = _agreed(answers, "groups")
    plan = release.plan(spec)
    chunks = distributed_stats.chunk_lengths(spec, plan)
    bound = distributed_stats.chunk_bound(plan)
    sums, contributors = server.sum(
        session, AggregationSpec.from_lengths(2 * number + 1, chunks, bound)
    )
    with server.timer.phase("server_prune"):
        server.stats_totals.update(release.decode(sums, spec, contributors))
    return groups, contributors


def _stats(server: Server, one_shot: bool) -> tuple[Masks, Scales]:
    p = server.config.pruning
    fixed_point.check_capacity(p.stats_precision_bits, len(server.federation.alive()))
    sparsities = None
    if p.layerwise == "owl" and not one_shot:
        # OWL's ratios come from the dense model (as its reference): a one-shot round first.
        _stats_rounds(server, True, None, masks_wanted=False)
        bench = server.bench
        block_of = {layer.name: layer.block for layer in bench.layers}
        weights = {layer.name: layer.module.weight.data for layer in bench.layers}
        tokens = server.contributors[-1] * _window_tokens(server)
        sparsities = owl_stats_sparsities(
            server.method, server.stats_groups, server.stats_totals, tokens, weights, block_of,
            p.sparsity,
        )  # fmt: skip
    return _stats_rounds(server, one_shot, sparsities), None


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
