"""`FlowerFederation`: the pipeline's `Federation` port over a Flower Grid.

The same adapter serves a deployment (SuperLink + SuperNodes), Flower's simulation engine (virtual
SuperNodes on Ray) and `LocalGrid` (in process). Every exchange has a deadline; a node that misses
it, or answers with an error, is left out and `failures` says why (first reason kept).

* `command(stage, commands, timeout_s)`: each `NodeCommand` travels as one "query.command" Message
  (`records.command_content`), its `NodeAnswer` back the same way.
* `open_session(protocol, options, roster)`: enrollment where every secret is made on its own node
  (`ProtocolInfo` hooks, so any registered protocol works): the draft config goes to each node
  ("query.enroll"), which checks it against its trust file and answers with its (attested) public
  part; the server publishes the session config from them. `FlowerSession.aggregate(spec)` runs
  `secure_sum.driver.drive` with one Grid exchange ("query.protocol") per round, consecutive chunks
  joined into wire chunks of about `chunk_entries` entries (`wire_chunks`); the public parts
  and attestations ride with each node's first protocol message, and each node builds the session
  config itself after its trust checks (`trust.published_config`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from flwr.app import Message
from flwr.serverapp import Grid

from ...errors import FedPrError, ProtocolError
from ...pipeline.federation import (
    Federation,
    NodeAnswer,
    NodeCommand,
    SecureSumSession,
    SessionTraffic,
)
from ...randomness import RandomSource, SystemRandomSource
from ...secure_sum import registry
from ...secure_sum.api import AggregateResult, AggregationSpec, ClientId, SessionConfig
from ...secure_sum.driver import drive
from ...secure_sum.messages import decode, encode, round_of, tag_of
from . import records as R
from .enrollment import prepare_options, publish
from .trust import encode_enrollment
from .wire_chunks import group, split


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
        replies = list(grid.send_and_receive(list(outgoing.values()), timeout=timeout))
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


def refusal(reply: Message) -> str | None:
    """Why a node's reply is not an answer (a ClientApp error, or a refusal it sent), or None."""
    if reply.has_error():
        return f"ClientApp error: {reply.error.reason}"
    error = R.settings_of(reply.content).get(R.ERROR)
    return str(error) if error else None


