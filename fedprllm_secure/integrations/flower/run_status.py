"""What a ServerApp run leaves in its `out` folder, and what it says while it runs.

Pure (no flwr import). The ServerApp (`server_app.main`) makes one `RunStatus` per run:

* `clear()` at the start removes the outputs of an earlier run in the same folder (`OUTPUTS`), so a
  stale `error.txt` never stays beside a later `results.json`;
* `stage(name)` / `done(name, answered, asked, seconds)` print one line each on stderr, which
  Flower forwards to `flwr run --stream` / `flwr log` (`fedprllm-secure: stage 4 calibrate: 3/3
  nodes answered in 21.0 s`), and write `progress.json` (atomically: the Flower run id, the
  current stage, and every line so far, which `fedprllm-secure flower run` repeats);
* `fail(exc)` writes `error.txt`: one line, atomically; the launcher (`submit.wait_for_result`)
  waits for `results.json` or `error.txt`.

A failure the project raised on purpose (a `FedPrError`) leaves the ServerApp as `RunFailed`,
whose traceback `quiet_tracebacks` keeps out of Flower's log: its one line is the message.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from ...errors import one_line

OUTPUTS = ("results.json", "error.txt", "progress.json", "masks.npz", "counts.npz")


class RunFailed(Exception):
    """A run that failed for a reason the user can act on (one line, no traceback)."""


def write_atomic(path: Path, text: str) -> None:
    """`text` to `path` through a temporary file in the same folder and a rename."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def clear_outputs(out: Path) -> None:
    """Remove what an earlier run left in `out` (results, error, progress, masks, counts)."""
    for name in OUTPUTS:
        (out / name).unlink(missing_ok=True)


class RunStatus:
    """Progress and failure of one ServerApp run in `out` (Flower run `run_id`)."""

    def __init__(self, out: Path, run_id: int | None = None, stream: TextIO | None = None):
        self.out, self.run_id, self.stream = out, run_id, stream
        self.step = 0
        self.started = time.monotonic()
        self.lines: list[str] = []  # every line said so far (progress.json keeps them)

    def clear(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        clear_outputs(self.out)

    def _write(self, stage: str) -> None:
        record = {"run_id": self.run_id, "step": self.step, "stage": stage, "time": time.time()}
        write_atomic(self.out / "progress.json", json.dumps({**record, "lines": self.lines}))

    def _say(self, line: str) -> None:
        self.lines.append(line)
        print(f"fedprllm-secure: {line}", file=self.stream or sys.stderr, flush=True)

    def stage(self, name: str, detail: str = "") -> None:
        """A stage starts (one line, and progress.json)."""
        self.step += 1
        elapsed = time.monotonic() - self.started
        self._say(f"stage {self.step} {name}{': ' + detail if detail else ''} (t={elapsed:.0f} s)")
        self._write(name)

    def done(self, name: str, answered: int, asked: int, seconds: float) -> None:
        """A node exchange ended: k of n nodes answered."""
        self._say(f"stage {self.step} {name}: {answered}/{asked} nodes answered in {seconds:.1f} s")
        self._write(name)

    def finish(self, line: str) -> None:
        self._say(line)

    def fail(self, exc: BaseException) -> str:
        """Write error.txt (one line) and say it; the line."""
        line = one_line(f"{type(exc).__name__}: {exc}")
        write_atomic(self.out / "error.txt", line + "\n")
        self._say(f"error: {line}")
        return line


class _QuietTraceback(logging.Filter):
    """Drops the traceback from Flower's "ServerApp raised an exception" for `RunFailed`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], RunFailed):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_tracebacks(logger_name: str = "flwr") -> None:
    """Install `_QuietTraceback` on Flower's logger (once)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _QuietTraceback) for f in logger.filters):
        logger.addFilter(_QuietTraceback())
