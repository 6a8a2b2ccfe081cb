"""The ClientApp: one node's side of federated pruning with a secure-sum protocol.

Node config (`flower-supernode --node-config "model='DIR' data='PATH' ..."`):
  model     the global model (checkpoint folder, .gguf, embedded name), the same as the server's
  data      this node's calibration text: a .txt or .jsonl file, or a folder of them
  device    optional: auto | cpu | cuda (default cpu)
  identity  this node's long-term Ed25519 key file (`fedprllm-secure node-key PATH`)
  trust     a trust file (what this node pins: `trust.py`), or 'server' to let the server
            distribute keys unchecked; without it only the insecure plaintext protocol runs
  ledger    folder of this node's contribution ledgers (default ~/.cache/fedprllm-secure/
            flower-ledger): each layer of one calibration is released to one session, ever

Every action restores what it needs from `context.state` and saves it back before replying, since
Flower runs each message in a fresh ClientApp process. `context.state` never leaves the node: the
masks, the identity secret and the protocol client state (its keys and shares) stay there.
Refusals the user can act on (no data, a layout mismatch, a protocol abort) come back as a reply
with an "error" field; the server leaves that node out and says why.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.clientapp import ClientApp

from ...errors import DataError, FedPrError, ProtocolError
from ...pipeline.federation import NodeAnswer, NodeCommand
from ...randomness import SystemRandomSource
from ...secure_sum import registry
from ...secure_sum.api import ChunkSpec, ClientProtocol, config_digest
from ...secure_sum.messages import decode, encode
from . import records as R
from . import trust as T
from .enrollment import node_enroll
from .node_ledger import LedgerFile, data_digest, default_ledger_dir, round_fingerprint

log = logging.getLogger(__name__)

MASKS = "fedpr.masks"  # ArrayRecord: layer name -> packed mask bits (uint8)
LAYOUT = "fedpr.layout"  # ConfigRecord: layer names and lengths, in mask-layout order
SECRET = "fedpr.secret"  # ArrayRecord: this node's enrollment secret (never sent)
CLIENT = "fedpr.client"  # ArrayRecord: the saved protocol client (secrets included; never sent)
NODE = "fedpr.node"  # ConfigRecord: protocol name and this node's client id
CLIENT_CLASS = "fedpr.client-class"  # ConfigRecord: "module:QualName" of the protocol client
ROUND = "fedpr.round"  # ConfigRecord: fingerprint of this node's pruning round (model, text)
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
            log.error("fedprllm-secure: %s", exc)
            return _reply(message, {R.ERROR: f"{type(exc).__name__}: {exc}"})

    run.__name__ = action.__name__
    return run


def read_node_text(path: str) -> list[str]:
    """This node's documents, read like one entry of `simulate --client-data`."""
    from ...data import _read_text_file

    root = Path(path).expanduser()
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.suffix in (".txt", ".jsonl"))
    elif root.is_file():
        files = [root]
    else:
        raise DataError(f"node data not found: {path} (set node config data='PATH')")
    documents = [doc for file in files for doc in _read_text_file(file)]
    if not documents:
        raise DataError(f"node data {path} holds no text (.txt or .jsonl)")
    return documents


def _node_setting(context: Context, key: str) -> str:
    value = context.node_config.get(key)
    if not isinstance(value, str) or not value:
        raise DataError(
            f"this node has no {key!r} in its node config (--node-config \"{key}='...'\")"
        )
    return value


def node_model(context: Context) -> str:
    """The global model: node config `model`, else (simulation engine) the run config's."""
    value = context.node_config.get("model") or context.run_config.get("model")
    if not isinstance(value, str) or not value:
        raise DataError(
            "this node has no 'model' in its node config (--node-config \"model='...'\")"
        )
    return value


