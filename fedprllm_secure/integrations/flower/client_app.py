"""The ClientApp: one node's side of federated pruning with a secure-sum protocol.

Node config (`flower-supernode --node-config "model='DIR' data='PATH'"`):
  model   the global model (checkpoint folder, .gguf, embedded name), the same as the server's
  data    this node's calibration text: a .txt or .jsonl file, or a folder of them
  device  optional: auto | cpu | cuda (default cpu)

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
from ...randomness import SystemRandomSource
from ...secure_sum import registry
from ...secure_sum.api import ChunkSpec, ClientProtocol
from ...secure_sum.messages import decode, encode
from . import records as R
from .enrollment import node_enroll

log = logging.getLogger(__name__)

MASKS = "fedpr.masks"  # ArrayRecord: layer name -> packed mask bits (uint8)
LAYOUT = "fedpr.layout"  # ConfigRecord: layer names and lengths, in mask-layout order
SECRET = "fedpr.secret"  # ArrayRecord: this node's enrollment secret (never sent)
CLIENT = "fedpr.client"  # ArrayRecord: the saved protocol client (secrets included; never sent)
NODE = "fedpr.node"  # ConfigRecord: protocol name and this node's client id
CLIENT_CLASS = "fedpr.client-class"  # ConfigRecord: "module:QualName" of the protocol client

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


@app.query("calibrate")
@_guarded
def calibrate(message: Message, context: Context) -> Message:
    """Load the model and this node's text, compute the local masks, keep them in the state."""
    import torch

    from ...client.calibrate import local_masks
    from ...data import ClientText, calibration_samples
    from ...model import load_model, prunable_layers

    settings = R.settings_of(message.content)
    model_spec = _node_setting(context, "model")
    device = str(context.node_config.get("device", "cpu"))
    loaded = load_model(model_spec, device)
    pruner = str(settings["pruner"])
    samples = None
    if pruner != "magnitude":
        documents = read_node_text(_node_setting(context, "data"))
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
    return _reply(message, {"layout": fingerprint, "layers": len(names)})


def _inputs(context: Context) -> Callable[[int, ChunkSpec], np.ndarray]:
    """The InputProvider over this node's saved masks; chunk "layers:A:B" = layers A..B-1."""
    if MASKS not in context.state or LAYOUT not in context.state:
        raise ProtocolError("this node has no masks yet (calibration did not run here)")
    layout = context.state.config_records[LAYOUT]
    names = [str(n) for n in cast(list, layout["names"])]
    lengths = [int(n) for n in cast(list, layout["lengths"])]
    masks = context.state.array_records[MASKS]

    def provider(_index: int, chunk: ChunkSpec) -> np.ndarray:
        try:
            kind, first, last = chunk.name.split(":")
            a, b = int(first), int(last)
        except ValueError:
            raise ProtocolError(f"unknown chunk {chunk.name!r}") from None
        if kind != "layers" or not 0 <= a < b <= len(names):
            raise ProtocolError(f"unknown chunk {chunk.name!r}")
        parts = [np.unpackbits(masks[names[i]].numpy(), count=lengths[i]) for i in range(a, b)]
        return np.concatenate(parts)

    return provider


@app.query("enroll")
@_guarded
def enroll(message: Message, context: Context) -> Message:
    """Create this node's enrollment secret (kept here); reply with its public part."""
    settings = R.settings_of(message.content)
    blobs = R.blobs_of(message.content)
    config = R.decode_config(blobs["config"])
    client_id = int(settings["client-id"])
    protocol = str(settings["protocol"])
    registry.get(protocol)
    secret, public = node_enroll(protocol, config, client_id, SystemRandomSource())
    context.state[SECRET] = ArrayRecord({"secret": R.blob_array(secret or b"")})
    context.state[NODE] = ConfigRecord(
        {"protocol": protocol, "client-id": client_id, "has-secret": secret is not None}
    )
    return _reply(message, {"client-id": client_id}, {"public": public} if public else None)


def start_session(context: Context, config_bytes: bytes) -> ClientProtocol:
    """Build this node's protocol client for the published session config (first message)."""
    if NODE not in context.state:
        raise ProtocolError("this node was not enrolled in a session")
    node = context.state.config_records[NODE]
    protocol, client_id = str(node["protocol"]), int(cast(int, node["client-id"]))
    config = R.decode_config(config_bytes)
    secret = (
        R.array_blob(context.state.array_records[SECRET]["secret"]) if node["has-secret"] else None
    )
    info = registry.get(protocol)
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
    if "config" in blobs:
        client = start_session(context, blobs["config"])
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
