"""The one run configuration: what `simulate`, `audit`, the experiments and Flower all read.

Frozen and nested by concern (data / pruning / protocol / privacy / federation). A field is named
by its dotted path (`pruning.sparsity`); library errors name that path, and the CLI maps each path
to its flag in one table. Build one with `RunConfig(...)`, `dataclasses.replace`, or from a TOML
file with overrides (`config_io.load_config`, `config_io.with_overrides`), then `validate()` once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .privacy.settings import PrivacySettings


def frozen_mapping(values: Mapping[Any, Any] | None = None) -> dict[Any, Any]:
    """A copy of `values`, the default of mapping fields (treat it as read-only: the config is
    frozen, its mappings are plain dicts only so that `dataclasses.asdict` and copies work)."""
    return dict(values or {})


@dataclass(frozen=True)
class DataConfig:
    """Where each client's calibration text and the evaluation text come from."""

    corpus: str = "wiki-topics"  # embedded corpus name or a JSON file in its format
    client_data: str | None = None  # a folder: one entry (file or folder) per client
    eval_text: str | None = None  # evaluation text file (default: the corpus' held-out part)
    clients: int = 8  # client count when the corpus is split (ignored with client_data)
    split: str = "iid"  # iid | topic
    samples_per_client: int = 8  # calibration windows per client
    seqlen: int = 512  # tokens per calibration window
    eval_windows: int = 16
    eval_seqlen: int | None = None  # default: seqlen


@dataclass(frozen=True)
class PruningConfig:
    """How masks are computed (client) and combined (server)."""

    sparsity: float = 0.5
    group: str = "layer"  # server comparison group: layer | row | column
    pruner: str = "wanda"  # wanda | magnitude
    calibration: str = "sequential"  # sequential | one-shot
    mode: str = "one-shot"  # one-shot | iterative (one secure sum per block)
    aggregate: str = "masks"  # masks (FedPrLLM) | stats (exact centralized Wanda)
    stats_precision_bits: int = 48
    scaling: bool = False
    methods: tuple[str, ...] = ("fedprllm",)  # fedprllm | centralized | local
    batch_size: int = 8


@dataclass(frozen=True)
class ProtocolConfig:
    """The secure-sum protocol and its options (registry name -> options it understands)."""

    name: str = "plaintext"
    options: Mapping[str, Any] = field(default_factory=frozen_mapping)


@dataclass(frozen=True)
class FederationConfig:
    """Which engine carries the messages, and its limits."""

    engine: str = "in-process"  # in-process | flower (deployment or simulation engine)
    drop: Mapping[int, str] = field(default_factory=frozen_mapping)  # client -> round (simulated)
    node_wait_s: float = 60.0
    calibrate_timeout_s: float = 600.0
    round_timeout_s: float = 120.0
    chunk_entries: int = 1 << 24  # consecutive layers per protocol chunk (Flower)


@dataclass(frozen=True)
class RunConfig:
    """A whole federated pruning run."""

    model: str = "smollm2-135m"
    device: str = "auto"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    federation: FederationConfig = field(default_factory=FederationConfig)
