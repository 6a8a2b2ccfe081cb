"""Sample-level (eps, delta)-DP of the activation statistics behind a client's Wanda mask.

A client's text enters its mask only through a[j] = sum over samples and tokens of x_j^2. For one
block, each calibration sample s contributes a vector v_s (its per-feature squared norms for every
prunable linear of the block, with linears that read the same input counted once). The mechanism
clips each v_s to L2 norm C, sums, and adds N(0, sigma^2 C^2) per coordinate: adding or removing
one sample moves the sum by at most C, so this is the Gaussian mechanism with multiplier sigma.
Every block is one release (sequential calibration chooses block l's inputs from earlier releases:
adaptive composition, which the accountants cover). Masks, pruning and anything downstream are
post-processing, so the client's whole mask is (eps, delta)-DP with respect to one sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ConfigError, PrivacyError
from ..randomness import RandomSource
from .accounting import DEFAULT_ACCOUNTANT, check_budget, get
from .sampling import standard_normal


def clip_rows(vectors: torch.Tensor, clip: float) -> torch.Tensor:
    """Scale each row of `vectors` [n, d] down to L2 norm at most `clip` (rows within stay)."""
    norms = vectors.norm(dim=1, keepdim=True)
    factors = torch.clamp(clip / torch.clamp(norms, min=1e-300), max=1.0)
    return vectors * factors


def _shared_inputs(per_sample: dict[str, torch.Tensor]) -> list[list[str]]:
    """Group the linears whose per-sample statistics are identical (they read the same input)."""
    groups: list[list[str]] = []
    for name, value in per_sample.items():
        for group in groups:
            first = per_sample[group[0]]
            if first.shape == value.shape and torch.equal(first, value):
                group.append(name)
                break
        else:
            groups.append([name])
    return groups


@dataclass(frozen=True)
class StatisticsBudget:
    """The user's target: (epsilon, delta) per client over `releases` releases, clip norm C."""

    epsilon: float
    delta: float
    clip: float
    releases: int
    accountant: str = DEFAULT_ACCOUNTANT

    def __post_init__(self) -> None:
        check_budget(self.epsilon, self.delta, self.releases)
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ConfigError(f"--dp-clip must be a positive finite number, got {self.clip}")

    def noise_multiplier(self) -> float:
        return get(self.accountant).noise_multiplier(self.epsilon, self.delta, self.releases)


@dataclass
class StatisticsMechanism:
    """Clip-sum-noise for one client, one call per block; refuses more calls than budgeted.

    Called as `mechanism(block_index, per_sample)` with `per_sample[name]` the [n, in] squared
    norms of each sample for each linear of the block; returns the noisy sums [in] (float64,
    clamped at 0, which is post-processing) on the same devices.
    """

    budget: StatisticsBudget
    source: RandomSource
    sigma: float = field(init=False)
    released: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sigma = self.budget.noise_multiplier()

    def __call__(self, block: int, per_sample: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if len(self.released) >= self.budget.releases:
            raise PrivacyError(
                f"statistics released {len(self.released)} times, the budget allows "
                f"{self.budget.releases}; refusing another release"
            )
        self.released.append(block)
        groups = _shared_inputs(per_sample)
        stacked = torch.cat(
            [per_sample[group[0]].double().cpu() for group in groups], dim=1
        )  # [n, d]: one column per distinct input feature of the block
        clipped = clip_rows(stacked, self.budget.clip).sum(dim=0).numpy()
        noise = standard_normal(self.source.child(f"block-{block}"), clipped.size)
        noisy = np.maximum(clipped + self.sigma * self.budget.clip * noise, 0.0)
        out: dict[str, torch.Tensor] = {}
        start = 0
        for group in groups:
            width = per_sample[group[0]].shape[1]
            piece = torch.from_numpy(noisy[start : start + width].copy())
            start += width
            for name in group:
                out[name] = piece.to(per_sample[name].device)
        return out

    def report(self) -> dict[str, float | int | str]:
        accountant = get(self.budget.accountant)
        releases = max(len(self.released), 1)
        return {
            "epsilon": self.budget.epsilon,
            "delta": self.budget.delta,
            "clip": self.budget.clip,
            "noise_multiplier": round(self.sigma, 6),
            "releases_budgeted": self.budget.releases,
            "releases_made": len(self.released),
            "accountant": self.budget.accountant,
            "epsilon_spent": round(accountant.epsilon(self.sigma, self.budget.delta, releases), 6),
        }
