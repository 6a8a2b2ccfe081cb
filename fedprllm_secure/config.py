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
    pruner: str = "wanda"  # wanda | ria | magnitude
    sparsity_type: str = "unstructured"  # unstructured | N:M (keep N of every M inputs; 2:4, 4:8)
    layerwise: str = "uniform"  # uniform | owl (outlier-weighted per-block sparsity)
    owl_lambda: float = 0.08  # OWL: block sparsities span at most [s - 2 lambda, s + 2 lambda]
    owl_m: float = 5.0  # OWL: an outlier scores above owl_m x the block's mean Wanda score
    ria_alpha: float = 0.5  # RIA: exponent of the activation norm
    refine: str = "none"  # none | dsnot (training-free mask refinement)
    calibration: str = "sequential"  # sequential | one-shot
    mode: str = "one-shot"  # one-shot | iterative (one secure sum per block)
    aggregate: str = "masks"  # masks (FedPrLLM) | stats (the exact centralized method)
    stats_precision_bits: int = 48
    scaling: bool = False
    methods: tuple[str, ...] = ("fedprllm",)  # fedprllm | centralized | local
    batch_size: int = 8
    blockwise: bool = False  # one decoder block in memory (clients, server, evaluation)


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
    # One-shot masks: one aggregation over the whole model up to this many prunable weights, one
    # per decoder block above it (and always with pruning.blockwise): the server then holds one
    # block's sums. Each aggregation is a protocol run (on Flower about 2 rounds of messages).
    sum_per_block_above: int = 1 << 28


@dataclass(frozen=True)
class RunConfig:
    """A whole federated pruning run."""

    model: str = "smollm2-135m"
    device: str = "auto"
    dtype: str = "auto"  # auto (the checkpoint's own) | float32 | bfloat16 | float16
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    federation: FederationConfig = field(default_factory=FederationConfig)

    def validate(self) -> None:
        """Raise ConfigError naming the first bad value by its field path (`validate_run`)."""
        validate_run(self)


# --- validation (helper CORE) ----------------------------------------------------------------

METHODS = ("fedprllm", "centralized", "local")
MODES = ("one-shot", "iterative")
AGGREGATES = ("masks", "stats")
ENGINES = ("in-process", "flower")


def _checks(config: RunConfig) -> list[tuple[bool, str]]:
    from . import data
    from .client.calibrate import CALIBRATIONS
    from .client.scores import PRUNERS
    from .server.aggregate import GROUPS

    d, p = config.data, config.pruning
    dtypes = ("auto", "float32", "bfloat16", "float16")  # model.DTYPES (torch: not imported here)
    return [
        (config.dtype in dtypes, f"unknown dtype {config.dtype!r} (use {', '.join(dtypes)})"),
        (0.0 < p.sparsity < 1.0, f"pruning.sparsity must lie in (0, 1), got {p.sparsity}"),
        (p.group in GROUPS, f"unknown pruning.group {p.group!r} (use {', '.join(GROUPS)})"),
        (d.split in data.SPLITS, f"unknown data.split {d.split!r} (use iid or topic)"),
        (p.pruner in PRUNERS, f"unknown pruning.pruner {p.pruner!r} (use {', '.join(PRUNERS)})"),
        (
            p.calibration in CALIBRATIONS,
            f"unknown pruning.calibration {p.calibration!r} (use sequential or one-shot)",
        ),
        (p.mode in MODES, f"unknown pruning.mode {p.mode!r} (use one-shot or iterative)"),
        (
            p.aggregate in AGGREGATES,
            f"unknown pruning.aggregate {p.aggregate!r} (use masks or stats)",
        ),
        (
            p.aggregate == "masks" or p.pruner != "magnitude",
            "pruning.aggregate stats needs pruning.pruner wanda or ria (magnitude uses no data)",
        ),
        (
            p.mode == "one-shot" or p.pruner != "magnitude",
            "pruning.mode iterative needs pruning.pruner wanda or ria (magnitude has no "
            "calibration)",
        ),
        (d.clients >= 1, "data.clients must be at least 1"),
        (d.samples_per_client >= 1, "data.samples_per_client must be at least 1"),
        (d.seqlen >= 8, "data.seqlen must be at least 8"),
        (d.eval_windows >= 1, "data.eval_windows must be at least 1"),
        (p.batch_size >= 1, "pruning.batch_size must be at least 1"),
        (bool(p.methods), "pruning.methods names no method"),
        (
            config.federation.engine in ENGINES,
            f"unknown federation.engine {config.federation.engine!r} (use {', '.join(ENGINES)})",
        ),
    ] + _method_checks(p)


def _blockwise_checks(config: RunConfig) -> list[tuple[bool, str]]:
    """What `pruning.blockwise` (one decoder block in memory) supports so far."""
    p = config.pruning
    if not p.blockwise:
        return []
    return [
        (p.aggregate == "masks", "pruning.blockwise needs pruning.aggregate masks (stats mode is "
         "not wired block by block yet)"),
        (p.layerwise == "uniform", "pruning.blockwise needs pruning.layerwise uniform (OWL needs "
         "every block's statistics before the first mask)"),
        (set(p.methods) == {"fedprllm"}, "pruning.blockwise runs pruning.methods fedprllm only "
         "(the centralized and local baselines hold the whole model)"),
    ]  # fmt: skip


