"""Stats rounds under distributed DP (`--dp-noise distributed`): both sides of one release.

Server (`ServerRelease`): from public text run through the dense public model
(`dp_reference.reference_statistics`) it fixes each release's public parameters (the group
leaders, scales, clip: `distributed_stats.public_spec`) and sends them with the `dp-sums` upload
command; after the secure sum it decodes the noisy totals (`distributed_stats.server_totals`,
refused over fewer contributors than the minimum survivors). No exponent round: the scale is
public, nothing data-dependent leaves a client unnoised.

Client (`client_release`): its per-window statistics of the round's blocks (recorded by the
walk's `WindowRecorder`) become its noisy residues (`distributed_stats.client_chunks`), with its
noise share from its own secret source. It computes the plan itself from the run's privacy
settings and public facts (releases: 1 one-shot, one per block sequential) and refuses more
releases than that plan certifies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..client.calibrate import BlockwiseCalibration, shared_input_groups
from ..errors import PrivacyError, ProtocolError
from ..privacy import distributed_stats as ds
from ..privacy.distributed_dp import DistributedPlan
from ..privacy.settings import PrivacySettings
from ..randomness import RandomSource
from .dp_reference import WindowRecorder

UPLOAD = "dp-sums"
SCALE_PREFIX = "dp-scale/"


def release_plan(
    privacy: PrivacySettings,
    spec: ds.ReleaseSpec,
    releases: int,
    windows: int,
    clients: int,
) -> DistributedPlan:
    """The plan of one release under `privacy` (resolved: distributed, with min survivors)."""
    if privacy.dp_stats_epsilon is None or privacy.dp_min_survivors is None:
        raise PrivacyError("distributed DP needs resolved privacy settings (epsilon, survivors)")
    return ds.plan_for(
        float(privacy.dp_stats_epsilon), float(privacy.dp_delta), int(releases), spec.clip,
        spec.dimension, int(windows), int(privacy.dp_min_survivors), int(clients),
        privacy.dp_mechanism, privacy.dp_unit,
    )  # fmt: skip


@dataclass
class ServerRelease:
    """The server's public parameters of every release of one stats calibration."""

    privacy: PrivacySettings
    reference: Mapping[str, np.ndarray]  # leader -> public per-window statistics
    groups: Mapping[int, list[list[str]]]  # block -> its input groups (leader first)
    windows: int
    clients: int
    releases: int
    plans: list[dict[str, Any]] = field(default_factory=list)  # each release's report

    def spec(self, leaders: list[str]) -> ds.ReleaseSpec:
        per_unit = self.windows if self.privacy.dp_unit == "client" else 1
        return ds.public_spec(
            self.reference, leaders, self.privacy.dp_domain, self.privacy.dp_clip, per_unit
        )

    def command(
        self, spec: ds.ReleaseSpec, aggregation: int, blocks: list[int], one_shot: bool
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(settings, arrays) of the `prepare` command of one release."""
        settings = {"aggregation": aggregation, "upload": UPLOAD, "blocks": blocks,
                    "one_shot": one_shot, "leaders": list(spec.leaders), "clip": spec.clip,
                    "clients": self.clients}  # fmt: skip
        arrays = {SCALE_PREFIX + leader: spec.scales[leader] for leader in spec.leaders}
        return settings, arrays

    def report(self) -> dict[str, Any] | None:
        """results.json `distributed_dp`: the first release's plan, and every release's
        contributors (None before any release)."""
        if not self.plans:
            return None
        return {**self.plans[0], "releases_made": len(self.plans),
                "contributors_per_release": [p["contributors"] for p in self.plans],
                "domain": self.privacy.dp_domain,
                "clip_from": "--dp-clip" if self.privacy.dp_clip is not None else
                f"public text: quantile {ds.CLIP_QUANTILE} of normalised window norms"}  # fmt: skip

    def plan(self, spec: ds.ReleaseSpec) -> DistributedPlan:
        return release_plan(self.privacy, spec, self.releases, self.windows, self.clients)

    def decode(
        self, sums: Mapping[str, np.ndarray], spec: ds.ReleaseSpec, contributors: int
    ) -> dict[str, np.ndarray]:
        plan = self.plan(spec)
        totals = ds.server_totals(sums, spec, plan, contributors)
        self.plans.append({**plan.report(), "contributors": contributors,
                           "dimension": spec.dimension})  # fmt: skip
        return totals


def walk_blocks(
    walk_at: Callable[[int], BlockwiseCalibration],
    recorder: WindowRecorder,
    blocks: list[int],
    one_shot: bool,
) -> tuple[list[list[str]], dict[str, np.ndarray]]:
    """(input groups, {leader: per-window statistics}) of `blocks`, walking the node's
    calibration (`walk_at(block)` checks it is there; one-shot: on through the dense block)."""
    groups: list[list[str]] = []
    per_window: dict[str, np.ndarray] = {}
    for block in blocks:
        walk = walk_at(block)
        stats = walk.statistics()
        recorded = recorder.take(walk.index)
        for group in shared_input_groups(walk.layers, stats):
            groups.append(group)
            per_window[group[0]] = recorded[group[0]]
        if one_shot:
            walk.propagate_dense()
    return groups, per_window


def client_spec(settings: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
                per_window: Mapping[str, np.ndarray]) -> ds.ReleaseSpec:  # fmt: skip
    """The release's public parameters as the server sent them, checked against the node's own
    input groups."""
    leaders = [str(name) for name in settings["leaders"]]
    if sorted(leaders) != sorted(per_window):
        raise ProtocolError("the server's release names other input groups than this node's")
    scales = {}
    for leader in leaders:
        scale = np.asarray(arrays.get(SCALE_PREFIX + leader), dtype=np.float64)
        width = np.asarray(per_window[leader]).shape[1]
        if scale.shape != (width,) or not np.isfinite(scale).all() or scale.min() <= 0:
            raise ProtocolError(f"the server sent no valid public scale for {leader}")
        scales[leader] = scale
    widths = tuple(int(np.asarray(per_window[leader]).shape[1]) for leader in leaders)
    clip = float(settings["clip"])
    if not (np.isfinite(clip) and clip > 0):
        raise ProtocolError(f"the server sent an invalid clip norm {clip!r}")
    return ds.ReleaseSpec(tuple(leaders), widths, scales, clip)


def client_release(
    privacy: PrivacySettings,
    per_window: Mapping[str, np.ndarray],
    command: tuple[Mapping[str, Any], Mapping[str, np.ndarray]],
    released: list[int],
    releases: int,
    source: RandomSource,
) -> dict[str, np.ndarray]:
    """The node's chunks of the next release (`released` grows by one); PrivacyError beyond the
    `releases` its plan certifies."""
    settings, arrays = command
    if len(released) >= releases:
        raise PrivacyError(
            f"statistics released {len(released)} times, the budget allows {releases}; "
            "refusing another release"
        )
    spec = client_spec(settings, arrays, per_window)
    windows = int(np.asarray(next(iter(per_window.values()))).shape[0])
    plan = release_plan(privacy, spec, releases, windows, int(settings["clients"]))
    chunks = ds.client_chunks(per_window, spec, plan, source)
    released.append(int(settings["aggregation"]))
    return chunks
