"""Run the pending points of an audit; every finished point is stored before the next starts.

Calibration is the expensive step, so it is done once per (setting, client, noise on the
statistics) and shared by every point that needs it: the noiseless masks serve the baseline and
every randomized-response epsilon (RR is applied to the finished mask).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import data
from ..client.calibrate import local_masks
from ..pipeline.dp_reference import reference_statistics
from ..pipeline.layout import Packed, unpack
from ..pipeline.server_step import MaskRule, global_masks, stats_masks
from ..pipeline.workbench import Workbench
from ..privacy.distributed_stats import public_spec
from ..privacy.noise_source import secret_source
from ..privacy.randomized_response import draw_rr_key, randomized_provider
from ..privacy.release import release_counts
from ..progress import Progress, SilentProgress
from ..randomness import RandomSource, SeededRandomSource
from ..secure_sum.api import ChunkSpec
from .config import AuditConfig
from .leakage_run import run_leakage, run_leakage_dp
from .noisy_stats import distributed_totals, local_totals, window_statistics
from .plan import STATS_MECHANISMS, Point, plan
from .sessions import calibrate, sum_bits
from .store import PointStore

Provider = Callable[[int, ChunkSpec], np.ndarray]


def store_settings(config: AuditConfig) -> dict[str, Any]:
    """The settings every point depends on (not the grid: extending a grid reuses points)."""
    keep = (
        "model", "corpus", "dp_delta", "dp_clip", "accountant", "samples_per_client", "seqlen",
        "eval_windows", "sparsity", "group", "calibration", "min_cohort", "seed", "leakage",
        "reproducible_noise",
    )  # fmt: skip
    settings = config.as_dict()
    return {key: settings[key] for key in keep}


class Setting:
    """The clients of one (client count, split): their samples and, lazily, their masks."""

    def __init__(
        self,
        bench: Workbench,
        articles: list[data.Article],
        config: AuditConfig,
        clients: int,
        split: str,
    ) -> None:
        self.bench, self.config = bench, config
        pool, _ = data.heldout_split(articles)
        self.clients = data.split_clients(pool, clients, split, config.seed)
        self.samples = [
            data.calibration_samples(bench.tokenizer, c, config.samples_per_client, config.seqlen)
            for c in self.clients
        ]
        self._masks: dict[float | None, tuple[list[Packed], list[Any]]] = {}
        self._windows: tuple[list[dict[str, np.ndarray]], list[list[str]]] | None = None

    def window_statistics(self) -> tuple[list[dict[str, np.ndarray]], list[list[str]]]:
        """Every client's per-window statistics (dense, one-shot) and the input groups."""
        if self._windows is None:
            pairs = [window_statistics(self.bench, s, self.config.batch_size)
                     for s in self.samples]  # fmt: skip
            self._windows = ([p[0] for p in pairs], pairs[0][1])
        return self._windows

    def masks(
        self, dp_epsilon: float | None, source: RandomSource
    ) -> tuple[list[Packed], list[Any]]:
        if dp_epsilon not in self._masks:
            packed, reports = [], []
            for index, samples in enumerate(self.samples):
                masks, report = calibrate(
                    self.bench.model,
                    samples,
                    self.config,
                    dp_epsilon=dp_epsilon,
                    releases=self.bench.blocks,
                    source=source.child(f"dp/{dp_epsilon}/client-{index}"),
                )
                packed.append(masks)
                reports.append(report)
            self._masks[dp_epsilon] = (packed, reports)
        return self._masks[dp_epsilon]


def _mask_provider(masks: Packed) -> Provider:
    """A client's input: the bits of its packed masks, chunk by chunk."""
    return lambda _index, chunk: unpack(masks[chunk.name], chunk.length)


