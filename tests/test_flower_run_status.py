"""What a Flower run leaves and says (`run_status`), how the launcher waits for it (`submit`),
the hint a node gives for too little text, and `flower run`'s exits; no flwr processes needed
(tests/integrations/test_flower_by_hand.py runs the whole recipe)."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fedprllm_secure.cli import main
from fedprllm_secure.errors import DataError
from fedprllm_secure.integrations.flower import run_status, submit
from fedprllm_secure.integrations.flower.run_status import RunFailed, RunStatus


def test_a_run_clears_an_earlier_runs_outputs_and_writes_one_line_errors(tmp_path: Path) -> None:
    for name in ("results.json", "error.txt", "progress.json", "masks.npz", "counts.npz"):
        (tmp_path / name).write_text("stale")
    (tmp_path / "notes.txt").write_text("mine")
    stream = io.StringIO()
    status = RunStatus(tmp_path, run_id=7, stream=stream)
    status.clear()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    status.stage("calibrate", "asking 3 nodes")
    status.done("calibrate", 2, 3, 1.25)
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress["run_id"] == 7 and progress["step"] == 1 and progress["stage"] == "calibrate"
    assert progress["lines"][1] == "stage 1 calibrate: 2/3 nodes answered in 1.2 s"
    line = status.fail(DataError("node-1 has 3 tokens,\nneeds 4096"))
    assert line == "DataError: node-1 has 3 tokens, needs 4096"
    assert (tmp_path / "error.txt").read_text() == line + "\n"
    said = stream.getvalue().splitlines()
    assert said[0].startswith("fedprllm-secure: stage 1 calibrate: asking 3 nodes (t=")
    assert said[1] == "fedprllm-secure: stage 1 calibrate: 2/3 nodes answered in 1.2 s"
    assert said[2] == f"fedprllm-secure: error: {line}"
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # atomic writes


def test_flowers_log_shows_no_traceback_for_a_run_failed_on_purpose() -> None:
    logger = logging.getLogger("flwr-test-quiet")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    run_status.quiet_tracebacks("flwr-test-quiet")
    try:
        for exc in (RunFailed("DataError: too short"), ValueError("a bug")):
            try:
                raise exc
            except Exception as caught:
                logger.error("ServerApp raised an exception", exc_info=caught)
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert text.count("Traceback") == 1 and "ValueError: a bug" in text  # bugs keep theirs
    assert "DataError: too short" not in text


def test_the_node_hint_names_flowers_run_config_not_simulates_flags() -> None:
    pytest.importorskip("flwr", reason="the ClientApp needs flwr")
    from fedprllm_secure.integrations.flower.client_app import flower_hint

    message = (
        "node-5 has 340 tokens of text, needs 4096 (8 samples x 512); "
        "use fewer samples, a shorter --seqlen or fewer clients"
    )
    hinted = flower_hint(message)
    assert hinted.startswith("node-5 has 340 tokens of text, needs 4096 (8 samples x 512); ")
    assert "--seqlen" not in hinted.replace("--run-config seqlen", "")
    assert "--run-config seqlen=" in hinted and "samples-per-client" in hinted
    assert flower_hint("node data /x holds no text") == "node data /x holds no text"


def test_wait_for_result_reads_results_errors_flowers_status_and_times_out(tmp_path: Path) -> None:
    def later(name: str, text: str) -> None:
        threading.Timer(0.3, lambda: (tmp_path / name).write_text(text)).start()

    later("results.json", '{"contributors": [0]}')
    assert submit.wait_for_result(tmp_path, 10, poll_s=0.05) == {"contributors": [0]}
    (tmp_path / "results.json").unlink()
    later("error.txt", "NodeFailure: only 0 of 3\n")
    with pytest.raises(submit.RunError, match=r"^NodeFailure: only 0 of 3$"):
        submit.wait_for_result(tmp_path, 10, poll_s=0.05)
    (tmp_path / "error.txt").unlink()
    started = time.monotonic()
    with pytest.raises(submit.RunError, match="finished:failed: ServerApp failed"):
        submit.wait_for_result(
            tmp_path, 30, ended=lambda: "finished:failed: ServerApp failed", poll_s=0.05
        )
    (tmp_path / "progress.json").write_text('{"stage": "protocol-3"}')
    with pytest.raises(submit.RunTimeout, match=r"within 0 s \(last stage: protocol-3\)"):
        submit.wait_for_result(tmp_path, 0.2, poll_s=0.05)
    assert time.monotonic() - started < submit.STATE_POLL_S + 5


def _fake_flwr(folder: Path, stdout: str) -> Path:
    """A `flwr` that prints `stdout` (the JSON `flwr run --format json` prints)."""
    fake = folder / "flwr"
    fake.write_text(f"#!{sys.executable}\nimport sys\nprint({stdout!r})\n")
    fake.chmod(0o755)
    return fake


def test_flower_run_exits_one_with_the_runs_error_and_zero_with_its_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedprllm_secure.integrations.flower.deploy import write_app_dir

    out = tmp_path / "out"
    app_dir = write_app_dir(tmp_path / "app", {"model": "m", "out": str(out), "num-nodes": 3})
    flwr = _fake_flwr(tmp_path, json.dumps({"success": True, "run-id": "42"}))
    monkeypatch.setattr(submit, "flwr_binary", lambda: str(flwr))
    monkeypatch.setattr(submit, "run_state", lambda *_a, **_k: None)
    out.mkdir()
    (out / "results.json").write_text("{}")  # stale: removed before the run is submitted

    def serverapp(name: str, content: Any) -> None:
        def write() -> None:
            time.sleep(0.5)
            status = RunStatus(out, run_id=42, stream=io.StringIO())
            status.stage("calibrate")
            status.done("calibrate", 3, 3, 2.0)
            status.stage("enroll")
            time.sleep(0.8)
            (out / name).write_text(content)

        threading.Thread(target=write).start()

    serverapp("error.txt", "NodeFailure: only 0 of 3 nodes got through calibration\n")
    assert main(["flower", "run", str(app_dir), "--timeout", "30"]) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: NodeFailure: only 0 of 3 nodes got through calibration "
        "(Flower's log: flwr log 42 local --show)"
    ]
    said = [line for line in captured.err.splitlines() if line.startswith("fedprllm-secure: ")]
    assert said[1:] == [
        "fedprllm-secure: stage 1 calibrate (t=0 s)",
        "fedprllm-secure: stage 1 calibrate: 3/3 nodes answered in 2.0 s",
        "fedprllm-secure: stage 2 enroll (t=0 s)",
    ]  # every stage once, in order, after "run 42 submitted"
    assert not captured.out

    (out / "error.txt").unlink()
    serverapp("results.json", json.dumps({"contributors": [0, 1, 2], "failures": {},
                                          "perplexity": {"dense": 2.0, "fedprllm": 3.0}}))  # fmt: skip
    assert main(["flower", "run", str(app_dir), "--timeout", "30"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["results"] == str(out / "results.json")
    assert summary["perplexity"] == {"dense": 2.0, "fedprllm": 3.0}


def test_flower_run_reports_a_failed_submission_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedprllm_secure.integrations.flower.deploy import write_app_dir

    app_dir = write_app_dir(tmp_path / "app", {"model": "m", "out": str(tmp_path / "out")})
    failed = {"success": False, "error-message": "Connection to the SuperLink\nis unavailable"}
    flwr = _fake_flwr(tmp_path, json.dumps(failed))
    monkeypatch.setattr(submit, "flwr_binary", lambda: str(flwr))
    assert main(["flower", "run", str(app_dir)]) == 1
    assert capsys.readouterr().err == (
        "error: flwr run failed: Connection to the SuperLink is unavailable\n"
    )
    assert main(["flower", "run", str(tmp_path / "nowhere")]) == 2
    assert "is not a Flower App project" in capsys.readouterr().err


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_stopping_a_process_stops_descendants_in_sessions_of_their_own(tmp_path: Path) -> None:
    """As Flower's SuperLink starts its SuperExec (start_new_session): stop() reaches it too."""
    from fedprllm_secure.integrations.flower.processes import Deployment

    child = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'],"
        " start_new_session=True)\n"
        f"open({str(child)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(120)\n"
    )
    deployment = Deployment(tmp_path)
    leader = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deployment.processes.append(("superlink", leader))
    deadline = time.monotonic() + 30
    while not child.exists() or not child.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    grandchild = int(child.read_text())
    started = time.monotonic()
    deployment.stop(grace=5)
    assert leader.poll() is not None
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild), "the detached grandchild survived stop()"
    assert time.monotonic() - started < 8


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_model_spec_keeps_names_and_hub_ids_and_makes_paths_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedprllm_secure.integrations.flower.deploy import model_spec

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    assert model_spec("m") == str(tmp_path / "m")
    assert model_spec("smollm2-135m") == "smollm2-135m"
    assert model_spec("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
