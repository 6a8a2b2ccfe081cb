"""The ServerApp: drive a secure-sum protocol's server state machine over a Flower Grid.

Stages, each one bounded by a timeout (a node that misses one is left out, and said so):

1. wait for `num-nodes` SuperNodes (at most `node-wait-s`);
2. calibrate: every node computes its local masks from its own text (`calibrate-timeout-s`);
3. enroll: every node creates its own secret and sends its public part (`round-timeout-s`);
4. the protocol's rounds: `ServerProtocol.begin`, then one Grid exchange per round
   (`round-timeout-s` each) until the state machine returns the sum; the first message of each
   node also carries every node's attested public part, from which (and the draft it enrolled
   in) the node builds the session config after its trust checks (`trust.py`); one session per
   run: a node lost mid-stream ends the run (its peers' ledgers refuse a second session);
5. the release guard of `simulate` (minimum cohort), then global masks from the counts
   (`global_mask`, as in `simulate`), written to `out`.

Run config keys (pyproject `[tool.flwr.app.config]` or `flwr run --run-config`): see
`PruningSettings.from_run_config`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from ...errors import ConfigError, PrivacyError
from ...pipeline.federation import NodeCommand
from ...privacy.release import release_counts
from ...secure_sum import registry
from ...secure_sum.api import AggregateResult, AggregationSpec, ChunkSpec, ClientId
from .enrollment import prepare_options
from .federation import FlowerFederation, NodeFailure, exchange, wait_for_nodes
from .settings import PruningSettings

__all__ = ["FlowerPruning", "NodeFailure", "PruningSettings", "exchange", "prune_with_flower"]

log = logging.getLogger(__name__)


@dataclass
class PruningResult:
    masks: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]
    contributors: list[int]
    nodes: dict[int, int]  # client id -> Flower node id
    failures: dict[int, str]  # client id -> why it was left out
    uplink_bytes: dict[int, int]  # client id -> protocol bytes it sent
    rounds: int
    timings_s: dict[str, float]


def chunked_spec(index: int, lengths: list[int], chunk_entries: int) -> AggregationSpec:
    """Consecutive layers grouped into chunks "layers:A:B" of about `chunk_entries` entries."""
    chunks, offset, start, size = [], 0, 0, 0
    for i, length in enumerate(lengths):
        size += length
        if size >= chunk_entries or i == len(lengths) - 1:
            chunks.append(ChunkSpec(f"layers:{start}:{i + 1}", size, offset))
            offset += size
            start, size = i + 1, 0
    return AggregationSpec(index, tuple(chunks), bound=1)


class FlowerPruning:
    """One federated pruning run (one-shot masks) over a Grid (deployment, simulation engine or
    `LocalGrid`), through `FlowerFederation`."""

    def __init__(
        self,
        grid: Grid,
        settings: PruningSettings,
        layer_names: list[str],
        lengths: list[int],
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.progress = progress
        self.grid = grid
        self.s = settings
        self.layer_names = layer_names
        self.lengths = lengths
        self.federation: FlowerFederation | None = None
        self.authority_candidates: list[ClientId] = []  # nodes their trust file pins as authority

    def connect(self, node_ids: list[int] | None = None) -> FlowerFederation:
        """The federation of the first `num-nodes` nodes (waiting for them at most `node-wait-s`)."""
        if node_ids is None:
            node_ids = wait_for_nodes(self.grid, self.s.num_nodes, self.s.node_wait_s)
        self.federation = FlowerFederation(
            self.grid, node_ids, self.s.round_timeout_s, self.s.poll_interval_s, self.progress
        )
        return self.federation

    def calibrate(self, fed: FlowerFederation) -> tuple[ClientId, ...]:
        """Every node's local masks; the roster of those that got through with our layout."""
        settings = {
            "sparsity": self.s.sparsity, "pruner": self.s.pruner,
            "calibration": self.s.calibration, "samples-per-client": self.s.samples_per_client,
            "seqlen": self.s.seqlen, "batch-size": self.s.batch_size,
        }  # fmt: skip
        command = NodeCommand("calibrate", settings)
        answers = fed.command(
            "calibrate", {c: command for c in fed.clients}, self.s.calibrate_timeout_s
        )
        fingerprint = hashlib.sha256(
            repr(list(zip(self.layer_names, self.lengths, strict=True))).encode()
        ).hexdigest()
        for c, answer in answers.items():
            if answer.settings.get("layout") != fingerprint:
                fed.failures[c] = "calibrate: its model's prunable layout differs from the server's"
            if answer.settings.get("authority"):
                self.authority_candidates.append(c)
        alive = set(answers) - set(fed.failures)
        fed.need(alive, "calibration", self.s.cohort)
        return tuple(sorted(alive))

    def run(self) -> PruningResult:
        self.s.validate()
        fed = self.connect()
        roster = self.calibrate(fed)
        spec = chunked_spec(0, self.lengths, self.s.chunk_entries)
        # One session only: a node lost in the middle of the masked stream ends the run (a fresh
        # session would re-collect chunks already released, which the nodes' ledgers refuse).
        result = self.secure_sum(roster, spec)
        counts: dict[str, np.ndarray] = {}
        for chunk in spec.chunks:
            _, first, last = chunk.name.split(":")
            position = 0
            for i in range(int(first), int(last)):
                name = self.layer_names[i]
                counts[name] = result.sums[chunk.name][position : position + self.lengths[i]]
                position += self.lengths[i]
        return PruningResult(
            masks={},
            counts=counts,
            contributors=list(result.contributors),
            nodes=dict(fed.node_of),
            failures=dict(fed.failures),
            uplink_bytes=dict(fed.uplink),
            rounds=fed.rounds,
            timings_s=dict(fed.timings),
        )

    def session_options(self, roster: tuple[ClientId, ...]) -> dict[str, Any]:
        """The run's protocol options with the cohort (validated with the minimum this run
        releases at) and, where the protocol names a key authority, the node the trust files pin."""
        info = registry.get(self.s.protocol)
        options = info.with_cohort(dict(self.s.options), self.s.cohort)
        candidates = [c for c in self.authority_candidates if c in roster]
        if len(candidates) == 1 and "authority" not in options:
            if "authority" in prepare_options(self.s.protocol, roster, options):
                options["authority"] = candidates[0]
        return options

    def secure_sum(self, roster: tuple[ClientId, ...], spec: AggregationSpec) -> AggregateResult:
        """Enroll `roster` in one session and sum `spec` through it; the release guard."""
        fed = self.federation or self.connect()
        session = fed.open_session(self.s.protocol, self.session_options(roster), roster)
        result = session.aggregate(spec)
        # The release guard of `simulate`: never publish counts over fewer than the cohort.
        try:
            release_counts(result, min_cohort=self.s.cohort)
        except PrivacyError as exc:
            raise PrivacyError(f"{exc}. {fed.reasons()}".strip()) from exc
        return result


