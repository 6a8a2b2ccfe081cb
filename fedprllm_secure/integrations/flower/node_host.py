"""The pipeline's `ClientNode` hosted in a Flower node's `context.state`.

A ClientApp process may live for one message only, so every message restores the node from the
state (`load`), lets it act, and saves it back (`store`). The node's environment is rebuilt each
time from what the node itself holds, never from the server:

* the model: node config `model` (else, on the simulation engine, the run config's), loaded once
  per process (`workbench`) in node config `dtype`, else the run config's `dtype` (auto), whole
  or one decoder block at a time (node config `blockwise`, else the run's `pruning.blockwise`);
* the text: node config `data`, or on the simulation engine partition `partition-id` of the run
  config's corpus (`node_documents`);
* the randomness: the OS CSPRNG; only where the run asks for reproducible (not private) noise and
  the node's own config allows it (`reproducible-noise='allow'`, tests), the run seed's child
  `node-<k>` as in process, k = node config `partition-id`, else the client id.

Commands a Flower node refuses: `samples` and `local-masks` (they hand over the node's text or its
local masks: baselines of a simulation, never of a federation).
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context

from ...errors import DataError, ProtocolError
from ...pipeline.federation import NodeCommand

NODE_SETTINGS = "fedpr.node-settings"  # ConfigRecord {"json": the saved ClientNode's settings}
NODE_ARRAYS = "fedpr.node-arrays"  # ArrayRecord: the saved ClientNode's arrays (secrets too)
HOST = "fedpr.host"  # ConfigRecord: client id, round fingerprint and layer names (ledger file)
REFUSED = ("samples", "local-masks")


def node_setting(context: Context, key: str) -> str:
    value = context.node_config.get(key)
    if not isinstance(value, str) or not value:
        raise DataError(
            f"this node has no {key!r} in its node config (--node-config \"{key}='...'\")"
        )
    return value


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


def node_model(context: Context) -> str:
    """The global model: node config `model`, else (simulation engine) the run config's."""
    value = context.node_config.get("model") or context.run_config.get("model")
    if not isinstance(value, str) or not value:
        raise DataError(
            "this node has no 'model' in its node config (--node-config \"model='...'\")"
        )
    return value


def node_documents(context: Context) -> tuple[list[str], str, str]:
    """(documents, what they are, content digest) of this node's calibration text.

    Node config `data` (a deployment), else, on Flower's simulation engine, partition
    `partition-id` of `num-partitions` of the run config's corpus, split exactly as `simulate`
    splits it (`data.split_clients(pool, num-partitions, split, seed)`)."""
    from .node_ledger import data_digest

    if context.node_config.get("data") or "partition-id" not in context.node_config:
        path = str(Path(node_setting(context, "data")).expanduser().resolve())
        return read_node_text(path), path, data_digest(path)

    run = context.run_config
    corpus = str(run.get("data.corpus", run.get("corpus", "wiki-topics")))
    split = str(run.get("data.split", run.get("split", "iid")))
    index = int(context.node_config["partition-id"])
    count = int(context.node_config["num-partitions"])
    documents = _partition(corpus, split, int(run.get("seed", 0)), count)[index]
    digest = hashlib.sha256("\x00".join(documents).encode("utf-8")).hexdigest()
    return list(documents), f"corpus {corpus} partition {index}/{count}", digest


@lru_cache(maxsize=4)
def _partition(corpus: str, split: str, seed: int, count: int) -> list[tuple[str, ...]]:
    """The documents of every partition (computed once per process)."""
    from ...data import heldout_split, load_corpus, split_clients

    pool, _ = heldout_split(load_corpus(corpus))
    return [client.documents for client in split_clients(pool, count, split, seed)]


Spec = tuple[str, str, str, bool]  # model, device, dtype, blockwise
_BENCHES: dict[Spec, Any] = {}  # the models this process loaded (at most 2)


