"""A real Flower deployment on loopback: SuperLink + 3 SuperNodes + `flwr run`, tiny model.

Checks the pruned mask equals the in-process `simulate` result (same seed), that a SuperNode
killed in the middle of the protocol leaves a correct sum over the survivors within the round
timeout, that an unreachable SuperLink is a clear one-line error in bounded time, that a node
without data is left out (or, below min-cohort, fails `fedprllm-secure flower deploy` with one
line), and that every process the test started is gone afterwards (stopped by its PID / process
group, also on failure); the nodes pin each other's identity keys (one trust file) and a second run over the
same calibration is refused by every node's ledger. About 5 minutes on 2 cores; skipped when
flwr is not installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr", reason="flwr is not installed (pip install '.[flower]')")

from fedprllm_secure.cli import main  # noqa: E402
from fedprllm_secure.integrations.flower import deploy  # noqa: E402
from fedprllm_secure.integrations.flower.deploy import (  # noqa: E402
    NODE_MAX_WAIT_S,
    Deployment,
    DeploymentError,
    free_port,
    group_gone,
    start_federation,
    submit_run,
    write_flwr_home,
)
from fedprllm_secure.pipeline import Pipeline  # noqa: E402

from ..conftest import save_tiny, write_client_dir  # noqa: E402
from ..test_pipeline import config_for  # noqa: E402
from .test_flower_modes import MODES  # noqa: E402

pytestmark = [
    pytest.mark.flower,
    pytest.mark.skipif(
        shutil.which("flower-superlink", path=str(Path(sys.executable).parent)) is None,
        reason="flower-superlink is not installed next to this Python",
    ),
]

ENTRIES = ("alice.txt", "bob.jsonl", "carol")
RUN = {"samples-per-client": 2, "seqlen": 32, "node-wait-s": 60, "calibrate-timeout-s": 120}
# a run of ~10 messages, each a fresh ClientApp process per node; a loaded machine can override
RUN_TIMEOUT = float(os.environ.get("FEDPRLLM_FLOWER_RUN_TIMEOUT", 300))


def _group_gone(pid: int) -> bool:
    return group_gone(pid, timeout=10)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("flower-deploy")
    save_tiny(root / "model")
    write_client_dir(root)
    return root


class Simulated:
    """The in-process pipeline on the same model and texts (same seed)."""

    def __init__(self, files: Path) -> None:
        self.pipeline = Pipeline(config_for(files / "model", files / "clients"))

    def run_fedprllm(self) -> tuple[dict[str, np.ndarray], None]:
        return self.pipeline.fedprllm().masks, None

    def client_mask(self, client: int) -> dict[str, np.ndarray]:
        return self.pipeline.local()[client]


@pytest.fixture(scope="module")
def simulated(files: Path) -> Simulated:
    return Simulated(files)


@pytest.fixture(scope="module")
def ledgers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("flower-ledgers")


@pytest.fixture(scope="module")
def federation(files: Path, ledgers: Path, tmp_path_factory: pytest.TempPathFactory):
    """3 SuperNodes pinning each other (one trust file; the operator lowered its minimum cohort
    and threshold to 2 so that a run survives one lost node)."""
    deployment = Deployment(tmp_path_factory.mktemp("flower-work"))
    try:
        start_federation(
            deployment,
            str(files / "model"),
            [str(files / "clients" / e) for e in ENTRIES],
            trust={
                "min_cohort": 2,
                "min_threshold": 2,
                "protocols": ["plaintext", "additive", "ckks"],
            },
            ledger_dir=ledgers,
            node_config={"reproducible-noise": "allow"},  # the mode tests compare noise
        )
        yield deployment
    finally:
        deployment.stop()
        for _name, process in deployment.processes:
            assert process.poll() is not None, f"process {process.pid} survived stop()"
            assert _group_gone(process.pid), f"process group {process.pid} survived stop()"
        if Path("/proc/self/environ").exists():
            home = deployment.workdir / "flwr-home"
            assert _none_left(home), f"processes survived stop(): {_processes_with(home)}"


def _data_of_clients(deployment: Deployment, result: dict) -> dict[int, int]:
    """Flower client id -> index of its data entry, read from the SuperNode logs."""
    node_to_entry = {}
    for index, log in enumerate(deployment.node_logs):
        found = re.search(r"SuperNode ID: (\d+)", log.read_text(errors="replace"))
        assert found, f"no node id in {log}"
        node_to_entry[int(found.group(1))] = index
    return {int(c): node_to_entry[int(n)] for c, n in result["nodes"].items()}


def test_deployment_prunes_like_simulate(
    federation: Deployment, files: Path, simulated: Simulated, tmp_path: Path
) -> None:
    result = submit_run(
        federation, str(files / "model"), 3, tmp_path / "out",
        {**RUN, "protocol": "additive", "seed": 0, "round-timeout-s": 60}, RUN_TIMEOUT,
    )  # fmt: skip
    assert result["contributors"] == [0, 1, 2] and not result["failures"]
    expected, _ = simulated.run_fedprllm()
    masks = np.load(tmp_path / "out" / "masks.npz")
    assert sorted(masks.files) == sorted(expected)
    for name, mask in expected.items():
        assert np.array_equal(masks[name], mask), name


# dp-distributed sums under additive, whose ledger entries would spoil the ledger test below; it
# runs through the same ClientApp/ServerApp in test_flower_modes (LocalGrid) and tests/privacy.
@pytest.mark.parametrize("mode", sorted(m for m in MODES if m != "dp-distributed"))
def test_every_mode_on_the_deployment_equals_the_in_process_pipeline(
    federation: Deployment, files: Path, tmp_path: Path, mode: str
) -> None:
    """Iterative masks, stats one-shot and sequential, randomized response, DP statistics: the
    global masks of 3 SuperNodes equal the in-process pipeline's (same seed; the noise drawn from
    the seed, each node taking the child of its partition id, as the in-process client of that
    text)."""
    flower_run, inprocess = MODES[mode]
    expected = Pipeline(config_for(files / "model", files / "clients", **inprocess)).fedprllm()
    result = submit_run(
        federation, str(files / "model"), 3, tmp_path / "out",
        {**RUN, "protocol": "plaintext", "seed": 0, "round-timeout-s": 60, **flower_run},
        RUN_TIMEOUT,
    )  # fmt: skip
    assert result["contributors"] == [0, 1, 2] and not result["failures"]
    masks = np.load(tmp_path / "out" / "masks.npz")
    assert sorted(masks.files) == sorted(expected.masks)
    for name, mask in expected.masks.items():
        assert np.array_equal(masks[name], mask), name


def test_a_second_run_on_the_same_nodes_is_refused_by_their_ledgers(
    federation: Deployment, files: Path, ledgers: Path, tmp_path: Path
) -> None:
    """A new `flwr run` recomputes the same masks: every node refuses to release them again."""
    if not any(ledgers.rglob("*.ledger")):
        submit_run(
            federation, str(files / "model"), 3, tmp_path / "first",
            {**RUN, "protocol": "additive", "round-timeout-s": 60}, RUN_TIMEOUT,
        )  # fmt: skip
    with pytest.raises(DeploymentError) as error:
        submit_run(
            federation, str(files / "model"), 3, tmp_path / "out",
            {**RUN, "protocol": "ckks", "round-timeout-s": 30}, RUN_TIMEOUT,
        )  # fmt: skip
    message = str(error.value)
    assert "\n" not in message and "already released layer" in message
    assert str(ledgers) in message and "delete that file" in message


def test_a_supernode_killed_mid_round_leaves_a_sum_over_the_survivors(
    federation: Deployment,
    files: Path,
    simulated: Simulated,
    ledgers: Path,
    tmp_path: Path,
) -> None:
    # the operator (every node here) accepts a new release of the same calibration
    shutil.rmtree(ledgers)
    ledgers.mkdir()
    victim = dict(federation.processes)["supernode-2"]
    killed_at: list[float] = []

    def kill_in_encrypted_input(deployment: Deployment, progress: dict) -> None:
        if not killed_at and progress.get("stage") == "protocol-1":
            deployment.stop_process(victim, grace=5)
            killed_at.append(time.monotonic())

    # submit_run must treat the death as a dropout (the ServerApp's business), not a failure.
    # ckks: a sum over 2 of 3 survivors is released (min cohort 2); additive would need a quorum
    # of 3 survivor-list signatures at n = 3, so it aborts instead (tested in process).
    # Each protocol message starts a fresh ClientApp process that restores the node (model and
    # text included) before it answers: 10 s was too tight on 2 loaded cores.
    round_timeout = 30
    result = submit_run(
        federation, str(files / "model"), 3, tmp_path / "out",
        {**RUN, "protocol": "ckks", "min-cohort": 2, "round-timeout-s": round_timeout},
        RUN_TIMEOUT, on_progress=kill_in_encrypted_input,
    )  # fmt: skip
    assert killed_at, "the run finished before the kill"
    assert victim.poll() is not None
    entries = _data_of_clients(federation, result)
    assert len(result["contributors"]) >= 2
    dropped = [c for c in entries if c not in result["contributors"]]
    assert all("dropped out" in result["failures"][str(c)] for c in dropped)
    rounds = {k: t for k, t in result["timings_s"].items() if k.startswith("protocol-")}
    assert rounds and max(rounds.values()) < round_timeout + 5, rounds  # the deadline holds
    counts = np.load(tmp_path / "out" / "counts.npz")
    for name in counts.files:
        expected = sum(
            simulated.client_mask(entries[c])[name].astype(np.int64) for c in result["contributors"]
        )
        assert np.array_equal(counts[name], expected), name


def test_an_unreachable_superlink_is_a_clear_error_in_bounded_time(tmp_path: Path) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    bound = NODE_MAX_WAIT_S + 30  # its retries, plus starting Python and Flower
    with Deployment(tmp_path) as deployment:
        node = deployment.start_supernode({"model": "m", "data": "d"}, superlink=nowhere)
        started = time.monotonic()
        node.wait(timeout=bound)
        assert node.returncode != 0 and time.monotonic() - started < bound
        with pytest.raises(DeploymentError, match="supernode-0 exited with code") as error:
            deployment.check_alive()
        assert "could not establish a connection to the SuperLink" in str(error.value)
        assert "\n" not in str(error.value)

        write_flwr_home(tmp_path / "flwr-home", nowhere)
        started = time.monotonic()
        with pytest.raises(DeploymentError, match="flwr run failed: ") as error:
            submit_run(deployment, "m", 1, tmp_path / "out", timeout=RUN_TIMEOUT)
        assert "Connection to the SuperLink is unavailable" in str(error.value)
        assert "\n" not in str(error.value) and time.monotonic() - started < 60
    assert _group_gone(node.pid)


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["flower", "deploy", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_deploy_cli_prints_one_line_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for raised in (DeploymentError("superlink exited:\nlog tail"), PermissionError(13, "denied")):

        def fail(*_args, raised=raised, **_kwargs):
            raise raised

        monkeypatch.setattr(deploy, "run_deployment", fail)
        code, out, err = _cli(["--model", "m", "--data", "d"], capsys)
        assert code == 1 and not out and err.startswith("error: ") and err.count("\n") == 1


def test_a_node_without_data_is_left_out_of_a_deployment(
    files: Path, simulated: Simulated, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    args = ["--model", str(files / "model"), "--data", str(files / "clients" / "alice.txt")]
    args += ["--data", str(empty), "--out", str(tmp_path / "out"), "--timeout", str(RUN_TIMEOUT)]
    args += [f"--run-config={k}={v}" for k, v in RUN.items()]  # plaintext: 1 survivor is enough
    code, out, err = _cli([*args, "--workdir", str(tmp_path / "work-1")], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert len(result["contributors"]) == 1
    assert [why for why in result["failures"].values()] == [
        f"describe: DataError: node data {empty.resolve()} holds no text (.txt or .jsonl)"
    ]
    counts = np.load(tmp_path / "out" / "counts.npz")
    for name, mask in simulated.client_mask(0).items():  # alice's mask alone
        assert np.array_equal(counts[name], mask.astype(np.int64)), name

    code, out, err = _cli(
        [*args, "--run-config=min-cohort=2", "--workdir", str(tmp_path / "work-2")], capsys
    )
    assert code == 1 and not out and err.count("\n") == 1
    assert err.startswith("error: NodeFailure: only 1 of 2 nodes got through calibration")
    assert "holds no text" in err


def _processes_with(flwr_home: Path) -> list[int]:
    """Live processes whose environment has FLWR_HOME=flwr_home: all a Deployment started."""
    marker = f"FLWR_HOME={flwr_home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _none_left(flwr_home: Path, timeout: float = 15) -> bool:
    """No process of the deployment is left within `timeout` s. The SuperLink's and SuperNodes'
    SuperExec and app processes run in process groups of their own and exit when they see
    their parent gone (Flower polls every 0.2 s), so they may outlive the leaders briefly."""
    deadline = time.monotonic() + timeout
    while _processes_with(flwr_home):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_sigterm_to_the_deploy_cli_stops_every_process_it_started(
    files: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    cli = subprocess.Popen(
        [sys.executable, "-m", "fedprllm_secure.cli", "flower", "deploy",
         "--model", str(files / "model"), "--data", str(files / "clients" / "alice.txt"),
         "--out", str(tmp_path / "out"), "--workdir", str(work), "--timeout", "120",
         "--run-config", "num-nodes=2"],  # the ServerApp waits (node-wait-s) for a second node
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not (tmp_path / "out").is_dir() and time.monotonic() < deadline:
            assert cli.poll() is None, cli.communicate()
            time.sleep(0.2)  # submit_run made OUT: the SuperLink and the SuperNode are up
        assert len(_processes_with(work / "flwr-home")) >= 2
        cli.send_signal(signal.SIGTERM)
        out, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 130 and not out, err
    assert err == "error: interrupted (every process started here was stopped)\n"
    assert _none_left(work / "flwr-home")
