"""The ServerApp: drive a secure-sum protocol's server state machine over a Flower Grid.

Stages, each one bounded by a timeout (a node that misses one is left out, and said so):

1. wait for `num-nodes` SuperNodes (at most `node-wait-s`);
2. calibrate: every node computes its local masks from its own text (`calibrate-timeout-s`);
3. enroll: every node creates its own secret and sends its public part (`round-timeout-s`);
4. the protocol's rounds: `ServerProtocol.begin`, then one Grid exchange per round
   (`round-timeout-s` each) until the state machine returns the sum; the first message of each
   node also carries every node's attested public part, from which (and the draft it enrolled
   in) the node builds the session config after its trust checks (`trust.py`); one session per
   run: a node lost mid-stream ends the run (its peers' ledgers refuse a second session);
5. the release guard of `simulate` (minimum cohort), then global masks from the counts
   (`global_mask`, as in `simulate`), written to `out`.

Run config keys (pyproject `[tool.flwr.app.config]` or `flwr run --run-config`): see
`PruningSettings.from_run_config`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context, Message
from flwr.serverapp import Grid, ServerApp

from ...errors import ConfigError, FedPrError, PrivacyError, ProtocolError
from ...privacy.release import release_counts
from ...randomness import SystemRandomSource
from ...secure_sum import registry
from ...secure_sum.api import AggregateResult, AggregationSpec, ChunkSpec, ClientId, SessionConfig
from ...secure_sum.messages import decode, encode, round_of
from . import records as R
from .enrollment import prepare_options, publish
from .settings import PruningSettings
from .trust import encode_enrollment

log = logging.getLogger(__name__)


@dataclass
class PruningResult:
    masks: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]
    contributors: list[int]
    nodes: dict[int, int]  # client id -> Flower node id
    failures: dict[int, str]  # client id -> why it was left out
    uplink_bytes: dict[int, int]  # client id -> protocol bytes it sent
    rounds: int
    timings_s: dict[str, float]


class NodeFailure(FedPrError):
    """Too few nodes answered a stage; the message lists every node's reason."""


def exchange(
    grid: Grid, outgoing: Mapping[int, Message], timeout: float, poll: float
) -> dict[int, Message]:
    """Send one message per node and collect the replies that arrive within `timeout` seconds.

    Returns replies by source node id (error replies included). With `poll` <= 0 it is exactly
    `grid.send_and_receive`; otherwise push + pull every `poll` s (send_and_receive sleeps 3 s
    between pulls, which dominates a many-round protocol).
    """
    if not outgoing:
        return {}
    if poll <= 0:
        replies = grid.send_and_receive(list(outgoing.values()), timeout=timeout)
    else:
        pending = set(grid.push_messages(list(outgoing.values())))
        deadline = time.monotonic() + timeout
        replies = []
        while pending:
            got = list(grid.pull_messages(pending))
            replies += got
            pending -= {m.metadata.reply_to_message_id for m in got}
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(poll)
    return {m.metadata.src_node_id: m for m in replies if m.metadata.src_node_id in outgoing}


def _refusal(reply: Message) -> str | None:
    if reply.has_error():
        return f"ClientApp error: {reply.error.reason}"
    error = R.settings_of(reply.content).get(R.ERROR)
    return str(error) if error else None


def chunked_spec(index: int, lengths: list[int], chunk_entries: int) -> AggregationSpec:
    """Consecutive layers grouped into chunks "layers:A:B" of about `chunk_entries` entries."""
    chunks, offset, start, size = [], 0, 0, 0
    for i, length in enumerate(lengths):
        size += length
        if size >= chunk_entries or i == len(lengths) - 1:
            chunks.append(ChunkSpec(f"layers:{start}:{i + 1}", size, offset))
            offset += size
            start, size = i + 1, 0
    return AggregationSpec(index, tuple(chunks), bound=1)