class AuditRun:
    """Measures points; owns the workbench and the settings' calibrations."""

    def __init__(
        self, config: AuditConfig, source: RandomSource, progress: Progress | None = None
    ) -> None:
        self.config = config
        self.source = source
        self.progress = progress or SilentProgress()
        self._bench: Workbench | None = None
        self.articles: list[data.Article] = []
        self._settings: dict[tuple[int, str], Setting] = {}
        self._reference: dict[tuple[int, str], dict[str, np.ndarray]] = {}
        self._public: dict[str, np.ndarray] | None = None  # public text's window statistics

    @property
    def bench(self) -> Workbench:
        """The model and the corpus, loaded once; evaluation on the corpus' held-out text."""
        if self._bench is None:
            config = self.config
            with self.progress.status(f"loading model {config.model}"):
                bench = Workbench(config.model, config.device)
            self.articles = data.load_corpus(config.corpus)
            bench.use_eval_text(
                data.heldout_text(self.articles), config.seqlen, config.eval_windows
            )
            self._bench = bench
        return self._bench

    def setting(self, point: Point) -> Setting:
        if point.setting not in self._settings:
            bench = self.bench
            self._settings[point.setting] = Setting(
                bench, self.articles, self.config, *point.setting
            )
        return self._settings[point.setting]

    def _global_masks(self, counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rule = MaskRule(self.config.sparsity, self.config.group, self.config.seed)
        bench = self.bench
        return global_masks(rule, counts, bench.shapes, bench.index, contributors=0)[0]

    def perplexity(self, masks: dict[str, np.ndarray] | None = None) -> float:
        """Perplexity of the model pruned by `masks` (dense if None); weights restored after."""
        return self.bench.evaluate(masks)[0]

    def measure(self, point: Point) -> dict[str, Any]:
        if point.kind == "dense":
            return {"perplexity": self.perplexity(), "weights": self.bench.weights}
        if point.kind == "utility":
            return self._utility(point)
        if point.kind == "magnitude":
            masks, _ = local_masks(self.bench.model, None, self.config.sparsity, "magnitude")
            return {"perplexity": self.perplexity({k: v.numpy() for k, v in masks.items()})}
        if point.kind == "cost":
            return self._cost(point)
        if point.kind == "leakage-dp":
            bench = self.bench
            return run_leakage_dp(
                bench, self.articles, self.config, point.epsilon, self.source.child("leakage")
            )
        bench = self.bench
        return run_leakage(bench, self.articles, self.config, self.source.child("leakage"))

    def _reference_masks(self, point: Point) -> dict[str, np.ndarray]:
        """The global mask without any noise (direct sums: every protocol is exact)."""
        if point.setting not in self._reference:
            packed, _ = self.setting(point).masks(None, self.source)
            counts = {
                layer.name: sum(
                    (unpack(m[layer.name], layer.numel).astype(np.int64) for m in packed),
                    np.zeros(layer.numel, dtype=np.int64),
                )
                for layer in self.bench.layers
            }
            self._reference[point.setting] = self._global_masks(counts)
        return self._reference[point.setting]

    def _utility(self, point: Point) -> dict[str, Any]:
        if point.mechanism in STATS_MECHANISMS:
            return self._stats_utility(point)
        bench, setting = self.bench, self.setting(point)
        dp = point.epsilon if point.mechanism == "dp" else None
        rr = point.epsilon if point.mechanism == "rr" else None
        packed, reports = setting.masks(dp, self.source)
        lengths = {layer.name: layer.numel for layer in bench.layers}
        providers: dict[int, Provider] = {}
        for client, masks in enumerate(packed):
            # Each point is one simulated pruning round: one RR key per client, flips keyed by
            # the chunk name only (a re-read returns the same bits).
            plain = _mask_provider(masks)
            if rr is None:
                providers[client] = plain
            else:
                key = draw_rr_key(self.source.child(f"rr/{rr}/client-{client}"))
                providers[client] = randomized_provider(plain, rr, key)
        result, _, _ = sum_bits("plaintext", providers, lengths, self.source.child(point.id))
        counts = release_counts(result, rr, self.config.min_cohort)
        masks = self._global_masks(counts)
        outcome: dict[str, Any] = {
            "perplexity": self.perplexity(masks),
            "contributors": len(result.contributors),
            "topics": [list(c.topics) for c in setting.clients],
        }
        if point.mechanism != "none":
            reference = self._reference_masks(point)
            same = sum(int((masks[n] == reference[n]).sum()) for n in masks)
            outcome["agreement_with_noiseless_mask"] = same / bench.weights
        if rr is not None:
            plain_sums = sum(
                unpack(m[bench.layers[0].name], bench.layers[0].numel).astype(np.int64)
                for m in packed
            )
            error = counts[bench.layers[0].name] - plain_sums
            outcome["count_rmse_first_layer"] = float(np.sqrt(np.mean(error**2)))
        if dp is not None:
            outcome["statistics_dp"] = reports[0]
        return outcome

    def _stats_utility(self, point: Point) -> dict[str, Any]:
        """Stats mode, one-shot, one release under distributed or local noise
        (`audit.noisy_stats`), public scale (group) and clip from the held-out text."""
        bench, config = self.bench, self.config
        clients, groups = self.setting(point).window_statistics()
        if self._public is None:
            self._public = reference_statistics(bench, config.seqlen, config.batch_size)[0]
        leaders = [group[0] for group in groups]
        unit = "client" if point.mechanism == "ddp-client" else "window"
        per_unit = config.samples_per_client if unit == "client" else 1
        spec = public_spec(self._public, leaders, "group", None, per_unit)
        budget = {"epsilon": point.epsilon, "delta": config.dp_delta, "unit": unit,
                  "mechanism": "skellam", "accountant": config.accountant}  # fmt: skip
        mechanism = local_totals if point.mechanism == "ldp-stats" else distributed_totals
        totals, report = mechanism(clients, spec, budget, self.source.child(point.id))
        tokens = len(clients) * config.samples_per_client * config.seqlen
        weights = {layer.name: layer.module.weight.data for layer in bench.layers}
        masks = stats_masks(groups, totals, tokens, weights, config.sparsity)
        return {"perplexity": self.perplexity(masks), "statistics_dp": report,
                "topics": [list(c.topics) for c in self.setting(point).clients]}  # fmt: skip

    def _cost(self, point: Point) -> dict[str, Any]:
        """Bytes and time of one protocol on random masks of the model's layout (sizes and time
        do not depend on the mask's content)."""
        bench = self.bench
        lengths = {layer.name: layer.numel for layer in bench.layers}
        # Stand-in masks: nothing secret, so seeded (a re-read must give the same bits).
        stand_in = SeededRandomSource(f"fedprllm-secure/audit-cost/{self.config.seed}")

        def random_bits(client: int) -> Provider:
            def provider(_index: int, chunk: ChunkSpec) -> np.ndarray:
                raw = stand_in.child(f"cost/{client}/{chunk.name}").random_bytes(
                    (chunk.length + 7) // 8
                )
                return unpack(np.frombuffer(raw, dtype=np.uint8), chunk.length)

            return provider

        providers = {c: random_bits(c) for c in range(point.clients)}
        result, session, seconds = sum_bits(
            point.protocol, providers, lengths, self.source.child(point.id)
        )
        exact = all(
            np.array_equal(
                result.sums[name].astype(np.int64),
                sum(providers[c](0, chunk).astype(np.int64) for c in range(point.clients)),
            )
            for name, chunk in ((c.name, c) for c in result.spec.chunks)
        )
        uplink = session.bus.log.uplink_by_client()
        return {
            "seconds": seconds,
            "uplink_bytes_per_client": sum(uplink.values()) / max(len(uplink), 1),
            "uplink_bytes_per_weight": sum(uplink.values()) / max(len(uplink), 1) / bench.weights,
            "server_received_bytes": sum(r.nbytes for r in session.bus.log.received),
            "exact": exact,
        }


def run_audit(
    config: AuditConfig,
    store: PointStore,
    progress: Progress | None = None,
    source: RandomSource | None = None,
) -> dict[str, dict[str, Any]]:
    """Measure every point not yet in `store`; return all stored results by point id."""
    progress = progress or SilentProgress()
    if source is None:
        # Noise and protocol secrets from the OS CSPRNG unless reproducible noise was asked for.
        source = secret_source(config.seed, config.reproducible_noise, "audit")
    run = AuditRun(config, source, progress)
    points = plan(config)
    pending = [p for p in points if store.load(p.id) is None]
    progress.note(f"audit: {len(points)} points, {len(points) - len(pending)} already measured")
    with progress.stage("audit sweep", len(points), "point") as advance:
        for k, point in enumerate(points, start=1):
            if store.load(point.id) is None:
                progress.note(f"point {k}/{len(points)} ({point.id}): {point.describe()}")
                started = time.perf_counter()
                result = run.measure(point)
                result["point"] = {**point.__dict__, "id": point.id}
                result["wall_s"] = round(time.perf_counter() - started, 3)
                store.save(point.id, result)
            advance()
    return store.all()