def workbench(model: str, device: str, dtype: str = "auto", blockwise: bool = False) -> Any:
    """The model of this process (nodes sharing a process share it: a node leaves it dense);
    `blockwise`: its decoder blocks stay in the checkpoint, one in memory per command."""
    from ...pipeline.blockwise_bench import BlockwiseBench
    from ...pipeline.workbench import Workbench

    key = (model, device, dtype, blockwise)
    if key not in _BENCHES:
        if len(_BENCHES) >= 2:
            _BENCHES.pop(next(iter(_BENCHES)))
        _BENCHES[key] = (BlockwiseBench if blockwise else Workbench)(model, device, dtype)
    return _BENCHES[key]


def node_blockwise(context: Context) -> bool:
    """One block in memory: node config `blockwise`, else the run config's `pruning.blockwise`
    (the masks are the same either way: it is the node's memory, not the run's result)."""
    value = context.node_config.get("blockwise", context.run_config.get("pruning.blockwise"))
    return str(value).strip().lower() in ("true", "1", "yes")


def node_dtype(context: Context) -> str:
    """The weights' dtype: node config `dtype`, else the run config's (`dtype`), else auto."""
    return str(context.node_config.get("dtype") or context.run_config.get("dtype") or "auto")


class LazyBench:
    """The node's `Workbench`, loaded on first use of anything but its tokenizer and its block
    count. Flower runs each message in a fresh ClientApp process, and most messages (describe,
    prepare, every masked-input round) restore the node without computing on the model: for a
    checkpoint folder or the embedded model they read only the tokenizer and config.json (the
    files `model.load_model` reads them from), not the weights."""

    def __init__(self, model: str, device: str, dtype: str = "auto", blockwise: bool = False):
        self.spec: Spec = (model, device, dtype, blockwise)
        self._light: dict[str, Any] = {}

    @property
    def blockwise(self) -> bool:
        return self.spec[3]

    def _folder(self) -> str | None:
        """The checkpoint folder the model loads from, or None (GGUF, Hub id: load it all)."""
        from ... import assets
        from ...model import _embedded_checkpoint

        model = self.spec[0]
        if model in assets.ASSETS and assets.ASSETS[model].kind == "model":
            return str(_embedded_checkpoint(model))
        path = Path(model).expanduser()
        return str(path) if (path / "config.json").is_file() else None

    def _cheap(self, name: str) -> Any:
        """The tokenizer or block count: from the loaded model if this process has it, else
        from the checkpoint folder's files, else by loading the model."""
        if self.spec not in _BENCHES and not self._light:
            folder = self._folder()
            if folder is not None:
                from transformers import AutoConfig, AutoTokenizer

                self._light["tokenizer"] = AutoTokenizer.from_pretrained(folder)
                config = AutoConfig.from_pretrained(folder)
                self._light["blocks"] = int(config.num_hidden_layers)
                self._light["config"] = config
        if self.spec not in _BENCHES and name in self._light:
            return self._light[name]
        return getattr(workbench(*self.spec), name)

    @property
    def tokenizer(self) -> Any:
        return self._cheap("tokenizer")

    @property
    def blocks(self) -> int:
        return int(self._cheap("blocks"))

    def block_layers(self, block: int) -> list[Any]:
        """Block `block`'s prunable layers (names and shapes) from the model's skeleton on the
        meta device when the weights are not loaded (`prepare masks {block}` needs only names)."""
        self._cheap("blocks")
        if self.spec in _BENCHES or "config" not in self._light:
            return workbench(*self.spec).block_layers(block)
        if "layers" not in self._light:
            from accelerate import init_empty_weights
            from transformers import AutoModelForCausalLM

            from ...model import prunable_layers

            with init_empty_weights():
                skeleton = AutoModelForCausalLM.from_config(self._light["config"])
            self._light["layers"] = prunable_layers(skeleton)
        return [layer for layer in self._light["layers"] if layer.block == block]

    def __getattr__(self, name: str) -> Any:
        return getattr(workbench(*self.spec), name)


