"""Distributed DP of the stats upload (`--dp-noise distributed`): public release parameters, what
a client submits, what the server decodes. The mechanism is `privacy.distributed_dp`; the
pipeline wiring (one release per stats round) is in `pipeline.client_step` / `strategies`.

One release covers the input groups of a round's blocks (one-shot: every block; sequential: one).
Its public parameters (`ReleaseSpec`), fixed by the server without any client's data:

* the group leaders in order and their widths; a client's per-window vector is the concatenation
  of its groups' per-window statistics (one row per calibration window);
* a positive public scale per feature (`--dp-domain`): the client divides by it before clipping,
  the server multiplies the decoded sum back. `raw`: 1; `group`: one scale per input group (the
  mean public statistic of the group); `feature`: the public mean of each feature. The scales
  come from public text run through the public model (`reference_statistics`), so the
  normalisation, like the clip, is a function of public information only;
* the clip C: the `CLIP_QUANTILE` quantile of the normalised per-window norms of that public text
  (no budget spent); an explicit `--dp-clip` overrides it (in normalised units).

Any public scales and clip chosen without a client's data keep the accounted guarantee (the
sensitivity is sqrt(2) C in the normalised domain whatever they are); they only move utility.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ..client import fixed_point
from ..errors import PrivacyError, ProtocolError
from ..randomness import RandomSource
from .distributed_dp import DistributedPlan, client_upload, plan_release, server_decode

CLIP_QUANTILE = 0.5
"""The clip is this quantile of the public text's normalised per-window norms."""
SCALE_FLOOR = 1e-12
"""Public scales below this (features that never fire on public text) are raised to it."""


def chunk_name(leader: str, limb: int) -> str:
    """The chunk of limb `limb` of a group's residues (the limbs upload's names: the two
    uploads never occur in one run)."""
    return f"{leader}#{limb}"


def default_min_survivors(
    protocol: str, options: Mapping[str, Any], clients: int, min_cohort: int
) -> int:
    """The fewest contributors whose sum the protocol ever releases, the default number of honest
    shares each client's noise is sized for: `additive`: its survivor quorum
    max(t, floor(2n/3) + 1) and the minimum cohort; `ckks`: the minimum cohort (the key authority
    refuses to decrypt fewer)."""
    if protocol == "additive" and clients >= 2:
        from ..secure_sum.additive import params

        k = options.get("neighbors") or params.default_neighbors(clients)
        t = options.get("threshold") or params.default_threshold(k)
        return min(clients, max(params.quorum(clients, t), min_cohort))
    return min(clients, min_cohort)


