"""The audit grid: which protocols, noise levels, client counts and splits to sweep.

Read from a JSON file (keys = field names; see experiments/audit_small.json) and/or flags; flags
given explicitly override the file. `validate` raises ConfigError naming the first bad value.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..privacy.accounting import available as accountants
from ..privacy.cohort import DEFAULT_MIN_COHORT
from ..secure_sum import registry


@dataclass
class LeakageConfig:
    """The topic-inference experiment: topic-pure clients, masks of the first `blocks` blocks.

    Per topic, `shadows` clients label the attacker's reference views and `targets` clients are
    attacked; the server views come from cohorts of `cohort` clients. Only the first
    `entries_per_layer` mask entries of each layer are aggregated (the server view of a full
    135M-weight mask under ckks is gigabytes; a slice is enough to measure leakage).
    """

    topics: int = 4
    shadows: int = 3
    targets: int = 4
    blocks: int = 1
    entries_per_layer: int = 16384
    cohort: int = 4
    samples_per_client: int = 2


@dataclass
class AuditConfig:
    model: str = "smollm2-135m"
    corpus: str = "wiki-topics"
    protocols: list[str] = field(default_factory=lambda: ["plaintext", "additive", "ckks"])
    clients: list[int] = field(default_factory=lambda: [4])
    splits: list[str] = field(default_factory=lambda: ["topic"])
    rr_epsilons: list[float] = field(default_factory=lambda: [1.0, 4.0])
    dp_epsilons: list[float] = field(default_factory=lambda: [1.0, 8.0])
    # stats mode, one-shot, one release: distributed noise at window and client level, and local
    # noise at the same budget and public clip (audit.noisy_stats); empty: not swept
    stats_dp_epsilons: list[float] = field(default_factory=list)
    dp_delta: float = 1e-5
    dp_clip: float = 1000.0
    accountant: str = "rdp"
    cost_clients: list[int] = field(default_factory=lambda: [3, 4])
    samples_per_client: int = 4
    seqlen: int = 256
    eval_windows: int = 8
    sparsity: float = 0.5
    group: str = "layer"
    calibration: str = "sequential"
    min_cohort: int = DEFAULT_MIN_COHORT
    seed: int = 0
    reproducible_noise: bool = False  # seed noise and protocol secrets from `seed`: not private
    device: str = "auto"
    batch_size: int = 4
    leakage: LeakageConfig = field(default_factory=LeakageConfig)

    @classmethod
    def load(cls, path: str | Path | None, overrides: dict[str, Any]) -> AuditConfig:
        """The file's settings (if any), then every override that is not None."""
        settings: dict[str, Any] = {}
        if path is not None:
            file = Path(path).expanduser()
            try:
                settings = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"cannot read --config {path}: {exc}") from exc
            except json.JSONDecodeError as exc:
                raise ConfigError(f"--config {path} is not valid JSON: {exc.msg}") from exc
            if not isinstance(settings, dict):
                raise ConfigError(f"--config {path} must hold a JSON object")
        settings.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(f"unknown audit setting(s): {', '.join(unknown)}")
        leakage = settings.pop("leakage", {})
        if isinstance(leakage, dict):
            leak_known = {f.name for f in fields(LeakageConfig)}
            bad = sorted(set(leakage) - leak_known)
            if bad:
                raise ConfigError(f"unknown leakage setting(s): {', '.join(bad)}")
            leakage = LeakageConfig(**leakage)
        config = cls(**settings, leakage=leakage)
        config.validate()
        return config

    def validate(self) -> None:
        def positive_ints(name: str, values: list[int]) -> None:
            if not values or any(not isinstance(v, int) or v < 1 for v in values):
                raise ConfigError(f"{name} must be a non-empty list of positive integers")

        for name in self.protocols:
            registry.get(name)
        positive_ints("clients", self.clients)
        positive_ints("cost_clients", self.cost_clients)
        for split in self.splits:
            if split not in ("iid", "topic"):
                raise ConfigError(f"unknown split {split!r} (use iid or topic)")
        for name, values in (("rr_epsilons", self.rr_epsilons), ("dp_epsilons", self.dp_epsilons),
                             ("stats_dp_epsilons", self.stats_dp_epsilons)):  # fmt: skip
            if any(not isinstance(v, int | float) or not v > 0 for v in values):
                raise ConfigError(f"{name} must hold positive numbers")
        checks = [
            (0 < self.dp_delta < 1, f"dp_delta must lie in (0, 1), got {self.dp_delta}"),
            (self.dp_clip > 0, f"dp_clip must be positive, got {self.dp_clip}"),
            (self.accountant in accountants(), f"unknown accountant {self.accountant!r}"),
            (0 < self.sparsity < 1, f"sparsity must lie in (0, 1), got {self.sparsity}"),
            (self.group in ("layer", "row", "column"), f"unknown group {self.group!r}"),
            (
                self.calibration in ("sequential", "one-shot"),
                f"unknown calibration {self.calibration!r}",
            ),
            (self.samples_per_client >= 1, "samples_per_client must be at least 1"),
            (self.seqlen >= 8, "seqlen must be at least 8"),
            (self.eval_windows >= 1, "eval_windows must be at least 1"),
            (self.min_cohort >= 1, "min_cohort must be at least 1"),
            (self.leakage.topics >= 2, "leakage.topics must be at least 2"),
            (self.leakage.shadows >= 1 and self.leakage.targets >= 1, "leakage needs clients"),
            (self.leakage.cohort >= 2, "leakage.cohort must be at least 2"),
            (self.leakage.blocks >= 1, "leakage.blocks must be at least 1"),
        ]
        for ok, problem in checks:
            if not ok:
                raise ConfigError(problem)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