def node_source(context: Context, client_id: int, privacy: dict[str, Any] | None) -> Any:
    from ...privacy.noise_source import secret_source

    reproducible = bool((privacy or {}).get("reproducible_noise"))
    if reproducible and str(context.node_config.get("reproducible-noise", "")) != "allow":
        raise ProtocolError(
            "the server asked for reproducible noise (drawn from the run's seed, which the server "
            "knows): this node draws its randomized-response key and DP noise from its own CSPRNG "
            "(node config reproducible-noise='allow' only for tests)"
        )
    seed = int(context.run_config.get("seed", 0))
    k = int(context.node_config.get("partition-id", client_id))
    return secret_source(seed, reproducible, "simulate").child(f"node-{k}")


# The node this process saved last, per Flower node: (version saved, node). A process that
# handles a node's next message too reuses it; any other process restores it from the state.
_LAST: dict[int, tuple[str, Any]] = {}


def load(context: Context, client_id: int, command: NodeCommand | None = None) -> Any:
    """This node's ClientNode: restored from the state, or new (client `client_id`)."""
    cached = _LAST.get(context.node_id)
    fresh = command is not None and command.kind == "calibrate"  # its privacy sets the source
    if cached is not None and not fresh and NODE_SETTINGS in context.state:
        if cached[0] == str(context.state.config_records[NODE_SETTINGS].get("version")):
            return cached[1]
    return _restore(context, client_id, command)


def forget(context: Context) -> None:
    """Drop this process's copy of the node (after a failed message: the state is the truth)."""
    _LAST.pop(context.node_id, None)


def _restore(context: Context, client_id: int, command: NodeCommand | None) -> Any:
    from ...data import ClientText
    from ...pipeline.client_step import ClientNode, NodeEnv

    model = node_model(context)
    device = str(context.node_config.get("device", "cpu"))
    bench = LazyBench(model, device, node_dtype(context), node_blockwise(context))
    documents, what, _ = node_documents(context)
    text = ClientText(f"node-{context.node_id}", tuple(documents))
    saved = None
    if NODE_SETTINGS in context.state:
        settings = json.loads(str(context.state.config_records[NODE_SETTINGS]["json"]))
        arrays = {k: a.numpy() for k, a in context.state.array_records[NODE_ARRAYS].items()}
        saved = (settings, arrays)
    privacy = None
    if command is not None and command.kind == "calibrate":
        privacy = dict(command.settings.get("privacy") or {})
    elif saved is not None and saved[0].get("calibration"):
        privacy = saved[0]["calibration"]["privacy"]
    env = NodeEnv(bench, text, node_source(context, client_id, privacy))
    if saved is None:
        return ClientNode(env, client_id)
    if int(saved[0]["client_id"]) != client_id:
        raise ProtocolError(
            f"this node is client {saved[0]['client_id']} of its run, the server says {client_id}"
        )
    return ClientNode.restore(env, saved)


def store(context: Context, node: Any) -> None:
    settings, arrays = node.save()
    version = os.urandom(8).hex()
    context.state[NODE_SETTINGS] = ConfigRecord({"json": json.dumps(settings), "version": version})
    _LAST[context.node_id] = (version, node)
    context.state[NODE_ARRAYS] = ArrayRecord(
        {k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()}
    )


def note_round(context: Context, node: Any, client_id: int) -> None:
    """After a calibration: the pruning round its ledger file is kept under (the model the node
    loads, its layout, the content of its text; never the server's settings)."""
    from ...pipeline.layout import fingerprint
    from .node_ledger import round_fingerprint

    model = node_model(context)
    path = Path(model).expanduser()
    model_id = str(path.resolve()) if path.exists() else model
    _, what, digest = node_documents(context)
    bench = node.env.bench
    context.state[HOST] = ConfigRecord(
        {
            "client-id": client_id,
            "fingerprint": round_fingerprint(model_id, fingerprint(bench.lengths), digest),
            "what": f"model {model_id}, data {what}",
            "layers": [layer.name for layer in bench.layers],
        }
    )


def refuse(command: NodeCommand) -> None:
    if command.kind in REFUSED:
        raise ProtocolError(
            f"a Flower node does not answer {command.kind!r}: it would hand over its text or "
            "its local masks (a simulation baseline only)"
        )