class FlowerPruning:
    """One federated pruning run over a Grid (deployment, simulation or `LocalGrid`)."""

    def __init__(
        self,
        grid: Grid,
        settings: PruningSettings,
        layer_names: list[str],
        lengths: list[int],
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.progress = progress
        self.grid = grid
        self.s = settings
        self.layer_names = layer_names
        self.lengths = lengths
        self.failures: dict[int, str] = {}
        self.node_of: dict[ClientId, int] = {}
        self.uplink: dict[ClientId, int] = {}
        self.timings: dict[str, float] = {}
        self.rounds = 0
        self.identities: dict[ClientId, str] = {}  # long-term identity key (hex) from calibrate
        self.authority_candidates: list[ClientId] = []  # nodes pinned as ckks key authority

    # --- helpers ------------------------------------------------------------------------------

    def _stage(
        self, name: str, messages: Mapping[ClientId, tuple[str, R.RecordDict]], timeout: float
    ) -> dict[ClientId, Message]:
        """Send each client its (type, content); the replies of those that answered in time."""
        started = time.perf_counter()
        if self.progress is not None:
            self.progress(name)
        outgoing = {
            self.node_of[c]: Message(
                content,
                dst_node_id=self.node_of[c],
                message_type=kind,
                group_id=name,
                ttl=timeout + 60,
            )
            for c, (kind, content) in messages.items()
        }
        replies = exchange(self.grid, outgoing, timeout, self.s.poll_interval_s)
        client_of = {n: c for c, n in self.node_of.items()}
        answered: dict[ClientId, Message] = {}
        for c in messages:
            reply = replies.get(self.node_of[c])
            if reply is None:
                self.failures.setdefault(
                    c, f"no reply to {name} within {timeout:.0f} s (dropped out)"
                )
                continue
            reason = _refusal(reply)
            if reason is not None:
                self.failures.setdefault(c, f"{name}: {reason}")
                continue
            answered[client_of[reply.metadata.src_node_id]] = reply
        self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - started, 3)
        return answered

    def _reasons(self, clients: Any = None) -> str:
        return "; ".join(
            f"client {c} (node {self.node_of[c]}): {why}"
            for c, why in sorted(self.failures.items())
            if clients is None or c in clients
        )

    def _need(self, alive: set[ClientId], stage: str) -> None:
        if len(alive) < self.s.cohort:
            raise NodeFailure(
                f"only {len(alive)} of {len(self.node_of)} nodes got through {stage} "
                f"(min-cohort {self.s.cohort}). {self._reasons()}"
            )

    # --- stages -------------------------------------------------------------------------------

    def wait_for_nodes(self) -> list[int]:
        deadline = time.monotonic() + self.s.node_wait_s
        while True:
            nodes = sorted(self.grid.get_node_ids())
            if len(nodes) >= self.s.num_nodes:
                return nodes[: self.s.num_nodes]
            if time.monotonic() >= deadline:
                raise NodeFailure(
                    f"only {len(nodes)} of {self.s.num_nodes} SuperNodes connected within "
                    f"{self.s.node_wait_s:.0f} s (check that they run and reach the SuperLink)"
                )
            time.sleep(0.5)

    def run(self) -> PruningResult:
        self.s.validate()
        nodes = self.wait_for_nodes()
        self.node_of = {c: n for c, n in enumerate(nodes)}
        calibrate = {
            "sparsity": self.s.sparsity, "pruner": self.s.pruner,
            "calibration": self.s.calibration, "samples-per-client": self.s.samples_per_client,
            "seqlen": self.s.seqlen, "batch-size": self.s.batch_size,
        }  # fmt: skip
        replies = self._stage(
            "calibrate",
            {c: (R.CALIBRATE, R.content(calibrate)) for c in self.node_of},
            self.s.calibrate_timeout_s,
        )
        fingerprint = hashlib.sha256(
            repr(list(zip(self.layer_names, self.lengths, strict=True))).encode()
        ).hexdigest()
        for c, reply in replies.items():
            answer = R.settings_of(reply.content)
            if answer.get("layout") != fingerprint:
                self.failures[c] = (
                    "calibrate: its model's prunable layout differs from the server's"
                )
            if answer.get("identity"):
                self.identities[c] = str(answer["identity"])
            if answer.get("ckks-authority"):
                self.authority_candidates.append(c)
        alive = set(replies) - set(self.failures)
        self._need(alive, "calibration")

        spec = chunked_spec(0, self.lengths, self.s.chunk_entries)
        roster = tuple(sorted(alive))
        # One session only: a node lost in the middle of the masked stream ends the run (a fresh
        # session would re-collect chunks already released, which the nodes' ledgers refuse).
        result = self.secure_sum(roster, spec)
        counts: dict[str, np.ndarray] = {}
        for chunk in spec.chunks:
            _, first, last = chunk.name.split(":")
            position = 0
            for i in range(int(first), int(last)):
                name = self.layer_names[i]
                counts[name] = result.sums[chunk.name][position : position + self.lengths[i]]
                position += self.lengths[i]
        return PruningResult(
            masks={},
            counts=counts,
            contributors=list(result.contributors),
            nodes=dict(self.node_of),
            failures=dict(self.failures),
            uplink_bytes=dict(self.uplink),
            rounds=self.rounds,
            timings_s=dict(self.timings),
        )

    def secure_sum(self, roster: tuple[ClientId, ...], spec: AggregationSpec) -> AggregateResult:
        """Enroll `roster`, then run the protocol's rounds over the Grid until the sum."""
        started = time.perf_counter()
        info = registry.get(self.s.protocol)
        options = dict(self.s.options)
        candidates = [c for c in self.authority_candidates if c in roster]
        if self.s.protocol == "ckks" and "authority" not in options and len(candidates) == 1:
            options["authority"] = candidates[0]  # the node every trust file pins as authority
        # the cohort first: the options are validated with the minimum this run releases at
        options = prepare_options(self.s.protocol, roster, info.with_cohort(options, self.s.cohort))
        session_id = SystemRandomSource().random_bytes(32)
        draft = SessionConfig(session_id, roster, options)
        draft_bytes = R.encode_config(draft)
        replies = self._stage(
            "enroll",
            {
                c: (
                    R.ENROLL,
                    R.content(
                        {"client-id": c, "protocol": self.s.protocol}, {"config": draft_bytes}
                    ),
                )
                for c in roster
            },
            self.s.round_timeout_s,
        )
        if set(replies) != set(roster):
            # A session roster is fixed once published: restart enrollment over those that answered.
            missing = sorted(set(roster) - set(replies))
            raise NodeFailure(
                f"clients {missing} did not enroll; rerun once they are back. "
                + "; ".join(f"client {c}: {self.failures.get(c, '?')}" for c in missing)
            )
        publics, attestations = self.relay(replies)
        config = publish(self.s.protocol, draft, publics)
        # The public parts ride with each client's first protocol message (one round less); each
        # node builds the session config from them and the draft, after its trust checks.
        enrollment_bytes = encode_enrollment(publics, attestations)
        server = info.make_server(config, SystemRandomSource())
        outgoing: Any = server.begin(spec)
        for c in roster:
            self.uplink.setdefault(c, 0)  # a restarted sum adds to the aborted one's bytes
        first_round = self.rounds + 1
        while True:
            self.rounds += 1
            extra = {"enrollment": enrollment_bytes} if self.rounds == first_round else {}
            messages = {
                c: (R.PROTOCOL, R.content({}, {"message": encode(m), **extra}))
                for c, m in outgoing.items()
            }
            answered = self._stage(f"protocol-{self.rounds}", messages, self.s.round_timeout_s)
            decoded = {}
            for c, reply in answered.items():
                blob = R.blobs_of(reply.content).get("message")
                if blob is not None:
                    self.uplink[c] += len(blob)
                    decoded[c] = decode(blob)
            try:
                result = server.handle(decoded)
            except ProtocolError as exc:
                silent = sorted(set(outgoing) - set(decoded))
                round_name = round_of(next(iter(outgoing.values())))
                if silent and round_name in info.input_rounds:
                    raise NodeFailure(
                        f"client(s) {silent} were lost in the middle of the masked-input stream "
                        f"({round_name}): the session aborted ({exc}); it is not restarted, since "
                        "a new session would ask the other nodes again for chunks they already "
                        f"released, which their ledgers refuse. {self._reasons(silent)}"
                    ) from exc
                if silent:
                    raise NodeFailure(f"{exc}. {self._reasons(silent)}") from exc
                raise
            if isinstance(result, AggregateResult):
                break
            outgoing = result
        self.timings["secure_sum"] = round(time.perf_counter() - started, 3)
        if not result.contributors:
            raise NodeFailure(f"no client contributed to the sum. {self._reasons()}".strip())
        # The release guard of `simulate`: never publish counts over fewer than the cohort.
        try:
            release_counts(result, min_cohort=self.s.cohort)
        except PrivacyError as exc:
            raise PrivacyError(f"{exc}. {self._reasons()}".strip()) from exc
        return result

    def relay(
        self, replies: Mapping[ClientId, Message]
    ) -> tuple[dict[ClientId, bytes], dict[ClientId, tuple[bytes, bytes]]]:
        """The nodes' public parts and their attestations, as relayed to every node."""
        publics: dict[ClientId, bytes] = {}
        attestations: dict[ClientId, tuple[bytes, bytes]] = {}
        for c, reply in replies.items():
            blobs = R.blobs_of(reply.content)
            publics[c] = blobs.get("public", b"")
            if "identity" in blobs and "attestation" in blobs:
                attestations[c] = (blobs["identity"], blobs["attestation"])
        return publics, attestations