def prune_with_flower(
    grid: Grid,
    settings: PruningSettings,
    model_spec: str,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> tuple[PruningResult, Any]:
    """Load the global model, run the federation, return the result and the loaded model
    (its weights pruned by the global masks)."""
    from ...model import load_model, prunable_layers
    from ...server.aggregate import global_mask, scaling_factors
    from ...server.apply import apply_masks

    loaded = load_model(model_spec, device)
    layers = prunable_layers(loaded.model)
    run = FlowerPruning(
        grid,
        settings,
        [layer.name for layer in layers],
        [layer.numel for layer in layers],
        progress,
    )
    result = run.run()
    scales: dict[str, np.ndarray] | None = {} if settings.scaling else None
    for index, layer in enumerate(layers):
        shape = tuple(layer.module.weight.shape)
        counts = result.counts[layer.name].reshape(shape)
        result.counts[layer.name] = counts
        result.masks[layer.name] = global_mask(
            counts, settings.sparsity, settings.group, settings.seed, index
        )
        if scales is not None:
            scales[layer.name] = scaling_factors(counts, len(result.contributors))
    apply_masks(layers, result.masks, scales)
    return result, loaded


def write_result(out: Path, settings: PruningSettings, result: PruningResult) -> None:
    """OUT/masks.npz (global masks), OUT/counts.npz, OUT/result.json; written atomically-ish."""
    out.mkdir(parents=True, exist_ok=True)
    masks: dict[str, Any] = dict(result.masks)
    counts: dict[str, Any] = dict(result.counts)
    np.savez_compressed(out / "masks.npz", **masks)
    np.savez_compressed(out / "counts.npz", **counts)
    summary = {
        "settings": asdict(settings),
        "min_cohort": settings.cohort,
        "contributors": result.contributors,
        "nodes": {str(c): n for c, n in result.nodes.items()},
        "failures": {str(c): why for c, why in result.failures.items()},
        "uplink_bytes_per_client": {str(c): n for c, n in result.uplink_bytes.items()},
        "protocol_rounds": result.rounds,
        "timings_s": result.timings_s,
    }
    tmp = out / "result.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1, default=str))
    tmp.replace(out / "result.json")


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = dict(context.run_config)
    out = Path(str(config.get("out", "runs/flower"))).expanduser()
    out.mkdir(parents=True, exist_ok=True)

    def progress(stage: str) -> None:
        (out / "progress.json").write_text(json.dumps({"stage": stage, "time": time.time()}))

    try:
        settings = PruningSettings.from_run_config(config)
        model_spec = str(config.get("model", ""))
        if not model_spec:
            raise ConfigError("run config needs model='PATH' (the global model)")
        result, loaded = prune_with_flower(
            grid, settings, model_spec, str(config.get("device", "cpu")), progress
        )
        write_result(out, settings, result)
        if config.get("save-model"):
            loaded.model.save_pretrained(out / "model")
            loaded.tokenizer.save_pretrained(out / "model")  # type: ignore[attr-defined]
        log.warning(
            "fedprllm-secure: pruned with %s over clients %s (left out: %s); wrote %s",
            settings.protocol,
            result.contributors,
            result.failures or "none",
            out,
        )
    except Exception as exc:  # the launcher waits for result.json or error.txt
        (out / "error.txt").write_text(f"{type(exc).__name__}: {exc}\n")
        log.error("fedprllm-secure: %s", exc)
        raise
