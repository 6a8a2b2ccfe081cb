"""How the integration packs its data into Flower records.

Every protocol message travels as its wire bytes (the project's codec) in an ArrayRecord holding
one uint8 Array, so Flower splits a large one into pieces; small settings travel in ConfigRecords.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from ...errors import ProtocolError
from ...pipeline.federation import NodeAnswer, NodeCommand
from ...secure_sum.api import SessionConfig, decode_state, encode_state

try:
    from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the optional extra
    from . import FLOWER_EXTRA_HINT

    raise ModuleNotFoundError(FLOWER_EXTRA_HINT, name=exc.name) from exc

SETTINGS = "fedpr.settings"  # ConfigRecord: what the server asks, or a reply's small fields
ARRAYS = "fedpr.arrays"  # ArrayRecord: a command's or answer's named numpy arrays
PAYLOAD = "fedpr.payload"  # ArrayRecord: named byte blobs (protocol messages, session config)
ERROR = "error"  # key in a reply's SETTINGS: the client refused, with a reason for the user

# message types (Flower routes "query.<action>" to the matching @app.query("<action>"))
COMMAND = "query.command"  # every pipeline NodeCommand (its kind is in the content)
ENROLL = "query.enroll"
PROTOCOL = "query.protocol"


BLOB_STYPE = "fedprllm-secure/bytes"  # an Array whose data are the raw bytes (no .npy framing)


def blob_array(data: bytes) -> Array:
    """Raw bytes as a uint8 Array, stored as they are (Flower still sends it in pieces)."""
    raw = bytes(data)
    return Array(dtype="uint8", shape=(len(raw),), stype=BLOB_STYPE, data=raw)


def array_blob(array: Array) -> bytes:
    """The bytes of `blob_array` (or of any uint8 numpy Array)."""
    if array.stype == BLOB_STYPE:
        return bytes(array.data)
    return bytes(array.numpy().astype(np.uint8, copy=False).tobytes())


def content(
    settings: Mapping[str, Any] | None = None, blobs: Mapping[str, bytes] | None = None
) -> RecordDict:
    """A RecordDict with small `settings` and large `blobs` (each sent as a uint8 array)."""
    records: dict[str, Any] = {SETTINGS: ConfigRecord(dict(settings or {}))}
    if blobs:
        records[PAYLOAD] = ArrayRecord({name: blob_array(data) for name, data in blobs.items()})
    return RecordDict(records)


def settings_of(records: RecordDict) -> dict[str, Any]:
    if SETTINGS not in records:
        return {}
    return dict(records[SETTINGS])


def blobs_of(records: RecordDict) -> dict[str, bytes]:
    if PAYLOAD not in records:
        return {}
    return {name: array_blob(array) for name, array in records.array_records[PAYLOAD].items()}


def payload_nbytes(records: RecordDict) -> int:
    """Bytes of the arrays and byte/str values in a RecordDict (what a node uploads, roughly)."""
    total = 0
    for record in records.values():
        if isinstance(record, ArrayRecord):
            total += sum(len(array.data) for array in record.values())
        elif isinstance(record, ConfigRecord):
            for value in record.values():
                items = value if isinstance(value, list) else [value]
                for item in items:
                    total += len(item) if isinstance(item, (bytes, str)) else 8
    return total


def encode_config(config: SessionConfig) -> bytes:
    return encode_state("session-config", {"config": config})


def decode_config(data: bytes) -> SessionConfig:
    config = decode_state("session-config", data).get("config")
    if not isinstance(config, SessionConfig):
        raise ProtocolError("the session config from the server is malformed")
    return config


# --- pipeline commands: NodeCommand / NodeAnswer <-> RecordDict ---------------------------------


def _packed(
    settings: Mapping[str, Any], arrays: Mapping[str, np.ndarray], **extra: Any
) -> RecordDict:
    records: dict[str, Any] = {
        SETTINGS: ConfigRecord({**extra, "json": json.dumps(dict(settings), sort_keys=True)})
    }
    if arrays:
        records[ARRAYS] = ArrayRecord(
            {name: Array(np.ascontiguousarray(value)) for name, value in arrays.items()}
        )
    return RecordDict(records)


def _unpacked(records: RecordDict) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    head = settings_of(records)
    try:
        settings = json.loads(str(head.pop("json", "{}")))
    except ValueError as exc:
        raise ProtocolError(f"a pipeline message's settings are not JSON: {exc}") from exc
    arrays = {}
    if ARRAYS in records:
        arrays = {name: a.numpy() for name, a in records.array_records[ARRAYS].items()}
    return settings, arrays, head


def command_content(command: NodeCommand, client_id: int) -> RecordDict:
    """A NodeCommand to client `client_id` as a RecordDict (settings as JSON, arrays as numpy
    Arrays)."""
    return _packed(command.settings, command.arrays, kind=command.kind, **{"client-id": client_id})


def command_of(records: RecordDict) -> NodeCommand:
    settings, arrays, head = _unpacked(records)
    return NodeCommand(str(head.get("kind", "")), settings, arrays)


def answer_content(answer: NodeAnswer, **host: Any) -> RecordDict:
    """A NodeAnswer as a RecordDict; `host`: what the Flower node adds (its identity key)."""
    return _packed(answer.settings, answer.arrays, **host)


def answer_of(records: RecordDict) -> tuple[NodeAnswer, dict[str, Any]]:
    """(the NodeAnswer, what the Flower node added)."""
    settings, arrays, host = _unpacked(records)
    return NodeAnswer(settings, arrays), host
