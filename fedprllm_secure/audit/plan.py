"""The points of an audit sweep, each with a stable id (its result file's name)."""

from __future__ import annotations

from dataclasses import dataclass

from .config import AuditConfig

KINDS = ("dense", "magnitude", "utility", "cost", "leakage", "leakage-dp")
MECHANISMS = ("none", "rr", "dp", "ddp", "ddp-client", "ldp-stats")
STATS_MECHANISMS = {
    "ddp": "distributed DP statistics (window)",
    "ddp-client": "distributed DP statistics (client)",
    "ldp-stats": "local DP statistics (stats mode)",
}
"""Stats-mode mechanisms (one-shot, one release: `audit.noisy_stats`)."""


@dataclass(frozen=True)
class Point:
    """One measurement. `utility`: perplexity of the federated model (clients, split, mechanism,
    epsilon); `cost`: bytes and time of `protocol` with `clients` clients; `leakage`: the topic
    attack (`leakage-dp`: on masks with DP statistics at `epsilon`); `dense`: the unpruned model;
    `magnitude`: the calibration-free reference (what Wanda's statistics add)."""

    kind: str
    clients: int = 0
    split: str = ""
    mechanism: str = "none"
    epsilon: float | None = None
    protocol: str = ""

    @property
    def id(self) -> str:
        if self.kind == "utility":
            noise = "none" if self.epsilon is None else f"{self.mechanism}-eps{self.epsilon:g}"
            return f"utility-{self.split}-c{self.clients}-{noise}"
        if self.kind == "cost":
            return f"cost-{self.protocol}-c{self.clients}"
        if self.kind == "leakage-dp":
            return f"leakage-dp-eps{self.epsilon:g}"
        return self.kind

    def describe(self) -> str:
        """What measuring this point does, in words (the progress display shows it)."""
        noise = "no noise"
        if self.epsilon is not None:
            names = {"rr": "randomized response", "dp": "DP statistics", **STATS_MECHANISMS}
            name = names[self.mechanism]
            noise = f"{name} eps {self.epsilon:g}"
        return {
            "dense": "perplexity of the dense model",
            "magnitude": "perplexity after magnitude pruning (no data)",
            "utility": f"perplexity of the federated mask: {self.clients} clients, {self.split} "
            f"split, {noise}",
            "cost": f"cost of the secure sum: {self.protocol}, {self.clients} clients",
            "leakage": "topic attack on masks, server views and released sums",
            "leakage-dp": f"topic attack on masks with {noise}",
        }[self.kind]

    @property
    def setting(self) -> tuple[int, str]:
        """Points with the same setting share one calibration per client."""
        return (self.clients, self.split)


def plan(config: AuditConfig) -> list[Point]:
    """Every point of the sweep, grouped by setting so calibrations are reused."""
    points = [Point("dense"), Point("magnitude")]
    for clients in config.clients:
        for split in config.splits:
            points.append(Point("utility", clients, split))
            points += [Point("utility", clients, split, "rr", e) for e in config.rr_epsilons]
            points += [Point("utility", clients, split, "dp", e) for e in config.dp_epsilons]
            points += [
                Point("utility", clients, split, mechanism, e)
                for mechanism in STATS_MECHANISMS
                for e in config.stats_dp_epsilons
            ]
    for protocol in config.protocols:
        points += [Point("cost", n, protocol=protocol) for n in config.cost_clients]
    points.append(Point("leakage"))
    points += [Point("leakage-dp", mechanism="dp", epsilon=e) for e in config.dp_epsilons]
    return points
