"""One client's side of the pipeline: `ClientNode`, driven by `NodeCommand`s only.

A node owns its text, its calibration samples, its statistics, the vector it uploads, its privacy
mechanism and, per calibration, its `ContributionLedger`. The server never reads these: it sends
commands (through a `Federation`) and the node answers with small public values. In process the
nodes share one model and leave it dense after every command; on Flower each node has its own.

Commands (`NodeCommand.kind`, its `settings` / `arrays` -> `NodeAnswer` settings / arrays)
--------------------------------------------------------------------------------------------
describe      {samples_per_client, seqlen} -> {name, documents, topics, tokens, windows: [n, len]}
              Builds the node's calibration samples from its own text (cached).
calibrate     {samples_per_client, seqlen, batch_size, pruner, calibration, sparsity,
               walk: "masks" | "blocks", privacy: PrivacySettings fields,
               method: PruneMethod fields (optional, default Wanda)}
              -> {calibration: number, layout: layout fingerprint, blocks}
              Starts a new calibration (pruning round): a new ledger, a new randomized-response
              key (drawn once from the node's source), a new DP statistics mechanism (one release
              per block). "masks": every block's local masks (now, reused with its mechanism for
              the same options; blockwise: at `prepare masks {block}`); "blocks": a block walk.
prepare       {aggregation, upload, ...} -> see below; stages the upload of aggregation `k`:
  upload "masks"        {block?}: the local masks' bits of `block` (else all) (walk "masks") -> {}
  upload "block-masks"  {block, sparsity}: the current block's statistics -> its Wanda masks
                        (walk "blocks", iterative masks)                           -> {block}
  upload "histogram"    {blocks: [b..], one_shot}: statistics of `blocks` (one_shot: dense, the
                        walk moves on), one exponent one-hot per input group (and per
                        first-moment part "<leader>|x+", "<leader>|x-" when the method
                        is DSnoT) -> {groups: [[layer names]], lengths: {key: features}}
  upload "limbs"        {exponents: {leader: e}, precision}: the fixed-point limbs
                        `"<leader>#<k>"` of the statistics of the last histogram   -> {}
  upload "dp-sums"      distributed DP, instead of histogram + limbs (refused then): the noisy
                        residues of `blocks` (`pipeline.dp_rounds`)            -> {groups}
apply         {block}, arrays {"mask/<layer>": packed bits, "scale/<layer>": float64 (optional)}
              The global mask of the current block: the node runs its samples through the block
              pruned (and scaled) so, and moves to the next block.           -> {block: next}
local-masks   {} -> arrays {<layer>: packed bits} of the current "masks" calibration (the
              local-only baseline of a simulation).
samples       {} -> arrays {"tokens": int64 [n, seqlen]} (the centralized baseline of a
              simulation only: it hands over the node's data).
report        {} -> {statistics_dp: the DP mechanism's report or None}

Chunk values come from `provider(index, chunk)` (what the protocol client calls): the staged
upload, randomized under `privacy.rr_epsilon` with this calibration's key (flips keyed by chunk
name only); the session guards it with `ledger` (each chunk released at most once per
calibration). Errors are raised (`FedPrError`s): a federation reports them as the node's failure.

Persistence between messages (a Flower ClientApp keeps it in `context.state`):
`node.save() -> (settings, arrays)`, JSON-ready settings and a flat dict of numpy arrays, and
`ClientNode.restore(env, (settings, arrays))`, with the same `NodeEnv` (model, text, source);
the format is in `node_state.py`. A restored node answers every later command and feeds the
same chunks (same RR bits, same ledger) as the node that was saved. Hosting one per message:

    env = NodeEnv(Workbench(model, device), my_text, SystemRandomSource())
    node = ClientNode.restore(env, saved) if saved else ClientNode(env, client_id)
    answer = node.handle(NodeCommand(kind, settings, arrays))  # or: the protocol client reads
    saved = node.save()                                        # node.provider, guarded by
                                                               # node.ledger
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from .. import data
from ..client import fixed_point
from ..client.calibrate import (
    BlockwiseCalibration,
    StatsTransform,
    local_masks,
    method_block_masks,
    shared_input_groups,
)
from ..client.methods import PruneMethod
from ..errors import ConfigError, PrivacyError, ProtocolError
from ..privacy.randomized_response import draw_rr_key
from ..privacy.settings import PrivacySettings
from ..privacy.statistics import StatisticsMechanism
from ..randomness import RandomSource
from ..secure_sum.api import ChunkSpec
from ..secure_sum.ledger import ContributionLedger
from . import dp_rounds
from .dp_reference import WindowRecorder
from .federation import NodeAnswer, NodeCommand
from .layout import Packed, fingerprint, limb_chunk, pack_masks, unpack, unpack_masks
from .node_masks import mask_bits
from .server_step import FIRST_MOMENT, moment_key
from .workbench import Workbench

CALIBRATE_KEYS = (
    "samples_per_client", "seqlen", "batch_size", "pruner", "calibration", "sparsity", "walk",
)  # fmt: skip
WALKS = ("masks", "blocks")


@dataclass
class NodeEnv:
    """What a node is given, not told: its model, its own text and its secret randomness."""

    bench: Workbench
    text: data.ClientText
    source: RandomSource


@dataclass
class Staged:
    """The node's input to aggregation `aggregation`: chunk name -> values (packed bits)."""

    aggregation: int
    arrays: dict[str, np.ndarray]
    packed: bool = False


