"""`fedprllm-secure flower deploy`: the command around the deployment library (no flwr needed:
`run_deployment` is replaced; tests/integrations/test_flower_deployment.py runs it for real)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fedprllm_secure.cli import main


@pytest.fixture()
def deployment(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What `flower deploy` passed to `run_deployment`; set "raise" or "result" to answer."""
    from fedprllm_secure.integrations.flower import deploy

    calls: dict[str, Any] = {}

    def run_deployment(*args: Any) -> dict[str, Any]:
        calls["args"] = args
        if "raise" in calls:
            raise calls["raise"]
        if "sigterm" in calls:
            import os
            import signal
            import time

            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        return calls.get("result", {"contributors": [0], "failures": {}, "timings_s": {}})

    monkeypatch.setattr(deploy, "run_deployment", run_deployment)
    return calls


def test_flower_deploy_passes_its_flags_and_prints_json(
    deployment: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["flower", "deploy", "--model", "m", "--data", "a.txt", "--data", "b", "--out",
            str(tmp_path / "o"), "--run-config", "protocol=additive", "--run-config",
            'protocol-options={"threshold": 2}', "--timeout", "30"]  # fmt: skip
    assert main(args) == 0
    model, data, out, run_config, timeout, workdir, ledgers = deployment["args"]
    assert (model, list(data), out, timeout, workdir, ledgers) == (
        "m", ["a.txt", "b"], tmp_path / "o", 30.0, None, None,
    )  # fmt: skip
    assert run_config == {"protocol": "additive", "protocol-options": {"threshold": 2}}
    assert json.loads(capsys.readouterr().out) == {
        "contributors": [0],
        "failures": {},
        "timings_s": {},
    }


def test_flower_deploy_errors_exit_codes(
    deployment: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from fedprllm_secure.integrations.flower.deploy import DeploymentError

    assert main(["flower", "deploy", "--model", "m"]) == 2  # no --data
    assert "give one --data per SuperNode" in capsys.readouterr().err
    for raised in (DeploymentError("superlink exited:\nlog tail"), PermissionError(13, "denied")):
        deployment["raise"] = raised
        assert main(["flower", "deploy", "--model", "m", "--data", "d"]) == 1
        captured = capsys.readouterr()
        assert not captured.out and captured.err.startswith("error: ")
        assert captured.err.count("\n") == 1
    del deployment["raise"]
    deployment["sigterm"] = True  # SIGTERM during the run unwinds like Ctrl-C
    assert main(["flower", "deploy", "--model", "m", "--data", "d"]) == 130
    assert (
        capsys.readouterr().err == "error: interrupted (every process started here was stopped)\n"
    )


def test_flower_deploy_write_app_writes_the_project(tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    args = ["flower", "deploy", "--model", "m", "--out", str(tmp_path / "o"), "--write-app",
            str(app_dir), "--run-config", "num-nodes=3"]  # fmt: skip
    assert main(args) == 0
    text = (app_dir / "pyproject.toml").read_text()
    assert '"num-nodes" = 3' in text and "fedprllm_secure.integrations.flower.server_app" in text