def prune_with_flower(
    grid: Grid,
    settings: PruningSettings,
    model_spec: str,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> tuple[PruningResult, Any]:
    """Load the global model, run the federation, return the result and the loaded model
    (its weights pruned by the global masks)."""
    from ...model import load_model, prunable_layers
    from ...server.aggregate import global_mask, scaling_factors
    from ...server.apply import apply_masks

    loaded = load_model(model_spec, device)
    layers = prunable_layers(loaded.model)
    run = FlowerPruning(
        grid,
        settings,
        [layer.name for layer in layers],
        [layer.numel for layer in layers],
        progress,
    )
    result = run.run()
    scales: dict[str, np.ndarray] | None = {} if settings.scaling else None
    for index, layer in enumerate(layers):
        shape = tuple(layer.module.weight.shape)
        counts = result.counts[layer.name].reshape(shape)
        result.counts[layer.name] = counts
        result.masks[layer.name] = global_mask(
            counts, settings.sparsity, settings.group, settings.seed, index
        )
        if scales is not None:
            scales[layer.name] = scaling_factors(counts, len(result.contributors))
    apply_masks(layers, result.masks, scales)
    return result, loaded


def write_result(out: Path, settings: PruningSettings, result: PruningResult) -> None:
    """OUT/masks.npz (global masks), OUT/counts.npz, OUT/result.json; written atomically-ish."""
    out.mkdir(parents=True, exist_ok=True)
    masks: dict[str, Any] = dict(result.masks)
    counts: dict[str, Any] = dict(result.counts)
    np.savez_compressed(out / "masks.npz", **masks)
    np.savez_compressed(out / "counts.npz", **counts)
    summary = {
        "settings": asdict(settings),
        "min_cohort": settings.cohort,
        "contributors": result.contributors,
        "nodes": {str(c): n for c, n in result.nodes.items()},
        "failures": {str(c): why for c, why in result.failures.items()},
        "uplink_bytes_per_client": {str(c): n for c, n in result.uplink_bytes.items()},
        "protocol_rounds": result.rounds,
        "timings_s": result.timings_s,
    }
    tmp = out / "result.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1, default=str))
    tmp.replace(out / "result.json")


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = dict(context.run_config)
    out = Path(str(config.get("out", "runs/flower"))).expanduser()
    out.mkdir(parents=True, exist_ok=True)

    def progress(stage: str) -> None:
        (out / "progress.json").write_text(json.dumps({"stage": stage, "time": time.time()}))

    try:
        settings = PruningSettings.from_run_config(config)
        model_spec = str(config.get("model", ""))
        if not model_spec:
            raise ConfigError("run config needs model='PATH' (the global model)")
        result, loaded = prune_with_flower(
            grid, settings, model_spec, str(config.get("device", "cpu")), progress
        )
        write_result(out, settings, result)
        if config.get("save-model"):
            loaded.model.save_pretrained(out / "model")
            loaded.tokenizer.save_pretrained(out / "model")  # type: ignore[attr-defined]
        log.warning(
            "fedprllm-secure: pruned with %s over clients %s (left out: %s); wrote %s",
            settings.protocol,
            result.contributors,
            result.failures or "none",
            out,
        )
    except Exception as exc:  # the launcher waits for result.json or error.txt
        (out / "error.txt").write_text(f"{type(exc).__name__}: {exc}\n")
        log.error("fedprllm-secure: %s", exc)
        raise