@dataclass(frozen=True)
class ReleaseSpec:
    """The public parameters of one release (module docstring)."""

    leaders: tuple[str, ...]
    widths: tuple[int, ...]
    scales: Mapping[str, np.ndarray]  # leader -> positive float64 [width]
    clip: float

    @property
    def dimension(self) -> int:
        return sum(self.widths)

    def stack(self, per_window: Mapping[str, np.ndarray]) -> np.ndarray:
        """[windows, dimension]: each group's per-window statistics divided by its scales."""
        parts = []
        for leader, width in zip(self.leaders, self.widths, strict=True):
            values = np.asarray(per_window[leader], dtype=np.float64)
            if values.ndim != 2 or values.shape[1] != width:
                raise ProtocolError(f"statistics of {leader} do not have {width} features")
            parts.append(values / self.scales[leader])
        return np.concatenate(parts, axis=1)

    def split(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        """A [dimension] vector back into per-leader pieces, multiplied by the scales."""
        out, start = {}, 0
        for leader, width in zip(self.leaders, self.widths, strict=True):
            out[leader] = vector[start : start + width] * self.scales[leader]
            start += width
        return out


def public_scales(reference: Mapping[str, np.ndarray], domain: str) -> dict[str, np.ndarray]:
    """Per leader, the public scale of each feature from `reference[leader]` [windows, width]
    (statistics of public text): 1 (`raw`), the group's mean (`group`), each feature's mean
    (`feature`)."""
    scales = {}
    for leader, values in reference.items():
        values = np.asarray(values, dtype=np.float64)
        mean = values.mean(axis=0)
        if domain == "raw":
            scale = np.ones_like(mean)
        elif domain == "group":
            scale = np.full_like(mean, max(float(mean.mean()), SCALE_FLOOR))
        else:
            scale = np.maximum(mean, SCALE_FLOOR)
        scales[leader] = scale
    return scales


def public_spec(
    reference: Mapping[str, np.ndarray],
    leaders: Sequence[str],
    domain: str,
    clip: float | None = None,
    windows_per_unit: int = 1,
) -> ReleaseSpec:
    """The spec of a release over `leaders` from public statistics `reference` (every leader's
    [windows, width]); `clip` None: `windows_per_unit` (1 for window-level DP, the windows per
    client for client-level) times the CLIP_QUANTILE of the normalised reference norms."""
    scales = public_scales({name: reference[name] for name in leaders}, domain)
    widths = tuple(int(np.asarray(reference[name]).shape[1]) for name in leaders)
    draft = ReleaseSpec(tuple(leaders), widths, scales, 1.0)
    if clip is None:
        norms = np.linalg.norm(draft.stack(reference), axis=1)
        clip = windows_per_unit * float(np.quantile(norms, CLIP_QUANTILE))
        if not (math.isfinite(clip) and clip > 0):
            raise PrivacyError("the public text gives no positive clip norm: set --dp-clip")
    return ReleaseSpec(draft.leaders, widths, scales, float(clip))


@lru_cache(maxsize=64)
def plan_for(
    epsilon: float,
    delta: float,
    releases: int,
    clip: float,
    dimension: int,
    windows: int,
    min_survivors: int,
    clients: int,
    mechanism: str,
    unit: str,
) -> DistributedPlan:
    """`distributed_dp.plan_release`, cached (clients and server compute the same plan)."""
    return plan_release(
        epsilon, delta, releases, clip, dimension, windows, min_survivors, clients, mechanism, unit
    )


def limbs(plan: DistributedPlan) -> int:
    """Limbs per residue: one while 2^b - 1 fits the secure sum's limb, else 24-bit limbs."""
    return fixed_point.limb_count(plan.encoding.modulus_bits)


def chunk_bound(plan: DistributedPlan) -> int:
    """The secure sum's per-entry bound of the release's chunks."""
    return min(plan.encoding.bound, fixed_point.LIMB_BOUND)


def chunk_lengths(spec: ReleaseSpec, plan: DistributedPlan) -> dict[str, int]:
    return {
        chunk_name(leader, k): width
        for leader, width in zip(spec.leaders, spec.widths, strict=True)
        for k in range(limbs(plan))
    }


def client_chunks(
    per_window: Mapping[str, np.ndarray],
    spec: ReleaseSpec,
    plan: DistributedPlan,
    source: RandomSource,
) -> dict[str, np.ndarray]:
    """A client's chunks of one release: its normalised per-window statistics clipped, rounded,
    noised by its share and reduced mod 2^b (`client_upload`), split per leader and limb."""
    residues = client_upload(spec.stack(per_window), plan, source)
    out: dict[str, np.ndarray] = {}
    start = 0
    for leader, width in zip(spec.leaders, spec.widths, strict=True):
        piece = residues[start : start + width]
        start += width
        for k, limb in enumerate(fixed_point.to_limbs(piece, plan.encoding.modulus_bits)):
            out[chunk_name(leader, k)] = limb
    return out


def server_totals(
    sums: Mapping[str, np.ndarray], spec: ReleaseSpec, plan: DistributedPlan, contributors: int
) -> dict[str, np.ndarray]:
    """Per leader, the noisy summed statistics (statistic units) from the summed chunks; refuses
    (ConfigError) a sum over fewer contributors than the noise was sized for."""
    count = limbs(plan)
    joined = np.concatenate(
        [
            fixed_point.from_limbs([sums[chunk_name(leader, k)] for k in range(count)])
            for leader in spec.leaders
        ]
    )
    return spec.split(server_decode(joined, plan, contributors))
