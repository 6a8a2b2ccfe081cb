"""Distributed DP of the activation statistics through the secure sum: the one entry point.

`plan_release` fixes every public parameter of R releases (encoding and noise share);
`client_upload` turns a client's per-window statistics into the residues it submits (entries in
[0, plan.encoding.bound]); `server_decode` turns the secure sum of those residues into the noisy
statistics, floored like `privacy.statistics` (post-processing). `refuse_unprotected` must be
called with the protocol name: under `plaintext` the server would see each client's share.
The mechanism, encoding and accounting are in `protocols/distributed_dp.md`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..randomness import RandomSource
from . import distributed_accounting as accounting
from . import distributed_encoding as encoding_
from .statistics import FLOOR_STDS

UNITS = {
    "window": "replace-one calibration window (the number of windows per client is public)",
    "client": "replace one client's whole calibration set (the number of clients is public)",
}
PROTECTED_PROTOCOLS = ("additive", "ckks")
"""Protocols under which the server sees only the sum (each client's residues stay hidden)."""


def refuse_unprotected(protocol: str) -> None:
    """ConfigError unless `protocol` hides each client's residues from the server."""
    if protocol not in PROTECTED_PROTOCOLS:
        raise ConfigError(
            f"--dp-noise distributed needs a secure protocol ({', '.join(PROTECTED_PROTOCOLS)}):"
            f" under {protocol!r} the server sees each client's noise share; use --dp-noise local"
        )


@dataclass(frozen=True)
class DistributedPlan:
    """The public parameters of every release: who adds what, and what it certifies."""

    unit: str  # "window" (sample level) or "client"
    encoding: encoding_.Encoding
    noise: accounting.DistributedNoise
    epsilon_target: float

    def report(self) -> dict[str, float | int | str]:
        """What results.json says: the guarantee against the sum, and against one share."""
        noise, enc = self.noise, self.encoding
        return {
            "mechanism": f"distributed {noise.mechanism}",
            "adjacency": UNITS[self.unit],
            "epsilon": self.epsilon_target,
            "delta": noise.delta,
            "epsilon_spent": round(noise.epsilon(), 6),
            "epsilon_if_one_share_is_seen": round(noise.epsilon(1), 6),
            "min_survivors": noise.min_survivors,
            "max_contributors": noise.max_contributors,
            "releases": noise.releases,
            "clip": enc.clip,
            "l2_sensitivity": round(noise.l2_sensitivity / enc.gamma, 6),
            "sum_noise_std_at_min_survivors": round(
                noise.sum_std(noise.min_survivors) / enc.gamma, 6
            ),
            "modulus_bits": enc.modulus_bits,
            "accountant": "Skellam / distributed discrete Gaussian RDP + dp-accounting 0.6",
        }


def plan_release(
    epsilon: float,
    delta: float,
    releases: int,
    clip: float,
    dimension: int,
    windows: int,
    min_survivors: int,
    max_contributors: int,
    mechanism: str = "skellam",
    unit: str = "window",
) -> DistributedPlan:
    """Calibrate the share so that any >= `min_survivors` honest shares make `releases` releases
    (epsilon, delta)-DP for `unit` adjacency, and size the modulus for `max_contributors`.

    With `unit="client"` a client's windows are summed before clipping (its whole set is one
    vector of norm <= clip), so `client_upload` encodes one vector.
    """
    if unit not in UNITS:
        raise ConfigError(f"unknown DP unit {unit!r} (use {', '.join(UNITS)})")
    vectors = windows if unit == "window" else 1
    probe = encoding_.plan_encoding(clip, dimension, vectors, max_contributors, 0.0)
    l2, l1 = accounting.replace_one_sensitivity(probe.window_bound, dimension)
    noise = accounting.calibrate(
        mechanism, epsilon, delta, releases, l2, l1, dimension, min_survivors, max_contributors
    )
    enc = encoding_.plan_encoding(
        clip, dimension, vectors, max_contributors, noise.sum_std(max_contributors)
    )
    return DistributedPlan(unit, enc, noise, epsilon)


def client_upload(windows: np.ndarray, plan: DistributedPlan, source: RandomSource) -> np.ndarray:
    """One client's residues for one release from its [windows, dimension] statistics: clip,
    scale, round, add its noise share (from `source`: see `distributed_accounting.share_source`),
    reduce mod 2^b."""
    windows = np.asarray(windows, dtype=np.float64)
    if plan.unit == "client":
        windows = windows.sum(axis=0, keepdims=True)
    ints = encoding_.integer_statistics(windows, plan.encoding, source)
    share = plan.noise.sample(source, plan.encoding.dimension)
    return encoding_.encode_noisy(ints, share, plan.encoding)


def server_decode(residue_sum: np.ndarray, plan: DistributedPlan, contributors: int) -> np.ndarray:
    """The noisy sum of the clipped statistics (statistic units), floored at FLOOR_STDS noise
    standard deviations of a sum of `contributors` shares (post-processing, as in
    `privacy.statistics`: Wanda needs non-negative statistics)."""
    if contributors < plan.noise.min_survivors:
        raise ConfigError(
            f"{contributors} contributors are fewer than the {plan.noise.min_survivors} survivors "
            "the noise was sized for: the guarantee does not hold, refusing to release"
        )
    decoded = encoding_.decode_sum(residue_sum, plan.encoding)
    floor = FLOOR_STDS * plan.noise.sum_std(contributors) / plan.encoding.gamma
    return np.maximum(decoded, floor)