def node_documents(context: Context) -> tuple[list[str], str | None]:
    """This node's calibration documents and what identifies them (for its ledger).

    Node config `data` (a deployment), else, on Flower's simulation engine, partition
    `partition-id` of `num-partitions` of the run config's corpus, split exactly as `simulate`
    splits it (`data.split_clients(pool, num-partitions, split, seed)`)."""
    data = context.node_config.get("data")
    if data or "partition-id" not in context.node_config:
        path = _node_setting(context, "data")
        return read_node_text(path), str(Path(path).expanduser().resolve())
    from ...data import heldout_split, load_corpus, split_clients

    run = context.run_config
    corpus = str(run.get("corpus", "wiki-topics"))
    index = int(context.node_config["partition-id"])
    count = int(context.node_config["num-partitions"])
    pool, _ = heldout_split(load_corpus(corpus))
    client = split_clients(pool, count, str(run.get("split", "iid")), int(run.get("seed", 0)))[
        index
    ]
    digest = hashlib.sha256("\x00".join(client.documents).encode("utf-8")).hexdigest()
    return list(client.documents), f"corpus {corpus} partition {index}/{count} sha256:{digest}"


def calibrate(command: NodeCommand, context: Context) -> NodeAnswer:
    """Load the model and this node's text, compute the local masks, keep them in the state."""
    import torch

    from ...client.calibrate import local_masks
    from ...data import ClientText, calibration_samples
    from ...model import load_model, prunable_layers

    settings = command.settings
    model_spec = node_model(context)
    device = str(context.node_config.get("device", "cpu"))
    loaded = load_model(model_spec, device)
    pruner = str(settings["pruner"])
    samples, data_id = None, None
    if pruner != "magnitude":
        documents, data_id = node_documents(context)
        samples = calibration_samples(
            loaded.tokenizer,
            ClientText(f"node-{context.node_id}", tuple(documents)),
            int(settings["samples-per-client"]),
            int(settings["seqlen"]),
        )
    torch.manual_seed(0)
    masks, _stats = local_masks(
        loaded.model,
        samples,
        float(settings["sparsity"]),
        pruner,
        str(settings["calibration"]),
        int(settings["batch-size"]),
    )
    layers = prunable_layers(loaded.model)
    names = [layer.name for layer in layers]
    lengths = [layer.numel for layer in layers]
    context.state[MASKS] = ArrayRecord(
        {
            name: R.Array(np.packbits(masks[name].reshape(-1).numpy().astype(np.uint8)))
            for name in names
        }
    )
    context.state[LAYOUT] = ConfigRecord({"names": names, "lengths": lengths})
    fingerprint = hashlib.sha256(repr(list(zip(names, lengths, strict=True))).encode()).hexdigest()
    data = context.node_config.get("data")
    if data:  # the text's content, whether or not the pruner read it
        data_id = str(Path(str(data)).expanduser().resolve())
    content = data_digest(data_id) if data else (data_id or "none")
    model_id = (
        str(Path(model_spec).expanduser().resolve()) if Path(model_spec).exists() else model_spec
    )
    context.state[ROUND] = ConfigRecord(
        {
            "fingerprint": round_fingerprint(model_id, fingerprint, content),
            "what": f"model {model_id}, data {data_id or 'none'}",
        }
    )
    answer: dict = {"layout": fingerprint, "layers": len(names)}
    identity = context.node_config.get("identity")
    if identity:
        own = T.public_key(T.load_identity(str(identity)))
        answer["identity"] = own.hex()
        policy = T.load_trust(_trust_setting(context))
        answer["authority"] = bool(policy is not None and policy.ckks_authority == own)
    return NodeAnswer(answer)


COMMANDS: dict[str, Callable[[NodeCommand, Context], NodeAnswer]] = {"calibrate": calibrate}


@app.query("command")
@_guarded
def command(message: Message, context: Context) -> Message:
    """One pipeline command (`NodeCommand`), answered with a `NodeAnswer`."""
    received = R.command_of(message.content)
    handler = COMMANDS.get(received.kind)
    if handler is None:
        raise ProtocolError(f"this node does not know the command {received.kind!r}")
    return Message(R.answer_content(handler(received, context)), reply_to=message)


def _trust_setting(context: Context) -> str | None:
    value = context.node_config.get("trust")
    return None if value is None else str(value)