def wait_for_nodes(grid: Grid, count: int, wait_s: float) -> list[int]:
    """The first `count` node ids (sorted) once that many are connected; NodeFailure after
    `wait_s` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= count:
            return nodes[:count]
        if time.monotonic() >= deadline:
            raise NodeFailure(
                f"only {len(nodes)} of {count} SuperNodes connected within {wait_s:.0f} s "
                "(check that they run and reach the SuperLink)"
            )
        time.sleep(0.5)


class StageReport(Protocol):
    """Where the federation says which stage runs and how many nodes answered it
    (`run_status.RunStatus` in the ServerApp)."""

    def stage(self, name: str, detail: str = "") -> None: ...

    def done(self, name: str, answered: int, asked: int, seconds: float) -> None: ...


class FlowerFederation(Federation):
    """The clients of one run: client id c is Flower node `node_of[c]` (roster order = node ids
    sorted). `round_timeout_s` bounds enrollment and every protocol round; `poll_s` is the pull
    interval (<= 0: `Grid.send_and_receive`)."""

    def __init__(
        self,
        grid: Grid,
        node_ids: Sequence[int],
        round_timeout_s: float = 120.0,
        poll_s: float = 0.1,
        progress: StageReport | None = None,
        rng: RandomSource | None = None,
        chunk_entries: int = 1 << 24,
    ) -> None:
        self.grid = grid
        self.chunk_entries = chunk_entries  # consecutive chunks joined per wire chunk
        self.node_of: dict[ClientId, int] = dict(enumerate(node_ids))
        self.clients = tuple(self.node_of)
        self.failures: dict[ClientId, str] = {}
        self.round_timeout_s = round_timeout_s
        self.poll_s = poll_s
        self.progress = progress
        self.rng = rng or SystemRandomSource()
        self.timings: dict[str, float] = {}
        self.keep_sums = True  # False: a session keeps no aggregation's sums (O(block) server)
        self.uplink: dict[ClientId, int] = {}  # protocol bytes each client sent, all sessions
        self.rounds = 0  # protocol rounds, all sessions
        self.layout: str | None = None  # the server's layout fingerprint: answers must match it
        self.authority_candidates: list[ClientId] = []  # pinned as key authority by their trust
        self.sessions: list[FlowerSession] = []
        self.min_cohort = 1  # a session needs this many clients still in (NodeFailure else)

    # --- exchanges ------------------------------------------------------------------------------

    def exchange(
        self, stage: str, messages: Mapping[ClientId, tuple[str, R.RecordDict]], timeout: float
    ) -> dict[ClientId, Message]:
        """Send each client its (message type, content); the replies of those that answered in
        time and without error (the others get their reason in `failures`)."""
        started = time.perf_counter()
        if self.progress is not None:
            self.progress.stage(stage, f"asking {len(messages)} nodes (deadline {timeout:.0f} s)")
        outgoing = {
            self.node_of[c]: Message(
                content,
                dst_node_id=self.node_of[c],
                message_type=kind,
                group_id=stage,
                ttl=timeout + 60,
            )
            for c, (kind, content) in messages.items()
        }
        replies = exchange(self.grid, outgoing, timeout, self.poll_s)
        answered: dict[ClientId, Message] = {}
        for c in messages:
            reply = replies.get(self.node_of[c])
            if reply is None:
                self.failures.setdefault(
                    c, f"no reply to {stage} within {timeout:.0f} s (dropped out)"
                )
                continue
            reason = refusal(reply)
            if reason is not None:
                self.failures.setdefault(c, f"{stage}: {reason}")
                continue
            answered[c] = reply
        elapsed = time.perf_counter() - started
        self.timings[stage] = round(self.timings.get(stage, 0.0) + elapsed, 3)
        if self.progress is not None:
            self.progress.done(stage, len(answered), len(messages), elapsed)
        return answered

    def command(
        self, stage: str, commands: Mapping[ClientId, NodeCommand], timeout_s: float
    ) -> dict[ClientId, NodeAnswer]:
        messages = {c: (R.COMMAND, R.command_content(cmd, c)) for c, cmd in commands.items()}
        replies = self.exchange(stage, messages, timeout_s)
        answers = {}
        for c, reply in replies.items():
            answer, host = R.answer_of(reply.content)
            if host.get("authority") and c not in self.authority_candidates:
                self.authority_candidates.append(c)
            layout = answer.settings.get("layout")
            if self.layout is not None and layout is not None and layout != self.layout:
                self.failures.setdefault(
                    c, f"{stage}: its model's prunable layout differs from the server's"
                )
                continue
            answers[c] = answer
        return answers

    def reasons(self, clients: Iterable[ClientId] | None = None) -> str:
        """Every (or these) left-out client's reason, on one line."""
        chosen = None if clients is None else set(clients)
        return "; ".join(
            f"client {c} (node {self.node_of[c]}): {why}"
            for c, why in sorted(self.failures.items())
            if chosen is None or c in chosen
        )

    def need(self, alive: Iterable[ClientId], stage: str, cohort: int) -> None:
        """NodeFailure unless at least `cohort` clients got through `stage`."""
        count = len(set(alive))
        if count < cohort:
            raise NodeFailure(
                f"only {count} of {len(self.node_of)} nodes got through {stage} "
                f"(min-cohort {cohort}). {self.reasons()}"
            )

    # --- sessions -------------------------------------------------------------------------------

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

    def open_session(
        self, protocol: str, options: Mapping[str, Any], roster: tuple[ClientId, ...]
    ) -> FlowerSession:
        """Enroll `roster` (every node must answer: a roster is fixed once published)."""
        info = registry.get(protocol)
        self.need(roster, "calibration", self.min_cohort)
        options = self.with_authority(protocol, roster, options)
        draft = SessionConfig(
            self.rng.random_bytes(32), roster, prepare_options(protocol, roster, options)
        )
        draft_bytes = R.encode_config(draft)
        settings = {"protocol": protocol}
        messages = {
            c: (R.ENROLL, R.content({**settings, "client-id": c}, {"config": draft_bytes}))
            for c in roster
        }
        replies = self.exchange("enroll", messages, self.round_timeout_s)
        if set(replies) != set(roster):
            missing = sorted(set(roster) - set(replies))
            raise NodeFailure(
                f"clients {missing} did not enroll; rerun once they are back. "
                + "; ".join(f"client {c}: {self.failures.get(c, '?')}" for c in missing)
            )
        publics, attestations = self.relay(replies)
        config = publish(protocol, draft, publics)
        server = info.make_server(config, self.rng)
        enrollment = encode_enrollment(publics, attestations)
        session = FlowerSession(self, protocol, config, server, enrollment)
        self.sessions.append(session)
        return session

    def with_authority(
        self, protocol: str, roster: tuple[ClientId, ...], options: Mapping[str, Any]
    ) -> dict[str, Any]:
        """`options`, and where the protocol names a key authority (option "authority") by
        default, the one node whose trust file pins it as authority."""
        options = dict(options)
        candidates = [c for c in self.authority_candidates if c in roster]
        if len(candidates) == 1 and "authority" not in options:
            if "authority" in prepare_options(protocol, roster, options):
                options["authority"] = candidates[0]
        return options


