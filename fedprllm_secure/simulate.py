"""A whole federated pruning run on one machine, over the in-memory transport.

    samples per client -> local masks (Wanda or magnitude) -> secure sum of the masks
    -> global mask per comparison group (+ optional scaling) -> perplexity

plus the baselines (dense, centralized on the pooled samples, local-only averaged over clients).
`run_simulation` returns the results as a JSON-ready dict; writing them is the caller's job.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any

import numpy as np
import torch

from . import __version__, data
from .client import fixed_point
from .client.calibrate import (
    CALIBRATIONS,
    BlockwiseCalibration,
    LayerStats,
    local_masks,
    shared_input_groups,
    wanda_block_masks,
)
from .client.scores import PRUNERS, row_mask, wanda_scores
from .errors import ConfigError, DataError, ProtocolError
from .evaluate import eval_windows, perplexity
from .model import LoadedModel, PrunableLayer, load_model, prunable_layers
from .privacy.noise_source import describe, secret_source
from .privacy.pruning_round import PruningRound
from .privacy.settings import PrivacySettings
from .privacy.statistics import StatisticsMechanism
from .progress import Progress, SilentProgress
from .randomness import RandomSource
from .secure_sum import registry
from .secure_sum.api import AggregationSpec, ChunkSpec
from .secure_sum.messages import round_names
from .secure_sum.session import SimulatedSession
from .server.aggregate import GROUPS, global_mask, scaling_factors
from .server.apply import apply_masks, restore_weights, snapshot_weights, sparsity_report

METHODS = ("fedprllm", "centralized", "local")
MODES = ("one-shot", "iterative")
AGGREGATES = ("masks", "stats")


@dataclass
class SimulationConfig:
    model: str = "smollm2-135m"
    corpus: str = "wiki-topics"
    client_data: str | None = None
    eval_text: str | None = None
    protocol: str = "plaintext"
    protocol_options: dict[str, Any] = field(default_factory=dict)
    drop: dict[int, str] = field(default_factory=dict)
    clients: int = 8
    samples_per_client: int = 8
    seqlen: int = 512
    sparsity: float = 0.5
    group: str = "layer"
    split: str = "iid"
    seed: int = 0
    device: str = "auto"
    scaling: bool = False
    methods: tuple[str, ...] = ("fedprllm",)
    pruner: str = "wanda"
    calibration: str = "sequential"
    mode: str = "one-shot"
    aggregate: str = "masks"
    stats_precision_bits: int = 48
    eval_windows: int = 16
    eval_seqlen: int | None = None
    batch_size: int = 8
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    reproducible_noise: bool = False  # seed noise and protocol secrets from --seed: not private

    def validate(self) -> None:
        """Raise ConfigError naming the first bad value."""
        checks: list[tuple[bool, str]] = [
            (0.0 < self.sparsity < 1.0, f"--sparsity must lie in (0, 1), got {self.sparsity}"),
            (self.group in GROUPS, f"unknown --group {self.group!r} (use {', '.join(GROUPS)})"),
            (self.split in data.SPLITS, f"unknown --split {self.split!r} (use iid or topic)"),
            (self.pruner in PRUNERS, f"unknown --pruner {self.pruner!r} (use wanda or magnitude)"),
            (
                self.calibration in CALIBRATIONS,
                f"unknown --calibration {self.calibration!r} (use sequential or one-shot)",
            ),
            (self.mode in MODES, f"unknown --mode {self.mode!r} (use one-shot or iterative)"),
            (
                self.aggregate in AGGREGATES,
                f"unknown --aggregate {self.aggregate!r} (use masks or stats)",
            ),
            (
                self.aggregate == "masks" or self.pruner == "wanda",
                "--aggregate stats needs --pruner wanda",
            ),
            (self.clients >= 1, "--clients must be at least 1"),
            (self.samples_per_client >= 1, "--samples-per-client must be at least 1"),
            (self.seqlen >= 8, "--seqlen must be at least 8"),
            (self.eval_windows >= 1, "--eval-windows must be at least 1"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (bool(self.methods), "--method names no method"),
        ]
        for ok, problem in checks:
            if not ok:
                raise ConfigError(problem)
        self.privacy.validate()
        if self.privacy.rr_epsilon is not None and self.aggregate != "masks":
            raise ConfigError("--rr-epsilon randomizes mask bits: it needs --aggregate masks")
        if self.privacy.dp_stats_epsilon is not None and self.pruner != "wanda":
            raise ConfigError("--dp-stats-epsilon needs --pruner wanda (magnitude uses no data)")
        for method in self.methods:
            if method not in METHODS:
                raise ConfigError(f"unknown --method {method!r} (use {', '.join(METHODS)})")
        registry.get(self.protocol)
        for flag, value in (("--client-data", self.client_data), ("--eval-text", self.eval_text)):
            if value and not Path(value).expanduser().exists():
                raise ConfigError(f"{flag} path not found: {value}")
        rounds = round_names(self.protocol)
        for client, round_name in self.drop.items():
            if not 0 <= client < self.clients:
                raise ConfigError(
                    f"--drop names client {client}, but clients are 0..{self.clients - 1}"
                )
            if round_name not in rounds:
                raise ConfigError(
                    f"--drop names round {round_name!r}, unknown to protocol {self.protocol} "
                    f"(rounds: {', '.join(rounds)})"
                )


@dataclass
class _Timer:
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 3)


def _pack(mask: torch.Tensor) -> np.ndarray:
    return np.packbits(mask.reshape(-1).numpy().astype(np.uint8))


def _unpack(packed: np.ndarray, length: int) -> np.ndarray:
    return np.unpackbits(packed, count=length)


def _lengths(layers: list[PrunableLayer]) -> dict[str, int]:
    return {layer.name: layer.numel for layer in layers}


def _client_texts(config: SimulationConfig) -> tuple[list[data.ClientText], str]:
    if config.client_data:
        clients = data.read_client_dir(config.client_data)
    else:
        pool, _ = data.heldout_split(data.load_corpus(config.corpus))
        clients = data.split_clients(pool, config.clients, config.split, config.seed)
    if config.eval_text:
        path = Path(config.eval_text).expanduser()
        try:
            eval_text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read --eval-text {config.eval_text}: {exc}") from exc
    else:
        eval_text = data.heldout_text(data.load_corpus(config.corpus))
    return clients, eval_text


class FederatedPruning:
    """The state of one simulation: model, samples, masks; one method per call."""

    def __init__(self, config: SimulationConfig, progress: Progress, timer: _Timer) -> None:
        self.config = config
        self.progress = progress
        self.timer = timer
        with timer.phase("load_model"):
            self.loaded: LoadedModel = load_model(config.model, config.device)
        self.model = self.loaded.model
        self.layers: list[PrunableLayer] = prunable_layers(self.model)
        self.shapes = {layer.name: tuple(layer.module.weight.shape) for layer in self.layers}
        self.dense = snapshot_weights(self.layers)
        with timer.phase("prepare_data"):
            self.clients, eval_text = _client_texts(config)
            if config.client_data:
                config.clients = len(self.clients)
            self.samples = [
                data.calibration_samples(
                    self.loaded.tokenizer, client, config.samples_per_client, config.seqlen
                )
                for client in self.clients
            ]
            window = config.eval_seqlen or config.seqlen
            self.windows = eval_windows(
                data.tokenize(self.loaded.tokenizer, eval_text), window, config.eval_windows
            )
        self.layer_index = {layer.name: i for i, layer in enumerate(self.layers)}
        self.client_masks: list[dict[str, np.ndarray]] | None = None
        self.mask_round: PruningRound | None = None  # masks mode: the round of client_masks
        self.stats_round: PruningRound | None = None  # stats mode: the round of the last run
        self.stats_uploads: list[dict[str, np.ndarray]] = []
        self.protocol_report: dict[str, Any] = {}
        self._contributors: list[int] = []
        # Privacy noise (RR keys, DP noise) and protocol secrets; --seed only where asked.
        self._rng = secret_source(config.seed, config.reproducible_noise, "simulate")
        self.noise_source = describe(config.reproducible_noise)
        self._draws = 0  # labels of calibrations and sessions (seeded mode: never reused)
        self._secure = registry.get(config.protocol).secure
        self.dp_reports: dict[int, StatisticsMechanism] = {}
        # Stats mode, per input group: the common exponent and the highest one reported, and
        # the summed statistics the server decoded (what the masks are computed from).
        self.stats_exponents: dict[str, dict[str, int]] = {}
        self.stats_totals: dict[str, np.ndarray] = {}

    def evaluate(self, label: str) -> float:
        with self.timer.phase(f"eval_{label}"):
            with self.progress.stage(f"perplexity ({label})", len(self.windows)) as advance:
                return perplexity(self.model, self.windows, advance)

    def _dp_stats(self, client: int | None) -> StatisticsMechanism | None:
        """Client `client`'s DP mechanism for its statistics (one release per block), or None
        (no DP, or the centralized baseline, client None)."""
        if client is None:
            return None
        blocks = len({layer.block for layer in self.layers})
        mechanism = self.config.privacy.statistics_mechanism(
            blocks, self._fresh(f"dp-stats/client-{client}")
        )
        if mechanism is not None:
            self.dp_reports[client] = mechanism
        return mechanism

    def _masks_for(
        self, samples: torch.Tensor | None, label: str, client: int | None = None
    ) -> dict[str, torch.Tensor]:
        blocks = len({layer.block for layer in self.layers})
        with self.progress.stage(f"calibrate {label}", blocks) as advance:
            masks, _stats = local_masks(
                self.model,
                samples,
                self.config.sparsity,
                self.config.pruner,
                self.config.calibration,
                self.config.batch_size,
                on_block=lambda _i, _n: advance(),
                stats_transform=self._dp_stats(client),
            )
        return masks

    def compute_client_masks(self) -> list[dict[str, np.ndarray]]:
        """Every client's local masks: one calibration, one pruning round (computed once)."""
        if self.client_masks is None:
            self.client_masks = []
            for index, samples in enumerate(self.samples):
                with self.timer.phase("calibration_clients"):
                    masks = self._masks_for(samples, f"client {index}", index)
                self.client_masks.append({name: _pack(mask) for name, mask in masks.items()})
        return self.client_masks

    def start_mask_round(self) -> PruningRound:
        """A new pruning round over the (cached) client masks: new ledgers, new RR keys.

        Each `run_fedprllm` is one pruning round; within it no session can collect a mask
        twice. A new round on the same data is a new deployment (the clients would calibrate
        again and get the same masks): per-round ledgers cannot refuse it, and randomized
        response is then drawn afresh; that limit is the deployment's to close (a node never
        enrolls twice for one calibration), not the ledger's.
        """
        self.mask_round = self.new_round(len(self.compute_client_masks()))
        return self.mask_round

    def _fresh(self, label: str) -> RandomSource:
        """A source never handed out before (the OS CSPRNG, or a new seeded child)."""
        self._draws += 1
        return self._rng.child(f"{label}/{self._draws}")

    def new_round(self, clients: int) -> PruningRound:
        """The ledgers and randomized-response keys of one new calibration of every client."""
        return PruningRound(range(clients), self.config.privacy, self._fresh("round"))

    def open_session(
        self, read: Callable[[int, ChunkSpec], np.ndarray], pruning_round: PruningRound
    ) -> SimulatedSession:
        """One secure-sum session over every client of `pruning_round`; `read(client, chunk)`
        gives its input. Every session of one round shares the round's ledgers, so no session
        or aggregation can collect a chunk that another one already did."""
        privacy = self.config.privacy
        return SimulatedSession(
            self.config.protocol,
            pruning_round.providers(read),
            self._fresh("session"),
            options=registry.get(self.config.protocol).with_cohort(
                self.config.protocol_options, privacy.cohort_minimum(self._secure)
            ),
            drop_at=self.config.drop,
            ledgers=pruning_round.ledgers,
        )

    def _sum(
        self, session: SimulatedSession, spec: AggregationSpec
    ) -> tuple[dict[str, np.ndarray], int]:
        with self.timer.phase("secure_sum"):
            result = session.aggregate(spec)
        if not result.contributors:
            raise ProtocolError("no client contributed to the sum (all dropped out)")
        self._contributors.append(len(result.contributors))
        self._report(session, result.contributors)
        # Minimum cohort, then debiasing of randomized response (exact contributor count).
        return self.config.privacy.release(result, self._secure), len(result.contributors)

    def _report(self, session: SimulatedSession, contributors: tuple[int, ...]) -> None:
        log = session.bus.log
        per_client = log.uplink_by_client()
        total_weights = sum(layer.numel for layer in self.layers)
        self.protocol_report = {
            "name": self.config.protocol,
            "secure": session.info.secure,
            "options": dict(self.config.protocol_options),
            "aggregations": len(self._contributors),
            "contributors": list(contributors),
            "contributors_per_aggregation": list(self._contributors),
            "dropped": sorted(session.bus.dropped),
            "uplink_bytes_per_client": {str(c): n for c, n in sorted(per_client.items())},
            "uplink_bytes_per_client_round": {
                str(c): log.uplink_by_round(c) for c in range(len(self.clients))
            },
            "uplink_bytes_per_weight": round(mean(per_client.values()) / total_weights, 4)
            if per_client
            else None,
            "server_received": {
                "messages": len(log.received),
                "bytes": sum(r.nbytes for r in log.received),
                "message_types": sorted({r.tag for r in log.received}),
            },
        }

    def _server_masks(
        self,
        layers: list[PrunableLayer],
        sums: dict[str, np.ndarray],
        contributors: int,
        masks: dict[str, np.ndarray],
        scales: dict[str, np.ndarray] | None,
    ) -> None:
        """Global masks (and scaling factors) of `layers` from their aggregate counts."""
        with self.timer.phase("server_prune"):
            for layer in layers:
                counts = sums[layer.name].reshape(self.shapes[layer.name])
                masks[layer.name] = global_mask(
                    counts,
                    self.config.sparsity,
                    self.config.group,
                    self.config.seed,
                    self.layer_index[layer.name],
                )
                if scales is not None:
                    scales[layer.name] = scaling_factors(counts, contributors)

    def run_fedprllm(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
        """Global masks (and scales) of FedPrLLM; the model is left dense."""
        self._contributors = []
        if self.config.aggregate == "stats":
            return self._run_stats(), None
        if self.config.mode == "iterative":
            return self._run_iterative()
        self.start_mask_round()
        sums, contributors = self.aggregate_client_masks()
        masks: dict[str, np.ndarray] = {}
        scales: dict[str, np.ndarray] | None = {} if self.config.scaling else None
        self._server_masks(self.layers, sums, contributors, masks, scales)
        return masks, scales

    def aggregate_client_masks(self) -> tuple[dict[str, np.ndarray], int]:
        """Counts C (per layer, flattened) of every client's local mask through the protocol, in
        the current pruning round (`start_mask_round`): a second call in one round is refused."""
        self._contributors = []
        packed = self.compute_client_masks()
        pruning_round = self.mask_round or self.start_mask_round()
        session = self.open_session(
            lambda c, chunk: _unpack(packed[c][chunk.name], chunk.length), pruning_round
        )
        spec = AggregationSpec.from_lengths(0, _lengths(self.layers), bound=1)
        with self.progress.stage(f"secure sum ({self.config.protocol})", 1) as advance:
            result = self._sum(session, spec)
            advance()
        return result

    def _run_iterative(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
        """One secure sum per decoder block; clients propagate through the globally pruned block.

        One session (keys set up once) runs every block's aggregation under its own index.
        """
        if self.config.pruner != "wanda":
            raise ConfigError(
                "--mode iterative needs --pruner wanda (magnitude has no calibration)"
            )
        with self.timer.phase("calibration_clients"):
            walks = [
                BlockwiseCalibration(
                    self.model, samples, self.config.batch_size, self._dp_stats(client)
                )
                for client, samples in enumerate(self.samples)
            ]
        block_masks: list[dict[str, torch.Tensor]] = [{} for _ in walks]
        session = self.open_session(
            lambda c, chunk: block_masks[c][chunk.name].reshape(-1).numpy().astype(np.uint8),
            self.new_round(len(walks)),
        )
        masks: dict[str, np.ndarray] = {}
        scales: dict[str, np.ndarray] | None = {} if self.config.scaling else None
        blocks = len(walks[0].blocks)
        with self.progress.stage("iterative (per block)", blocks) as advance:
            for index in range(blocks):
                layers = walks[0].layers
                with self.timer.phase("calibration_clients"):
                    for client, walk in enumerate(walks):
                        stats = walk.statistics()
                        block_masks[client] = {
                            name: mask.cpu()
                            for name, mask in wanda_block_masks(
                                layers, stats, self.config.sparsity
                            ).items()
                        }
                spec = AggregationSpec.from_lengths(index, _lengths(layers), 1)
                sums, contributors = self._sum(session, spec)
                self._server_masks(layers, sums, contributors, masks, scales)
                apply_masks(layers, masks, scales)
                with self.timer.phase("calibration_clients"):
                    for walk in walks:
                        walk.propagate(None)  # through the globally pruned block
                advance()
        self.restore()
        return masks, scales

    def _window_tokens(self) -> int:
        """The public token count of one client: --samples-per-client full windows of --seqlen.

        Stats mode uploads no token count (an exact count is data-dependent and unnoised, and
        would break add/remove-one DP); the server derives it from this public number.
        """
        expected = (self.config.samples_per_client, self.config.seqlen)
        for index, samples in enumerate(self.samples):
            if tuple(samples.shape) != expected:
                raise DataError(
                    f"client {index} has {tuple(samples.shape)} calibration windows, stats mode "
                    f"needs exactly {expected[0]} full windows of {expected[1]} tokens"
                )
        return expected[0] * expected[1]

    def _run_stats(self) -> dict[str, np.ndarray]:
        """Clients submit activation statistics; the server computes centralized Wanda masks.

        Per round, two secure sums: the binade histogram of each layer's largest statistic
        (fixes the fixed-point scale by quorum, `fixed_point.layer_exponent`), then the
        fixed-point statistics. The token count is public (`_window_tokens` per contributor).
        one-shot calibration: one round over all blocks with dense activations. sequential: one
        round per block, clients propagating through the globally pruned block.
        """
        precision = self.config.stats_precision_bits
        fixed_point.check_capacity(precision, len(self.samples))
        window_tokens = self._window_tokens()
        with self.timer.phase("calibration_clients"):
            walks = [
                BlockwiseCalibration(
                    self.model, samples, self.config.batch_size, self._dp_stats(client)
                )
                for client, samples in enumerate(self.samples)
            ]
        uploads: list[dict[str, np.ndarray]] = [{} for _ in walks]
        self.stats_uploads = uploads  # what each client submits in the current aggregation
        self.stats_round = self.new_round(len(walks))
        session = self.open_session(lambda c, chunk: uploads[c][chunk.name], self.stats_round)
        masks: dict[str, np.ndarray] = {}
        one_shot = self.config.calibration == "one-shot"
        blocks = len(walks[0].blocks)
        rounds = [list(range(blocks))] if one_shot else [[b] for b in range(blocks)]
        with self.progress.stage("stats (per round)", len(rounds)) as advance:
            for number, round_blocks in enumerate(rounds):
                stats: list[dict[str, LayerStats]] = [{} for _ in walks]
                layers: list[PrunableLayer] = []
                with self.timer.phase("calibration_clients"):
                    for _block in round_blocks:
                        layers += walks[0].layers
                        for client, walk in enumerate(walks):
                            stats[client].update(walk.statistics())
                            if one_shot:
                                walk.propagate_dense()
                # One chunk per distinct input tensor (q/k/v share one, gate/up another).
                groups = [
                    group
                    for block in round_blocks
                    for group in shared_input_groups(
                        [layer for layer in layers if layer.block == block], stats[0]
                    )
                ]
                leaders = [group[0] for group in groups]
                for client in range(len(walks)):
                    uploads[client] = {
                        name: fixed_point.exponent_one_hot(stats[client][name].sq_sum.numpy())
                        for name in leaders
                    }
                lengths = {name: fixed_point.EXPONENT_SLOTS for name in leaders}
                histograms, _ = self._sum(
                    session, AggregationSpec.from_lengths(2 * number, lengths, 1)
                )
                exponents = {name: fixed_point.layer_exponent(h) for name, h in histograms.items()}
                for name, histogram in histograms.items():
                    self.stats_exponents[name] = {
                        "common": exponents[name],
                        "highest_reported": fixed_point.highest_reported(histogram),
                    }
                limbs = fixed_point.limb_count(precision)
                for client in range(len(walks)):
                    uploads[client] = {}
                    for name in leaders:
                        # Values above 2^E saturate at 2^E (E is set by a quorum, not by each).
                        encoded = fixed_point.encode(
                            stats[client][name].sq_sum.numpy(), exponents[name], precision
                        )
                        for k, limb in enumerate(fixed_point.to_limbs(encoded, precision)):
                            uploads[client][f"{name}#{k}"] = limb
                lengths = {
                    f"{name}#{k}": int(stats[0][name].sq_sum.numel())
                    for name in leaders
                    for k in range(limbs)
                }
                sums, contributors = self._sum(
                    session,
                    AggregationSpec.from_lengths(2 * number + 1, lengths, fixed_point.LIMB_BOUND),
                )
                tokens = contributors * window_tokens
                by_name = {layer.name: layer for layer in layers}
                with self.timer.phase("server_prune"):
                    for group in groups:
                        leader = group[0]
                        joined = fixed_point.from_limbs(
                            [sums[f"{leader}#{k}"] for k in range(limbs)]
                        )
                        total = fixed_point.decode(joined, exponents[leader], precision)
                        self.stats_totals[leader] = total
                        feature_mean = torch.from_numpy(total / max(tokens, 1))
                        for name in group:
                            weight = by_name[name].module.weight.data.cpu()
                            scores = wanda_scores(weight, feature_mean)
                            masks[name] = row_mask(scores, self.config.sparsity).numpy()
                if not one_shot:
                    apply_masks(layers, masks)
                    with self.timer.phase("calibration_clients"):
                        for walk in walks:
                            walk.propagate(None)  # through the globally pruned block
                advance()
        self.restore()
        return masks

    def run_centralized(self) -> dict[str, np.ndarray]:
        pooled = None if self.config.pruner == "magnitude" else torch.cat(self.samples)
        with self.timer.phase("calibration_centralized"):
            masks = self._masks_for(pooled, "centralized")
        return {name: mask.numpy() for name, mask in masks.items()}

    def client_mask(self, client: int) -> dict[str, np.ndarray]:
        packed = self.compute_client_masks()[client]
        return {
            name: _unpack(packed[name], int(np.prod(shape))).reshape(shape).astype(bool)
            for name, shape in self.shapes.items()
        }

    def evaluate_masks(
        self, label: str, masks: dict[str, np.ndarray], scales: dict[str, np.ndarray] | None = None
    ) -> tuple[float, dict[str, Any]]:
        apply_masks(self.layers, masks, scales)
        overall, per_layer = sparsity_report(self.layers)
        ppl = self.evaluate(label)
        return ppl, {
            "overall": round(overall, 6),
            "per_layer": {k: round(v, 6) for k, v in per_layer.items()},
        }

    def privacy_report(self) -> dict[str, Any]:
        """What holds against whom in this run (results.json `privacy`)."""
        reports = [m.report() for _, m in sorted(self.dp_reports.items())]
        return self.config.privacy.report(
            protocol=self.config.protocol,
            protocol_secure=self._secure,
            weights=sum(layer.numel for layer in self.layers),
            contributors=min(self._contributors, default=0),
            statistics=reports[0] if reports else None,
            noise_source=self.noise_source,
        )

    def restore(self) -> None:
        restore_weights(self.layers, self.dense)

    def save(self, folder: Path) -> None:
        self.model.save_pretrained(folder)  # type: ignore[operator]
        self.loaded.tokenizer.save_pretrained(folder)  # type: ignore[attr-defined]


def run_simulation(
    config: SimulationConfig, progress: Progress | None = None, save_model_to: Path | None = None
) -> dict[str, Any]:
    """Run every method of `config.methods`; return the results (JSON-ready).

    With `save_model_to`, the model pruned by the first listed method is saved there.
    """
    config.validate()
    progress = progress or SilentProgress()
    timer = _Timer()
    started = time.perf_counter()
    saved_method = next((m for m in config.methods if m != "local"), None)
    if save_model_to is not None and saved_method is None:
        raise ConfigError("--save-model needs --method fedprllm or centralized")
    run = FederatedPruning(config, progress, timer)
    perplexities: dict[str, Any] = {"dense": run.evaluate("dense")}
    sparsity: dict[str, Any] = {}
    for method in config.methods:
        if method == "local":
            local = []
            for client in range(len(run.clients)):
                ppl, sparsity["local"] = run.evaluate_masks(
                    f"local {client}", run.client_mask(client)
                )
                local.append(ppl)
                run.restore()
            perplexities["local"] = local
            perplexities["local_mean"] = mean(local)
            continue
        if method == "fedprllm":
            masks, scales = run.run_fedprllm()
        else:
            masks, scales = run.run_centralized(), None
        perplexities[method], sparsity[method] = run.evaluate_masks(method, masks, scales)
        if method == saved_method and save_model_to is not None:
            with timer.phase("save_model"):
                run.save(save_model_to)
        run.restore()
    layers = run.layers
    return {
        "fedprllm_secure_version": __version__,
        "config": asdict(config),
        "model": {
            "name": config.model,
            "device": str(run.loaded.device),
            "prunable_layers": len(layers),
            "prunable_weights": sum(layer.numel for layer in layers),
        },
        "data": {
            "clients": [
                {
                    "name": c.name,
                    "documents": len(c.documents),
                    "topics": list(c.topics),
                    "tokens": int(s.numel()),
                }
                for c, s in zip(run.clients, run.samples, strict=True)
            ],  # fmt: skip
            "eval": {"windows": len(run.windows), "window_tokens": int(run.windows[0].numel())},
        },
        "perplexity": perplexities,
        "sparsity": sparsity,
        "protocol": run.protocol_report or None,
        "privacy": run.privacy_report() if "fedprllm" in config.methods else None,
        "randomness": {
            "noise_and_protocol_secrets": run.noise_source,
            "data_splits_and_tie_breaking": f"seeded by --seed {config.seed}",
        },
        "saved_model": str(save_model_to) if save_model_to else None,
        "timings_s": {**timer.timings, "total": round(time.perf_counter() - started, 3)},
    }
