"""Sample-level (eps, delta)-DP of the activation statistics behind a client's Wanda mask.

A client's text enters its mask only through a[j] = sum over samples and tokens of x_j^2. For one
block, each calibration sample s contributes a vector v_s (its per-feature squared norms for every
prunable linear of the block, with linears that read the same input counted once). The mechanism
clips each v_s to L2 norm C, sums, and adds N(0, sigma^2 (sqrt(2) C)^2) per coordinate.

Adjacency: replace one window. Every client calibrates on exactly --samples-per-client windows of
--seqlen tokens, a public number (the pipeline checks it and uploads no token count), so the
neighbouring dataset of a client's calibration differs in the content of one window, not in
their number. Replacing v_s by v_s' moves the clipped sum by ||v_s - v_s'|| <= sqrt(2) C: both
are non-negative (squared norms) with norm <= C, so <v_s, v_s'> >= 0 and
||v_s - v_s'||^2 <= 2 C^2. (Add/remove-one would have sensitivity C, but it cannot hold when the
count is public or uploaded exactly; with sensitivity C the reported eps 8 over 30 releases was
really about 12.3.) With noise std sigma * sqrt(2) C this is the Gaussian mechanism with
multiplier sigma for replace-one adjacency, which is what the accountant certifies.
Every block is one release (sequential calibration chooses block l's inputs from earlier releases:
adaptive composition, which the accountants cover). Masks, pruning and anything downstream are
post-processing, so the client's whole mask is (eps, delta)-DP for replacing one sample.

The release is floored at one noise standard deviation s = sigma * sqrt(2) C: with
y = clipped sum + N(0, s^2) the mechanism's output, each coordinate is released as
max(y_j, FLOOR_STDS * s), with FLOOR_STDS = 1. The floor depends only on y and the public sigma
and C, so it is post-processing:
the accountant's epsilon is unchanged. It matters because with few samples per client most
features' clipped sums are far below the noise s. Clamping those at 0 instead gave about
half the features a statistic of exactly 0, hence a Wanda score |W| * sqrt(a) of 0 for whole input
columns, which were then pruned in full (perplexity ~1e6 on SmolLM2-135M at eps 8-32). At the
floor, noise-dominated features (84% of pure-noise coordinates at one standard deviation) share
one value, so their scores are |W| times one constant and pruning degrades towards magnitude
pruning; features whose statistic clears the noise keep it. As sigma -> 0 the floor vanishes and the
release tends to the clipped sum.
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

FLOOR_STDS = 1.0
"""The released statistics are floored at FLOOR_STDS noise standard deviations."""

ADJACENCY = "replace-one calibration window (the number of windows per client is public)"
SENSITIVITY_PER_CLIP = math.sqrt(2.0)
"""L2 sensitivity of the clipped sum, in units of C, under replace-one adjacency of non-negative
vectors (module docstring)."""


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
    norms of each sample for each linear of the block; returns the noisy sums [in] (float64) on
    the same devices, each floored at `floor` = FLOOR_STDS * noise_std (post-processing, see the
    module docstring): max(clipped sum + noise_std * N(0, 1), floor), where
    noise_std = sigma * sensitivity and sensitivity = sqrt(2) * C (replace-one).
    """

    budget: StatisticsBudget
    source: RandomSource
    sigma: float = field(init=False)
    released: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sigma = self.budget.noise_multiplier()

    @property
    def sensitivity(self) -> float:
        """L2 sensitivity of one release under replace-one adjacency: sqrt(2) * C."""
        return SENSITIVITY_PER_CLIP * self.budget.clip

    @property
    def noise_std(self) -> float:
        """Standard deviation of the Gaussian noise per coordinate: sigma * sqrt(2) * C."""
        return self.sigma * self.sensitivity

    @property
    def floor(self) -> float:
        """The smallest value released: FLOOR_STDS noise standard deviations."""
        return FLOOR_STDS * self.noise_std

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
        # Post-processing of the Gaussian mechanism's output (module docstring).
        noisy = np.maximum(clipped + self.noise_std * noise, self.floor)
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
            "adjacency": ADJACENCY,
            "sensitivity": round(self.sensitivity, 6),
            "noise_multiplier": round(self.sigma, 6),
            "noise_std": round(self.noise_std, 6),
            "release_floor": round(self.floor, 6),
            "releases_budgeted": self.budget.releases,
            "releases_made": len(self.released),
            "accountant": self.budget.accountant,
            "epsilon_spent": round(accountant.epsilon(self.sigma, self.budget.delta, releases), 6),
        }
