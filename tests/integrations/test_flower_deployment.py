"""A real Flower deployment on loopback: SuperLink + 3 SuperNodes + `flwr run`, tiny model.

Checks the pruned mask equals the in-process `simulate` result (same seed), that a SuperNode
killed in the middle of the protocol leaves a correct sum over the survivors within the round
timeout, that an unreachable SuperLink is a clear error, and that every process the test started
is gone afterwards (stopped by its PID / process group, also on failure). About 3 minutes on 2
cores; skipped when flwr is not installed.
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr", reason="flwr is not installed (pip install '.[flower]')")

from fedprllm_secure.integrations.flower.deploy import (  # noqa: E402
    Deployment,
    DeploymentError,
    free_port,
    group_gone,
    start_federation,
    submit_run,
)
from fedprllm_secure.progress import SilentProgress  # noqa: E402
from fedprllm_secure.simulate import FederatedPruning, SimulationConfig, _Timer  # noqa: E402

from ..conftest import save_tiny, write_client_dir  # noqa: E402

pytestmark = [
    pytest.mark.flower,
    pytest.mark.skipif(
        shutil.which("flower-superlink", path=str(Path(sys.executable).parent)) is None,
        reason="flower-superlink is not installed next to this Python",
    ),
]

ENTRIES = ("alice.txt", "bob.jsonl", "carol")
RUN = {"samples-per-client": 2, "seqlen": 32, "node-wait-s": 60, "calibrate-timeout-s": 120}
RUN_TIMEOUT = 150


def _group_gone(pid: int) -> bool:
    return group_gone(pid, timeout=10)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("flower-deploy")
    save_tiny(root / "model")
    write_client_dir(root)
    return root


@pytest.fixture(scope="module")
def simulated(files: Path) -> FederatedPruning:
    config = SimulationConfig(
        model=str(files / "model"),
        client_data=str(files / "clients"),
        eval_text=str(files / "eval.txt"),
        samples_per_client=2,
        seqlen=32,
        eval_windows=1,
        device="cpu",
        seed=0,
    )
    return FederatedPruning(config, SilentProgress(), _Timer())


@pytest.fixture(scope="module")
def federation(files: Path, tmp_path_factory: pytest.TempPathFactory):
    deployment = Deployment(tmp_path_factory.mktemp("flower-work"))
    try:
        start_federation(
            deployment, str(files / "model"), [str(files / "clients" / e) for e in ENTRIES]
        )
        yield deployment
    finally:
        deployment.stop()
        for _name, process in deployment.processes:
            assert process.poll() is not None, f"process {process.pid} survived stop()"
            assert _group_gone(process.pid), f"process group {process.pid} survived stop()"


def _data_of_clients(deployment: Deployment, result: dict) -> dict[int, int]:
    """Flower client id -> index of its data entry, read from the SuperNode logs."""
    node_to_entry = {}
    for index, log in enumerate(deployment.node_logs):
        found = re.search(r"SuperNode ID: (\d+)", log.read_text(errors="replace"))
        assert found, f"no node id in {log}"
        node_to_entry[int(found.group(1))] = index
    return {int(c): node_to_entry[int(n)] for c, n in result["nodes"].items()}


def test_deployment_prunes_like_simulate(
    federation: Deployment, files: Path, simulated: FederatedPruning, tmp_path: Path
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


def test_a_supernode_killed_mid_round_leaves_a_sum_over_the_survivors(
    federation: Deployment, files: Path, simulated: FederatedPruning, tmp_path: Path
) -> None:
    victim = dict(federation.processes)["supernode-2"]
    killed_at: list[float] = []

    def kill_in_masked_input(deployment: Deployment, progress: dict) -> None:
        if not killed_at and progress.get("stage") == "protocol-3":
            deployment.stop_process(victim, grace=5)
            killed_at.append(time.monotonic())

    federation.processes = [(n, p) for n, p in federation.processes if p is not victim] + [
        ("killed-supernode-2", victim)
    ]  # check_alive must not treat the planned death as a failure
    round_timeout = 10
    result = submit_run(
        federation, str(files / "model"), 3, tmp_path / "out",
        {**RUN, "protocol": "additive", "protocol-options": '{"threshold": 2}',
         "round-timeout-s": round_timeout},
        RUN_TIMEOUT, on_progress=kill_in_masked_input,
    )  # fmt: skip
    assert killed_at, "the run finished before the kill"
    assert victim.poll() is not None
    entries = _data_of_clients(federation, result)
    assert len(result["contributors"]) >= 2
    dropped = [c for c in entries if c not in result["contributors"]]
    assert all("dropped out" in result["failures"][str(c)] for c in dropped)
    counts = np.load(tmp_path / "out" / "counts.npz")
    for name in counts.files:
        expected = sum(
            simulated.client_mask(entries[c])[name].astype(np.int64) for c in result["contributors"]
        )
        assert np.array_equal(counts[name], expected), name


def test_an_unreachable_superlink_is_a_clear_error_in_bounded_time(tmp_path: Path) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    with Deployment(tmp_path) as deployment:
        node = deployment.start_supernode({"model": "m", "data": "d"}, superlink=nowhere)
        started = time.monotonic()
        node.wait(timeout=90)
        assert node.returncode != 0 and time.monotonic() - started < 90
        assert "Connection attempt failed" in deployment.node_logs[0].read_text()
        from fedprllm_secure.integrations.flower.deploy import write_app_dir, write_flwr_home

        write_flwr_home(tmp_path / "flwr-home", nowhere)
        app = write_app_dir(tmp_path / "app", {"model": "m"})
        run = deployment.flwr(["run", str(app), "local", "--format", "json"], timeout=60)
        assert "Connection to the SuperLink is unavailable" in run.stdout + run.stderr
        with pytest.raises(DeploymentError, match="exited with code"):
            deployment.check_alive()
    assert _group_gone(node.pid)