def _method_checks(p: PruningConfig) -> list[tuple[bool, str]]:
    """The pruning method's fields (pruner, sparsity type, OWL, RIA, DSnoT) and combinations."""
    from .client.scores import LAYERWISE, REFINES, parse_n_m

    try:
        n_m = parse_n_m(p.sparsity_type)
        shape_ok = True
    except ValueError:
        n_m, shape_ok = None, False
    data_pruner = p.pruner in ("wanda", "ria")
    half_room = min(p.sparsity, 1 - p.sparsity) / 2
    return [
        (
            shape_ok,
            f"pruning.sparsity_type must be unstructured or N:M with 0 < N < M, "
            f"got {p.sparsity_type!r}",
        ),
        (
            p.layerwise in LAYERWISE,
            f"unknown pruning.layerwise {p.layerwise!r} (use {' or '.join(LAYERWISE)})",
        ),
        (p.refine in REFINES, f"unknown pruning.refine {p.refine!r} (use {' or '.join(REFINES)})"),
        (p.ria_alpha >= 0, f"pruning.ria_alpha must be >= 0, got {p.ria_alpha}"),
        (p.owl_m > 0, f"pruning.owl_m must be > 0, got {p.owl_m}"),
        (
            0 <= p.owl_lambda < half_room or p.layerwise != "owl",
            f"pruning.owl_lambda must lie in [0, {half_room:g}) at sparsity {p.sparsity} "
            f"(block sparsities span s +- 2 lambda), got {p.owl_lambda}",
        ),
        (
            p.layerwise == "uniform" or (data_pruner and n_m is None),
            "pruning.layerwise owl needs pruning.pruner wanda or ria and unstructured "
            "pruning.sparsity_type",
        ),
        (
            p.refine == "none" or (data_pruner and n_m is None),
            "pruning.refine dsnot needs pruning.pruner wanda or ria and unstructured "
            "pruning.sparsity_type",
        ),
        (
            p.mode == "one-shot" or p.layerwise == "uniform",
            "pruning.mode iterative needs pruning.layerwise uniform (OWL needs every block first)",
        ),
    ]


def validate_run(self: RunConfig) -> None:
    """Raise ConfigError naming the first bad value by its field path (e.g. pruning.sparsity)."""
    from pathlib import Path

    from .errors import ConfigError
    from .secure_sum import registry
    from .secure_sum.messages import round_names

    for ok, problem in _checks(self) + _blockwise_checks(self):
        if not ok:
            raise ConfigError(problem)
    self.privacy.validate()
    check_dp_noise(self)
    if self.privacy.rr_epsilon is not None and self.pruning.aggregate != "masks":
        raise ConfigError(
            "privacy.rr_epsilon randomizes mask bits: it needs pruning.aggregate masks"
        )
    if self.privacy.dp_stats_epsilon is not None and self.pruning.pruner == "magnitude":
        raise ConfigError(
            "privacy.dp_stats_epsilon needs pruning.pruner wanda or ria (magnitude uses no data)"
        )
    if self.privacy.dp_stats_epsilon is not None and (
        self.pruning.layerwise != "uniform" or self.pruning.refine != "none"
    ):
        raise ConfigError(
            "privacy.dp_stats_epsilon needs pruning.layerwise uniform and pruning.refine none "
            "(their extra statistics are not noised)"
        )
    for method in self.pruning.methods:
        if method not in METHODS:
            raise ConfigError(f"unknown pruning.methods {method!r} (use {', '.join(METHODS)})")
    registry.get(self.protocol.name)
    for path, value in (("data.client_data", self.data.client_data),
                        ("data.eval_text", self.data.eval_text)):  # fmt: skip
        if value and not Path(value).expanduser().exists():
            raise ConfigError(f"{path} path not found: {value}")
    rounds = round_names(self.protocol.name)
    for client, round_name in self.federation.drop.items():
        if not self.data.client_data and not 0 <= client < self.data.clients:  # else: preflight
            raise ConfigError(
                f"federation.drop names client {client}, but clients are 0..{self.data.clients - 1}"
            )
        if round_name not in rounds:
            raise ConfigError(
                f"federation.drop names round {round_name!r}, unknown to protocol "
                f"{self.protocol.name} (rounds: {', '.join(rounds)})"
            )


def check_dp_noise(config: RunConfig) -> None:
    """ConfigError for a DP noise kind the run cannot offer: distributed noise needs the stats
    aggregate under a protocol that hides each client's upload; local noise needs --dp-clip."""
    from .errors import ConfigError
    from .privacy.distributed_dp import refuse_unprotected

    privacy = config.privacy
    kind = privacy.noise_kind(config.protocol.name, config.pruning.aggregate)
    if kind == "local":
        if privacy.dp_clip is None:
            raise ConfigError("--dp-stats-epsilon needs --dp-clip C (the per-sample L2 bound)")
        if privacy.dp_unit != "window":
            raise ConfigError("privacy.dp_unit client needs privacy.dp_noise distributed")
    if kind != "distributed":
        return
    refuse_unprotected(config.protocol.name)
    if config.pruning.aggregate != "stats":
        raise ConfigError(
            "privacy.dp_noise distributed needs pruning.aggregate stats (in masks mode each "
            "client computes its mask from its own statistics: use privacy.dp_noise local)"
        )
    p = config.pruning
    if p.refine != "none" or p.layerwise != "uniform":
        raise ConfigError(
            "privacy.dp_noise distributed needs pruning.refine none and pruning.layerwise uniform "
            "(their extra statistics and rounds are not in the privacy budget)"
        )
    m = privacy.dp_min_survivors
    if m is not None and not config.data.client_data and m > config.data.clients:
        raise ConfigError(f"privacy.dp_min_survivors {m} exceeds the {config.data.clients} clients")