@dataclass
class Calibration:
    """One calibration (pruning round) of the node and everything it released from it."""

    number: int
    options: dict[str, Any]
    privacy: PrivacySettings
    ledger: ContributionLedger
    rr_key: bytes
    dp: StatisticsMechanism | None = None
    recorder: WindowRecorder | None = None  # distributed DP: per-window statistics of the walk
    dp_released: list[int] = field(default_factory=list)  # distributed DP: releases made

    @property
    def transform(self) -> StatsTransform | None:  # local DP, or the distributed DP recorder
        return self.dp if self.dp is not None else self.recorder

    masks: Packed | None = None  # walk "masks": the local masks, packed
    walk: BlockwiseCalibration | None = None  # walk "blocks"
    stats: dict[str, np.ndarray] = field(default_factory=dict)  # last histogram's statistics
    staged: Staged | None = None


class ClientNode:
    """One client of the federation (see the module docstring for its commands)."""

    def __init__(self, env: NodeEnv, client_id: int) -> None:
        self.env = env
        self.client_id = client_id
        self.calibrations = 0  # calibrations started so far (the next one's number)
        self.current: Calibration | None = None
        self._samples: tuple[tuple[int, int], torch.Tensor] | None = None
        self._mask_cache: dict[str, tuple[Packed, StatisticsMechanism | None]] = {}
        self._handlers: dict[str, Callable[[NodeCommand], NodeAnswer]] = {
            "describe": self._describe,
            "calibrate": self._calibrate,
            "prepare": self._prepare,
            "apply": self._apply,
            "local-masks": self._local_masks,
            "samples": self._samples_answer,
            "report": self._report,
        }

    def handle(self, command: NodeCommand) -> NodeAnswer:
        """Carry out one command; raise a FedPrError if it cannot."""
        handler = self._handlers.get(command.kind)
        if handler is None:
            raise ConfigError(f"unknown node command {command.kind!r}")
        return handler(command)

    @property
    def ledger(self) -> ContributionLedger:
        """The ledger of the current calibration (hand it to every session of the round)."""
        return self._need().ledger

    def provider(self, index: int, chunk: ChunkSpec) -> np.ndarray:
        """The protocol client's input: the staged chunk, randomized under randomized response."""
        calibration = self._need()
        read = calibration.privacy.wrap_provider(self._staged_value, calibration.rr_key)
        return read(index, chunk)

    def save(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(settings, arrays) for `ClientNode.restore` (format: `node_state.py`)."""
        from .node_state import save_node

        return save_node(self)

    @classmethod
    def restore(
        cls, env: NodeEnv, saved: tuple[dict[str, Any], dict[str, np.ndarray]]
    ) -> ClientNode:
        """The node `save` described, on `env` (same model, text and source as when saved)."""
        from .node_state import restore_node

        return restore_node(cls, env, saved)

    # -- commands ------------------------------------------------------------------------------

    @property
    def samples_built(self) -> tuple[int, int] | None:
        """(samples_per_client, seqlen) of the windows built so far, or None."""
        return None if self._samples is None else self._samples[0]

    def samples(self, count: int, seqlen: int) -> torch.Tensor:
        """The node's calibration windows [count, <= seqlen] from its own text (cached)."""
        if self._samples is None or self._samples[0] != (count, seqlen):
            windows = data.calibration_samples(
                self.env.bench.tokenizer, self.env.text, count, seqlen
            )
            self._samples = ((count, seqlen), windows)
        return self._samples[1]

    def _describe(self, command: NodeCommand) -> NodeAnswer:
        s = command.settings
        windows = self.samples(int(s["samples_per_client"]), int(s["seqlen"]))
        text = self.env.text
        return NodeAnswer(
            {
                "name": text.name,
                "documents": len(text.documents),
                "topics": list(text.topics),
                "tokens": int(windows.numel()),
                "windows": list(windows.shape),
            }
        )

    def begin_calibration(self, options: dict[str, Any], privacy: PrivacySettings) -> Calibration:
        """A new calibration record: its number, ledger, RR key and DP mechanism (not run)."""
        number = self.calibrations
        self.calibrations += 1
        source = self.env.source.child(f"calibration-{number}")
        return Calibration(
            number,
            options,
            privacy,
            ContributionLedger(),
            draw_rr_key(source.child("rr-key")),
            privacy.statistics_mechanism(self.env.bench.blocks, source.child("dp-stats")),
            recorder=WindowRecorder() if privacy.distributed else None,
        )

    def _calibrate(self, command: NodeCommand) -> NodeAnswer:
        s = command.settings
        missing = [key for key in CALIBRATE_KEYS if key not in s]
        if missing or s["walk"] not in WALKS:
            raise ConfigError(f"calibrate needs {', '.join(CALIBRATE_KEYS)} (walk: masks|blocks)")
        options = {key: s[key] for key in CALIBRATE_KEYS}
        options["method"] = PruneMethod.from_settings(s.get("method")).settings()
        method = PruneMethod.from_settings(options["method"])
        privacy = PrivacySettings(**dict(s.get("privacy") or {}))
        samples = self.samples(int(options["samples_per_client"]), int(options["seqlen"]))
        calibration = self.begin_calibration(options, privacy)
        model = self.env.bench.model
        if options["walk"] == "masks" and privacy.distributed:
            raise ProtocolError("distributed DP noises the stats upload: masks mode refused")
        if options["walk"] == "masks" and not self.env.bench.blockwise:
            key = json.dumps({**options, "privacy": asdict(privacy)}, sort_keys=True)
            if key not in self._mask_cache:
                masks, _ = local_masks(
                    model, samples, float(options["sparsity"]), options["pruner"],
                    options["calibration"], int(options["batch_size"]),
                    stats_transform=calibration.dp, method=method,
                )  # fmt: skip
                self._mask_cache[key] = (pack_masks(masks), calibration.dp)
            calibration.masks, calibration.dp = self._mask_cache[key]
        elif options["walk"] == "blocks" or method.pruner != "magnitude":  # blockwise: lazily
            calibration.walk = BlockwiseCalibration(
                model, samples, int(options["batch_size"]), calibration.transform,
                first_moment=method.first_moment,
            )  # fmt: skip
        self.current = calibration
        bench = self.env.bench
        return NodeAnswer(
            {
                "calibration": calibration.number,
                "layout": fingerprint(bench.lengths),
                "blocks": bench.blocks,
            }
        )

    def _prepare(self, command: NodeCommand) -> NodeAnswer:
        s = command.settings
        calibration = self._need()
        aggregation, upload = int(s["aggregation"]), s.get("upload")
        answer: dict[str, Any] = {}
        if upload == "masks":
            bits = mask_bits(self.env.bench, calibration, self._walk, s.get("block"))
            staged = Staged(aggregation, bits, packed=True)
        elif upload == "block-masks":
            walk = self._walk(int(s["block"]))
            method = PruneMethod.from_settings(calibration.options.get("method"))
            with self.env.bench.holding(walk.index):
                stats = walk.statistics()
                masks = method_block_masks(walk.layers, stats, float(s["sparsity"]), method)
            arrays = {n: m.cpu().reshape(-1).numpy().astype(np.uint8) for n, m in masks.items()}
            staged, answer = Staged(aggregation, arrays), {"block": walk.index}
        elif upload in ("histogram", "limbs") and calibration.privacy.distributed:
            raise PrivacyError(f"upload {upload!r} would send unnoised statistics: refused")
        elif upload == "histogram":
            staged, answer = self._histogram(aggregation, s["blocks"], bool(s["one_shot"]))
        elif upload == "limbs":
            staged = self._limbs(aggregation, s["exponents"], int(s["precision"]))
        elif upload == dp_rounds.UPLOAD:
            staged, answer = self._dp_sums(aggregation, s, command.arrays)
        else:
            raise ConfigError(f"unknown upload {upload!r} (see the module docstring)")
        calibration.staged = staged
        return NodeAnswer(answer)

    def _histogram(
        self, aggregation: int, blocks: list[int], one_shot: bool
    ) -> tuple[Staged, dict[str, Any]]:
        """Statistics of `blocks`, one exponent one-hot per distinct input tensor (q/k/v share
        one, gate/up another: the grouping is the architecture's, never the data's)."""
        calibration = self._need()
        groups: list[list[str]] = []
        sums: dict[str, np.ndarray] = {}
        for block in blocks:
            walk = self._walk(int(block))
            layers = walk.layers
            stats = walk.statistics()
            groups += shared_input_groups(layers, stats)
            for name, entry in stats.items():
                sums[name] = entry.sq_sum.cpu().numpy()
                if entry.x_pos is not None and entry.x_neg is not None:
                    parts = (entry.x_pos, entry.x_neg)
                    for part, values in zip(FIRST_MOMENT, parts, strict=True):
                        sums[moment_key(name, part)] = values.cpu().numpy()
            if one_shot:
                walk.propagate_dense()
        calibration.stats = {
            key: sums[key]
            for group in groups
            for key in [group[0]] + [moment_key(group[0], part) for part in FIRST_MOMENT]
            if key in sums
        }
        staged = Staged(
            aggregation,
            {name: fixed_point.exponent_one_hot(v) for name, v in calibration.stats.items()},
        )
        lengths = {name: int(v.size) for name, v in calibration.stats.items()}
        return staged, {"groups": groups, "lengths": lengths}

    def _dp_sums(
        self, aggregation: int, s: dict[str, Any], arrays: dict[str, np.ndarray]
    ) -> tuple[Staged, dict[str, Any]]:
        """Distributed DP: the noisy residues of the statistics of `s["blocks"]`."""
        calibration = self._need()
        if calibration.recorder is None:
            raise ProtocolError("dp-sums: this calibration has no distributed DP")
        groups, per_window = dp_rounds.walk_blocks(
            self._walk, calibration.recorder, [int(b) for b in s["blocks"]], bool(s["one_shot"])
        )
        releases = 1 if calibration.options["calibration"] == "one-shot" else self.env.bench.blocks
        source = self.env.source.child(f"calibration-{calibration.number}/dp-share-{aggregation}")
        chunks = dp_rounds.client_release(
            calibration.privacy, per_window, (s, arrays), calibration.dp_released, releases, source
        )
        return Staged(aggregation, chunks), {"groups": groups}

    def _limbs(self, aggregation: int, exponents: dict[str, int], precision: int) -> Staged:
        """The last histogram's statistics in fixed point under the server's common exponents
        (values above 2^E saturate; an exponent far above this node's own is refused)."""
        arrays: dict[str, np.ndarray] = {}
        for name, values in self._need().stats.items():
            encoded = fixed_point.encode(values, int(exponents[name]), precision)
            for k, limb in enumerate(fixed_point.to_limbs(encoded, precision)):
                arrays[limb_chunk(name, k)] = limb
        return Staged(aggregation, arrays)

    def _apply(self, command: NodeCommand) -> NodeAnswer:
        walk = self._walk(int(command.settings["block"]))
        layers = walk.layers
        bench = self.env.bench
        arrays = command.arrays
        packed = {layer.name: arrays[f"mask/{layer.name}"] for layer in layers}
        masks = unpack_masks(packed, bench.shapes)
        scales = None
        if any(f"scale/{layer.name}" in arrays for layer in layers):
            scales = {layer.name: np.asarray(arrays[f"scale/{layer.name}"]) for layer in layers}
        with bench.holding(walk.index), bench.pruned(layers, masks, scales):
            walk.propagate(None)  # through the globally pruned block
        return NodeAnswer({"block": walk.index})

    def _local_masks(self, _command: NodeCommand) -> NodeAnswer:
        masks = self._need().masks
        if masks is None:
            raise ProtocolError("local-masks: the current calibration has no local masks")
        return NodeAnswer(arrays=dict(masks))

    def _samples_answer(self, _command: NodeCommand) -> NodeAnswer:
        if self._samples is None:
            raise ProtocolError("samples: describe or calibrate first")
        return NodeAnswer(arrays={"tokens": self._samples[1].numpy()})

    def _report(self, _command: NodeCommand) -> NodeAnswer:
        dp = self.current.dp if self.current is not None else None
        return NodeAnswer({"statistics_dp": dp.report() if dp is not None else None})

    # -- helpers -------------------------------------------------------------------------------

    def _need(self) -> Calibration:
        if self.current is None:
            raise ProtocolError(f"client {self.client_id} has not calibrated")
        return self.current

    def _walk(self, block: int) -> BlockwiseCalibration:
        walk = self._need().walk
        if walk is None:
            raise ProtocolError("this calibration walks no blocks (calibrate with walk=blocks)")
        if walk.index != block:
            raise ProtocolError(f"the node is at block {walk.index}, the server asked {block}")
        return walk

    def _staged_value(self, _index: int, chunk: ChunkSpec) -> np.ndarray:
        staged = self._need().staged
        if staged is None or chunk.name not in staged.arrays:
            raise ProtocolError(f"client {self.client_id} staged no chunk {chunk.name!r}")
        value = staged.arrays[chunk.name]
        return unpack(value, chunk.length) if staged.packed else value
