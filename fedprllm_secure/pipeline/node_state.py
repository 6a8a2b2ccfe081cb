"""`ClientNode.save()` / `ClientNode.restore(env, saved)`: a node as (settings, arrays).

settings (JSON-ready dict):
    format         "fedprllm-secure/client-node/1"
    client_id      int
    calibrations   calibrations started so far
    samples        [samples_per_client, seqlen] the node built its windows for, or null
    calibration    null, or the current calibration:
        number, options (the calibrate settings), privacy (PrivacySettings fields),
        dp_released  blocks the DP mechanism released so far (null: no DP),
        walk_index   the block the walk is at (null: no walk), walk_dtype (its activations' dtype),
        staged       null or {aggregation, packed}
arrays (name -> numpy array):
    ledger             uint8: `ContributionLedger.to_bytes()` of the calibration
    rr_key             uint8: the randomized-response key of the calibration (secret)
    masks/<layer>      packed local masks (walk "masks")
    walk/<i>           activations entering the walk's block, micro-batch i (bfloat16 as int16)
    stats/<leader>     float64 statistics of the last histogram
    staged/<chunk>     the staged upload

Restoring rebuilds the samples from the node's text, the DP mechanism from the node's source
(labels `calibration-<n>/dp-stats`, the noise of block b from its child `block-<b>`), and the walk
from the saved activations (the call kwargs are recomputed: they depend on the samples' shape).
A mask cache of earlier calibrations is not saved (a later identical calibration recomputes it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..client.calibrate import BlockwiseCalibration
from ..client.methods import PruneMethod
from ..errors import ConfigError
from ..privacy.settings import PrivacySettings
from ..secure_sum.ledger import ContributionLedger

if TYPE_CHECKING:
    from .client_step import ClientNode, NodeEnv

FORMAT = "fedprllm-secure/client-node/1"
Saved = tuple[dict[str, Any], dict[str, np.ndarray]]


def _to_array(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().copy()
    return tensor.numpy().copy()


def _to_tensor(array: np.ndarray, dtype: str) -> torch.Tensor:
    tensor = torch.from_numpy(np.array(array, copy=True))
    if dtype == "torch.bfloat16":
        return tensor.view(torch.bfloat16)
    return tensor


def save_node(node: ClientNode) -> Saved:
    """The node's state as (settings, arrays); see the module docstring."""
    settings: dict[str, Any] = {
        "format": FORMAT,
        "client_id": node.client_id,
        "calibrations": node.calibrations,
        "samples": list(node.samples_built) if node.samples_built else None,
        "calibration": None,
    }
    arrays: dict[str, np.ndarray] = {}
    calibration = node.current
    if calibration is None:
        return settings, arrays
    walk = calibration.walk
    staged = calibration.staged
    settings["calibration"] = {
        "number": calibration.number,
        "options": dict(calibration.options),
        "privacy": {k: getattr(calibration.privacy, k) for k in _privacy_fields()},
        "dp_released": None if calibration.dp is None else list(calibration.dp.released),
        "distributed_released": list(calibration.dp_released),
        "walk_index": None if walk is None else walk.index,
        "walk_dtype": None if walk is None else str(walk.hidden[0].dtype),
        "staged": None if staged is None else {"aggregation": staged.aggregation,
                                               "packed": staged.packed},
    }  # fmt: skip
    arrays["ledger"] = np.frombuffer(calibration.ledger.to_bytes(), dtype=np.uint8).copy()
    arrays["rr_key"] = np.frombuffer(calibration.rr_key, dtype=np.uint8).copy()
    for name, bits in (calibration.masks or {}).items():
        arrays[f"masks/{name}"] = bits
    if walk is not None:
        for i, hidden in enumerate(walk.hidden):
            arrays[f"walk/{i}"] = _to_array(hidden)
    for name, values in calibration.stats.items():
        arrays[f"stats/{name}"] = values
    for name, values in (staged.arrays if staged else {}).items():
        arrays[f"staged/{name}"] = values
    return settings, arrays


def _privacy_fields() -> tuple[str, ...]:
    return tuple(PrivacySettings.__dataclass_fields__)


def _prefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def restore_node(cls: type[ClientNode], env: NodeEnv, saved: Saved) -> ClientNode:
    """The node `save_node` described, on `env`."""
    from .client_step import Staged

    settings, arrays = saved
    if settings.get("format") != FORMAT:
        raise ConfigError(f"not a saved client node (format {settings.get('format')!r})")
    node = cls(env, int(settings["client_id"]))
    if settings["samples"] is not None:
        node.samples(*(int(v) for v in settings["samples"]))
    saved_calibration = settings["calibration"]
    if saved_calibration is None:
        node.calibrations = int(settings["calibrations"])
        return node
    node.calibrations = int(saved_calibration["number"])
    privacy = PrivacySettings(**saved_calibration["privacy"])
    options = dict(saved_calibration["options"])
    calibration = node.begin_calibration(options, privacy)
    node.calibrations = int(settings["calibrations"])
    calibration.ledger = ContributionLedger.from_bytes(arrays["ledger"].tobytes())
    calibration.rr_key = arrays["rr_key"].tobytes()
    if calibration.dp is not None:
        calibration.dp.released = [int(b) for b in saved_calibration["dp_released"] or []]
    calibration.dp_released = [int(a) for a in saved_calibration.get("distributed_released") or []]
    masks = _prefixed(arrays, "masks/")
    calibration.masks = masks if options["walk"] == "masks" else None
    if saved_calibration["walk_index"] is not None:
        samples = node.samples(int(options["samples_per_client"]), int(options["seqlen"]))
        walk = BlockwiseCalibration(
            env.bench.model, samples, int(options["batch_size"]), calibration.transform,
            first_moment=PruneMethod.from_settings(options.get("method")).first_moment,
        )  # fmt: skip
        hidden = _prefixed(arrays, "walk/")
        dtype = saved_calibration["walk_dtype"]
        walk.resume_at(
            int(saved_calibration["walk_index"]),
            [_to_tensor(hidden[str(i)], dtype) for i in range(len(hidden))],
        )
        calibration.walk = walk
    calibration.stats = _prefixed(arrays, "stats/")
    staged = saved_calibration["staged"]
    if staged is not None:
        calibration.staged = Staged(
            int(staged["aggregation"]), _prefixed(arrays, "staged/"), bool(staged["packed"])
        )
    node.current = calibration
    return node
