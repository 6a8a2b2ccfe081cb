"""The run config of a federated pruning run on Flower, checked before any node is asked anything.

Pure (no flwr import): `PruningSettings.from_run_config` reads `[tool.flwr.app.config]` /
`flwr run --run-config`. A secure protocol's minimum cohort defaults to 3, as in `simulate`: the
run is refused outright when `num-nodes` is smaller, the cohort goes into the protocol's cohort
option (the ckks key authority / the additive unmasking clients refuse smaller sums themselves),
and the ServerApp applies the same release guard as `simulate` to the sum.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...errors import ConfigError
from ...privacy.cohort import min_cohort_for
from ...secure_sum import registry


@dataclass
class PruningSettings:
    protocol: str = "plaintext"
    options: dict[str, Any] = field(default_factory=dict)
    sparsity: float = 0.5
    group: str = "layer"
    seed: int = 0
    pruner: str = "wanda"
    calibration: str = "sequential"
    samples_per_client: int = 8
    seqlen: int = 512
    batch_size: int = 8
    scaling: bool = False
    num_nodes: int = 3  # wait for this many nodes
    # fail unless at least this many contribute, and the releasing party (ckks key authority,
    # additive unmasking clients) refuses smaller sums; None: 3 under a secure protocol, 1 under
    # plaintext (as `simulate --min-cohort`)
    min_cohort: int | None = None
    node_wait_s: float = 60.0
    calibrate_timeout_s: float = 600.0
    round_timeout_s: float = 120.0
    poll_interval_s: float = 0.1  # <= 0: use Grid.send_and_receive (it sleeps 3 s per poll)
    chunk_entries: int = 1 << 24  # consecutive layers per protocol chunk, about this many entries

    @classmethod
    def from_run_config(cls, config: Mapping[str, Any]) -> PruningSettings:
        s = cls()
        options = config.get("protocol-options", "{}")
        try:
            parsed = json.loads(options) if isinstance(options, str) else dict(options)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"protocol-options is not JSON: {exc}") from exc
        s.options = {k: v for k, v in parsed.items()}
        config = dict(config)
        if "min-clients" in config:  # the key's earlier name
            config.setdefault("min-cohort", config.pop("min-clients"))
        for key, value in config.items():
            name = key.replace("-", "_")
            if name in ("options", "protocol_options") or not hasattr(s, name):
                continue
            current = getattr(s, name)
            setattr(s, name, type(current)(value) if current is not None else int(value))
        s.validate()
        return s

    @property
    def secure(self) -> bool:
        return registry.get(self.protocol).secure

    @property
    def cohort(self) -> int:
        """The minimum cohort: explicit `min-cohort`, else 3 (secure) or 1 (plaintext)."""
        return min_cohort_for(self.min_cohort, self.secure)

    def validate(self) -> None:
        """ConfigError for a run that must not start (before any node is asked anything)."""
        registry.get(self.protocol)
        if not 0.0 < self.sparsity < 1.0:
            raise ConfigError(f"sparsity must lie in (0, 1), got {self.sparsity}")
        if self.num_nodes < 1 or (self.min_cohort is not None and self.min_cohort < 1):
            raise ConfigError("num-nodes and min-cohort must be at least 1")
        if self.num_nodes < self.cohort:
            raise ConfigError(
                f"num-nodes {self.num_nodes} is below the minimum cohort {self.cohort} of "
                f"protocol {self.protocol!r}: a sum over so few nodes would reveal their masks "
                "(set num-nodes >= 3, or lower min-cohort explicitly if every node accepts it)"
            )