def _ledger(context: Context) -> LedgerFile:
    """This node's ledger file for the pruning round its masks come from."""
    if MASKS not in context.state or LAYOUT not in context.state:
        raise ProtocolError("this node has no masks yet (calibration did not run here)")
    directory = context.node_config.get("ledger") or default_ledger_dir()
    if ROUND in context.state:
        round_ = context.state.config_records[ROUND]
        return LedgerFile(str(directory), str(round_["fingerprint"]), str(round_["what"]))
    # masks put into the state without `calibrate` (benchmarks): the masks are the round
    digest = hashlib.sha256()
    for name, array in sorted(context.state.array_records[MASKS].items()):
        digest.update(name.encode() + b"\x00" + bytes(array.data))
    return LedgerFile(str(directory), digest.hexdigest(), "masks set in the node state")


def _inputs(context: Context) -> Callable[[int, ChunkSpec], np.ndarray]:
    """The InputProvider over this node's saved masks; chunk "layers:A:B" = layers A..B-1."""
    if MASKS not in context.state or LAYOUT not in context.state:
        raise ProtocolError("this node has no masks yet (calibration did not run here)")
    layout = context.state.config_records[LAYOUT]
    names = [str(n) for n in cast(list, layout["names"])]
    lengths = [int(n) for n in cast(list, layout["lengths"])]
    masks = context.state.array_records[MASKS]
    session = context.state.config_records.get(SESSION)
    ledger = _ledger(context) if session is not None and session["guarded"] else None

    def provider(index: int, chunk: ChunkSpec) -> np.ndarray:
        try:
            kind, first, last = chunk.name.split(":")
            a, b = int(first), int(last)
        except ValueError:
            raise ProtocolError(f"unknown chunk {chunk.name!r}") from None
        if kind != "layers" or not 0 <= a < b <= len(names):
            raise ProtocolError(f"unknown chunk {chunk.name!r}")
        if ledger is not None:  # on disk before the bits leave: at most one release per layer
            assert session is not None
            ledger.record(bytes.fromhex(str(session["binding"])), index, names[a:b])
        parts = [np.unpackbits(masks[names[i]].numpy(), count=lengths[i]) for i in range(a, b)]
        return np.concatenate(parts)

    return provider


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


def start_session(context: Context, enrollment: bytes) -> ClientProtocol:
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
        ledger = _ledger(context)
        names = cast(list, context.state.config_records[LAYOUT]["names"])
        ledger.check_fresh(str(n) for n in names)
    context.state[SESSION] = ConfigRecord(
        {"binding": config_digest(config).hex(), "guarded": info.secure}
    )
    client = info.make_client(config, client_id, SystemRandomSource(), _inputs(context), secret)
    kind = type(client)
    if kind.to_state is ClientProtocol.to_state:
        raise ProtocolError(
            f"protocol {protocol!r} cannot run on Flower: its client has no to_state/from_state"
        )
    context.state[CLIENT_CLASS] = ConfigRecord({"path": f"{kind.__module__}:{kind.__qualname__}"})
    return client


@app.query("protocol")
@_guarded
def protocol(message: Message, context: Context) -> Message:
    """Restore the protocol client, answer one protocol message, save the client again."""
    blobs = R.blobs_of(message.content)
    if "enrollment" in blobs:
        client = start_session(context, blobs["enrollment"])
    elif CLIENT in context.state and CLIENT_CLASS in context.state:
        saved = R.array_blob(context.state.array_records[CLIENT]["state"])
        client_cls = _client_class(str(context.state.config_records[CLIENT_CLASS]["path"]))
        client = client_cls.from_state(saved, _inputs(context), SystemRandomSource())
    else:
        raise ProtocolError("this node has no protocol session")
    wire = blobs["message"]
    try:
        reply = client.handle(decode(wire))
    finally:
        context.state[CLIENT] = ArrayRecord({"state": R.blob_array(client.to_state())})
    answer = {"message": encode(reply)} if reply is not None else None
    return _reply(message, {"state": client.state}, answer)


def _client_class(path: str) -> type[ClientProtocol]:
    """The ClientProtocol subclass saved as "module:QualName" (this node wrote it itself)."""
    module_name, _, name = path.partition(":")
    cls = getattr(importlib.import_module(module_name), name, None)
    if not (isinstance(cls, type) and issubclass(cls, ClientProtocol)):
        raise ProtocolError(f"saved protocol client class {path!r} is not a ClientProtocol")
    return cls
