"""The ClientApp: one node's side of the pipeline, with a secure-sum protocol.

Messages: `query.command` (a pipeline `NodeCommand` for this node's `ClientNode`, hosted by
`node_host.py`), `query.enroll` (make this node's enrollment secret, answer with its attested
public part), `query.protocol` (one protocol message for this node's protocol client).

Node config (`flower-supernode --node-config "model='DIR' data='PATH' ..."`):
  model     the global model (checkpoint folder, .gguf, embedded name), the same as the server's
  data      this node's calibration text: a .txt or .jsonl file, or a folder of them (on the
            simulation engine: partition `partition-id` of the run's corpus instead)
  device    optional: auto | cpu | cuda (default cpu)
  dtype     optional: auto | float32 | bfloat16 | float16 (default: the run config's dtype)
  blockwise optional: true = one decoder block in memory (default: the run's pruning.blockwise)
  identity  this node's long-term Ed25519 key file (`fedprllm-secure node-key PATH`)
  trust     a trust file (what this node pins: `trust.py`), or 'server' to let the server
            distribute keys unchecked; without it only the insecure plaintext protocol runs
  ledger    folder of this node's contribution ledgers (default ~/.cache/fedprllm-secure/
            flower-ledger): each chunk of one calibration is released to one session, ever
  partition-id, reproducible-noise   tests only (node_host.py)

Every action restores what it needs from `context.state` and saves it back before replying, since
Flower may run each message in a fresh ClientApp process. `context.state` never leaves the node:
the node's activations, masks and statistics, its RR key, the identity secret and the protocol
client state (its keys and shares) stay there. Refusals the user can act on (no data, a layout
mismatch, a protocol abort) come back as a reply with an "error" field; the server leaves that
node out and says why.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import re
from collections.abc import Callable
from typing import Any, cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.clientapp import ClientApp

from ...errors import DataError, FedPrError, ProtocolError
from ...randomness import SystemRandomSource
from ...secure_sum import registry
from ...secure_sum.api import ChunkSpec, ClientProtocol, config_digest
from ...secure_sum.messages import decode, encode
from . import node_host as H
from . import records as R
from . import trust as T
from .enrollment import node_enroll
from .node_ledger import LedgerFile, default_ledger_dir
from .wire_chunks import joined

log = logging.getLogger(__name__)

# benchmarks only (experiments/bench_flower_secagg.py): masks put into the state directly
MASKS = "fedpr.masks"  # ArrayRecord: layer name -> packed mask bits (uint8)
LAYOUT = "fedpr.layout"  # ConfigRecord: layer names and lengths, in mask-layout order
SECRET = "fedpr.secret"  # ArrayRecord: this node's enrollment secret (never sent)
CLIENT = "fedpr.client"  # ArrayRecord: the saved protocol client (secrets included; never sent)
NODE = "fedpr.node"  # ConfigRecord: protocol name and this node's client id
CLIENT_CLASS = "fedpr.client-class"  # ConfigRecord: "module:QualName" of the protocol client
DRAFT = "fedpr.draft"  # ArrayRecord: the draft session config this node enrolled in
SESSION = "fedpr.session"  # ConfigRecord: the session binding (config digest), ledger on/off

app = ClientApp()


def _reply(message: Message, settings: dict | None = None, blobs: dict | None = None) -> Message:
    return Message(R.content(settings, blobs), reply_to=message)


def _guarded(
    action: Callable[[Message, Context], Message],
) -> Callable[[Message, Context], Message]:
    def run(message: Message, context: Context) -> Message:
        try:
            return action(message, context)
        except FedPrError as exc:
            H.forget(context)  # the node in memory may be half-changed: the state decides
            log.error("fedprllm-secure: %s", exc)
            return _reply(message, {R.ERROR: f"{type(exc).__name__}: {exc}"})
        except Exception:
            H.forget(context)
            raise

    run.__name__ = action.__name__
    return run


@app.query("command")
@_guarded
def command(message: Message, context: Context) -> Message:
    """One pipeline command (`NodeCommand`) to this node's `ClientNode`, restored from and saved
    back to the state; answered with its `NodeAnswer` (plus this node's pinned identity)."""
    received = R.command_of(message.content)
    client_id = int(R.settings_of(message.content)["client-id"])
    H.refuse(received)
    node = H.load(context, client_id, received)
    try:
        answer = node.handle(received)
    except DataError as exc:
        raise DataError(flower_hint(str(exc))) from None
    H.store(context, node)
    if received.kind == "calibrate":
        H.note_round(context, node, client_id)
    return Message(R.answer_content(answer, **_identity(context)), reply_to=message)


# How a node's text too short for the run's samples is fixed on Flower (not simulate's flags).
FLOWER_HINT = (
    "lower the run config's samples-per-client or seqlen (e.g. --run-config seqlen=128 "
    "--run-config samples-per-client=2 when writing the app or running it) or give this node "
    "more text (node config data='PATH')"
)


def flower_hint(message: str) -> str:
    """`message` with a hint naming `simulate`'s flags (--seqlen, ...) replaced by Flower's."""
    if "--seqlen" not in message and "--samples-per-client" not in message:
        return message
    return re.sub(r";[^;]*--(seqlen|samples-per-client)[^;]*$", "", message) + "; " + FLOWER_HINT


def _identity(context: Context) -> dict[str, Any]:
    """This node's identity key (hex) and whether its trust file pins it as the key authority."""
    identity = context.node_config.get("identity")
    if not identity:
        return {}
    own = T.public_key(T.load_identity(str(identity)))
    policy = T.load_trust(_trust_setting(context))
    return {"identity": own.hex(), "authority": bool(policy and policy.ckks_authority == own)}


def _trust_setting(context: Context) -> str | None:
    value = context.node_config.get("trust")
    return None if value is None else str(value)


def _ledger(context: Context) -> LedgerFile:
    """This node's ledger file for the pruning round of its current calibration."""
    directory = context.node_config.get("ledger") or default_ledger_dir()
    if H.HOST in context.state:
        host = context.state.config_records[H.HOST]
        return LedgerFile(str(directory), str(host["fingerprint"]), str(host["what"]))
    if MASKS in context.state:  # masks put into the state without a calibration (benchmarks)
        digest = hashlib.sha256()
        for name, array in sorted(context.state.array_records[MASKS].items()):
            digest.update(name.encode() + b"\x00" + bytes(array.data))
        return LedgerFile(str(directory), digest.hexdigest(), "masks set in the node state")
    raise ProtocolError("this node has not calibrated")


def _layers(context: Context) -> list[str]:
    record = context.state.config_records[H.HOST if H.HOST in context.state else LAYOUT]
    return [str(n) for n in cast(list, record["layers" if H.HOST in context.state else "names"])]


class _Inputs:
    """The protocol client's InputProvider: this node's `ClientNode.provider` (restored on first
    use, saved after the message), guarded by the calibration's ledger and, under a secure
    protocol, by the ledger file on disk (each chunk on disk before its values leave)."""

    def __init__(self, context: Context) -> None:
        self.context, self.node = context, None
        session = context.state.config_records[SESSION]
        self.binding = bytes.fromhex(str(session["binding"]))
        self.file = _ledger(context) if session["guarded"] else None

    def __call__(self, index: int, chunk: ChunkSpec) -> np.ndarray:
        return joined(self.one)(index, chunk)  # a wire chunk: the pipeline's chunks it joins

    def one(self, index: int, chunk: ChunkSpec) -> np.ndarray:
        if self.file is not None:  # on disk before the bits leave: at most one release per chunk
            self.file.record(self.binding, index, [chunk.name])
        if MASKS in self.context.state and H.HOST not in self.context.state:
            return _saved_masks(self.context, chunk)
        if self.node is None:
            client_id = int(cast(int, self.context.state.config_records[NODE]["client-id"]))
            self.node = H.load(self.context, client_id)
        return self.node.ledger.guard(self.node.provider, self.binding)(index, chunk)

    def save(self) -> None:
        if self.node is not None:
            H.store(self.context, self.node)


def _saved_masks(context: Context, chunk: ChunkSpec) -> np.ndarray:
    """A benchmark's masks from the state: chunk = a layer name or "layers:A:B"."""
    layout = context.state.config_records[LAYOUT]
    names, lengths = list(cast(list, layout["names"])), list(cast(list, layout["lengths"]))
    if chunk.name.startswith("layers:"):
        first, last = (int(v) for v in chunk.name.split(":")[1:])
    elif chunk.name in names:
        first = names.index(chunk.name)
        last = first + 1
    else:
        raise ProtocolError(f"unknown chunk {chunk.name!r}")
    masks = context.state.array_records[MASKS]
    parts = [np.unpackbits(masks[names[i]].numpy(), count=lengths[i]) for i in range(first, last)]
    return np.concatenate(parts)


@app.query("enroll")
@_guarded
def enroll(message: Message, context: Context) -> Message:
    """Create this node's enrollment secret (kept here); reply with its public part."""
    settings = R.settings_of(message.content)
    blobs = R.blobs_of(message.content)
    draft_bytes = blobs["config"]
    draft = R.decode_config(draft_bytes)
    client_id = int(settings["client-id"])
    protocol = str(settings["protocol"])
    registry.get(protocol)
    for key in (NODE, SECRET, DRAFT, SESSION, CLIENT, CLIENT_CLASS):
        if key in context.state:
            del context.state[key]  # a new enrollment forgets the last session entirely
    policy = T.load_trust(_trust_setting(context))
    T.check_draft(policy, protocol, draft, client_id)
    identity = context.node_config.get("identity")
    if policy is not None and not policy.server_trusted and not identity:
        raise T.TrustRefusal(
            "this node has a trust file but no identity key (node config identity='PATH', "
            "made by `fedprllm-secure node-key PATH`)"
        )
    secret, public = node_enroll(protocol, draft, client_id, SystemRandomSource())
    answer = {"public": public}
    own_identity = b""
    if identity:
        own_identity, signature = T.attest(
            T.load_identity(str(identity)), protocol, draft, client_id, public
        )
        answer.update({"identity": own_identity, "attestation": signature})
    context.state[SECRET] = ArrayRecord({"secret": R.blob_array(secret or b"")})
    context.state[DRAFT] = ArrayRecord(
        {
            "config": R.blob_array(draft_bytes),
            "public": R.blob_array(public),
            "identity": R.blob_array(own_identity),
        }
    )
    context.state[NODE] = ConfigRecord(
        {"protocol": protocol, "client-id": client_id, "has-secret": secret is not None}
    )
    return _reply(message, {"client-id": client_id}, {k: v for k, v in answer.items() if v})


def start_session(context: Context, enrollment: bytes) -> tuple[ClientProtocol, _Inputs]:
    """Build this node's protocol client (first protocol message).

    The session config is built here, from the draft this node enrolled in and the public parts
    the server relays, after the trust checks (`trust.published_config`); the server never hands
    a node a config as a whole. Under a secure protocol the node also refuses a session if it
    already released a layer of this calibration (its ledger file)."""
    if NODE not in context.state or DRAFT not in context.state:
        raise ProtocolError("this node was not enrolled in a session")
    if SESSION in context.state:
        raise ProtocolError("this node already started this session")
    node = context.state.config_records[NODE]
    protocol, client_id = str(node["protocol"]), int(cast(int, node["client-id"]))
    enrolled = context.state.array_records[DRAFT]
    draft = R.decode_config(R.array_blob(enrolled["config"]))
    own_identity = R.array_blob(enrolled["identity"])
    own = (own_identity, R.array_blob(enrolled["public"])) if own_identity else None
    publics, attestations = T.decode_enrollment(enrollment)
    policy = T.load_trust(_trust_setting(context))
    config = T.published_config(policy, protocol, draft, client_id, own, publics, attestations)
    secret = (
        R.array_blob(context.state.array_records[SECRET]["secret"]) if node["has-secret"] else None
    )
    info = registry.get(protocol)
    if info.secure:
        _ledger(context).check_fresh(_layers(context))
    context.state[SESSION] = ConfigRecord(
        {"binding": config_digest(config).hex(), "guarded": info.secure}
    )
    inputs = _Inputs(context)
    client = info.make_client(config, client_id, SystemRandomSource(), inputs, secret)
    kind = type(client)
    if kind.to_state is ClientProtocol.to_state:
        raise ProtocolError(
            f"protocol {protocol!r} cannot run on Flower: its client has no to_state/from_state"
        )
    context.state[CLIENT_CLASS] = ConfigRecord({"path": f"{kind.__module__}:{kind.__qualname__}"})
    return client, inputs


@app.query("protocol")
@_guarded
def protocol(message: Message, context: Context) -> Message:
    """Restore the protocol client, answer one protocol message, save the client again."""
    blobs = R.blobs_of(message.content)
    if "enrollment" in blobs:
        client, inputs = start_session(context, blobs["enrollment"])
    elif CLIENT in context.state and CLIENT_CLASS in context.state:
        saved = R.array_blob(context.state.array_records[CLIENT]["state"])
        client_cls = _client_class(str(context.state.config_records[CLIENT_CLASS]["path"]))
        inputs = _Inputs(context)
        client = client_cls.from_state(saved, inputs, SystemRandomSource())
    else:
        raise ProtocolError("this node has no protocol session")
    wire = blobs["message"]
    try:
        reply = client.handle(decode(wire))
    finally:
        context.state[CLIENT] = ArrayRecord({"state": R.blob_array(client.to_state())})
        inputs.save()  # the node's ledger now holds what it released
    answer = {"message": encode(reply)} if reply is not None else None
    return _reply(message, {"state": client.state}, answer)


def _client_class(path: str) -> type[ClientProtocol]:
    """The ClientProtocol subclass saved as "module:QualName" (this node wrote it itself)."""
    module_name, _, name = path.partition(":")
    cls = getattr(importlib.import_module(module_name), name, None)
    if not (isinstance(cls, type) and issubclass(cls, ClientProtocol)):
        raise ProtocolError(f"saved protocol client class {path!r} is not a ClientProtocol")
    return cls
