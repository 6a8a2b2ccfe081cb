"""A Flower node's contribution ledger on its own disk: each layer of one calibration goes to at
most one (session, aggregation), in this run or any later one.

Two sums over the same layer with different contributors let the server subtract them and read a
node's mask (issue 12, item 3). A new `flwr run` recomputes exactly the same masks from the same
model and text, so the node state of one run is not enough: the ledger lives in a node-local file,
one per **pruning round** (fingerprint of the model the node loads, its prunable layout and the
content of its calibration text), under the node config `ledger='DIR'` (default
`$FEDPRLLM_SECURE_CACHE/flower-ledger`, i.e. `~/.cache/fedprllm-secure/flower-ledger`).

The settings the server chooses (sparsity, sample count, batch size, chunking) are deliberately
not part of the fingerprint: a server could otherwise collect a near-identical mask again by
changing one of them. The pipeline's chunks (a layer's mask, a statistic's exponent histogram or
fixed-point limb), not the server's wire grouping (`wire_chunks.py`), are recorded, so regrouping
them does not get around it; a session is refused from its start if any layer of the calibration
was released. A chunk is recorded (file written, under a lock) before its values are handed to the
protocol.

Pure: no flwr import.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ...errors import ProtocolError
from ...secure_sum.api import ChunkSpec
from ...secure_sum.ledger import ContributionLedger

LEDGER_SUFFIX = ".ledger"


class AlreadyReleased(ProtocolError):
    """This node already released a layer of this calibration to another session/aggregation."""


def default_ledger_dir() -> Path:
    from ...assets import cache_dir

    return cache_dir() / "flower-ledger"


def data_digest(path: str | Path | None) -> str:
    """SHA-256 over a calibration text file or folder: relative names and contents."""
    if path is None:
        return "none"
    root = Path(path).expanduser()
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for file in files:
        name = file.relative_to(root).as_posix() if root.is_dir() else ""
        digest.update(name.encode("utf-8") + b"\x00")
        content = hashlib.sha256()
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                content.update(block)
        digest.update(content.digest())
    return digest.hexdigest()


def round_fingerprint(model: str, layout: str, data: str) -> str:
    """The pruning round a node's masks come from: the model it loads, its layout, its text."""
    body = "\x00".join(("fedprllm-secure/flower/pruning-round/v1", model, layout, data))
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


class LedgerFile:
    """The ledger of one pruning round of one node: DIR/<fingerprint>.ledger."""

    def __init__(self, directory: str | Path, fingerprint: str, what: str = "") -> None:
        self.directory = Path(directory).expanduser()
        self.path = self.directory / f"{fingerprint[:40]}{LEDGER_SUFFIX}"
        self.what = what  # e.g. "model M, data D", for the error message

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a+b") as lock:
            try:
                import fcntl

                fcntl.flock(lock, fcntl.LOCK_EX)
            except ImportError:  # pragma: no cover - not POSIX: one node per ledger dir
                pass
            yield

    def load(self) -> ContributionLedger:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return ContributionLedger()
        except OSError as exc:
            raise ProtocolError(f"cannot read the contribution ledger {self.path}: {exc}") from exc
        return ContributionLedger.from_bytes(data)

    def _save(self, ledger: ContributionLedger) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as handle:
            handle.write(ledger.to_bytes())
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self.path)

    def refusal(self, layer: str) -> AlreadyReleased:
        return AlreadyReleased(
            f"this node already released layer {layer!r} of this calibration"
            + (f" ({self.what})" if self.what else "")
            + " to an earlier session or aggregation; a second sum over it with other "
            "contributors would let the server subtract the two sums and learn this node's "
            f"mask. Its ledger is {self.path}: delete that file only if you accept that risk"
        )

    def check_fresh(self, layers: Iterable[str]) -> None:
        """Refuse (at a session's start) if any of `layers` was already released."""
        ledger = self.load()
        for layer in layers:
            if ledger.released(_key(layer)):
                raise self.refusal(layer)

    def record(self, binding: bytes, aggregation: int, layers: Iterable[str]) -> None:
        """Note that `layers` go to (binding, aggregation), on disk, before they are read;
        AlreadyReleased (nothing written) if one of them went elsewhere."""
        with self._locked():
            ledger = self.load()
            for layer in layers:
                try:
                    ledger.record(binding, aggregation, ChunkSpec(_key(layer), 0, 0))
                except ProtocolError:
                    raise self.refusal(layer) from None
            self._save(ledger)


def _key(layer: str) -> str:
    return f"layer:{layer}"