class FlowerSession(SecureSumSession):
    """One enrolled session on a Flower federation: `aggregate` drives its server over the Grid."""

    def __init__(
        self,
        federation: FlowerFederation,
        protocol: str,
        config: SessionConfig,
        server: Any,
        enrollment: bytes,
    ) -> None:
        self.federation = federation
        self.info = registry.get(protocol)
        self.config = config
        self.server = server
        self.enrollment = enrollment  # rides with each node's first protocol message
        self.started: set[ClientId] = set()
        self.traffic = SessionTraffic()
        self.results: list[AggregateResult] = []  # every aggregation's (unreleased) result

    def _deliver(self, outgoing: Mapping[ClientId, Any]) -> dict[ClientId, Any]:
        fed = self.federation
        fed.rounds += 1
        self.traffic.rounds += 1
        messages = {}
        for c, message in outgoing.items():
            blobs = {"message": encode(message)}
            if c not in self.started:
                blobs["enrollment"] = self.enrollment
                self.started.add(c)
            messages[c] = (R.PROTOCOL, R.content({}, blobs))
        answered = fed.exchange(f"protocol-{fed.rounds}", messages, fed.round_timeout_s)
        decoded = {}
        t = self.traffic
        for c, reply in answered.items():
            blob = R.blobs_of(reply.content).get("message")
            if blob is not None:
                fed.uplink[c] = fed.uplink.get(c, 0) + len(blob)
                t.uplink_bytes[c] = t.uplink_bytes.get(c, 0) + len(blob)
                by_round = t.uplink_bytes_by_round.setdefault(c, {})
                name = round_of(outgoing[c])
                by_round[name] = by_round.get(name, 0) + len(blob)
                decoded[c] = decode(blob)
                t.received_messages += 1
                t.received_bytes += len(blob)
                t.message_types = tuple(sorted({*t.message_types, tag_of(decoded[c])}))
        self.traffic.dropped |= set(outgoing) - set(answered)
        self._last = (dict(outgoing), set(decoded))
        return decoded

    def aggregate(self, spec: AggregationSpec) -> AggregateResult:
        """The sum of what every roster node's provider gives for `spec`; NodeFailure, with each
        lost node's reason, when the protocol cannot finish without them."""
        fed = self.federation
        started = time.perf_counter()
        for c in self.config.roster:
            fed.uplink.setdefault(c, 0)
        self._last: tuple[dict[ClientId, Any], set[ClientId]] = ({}, set())
        try:
            result = split(drive(self.server, group(spec, fed.chunk_entries), self._deliver), spec)
        except ProtocolError as exc:
            outgoing, answered = self._last
            silent = sorted(set(outgoing) - answered)
            round_name = round_of(next(iter(outgoing.values()))) if outgoing else "?"
            if silent and round_name in self.info.input_rounds:
                raise NodeFailure(
                    f"client(s) {silent} were lost in the middle of the masked-input stream "
                    f"({round_name}): the session aborted ({exc}); it is not restarted, since "
                    "a new session would ask the other nodes again for chunks they already "
                    f"released, which their ledgers refuse. {fed.reasons(silent)}"
                ) from exc
            if silent:
                raise NodeFailure(f"{exc}. {fed.reasons(silent)}") from exc
            raise
        fed.timings["secure_sum"] = round(
            fed.timings.get("secure_sum", 0.0) + time.perf_counter() - started, 3
        )
        if not result.contributors:
            raise NodeFailure(f"no client contributed to the sum. {fed.reasons()}".strip())
        self.results.append(result if fed.keep_sums else replace(result, sums={}))
        return result
