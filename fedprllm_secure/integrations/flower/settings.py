"""The run config of a federated pruning run on Flower: the one `RunConfig`, plus what only Flower
needs (`FlowerOptions`), checked before any node is asked anything.

Pure (no flwr import). `flower_run_config(mapping)` reads `[tool.flwr.app.config]` /
`flwr run --run-config`: keys are `RunConfig` field paths (`pruning.sparsity`, `privacy.rr_epsilon`,
`protocol.options.threshold`, ...), set through `config_io.with_values`; the flat keys of earlier
releases (`sparsity`, `protocol`, `min-cohort`, ...) are read through one table (`FLAT`), and
`protocol-options` is a JSON object. Flower's own keys: `num-nodes` (wait for this many nodes),
`poll-interval-s`, `out`, `save-model`.

A secure protocol's minimum cohort defaults to 3, as in `simulate`: the run is refused outright when
`num-nodes` is smaller; the cohort goes into the protocol's cohort option (the releasing party
refuses smaller sums itself) and the pipeline applies `simulate`'s release guard to every sum.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ...config import FederationConfig, PruningConfig, RunConfig
from ...config_io import with_values
from ...errors import ConfigError
from ...secure_sum import registry

# the flat keys of earlier releases -> their RunConfig field path
FLAT = {
    "model": "model", "device": "device", "dtype": "dtype", "seed": "seed",
    "corpus": "data.corpus", "split": "data.split",
    "samples-per-client": "data.samples_per_client", "seqlen": "data.seqlen",
    "eval-windows": "data.eval_windows", "eval-seqlen": "data.eval_seqlen",
    "eval-text": "data.eval_text",
    "sparsity": "pruning.sparsity", "group": "pruning.group", "pruner": "pruning.pruner",
    "calibration": "pruning.calibration", "mode": "pruning.mode",
    "aggregate": "pruning.aggregate", "scaling": "pruning.scaling",
    "batch-size": "pruning.batch_size", "stats-precision-bits": "pruning.stats_precision_bits",
    "protocol": "protocol.name", "min-cohort": "privacy.min_cohort",
    "min-clients": "privacy.min_cohort", "rr-epsilon": "privacy.rr_epsilon",
    "dp-stats-epsilon": "privacy.dp_stats_epsilon", "dp-delta": "privacy.dp_delta",
    "dp-clip": "privacy.dp_clip", "reproducible-noise": "privacy.reproducible_noise",
    "node-wait-s": "federation.node_wait_s", "calibrate-timeout-s": "federation.calibrate_timeout_s",
    "round-timeout-s": "federation.round_timeout_s", "chunk-entries": "federation.chunk_entries",
}  # fmt: skip
FLOWER_KEYS = ("num-nodes", "poll-interval-s", "out", "save-model", "protocol-options")

# What a Flower run defaults to where RunConfig's default is the simulation's: the nodes run on
# CPU unless told, the server too; only the fedprllm method (the baselines need the nodes' data).
FLOWER_DEFAULTS = RunConfig(
    device="cpu",
    pruning=PruningConfig(methods=("fedprllm",)),
    federation=FederationConfig(engine="flower"),
)


@dataclass(frozen=True)
class FlowerOptions:
    """What only a Flower run needs."""

    num_nodes: int = 3  # wait for this many nodes, run with the first this many
    poll_interval_s: float = 0.1  # <= 0: Grid.send_and_receive (it sleeps 3 s per poll)


def flower_run_config(values: Mapping[str, Any]) -> tuple[RunConfig, FlowerOptions]:
    """(RunConfig, FlowerOptions) of a Flower run config; ConfigError naming the key."""
    paths: dict[str, Any] = {}
    options = FlowerOptions()
    for key, value in values.items():
        if key == "num-nodes":
            options = replace(options, num_nodes=int(value))
        elif key == "poll-interval-s":
            options = replace(options, poll_interval_s=float(value))
        elif key == "protocol-options":
            paths["protocol.options"] = _json_object(value)
        elif key in FLAT:
            paths[FLAT[key]] = value
        elif "." in key:
            paths[key] = value
        elif key not in FLOWER_KEYS:
            raise ConfigError(
                f"unknown run config key {key!r} (use RunConfig paths, e.g. pruning.sparsity)"
            )
    config = with_values(FLOWER_DEFAULTS, paths)
    check(config, options)
    return config, options


def _json_object(value: Any) -> dict[str, Any]:
    try:
        parsed = json.loads(value) if isinstance(value, str) else dict(value)
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ConfigError(f"protocol-options is not a JSON object: {exc}") from exc
    if not isinstance(parsed, dict):
        raise ConfigError("protocol-options is not a JSON object")
    return parsed


def cohort_of(config: RunConfig) -> int:
    """The minimum cohort: explicit `privacy.min_cohort`, else 3 (secure) or 1 (plaintext)."""
    return config.privacy.cohort_minimum(registry.get(config.protocol.name).secure)


def check(config: RunConfig, options: FlowerOptions) -> None:
    """ConfigError for a run that must not start (before any node is asked anything)."""
    config.validate()
    cohort = cohort_of(config)
    if options.num_nodes < 1:
        raise ConfigError("num-nodes must be at least 1")
    if options.num_nodes < cohort:
        raise ConfigError(
            f"num-nodes {options.num_nodes} is below the minimum cohort {cohort} of protocol "
            f"{config.protocol.name!r}: a sum over so few nodes would reveal their masks (set "
            "num-nodes >= 3, or lower privacy.min_cohort explicitly if every node accepts it)"
        )
    if set(config.pruning.methods) != {"fedprllm"}:
        raise ConfigError(
            "pruning.methods on Flower is fedprllm only (the baselines need the nodes' text)"
        )
