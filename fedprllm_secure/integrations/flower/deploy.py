"""A real Flower deployment on 127.0.0.1: one SuperLink, N SuperNodes, `flwr run`, then cleanup.

    fedprllm-secure flower deploy --model DIR \
        --data client0.txt --data client1.jsonl --data client2/ --out runs/flower \
        --run-config protocol='"additive"' --timeout 600

(the command is `cli/flower.py`; this module is its library: `run_deployment`, `write_app_dir`).

Each `--data` is one SuperNode (its own calibration text; node config `model` and `data`). All
processes run in their own process group and are stopped by PID when the run ends, fails or
times out. Every wait is bounded: the SuperLink's port (60 s), `flwr run` (120 s), the run itself
(`--timeout`), and a SuperNode gives up on an unreachable SuperLink after 3 tries / 20 s. A
SuperNode that dies during the run is a dropout, left to the ServerApp (its round deadline); the
SuperLink dying ends the run. Errors are one line (`error: ...`, exit code 1), naming the log.

The same by hand (three terminals, then `flwr run`):

    flower-superlink --insecure --host 127.0.0.1 --port 9091 --disable-runtime-dependency-installation
    flower-supernode --insecure --superlink 127.0.0.1:9091 --port 9094 --max-wait-time 60 \
        --node-config "model='/path/model' data='/path/alice.txt' identity='/path/node0.pem' trust='/path/trust.json'"
    (one per node, each with its own --port and data)
    flwr run APP_DIR local --run-config "num-nodes=3 model='/path/model' out='runs/flower'"

where APP_DIR holds the pyproject.toml written by `write_app_dir` and FLWR_HOME's config.toml
names the SuperLink connection `local` (see `write_flwr_home`).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .processes import (  # noqa: F401 - re-exported: the deployment's library is this module
    NODE_MAX_RETRIES,
    NODE_MAX_WAIT_S,
    Deployment,
    DeploymentError,
    free_port,
    group_gone,
    log_reason,
    write_flwr_home,
)
from .run_status import clear_outputs
from .submit import (  # noqa: F401 - flwr_failure re-exported
    RunTimeout,
    flwr_failure,
    run_state,
    start_run,
    toml_value,
    wait_for_result,
)

APP_COMPONENTS = {
    "serverapp": "fedprllm_secure.integrations.flower.server_app:app",
    "clientapp": "fedprllm_secure.integrations.flower.client_app:app",
}


def model_spec(model: str) -> str:
    """`model` as the ServerApp (another working folder) must see it: an existing path made
    absolute; an embedded model's name or a Hub id as given."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def write_app_dir(folder: Path, run_config: Mapping[str, Any]) -> Path:
    """A Flower App project whose components are this package's apps (no code is copied)."""
    folder.mkdir(parents=True, exist_ok=True)
    config_lines = "\n".join(f'"{k}" = {toml_value(v)}' for k, v in run_config.items())
    (folder / "pyproject.toml").write_text(
        f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fedprllm-flower"
version = "1.0.0"
description = "Federated pruning (FedPrLLM) with a secure-sum protocol"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "fedprllm-secure"

[tool.flwr.app.components]
serverapp = "{APP_COMPONENTS["serverapp"]}"
clientapp = "{APP_COMPONENTS["clientapp"]}"

[tool.flwr.app.config]
{config_lines}
"""
    )
    return folder


def start_federation(
    deployment: Deployment,
    model: str,
    data: Sequence[str],
    trust: Mapping[str, Any] | None = None,
    ledger_dir: Path | None = None,
    node_config: Mapping[str, Any] | None = None,
) -> None:
    """A SuperLink and one SuperNode per `data` path (node config: the model and that text).

    Each node gets its own identity key and every node the same trust file pinning them all
    (WORKDIR/nodes/; `trust`: the trust file's min_cohort, min_threshold, protocols; node 0 is the
    ckks key authority), as an operator would distribute them. Ledgers: LEDGER_DIR/node-I, or
    each node's default (~/.cache/fedprllm-secure/flower-ledger), which outlives the deployment.
    `node_config`: more node config for every node (tests: reproducible-noise='allow').
    """
    from .trust import pinned_node_configs

    configs: list[dict[str, Any]] = [
        {"model": str(Path(model).resolve()), "data": str(Path(path).resolve()), "partition-id": i,
         **dict(node_config or {})}
        for i, path in enumerate(data)
    ]  # fmt: skip
    if ledger_dir is not None:
        for i, config in enumerate(configs):
            config["ledger"] = str(Path(ledger_dir).resolve() / f"node-{i}")
    configs = pinned_node_configs(
        deployment.workdir / "nodes", configs, ledgers=False, **dict(trust or {})
    )
    deployment.start_superlink()
    for config in configs:
        deployment.start_supernode(config)


def trust_for(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """The trust file's minimums for a run config: what the operator asked for, else the safe
    defaults (cohort 3, the additive default threshold)."""
    trust: dict[str, Any] = {"protocols": [str(run_config.get("protocol", "plaintext"))]}
    cohort = run_config.get("min-cohort", run_config.get("min-clients"))
    if cohort is not None:
        trust["min_cohort"] = int(cohort)
    options = run_config.get("protocol-options", {})
    if isinstance(options, str):
        try:
            options = json.loads(options)
        except json.JSONDecodeError:
            options = {}
    if isinstance(options, dict) and options.get("threshold") is not None:
        trust["min_threshold"] = int(options["threshold"])
    return trust


def submit_run(
    deployment: Deployment,
    model: str,
    num_nodes: int,
    out: Path,
    run_config: Mapping[str, Any] | None = None,
    timeout: float = 600.0,
    on_progress: Any = None,
    federation_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`flwr run` the app on a started federation; wait (at most `timeout` s) for its result.

    Returns OUT/results.json; raises DeploymentError with the run's own error (OUT/error.txt),
    a dead process's log, or the last stage on timeout. `on_progress(deployment, progress)` is
    called while waiting (tests use it to kill a node mid-round).
    `federation_config`: the simulation engine's settings (`flwr run --federation-config`, e.g.
    {"num-supernodes": 64, "client-resources-num-cpus": 1}) for a SuperLink in simulation mode.
    """
    out = Path(out).resolve()
    config: dict[str, Any] = {"model": model_spec(model), "out": str(out)}
    config["num-nodes"] = num_nodes
    config.update(run_config or {})
    app_dir = write_app_dir(Path(tempfile.mkdtemp(prefix="app-", dir=deployment.workdir)), config)
    out.mkdir(parents=True, exist_ok=True)
    clear_outputs(out)
    extra: list[str] = []
    if federation_config:
        pairs = " ".join(f"{k}={toml_value(v)}" for k, v in federation_config.items())
        extra = ["--federation-config", pairs]
    env = deployment.env()
    run_id = start_run(app_dir, "local", {}, env=env, cwd=deployment.workdir, extra=extra)

    def ended() -> str | None:
        state = run_state(run_id, "local", env)
        return state if state and state.startswith("finished") else None

    try:
        return wait_for_result(
            out, timeout,
            # A SuperNode dying is a dropout: the ServerApp leaves it out at its round deadline.
            check=lambda: deployment.check_alive(nodes=False),
            on_progress=None if on_progress is None else lambda p: on_progress(deployment, p),
            ended=ended,
        )  # fmt: skip
    except RunTimeout as exc:
        raise RunTimeout(f"{exc}; logs: {deployment.workdir}") from None


def run_deployment(
    model: str,
    data: Sequence[str],
    out: Path,
    run_config: Mapping[str, Any] | None = None,
    timeout: float = 600.0,
    workdir: Path | None = None,
    ledger_dir: Path | None = None,
) -> dict[str, Any]:
    """Start SuperLink + SuperNodes, run the app once, stop every process started here."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="fedprllm-flower-"))
    workdir.mkdir(parents=True, exist_ok=True)
    with Deployment(workdir) as deployment:
        start_federation(deployment, model, data, trust_for(run_config or {}), ledger_dir)
        return submit_run(deployment, model, len(data), out, run_config, timeout)


def run_simulation_engine(
    model: str,
    num_supernodes: int,
    out: Path,
    run_config: Mapping[str, Any] | None = None,
    timeout: float = 3600.0,
    workdir: Path | None = None,
    cpus_per_node: int = 1,
) -> dict[str, Any]:
    """The app on Flower's simulation engine: a SuperLink in simulation mode, `num_supernodes`
    virtual SuperNodes on Ray (`cpus_per_node` CPUs each), node i calibrating on partition i of
    the run config's corpus; every process started here is stopped afterwards."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="fedprllm-flower-sim-"))
    workdir.mkdir(parents=True, exist_ok=True)
    federation = {
        "num-supernodes": int(num_supernodes),
        "client-resources-num-cpus": int(cpus_per_node),
    }
    with Deployment(workdir) as deployment:
        deployment.start_superlink(simulation=True)
        return submit_run(
            deployment, model, num_supernodes, out, run_config, timeout,
            federation_config=federation,
        )  # fmt: skip
