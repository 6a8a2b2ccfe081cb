"""Public statistics for the distributed-DP release parameters (`privacy.distributed_stats`).

The server runs public text (`Workbench.reference_windows`) through the dense public model and
keeps every input group's per-window statistics; the release's scales and clip come from them.
No client data is involved, so they are public parameters of the mechanism.
"""

from __future__ import annotations

import numpy as np

from ..client.calibrate import BlockwiseCalibration, shared_input_groups
from .workbench import Workbench

REFERENCE_WINDOWS = 16
"""Public windows the scales and the clip are estimated from."""


class WindowRecorder:
    """A `stats_transform` keeping each block's per-window statistics per layer (float64 numpy)
    and returning the exact sums (what the walk then holds: never uploaded under distributed
    noise, which submits the recorded windows through `distributed_stats` instead)."""

    def __init__(self) -> None:
        self.per_window: dict[int, dict[str, np.ndarray]] = {}

    def __call__(self, block: int, per_sample: dict) -> dict:
        self.per_window[block] = {
            name: values.double().cpu().numpy() for name, values in per_sample.items()
        }
        return {name: values.double().sum(dim=0) for name, values in per_sample.items()}

    def take(self, block: int) -> dict[str, np.ndarray]:
        """Block `block`'s per-window statistics (forgotten after)."""
        return self.per_window.pop(block)


def reference_statistics(
    bench: Workbench, seqlen: int, batch_size: int, count: int = REFERENCE_WINDOWS
) -> tuple[dict[str, np.ndarray], dict[int, list[list[str]]]]:
    """({group leader: [windows, features]}, {block: input groups}) of every block on public
    text, with the dense model (one-shot activations)."""
    recorder = WindowRecorder()
    windows = bench.reference_windows(count, seqlen)
    walk = BlockwiseCalibration(bench.model, windows, batch_size, recorder)
    out: dict[str, np.ndarray] = {}
    groups: dict[int, list[list[str]]] = {}
    while not walk.done:
        block, layers = walk.index, walk.layers
        stats = walk.statistics()
        recorded = recorder.take(block)
        groups[block] = shared_input_groups(layers, stats)
        for group in groups[block]:
            out[group[0]] = recorded[group[0]]
        walk.propagate_dense()
    return out, groups
