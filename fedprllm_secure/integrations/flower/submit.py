"""Submit a Flower run (`flwr run ... --format json`) and wait for what the ServerApp writes.

`flwr run --stream` in Flower 1.42 prints the ServerApp's log and exits 0 however the run ends, so
the outcome is read from the run's `out` folder instead: `results.json` (success) or `error.txt`
(one line; `run_status.RunStatus.fail`), with `progress.json` for the stage, and Flower's own run
status (`flwr ls --run-id ID --format json`) for a run that ends without writing either (its
ServerApp could not even start). `run_app` is `fedprllm-secure flower run`; `deploy.submit_run`
uses `wait_for_result` for the processes it started itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ...errors import ConfigError, one_line
from .processes import DeploymentError, log_reason
from .run_status import clear_outputs

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with tomli
    import tomli as tomllib


# Seconds between two `flwr ls` (each takes a few seconds of a loaded machine).
STATE_POLL_S = 15.0


class RunError(DeploymentError):
    """The run failed, ended without a result, or did not finish in time (one line)."""


class RunTimeout(RunError):
    """The run did not finish within its time."""


def flwr_binary() -> str:
    """`flwr` next to this Python (its venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "flwr"
    return str(beside) if beside.exists() else "flwr"


def flwr_failure(completed: subprocess.CompletedProcess) -> str | None:
    """The one-line reason a `flwr ... --format json` failed, or None if it succeeded.

    flwr 1.42 exits 0 with {"success": false, "error-message": ...} when, e.g., the SuperLink is
    unreachable, so the JSON decides, not only the exit code."""
    answer = _json(completed.stdout)
    if isinstance(answer, dict):
        if answer.get("success", True) and completed.returncode == 0:
            return None
        reason = answer.get("error-message") or answer.get("error")
        if reason:
            return one_line(str(reason))
    elif completed.returncode == 0:
        return None
    return log_reason(completed.stderr + "\n" + completed.stdout)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def toml_value(value: Any) -> str:
    """A run config value as TOML (what `flwr run --run-config` and pyproject.toml read)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def app_config(app_dir: Path) -> dict[str, Any]:
    """The `[tool.flwr.app.config]` of the Flower App project in `app_dir`."""
    path = app_dir / "pyproject.toml"
    try:
        project = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"{path} is not a Flower App project ({exc}); write one with "
            "`fedprllm-secure flower deploy --model M --out DIR --write-app APP_DIR`"
        ) from None
    return dict(project.get("tool", {}).get("flwr", {}).get("app", {}).get("config", {}))


def start_run(
    app_dir: Path,
    connection: str,
    run_config: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    extra: Sequence[str] = (),
    timeout: float = 120.0,
) -> int:
    """`flwr run APP_DIR CONNECTION --format json` with `run_config` as overrides; its run id."""
    args = [flwr_binary(), "run", str(app_dir), connection, "--format", "json", *extra]
    if run_config:
        args += ["--run-config", " ".join(f"{k}={toml_value(v)}" for k, v in run_config.items())]
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, env=dict(env or os.environ), cwd=cwd,
            timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise RunError(f"flwr run did not return within {timeout:.0f} s") from None
    except OSError as exc:
        raise RunError(
            f"cannot start flwr ({exc.strerror}); pip install '.[flower]' into this environment"
        ) from None
    failure = flwr_failure(done)
    if failure is not None:
        raise RunError(f"flwr run failed: {failure}")
    run_id = (_json(done.stdout) or {}).get("run-id")
    if run_id is None:
        raise RunError(f"flwr run gave no run id: {one_line(done.stdout)[:200]}")
    return int(run_id)


def run_state(run_id: int, connection: str, env: Mapping[str, str] | None = None) -> str | None:
    """Flower's status of run `run_id` ("finished:failed: details", ...), None if unknown."""
    try:
        done = subprocess.run(
            [flwr_binary(), "ls", connection, "--run-id", str(run_id), "--format", "json"],
            capture_output=True, text=True, env=dict(env or os.environ), timeout=30,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    answer = _json(done.stdout)
    runs = answer.get("runs") if isinstance(answer, dict) else None
    if not runs:
        return None
    status = str(runs[0].get("status", ""))
    details = str(runs[0].get("status-details", "N/A"))
    return f"{status}: {details}" if status and details not in ("", "N/A") else status or None


def _progress(out: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((out / "progress.json").read_text()))
    except (OSError, ValueError, TypeError):
        return {}


def wait_for_result(
    out: Path,
    timeout: float,
    check: Callable[[], None] | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    ended: Callable[[], str | None] | None = None,
    poll_s: float = 0.5,
) -> dict[str, Any]:
    """OUT/results.json once written; RunError with OUT/error.txt's line, with Flower's reason
    when `ended()` says the run finished without either, or on timeout. `check()` raises if a
    process the run needs died; `on_progress(progress.json)` is called on each poll."""
    deadline = time.monotonic() + timeout
    next_state = time.monotonic() + STATE_POLL_S
    while time.monotonic() < deadline:
        if (out / "results.json").is_file():
            return dict(json.loads((out / "results.json").read_text()))
        if (out / "error.txt").is_file():
            raise RunError(one_line((out / "error.txt").read_text()))
        if check is not None:
            check()
        if on_progress is not None:
            on_progress(_progress(out))
        if ended is not None and time.monotonic() >= next_state:
            next_state = time.monotonic() + STATE_POLL_S
            state = ended()
            if state and not (out / "results.json").is_file() and not (out / "error.txt").is_file():
                raise RunError(
                    f"the Flower run ended ({one_line(state)}) without writing {out}/results.json"
                )
        time.sleep(poll_s)
    stage = _progress(out).get("stage", "before the first stage")
    raise RunTimeout(f"the run did not finish within {timeout:.0f} s (last stage: {stage})")


def run_app(
    app_dir: Path,
    connection: str = "local",
    run_config: Mapping[str, Any] | None = None,
    timeout: float = 600.0,
    say: Callable[[str], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Submit the app in `app_dir` to the SuperLink `connection` (FLWR_HOME's config.toml) and
    wait for its result: (results.json path, its content). `say(line)` gets one line per stage."""
    app_dir = Path(app_dir).expanduser().resolve()
    config = {**app_config(app_dir), **dict(run_config or {})}
    out = Path(str(config.get("out", "runs/flower"))).expanduser().resolve()
    overrides = {**dict(run_config or {}), "out": str(out)}  # the ServerApp runs elsewhere
    out.mkdir(parents=True, exist_ok=True)
    clear_outputs(out)
    run_id = start_run(app_dir, connection, overrides)
    if say is not None:
        say(f"run {run_id} submitted; waiting for {out}/results.json (at most {timeout:.0f} s)")
    said = 0

    def show(progress: dict[str, Any]) -> None:
        nonlocal said
        lines = progress.get("lines") or []
        if say is not None and progress.get("run_id") == run_id:
            for line in lines[said:]:
                say(str(line))
            said = max(said, len(lines))

    def ended() -> str | None:
        state = run_state(run_id, connection)
        return state if state and state.startswith("finished") else None

    try:
        result = wait_for_result(out, timeout, on_progress=show, ended=ended)
    except RunError as exc:
        raise RunError(f"{exc} (Flower's log: flwr log {run_id} {connection} --show)") from None
    return out / "results.json", result
