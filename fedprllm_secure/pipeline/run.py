"""A whole federated pruning run: `run(config) -> results` (what results.json holds).

    samples per client -> local masks or statistics -> secure sum -> global mask -> perplexity

plus the baselines (dense, centralized on the pooled samples, local-only averaged over clients).
`Pipeline` is the reusable form: one model (`Workbench`) and one federation, several methods or
variants of the pruning / protocol / privacy settings (the experiments use it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from statistics import mean
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..client.calibrate import local_masks
from ..client.methods import PruneMethod
from ..config import RunConfig
from ..errors import ConfigError
from ..evaluate import Evaluation
from ..mask_file import save_masks
from ..preflight import check_protocol, check_run
from ..privacy.noise_source import describe, secret_source
from ..progress import Progress, SilentProgress
from ..secure_sum import registry
from .blockwise_bench import BlockwiseBench
from .blockwise_run import EVALUATED, blockwise_run
from .federation import Federation, NodeCommand
from .inprocess import InProcessFederation
from .layout import unpack_masks
from .strategies import Server, strategy_for
from .texts import client_texts, eval_text
from .timer import Timer
from .workbench import Workbench

Masks = dict[str, np.ndarray]
BlockSink = Callable[[int, Masks, Masks | None], None]


@dataclass
class FedResult:
    """One fedprllm run: the global masks (and scales) and what the run reports about it."""

    masks: Masks
    scales: Masks | None
    protocol: dict[str, Any]
    privacy: dict[str, Any]
    server: Server


class Pipeline:
    """One model and one federation; methods run on them, the model left dense after each.

    `bench` (a loaded `Workbench`, dense) and `federation` may be shared or supplied; by default
    the model of `config` is loaded and an `InProcessFederation` holds one node per client text.
    """

    def __init__(
        self,
        config: RunConfig,
        progress: Progress | None = None,
        bench: Workbench | None = None,
        federation: Federation | None = None,
        timer: Timer | None = None,
    ) -> None:
        config.validate()
        self.progress = progress or SilentProgress()
        self.timer = timer or Timer()
        self.evaluations: dict[str, Evaluation] = {}
        self.progress.phase("load model")
        with self.timer.phase("load_model"), self.progress.status(f"loading model {config.model}"):
            kind = BlockwiseBench if config.pruning.blockwise else Workbench
            self.bench = bench or kind(config.model, config.device, config.dtype)
        self.progress.phase("prepare data")
        with self.timer.phase("prepare_data"):
            texts = client_texts(config.data, config.seed)
            if config.data.client_data:
                config = replace(config, data=replace(config.data, clients=len(texts)))
            d = config.data
            self.bench.use_eval_text(eval_text(d), d.eval_seqlen or d.seqlen, d.eval_windows)
            self.source = secret_source(config.seed, config.privacy.reproducible_noise, "simulate")
            self.federation = federation or InProcessFederation.build(
                self.bench, texts, self.source
            )
            self.config = config
            self.described = {
                c: dict(answer.settings)
                for c, answer in self._command(
                    "describe", {"samples_per_client": d.samples_per_client, "seqlen": d.seqlen}
                ).items()
            }

    def _command(self, kind: str, settings: dict[str, Any]) -> dict[int, Any]:
        command = NodeCommand(kind, settings)
        return self.federation.command(
            kind,
            {c: command for c in self.federation.alive()},
            self.config.federation.calibrate_timeout_s,
        )

    def variant(self, config: RunConfig | None) -> RunConfig:
        """`config` (default: the pipeline's), checked to keep this pipeline's model and data,
        its protocol options checked against the clients (before any calibration)."""
        if config is None:
            config = self.config
        config.validate()
        if config.data.client_data:
            config = replace(config, data=replace(config.data, clients=self.config.data.clients))
        same = ("model", "device", "dtype", "seed", "data")
        if any(getattr(config, k) != getattr(self.config, k) for k in same):
            raise ConfigError("a variant keeps the pipeline's model, device, dtype, seed and data")
        check_protocol(config, self.federation.clients)
        return config

    def evaluate(
        self,
        label: str,
        masks: Masks | None = None,
        scales: Masks | None = None,
        save_to: Path | None = None,
        card: dict[str, Any] | None = None,
    ) -> tuple[float, dict[str, Any]]:
        """(perplexity, sparsity) of the model pruned by `masks` (saved to `save_to` while
        pruned, with the model card `card` completed by the evaluation); the model is dense
        again after. The full `Evaluation` is kept in `self.evaluations[label]`."""
        bench = self.bench
        try:
            if masks is not None:
                with self.progress.stage(f"prune ({label})", len(bench.layers), "layer") as step:
                    bench.apply(masks, scales, step)
            with self.timer.phase(f"eval_{label}"):
                stage = self.progress.stage(f"perplexity ({label})", len(bench.windows), "window")
                with stage as advance:
                    evaluation = self.evaluations[label] = bench.evaluation(advance)
            if save_to is not None:
                card = {**(card or {}), **evaluation.as_dict()}
                with (
                    self.timer.phase("save_model"),
                    self.progress.status("saving the pruned model"),
                ):
                    bench.save(save_to, card)
            return evaluation.perplexity, bench.sparsity()
        finally:
            bench.restore()

    def fedprllm(
        self,
        config: RunConfig | None = None,
        sink: BlockSink | None = None,
        keep_masks: bool = True,
    ) -> FedResult:
        """Global masks of FedPrLLM under `config` (a variant of the pipeline's); one new
        calibration of every client (masks are reused by a node when identical). `sink` gets
        each block's global masks as they are made (`Server.sink`; masks mode)."""
        config = self.variant(config)
        self.federation.simulate_drops(config.federation.drop)
        server = Server(config, self.bench, self.federation, self.timer, self.progress)
        server.described, server.sink, server.keep_masks = self.described, sink, keep_masks
        try:
            masks, scales = strategy_for(config)(server)
        finally:
            self.bench.restore()
        return FedResult(masks, scales, protocol_report(server), privacy_summary(server), server)

    def centralized(self, config: RunConfig | None = None) -> Masks:
        """Masks of the pruner on every client's samples pooled (a simulation baseline)."""
        config = self.variant(config)
        p = config.pruning
        pooled = None
        if p.pruner != "magnitude":
            answers = self._command("samples", {})
            pooled = torch.cat([torch.from_numpy(answers[c].arrays["tokens"])
                                for c in sorted(answers)])  # fmt: skip
        with self.timer.phase("calibration_centralized"):
            blocks = self.bench.blocks
            stage = self.progress.stage("calibrate centralized", blocks, "decoder block")
            with stage as advance:
                masks, _ = local_masks(
                    self.bench.model, pooled, p.sparsity, p.pruner, p.calibration, p.batch_size,
                    on_block=lambda _i, _n: advance(), method=PruneMethod.of(p),
                )  # fmt: skip
        return {name: mask.numpy() for name, mask in masks.items()}

    def local(self, config: RunConfig | None = None) -> list[Masks]:
        """Every client's own local masks (calibrated now, or reused by the node)."""
        config = self.variant(config)
        server = Server(config, self.bench, self.federation, self.timer, self.progress)
        server.calibrate("masks")
        answers = self._command("local-masks", {})
        return [unpack_masks(answers[c].arrays, self.bench.shapes) for c in sorted(answers)]


def privacy_summary(server: Server) -> dict[str, Any]:
    """results.json `privacy` of a run on `server`: the settings' report, with the DP statistics
    mechanism's report of the first node still in (asked for only when the run has one)."""
    config, federation = server.config, server.federation
    first = min(federation.alive(), default=None)
    statistics = None
    if first is not None and config.privacy.dp_stats_epsilon is not None:
        answers = federation.command(
            "report", {first: NodeCommand("report")}, config.federation.round_timeout_s
        )
        statistics = answers[first].settings.get("statistics_dp") if first in answers else None
    distributed = server.dp_release.report() if server.dp_release is not None else None
    return config.privacy.report(
        distributed=distributed,
        protocol=config.protocol.name,
        protocol_secure=registry.get(config.protocol.name).secure,
        weights=server.bench.weights,
        contributors=min(server.contributors, default=0),
        statistics=statistics,
        noise_source=describe(config.privacy.reproducible_noise),
    )


def protocol_report(server: Server) -> dict[str, Any]:
    """results.json `protocol`: who contributed, who dropped, what the uploads cost."""
    config, session = server.config, server.session
    if session is None:
        return {}
    traffic = session.traffic
    per_client = traffic.uplink_bytes
    return {
        "name": config.protocol.name,
        "secure": registry.get(config.protocol.name).secure,
        "options": dict(config.protocol.options),
        "aggregations": len(server.contributors),
        "contributors": list(server.last_contributors),
        "contributors_per_aggregation": list(server.contributors),
        "dropped": sorted(traffic.dropped),
        "uplink_bytes_per_client": {str(c): n for c, n in sorted(per_client.items())},
        "uplink_bytes_per_client_round": {
            str(c): traffic.uplink_bytes_by_round.get(c, {}) for c in server.federation.clients
        },
        "uplink_bytes_per_weight": round(mean(per_client.values()) / server.bench.weights, 4)
        if per_client
        else None,
        "server_received": {
            "messages": traffic.received_messages,
            "bytes": traffic.received_bytes,
            "message_types": list(traffic.message_types),
        },
    }


def run(
    config: RunConfig,
    progress: Progress | None = None,
    save_model_to: Path | None = None,
    bench: Workbench | None = None,
    save_masks_to: Path | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Run every method of `config.pruning.methods`; return the results (JSON-ready).

    With `save_model_to`, the model pruned by the first listed non-local method is saved there
    (with a model card naming `command`); with `save_masks_to`, its global masks
    (`mask_file` format). `bench` reuses a loaded model (dense) instead of loading `config.model`.
    """
    check_run(config)  # what needs no model, before it loads
    methods = config.pruning.methods
    saved_method = next((m for m in methods if m != "local"), None)
    if save_model_to is not None and saved_method is None:
        raise ConfigError("save_model_to needs pruning.methods fedprllm or centralized")
    if save_masks_to is not None and saved_method is None:
        raise ConfigError("save_masks_to needs pruning.methods fedprllm or centralized")
    started = time.perf_counter()
    progress = progress or SilentProgress()
    evaluated = [] if config.pruning.blockwise else ["evaluate dense"]
    progress.plan(["load model", "prepare data", *evaluated, *methods])
    pipe = Pipeline(config, progress, bench)
    if pipe.bench.blockwise:  # dense and pruned evaluated block by block during the run
        progress.phase("fedprllm")
        perplexities, sparsity, fed = blockwise_run(pipe, save_model_to, save_masks_to)
        results = _results(pipe, perplexities, sparsity, fed, save_model_to, started)
        results["saved_masks"] = str(save_masks_to) if save_masks_to else None
        return {**results, "evaluation": EVALUATED}
    progress.phase("evaluate dense")
    perplexities: dict[str, Any] = {"dense": pipe.evaluate("dense")[0]}
    sparsity: dict[str, Any] = {}
    fed: FedResult | None = None
    for method in methods:
        progress.phase(method)
        if method == "local":
            local = []
            for client, masks in enumerate(pipe.local()):
                ppl, sparsity["local"] = pipe.evaluate(f"local {client}", masks)
                local.append(ppl)
            perplexities["local"] = local
            perplexities["local_mean"] = mean(local)
            continue
        if method == "fedprllm":
            fed = pipe.fedprllm()
            masks, scales = fed.masks, fed.scales
        else:
            masks, scales = pipe.centralized(), None
        save_to = save_model_to if method == saved_method else None
        card = model_card_fields(pipe.config, method, perplexities["dense"], command)
        perplexities[method], sparsity[method] = pipe.evaluate(method, masks, scales, save_to, card)
        if save_masks_to is not None and method == saved_method:
            save_masks(save_masks_to, masks)
    results = _results(pipe, perplexities, sparsity, fed, save_model_to, started)
    results["saved_masks"] = str(save_masks_to) if save_masks_to else None
    return results


def _results(
    pipe: Pipeline,
    perplexities: dict[str, Any],
    sparsity: dict[str, Any],
    fed: FedResult | None,
    save_model_to: Path | None,
    started: float,
) -> dict[str, Any]:
    config, bench = pipe.config, pipe.bench
    keys = ("name", "documents", "topics", "tokens")
    return {
        "fedprllm_secure_version": __version__,
        "config": asdict(config),
        "model": {
            "name": config.model,
            "device": bench.device,
            "prunable_layers": len(bench.layers),
            "prunable_weights": bench.weights,
        },
        "data": {
            "clients": [{k: pipe.described[c][k] for k in keys} for c in sorted(pipe.described)],
            "eval": {"windows": len(bench.windows), "window_tokens": int(bench.windows[0].numel())},
        },
        "eval_windows": {"asked": config.data.eval_windows, "used": len(bench.windows)},
        "perplexity": perplexities,
        **evaluation_spread(pipe.evaluations),
        "sparsity": sparsity,
        "protocol": (fed.protocol or None) if fed else None,
        "privacy": fed.privacy if fed else None,
        "randomness": {
            "noise_and_protocol_secrets": describe(config.privacy.reproducible_noise),
            "data_splits_and_tie_breaking": f"seeded by --seed {config.seed}",
        },
        "saved_model": str(save_model_to) if save_model_to else None,
        "timings_s": {**pipe.timer.timings, "total": round(time.perf_counter() - started, 3)},
    }


def evaluation_spread(evaluations: dict[str, Evaluation]) -> dict[str, Any]:
    """results.json `perplexity_se` and `bits_per_byte`, keyed like `perplexity` (local: one
    value per client)."""
    spread: dict[str, Any] = {"perplexity_se": {}, "bits_per_byte": {}}
    for label, evaluation in evaluations.items():
        for key in spread:
            value = getattr(evaluation, key)
            if label.startswith("local "):
                spread[key].setdefault("local", []).append(value)
            else:
                spread[key][label] = value
    return spread


def model_card_fields(
    config: RunConfig, method: str, dense: float, command: str | None
) -> dict[str, Any]:
    """What the saved model's card says about how it was made (`saving.model_card`)."""
    p, protocol = config.pruning, config.protocol
    scheme = protocol.options.get("he_scheme")
    settings, privacy = config.privacy, []
    if settings.rr_epsilon is not None:
        privacy.append(f"randomized response, eps {settings.rr_epsilon} per weight")
    if settings.dp_stats_epsilon is not None:
        noise = settings.noise_kind(protocol.name, p.aggregate)
        privacy.append(
            f"DP statistics ({settings.dp_stats_epsilon}, {settings.dp_delta})-DP, {noise} noise"
        )
    return {
        "base_model": config.model,
        "method": f"{method} ({p.pruner}, {p.calibration} calibration, {p.mode}, "
        f"aggregate {p.aggregate})"
        if method == "fedprllm"
        else f"{method} ({p.pruner})",
        "sparsity": p.sparsity,
        "group": p.group,
        "pruner": p.pruner,
        "protocol": (f"{protocol.name} ({scheme})" if scheme else protocol.name)
        if method == "fedprllm"
        else "- (no federation)",
        "privacy": ", ".join(privacy) or "none beyond the secure sum",
        "seed": config.seed,
        "dense_perplexity": dense,
        "command": command or "(library call: fedprllm_secure.pipeline.run)",
        "version": __version__,
    }
