"""docs/flower.md's by-hand recipe, run as written: its fenced block after `<!-- by-hand recipe -->`
in bash, in an empty folder, on the embedded model with the documented small settings. Only the
placeholders the doc marks (the two port numbers on its first line) are replaced by free ports.

The recipe ends with `fedprllm-secure flower run` (exit 0 and results.json with a finite perplexity;
or exit 1 and one line) and `kill %1 %2 %3 %4`; afterwards no process of the deployment may be
left. A second run of the same recipe with a bad setting (more samples than any node has text)
must exit non-zero with one `error: ...` line naming Flower's fix (`--run-config seqlen=...`).
A few minutes on 2 cores; skipped without flwr.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="flwr is not installed (pip install '.[flower]')")

pytestmark = [
    pytest.mark.flower,
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("flower-superlink", path=str(Path(sys.executable).parent)) is None,
        reason="flower-superlink is not installed next to this Python",
    ),
]

DOC = Path(__file__).resolve().parents[2] / "docs" / "flower.md"
MARK = "<!-- by-hand recipe -->"
PLACEHOLDERS = "LINK_PORT=9091 NODE_PORT=9094"
RECIPE_TIMEOUT = float(os.environ.get("FEDPRLLM_FLOWER_RUN_TIMEOUT", 900))


def recipe() -> str:
    """The doc's fenced bash block after MARK, as written."""
    found = re.search(r"```bash\n(.*?)```", DOC.read_text().split(MARK, 1)[1], re.S)
    assert found, f"no bash block after {MARK} in {DOC}"
    return found.group(1)


def _free_ports(count: int) -> int:
    """A port p with p .. p+count-1 all free on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + count > 65535:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports")


def with_ports(script: str) -> str:
    first, rest = script.split("\n", 1)
    assert first.startswith(PLACEHOLDERS), first  # the doc's marked placeholders
    link, node = _free_ports(1), _free_ports(3)
    return first.replace("9091", str(link)).replace("9094", str(node)) + "\n" + rest


def _processes_with(flwr_home: Path) -> list[int]:
    """Live processes whose environment has FLWR_HOME=flwr_home: all the recipe started."""
    marker = f"FLWR_HOME={flwr_home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if marker in environ.split(b"\0") and state != "Z":
                found.append(int(entry.name))
    return found


def run_recipe(folder: Path, script: str) -> tuple[subprocess.CompletedProcess, float]:
    """The script in bash in `folder`; (its result, seconds until no process of it was left)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    home = folder / "runs" / "flwr-home"
    try:
        done = subprocess.run(
            ["bash", "-c", script], cwd=folder, env=env, capture_output=True, text=True,
            timeout=RECIPE_TIMEOUT,
        )  # fmt: skip
        ended = time.monotonic()
        while _processes_with(home) and time.monotonic() - ended < 30:
            time.sleep(0.2)
        return done, time.monotonic() - ended
    finally:
        for pid in _processes_with(home):  # what the recipe left (asserted on by the caller)
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_the_by_hand_recipe_runs_as_written(tmp_path: Path) -> None:
    started = time.monotonic()
    done, lingered = run_recipe(tmp_path, with_ports(recipe()))
    print(f"by-hand recipe: {time.monotonic() - started:.0f} s; processes gone {lingered:.1f} s")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    results = json.loads((tmp_path / "runs" / "flower" / "results.json").read_text())
    assert summary["results"] == str(tmp_path / "runs" / "flower" / "results.json")
    assert results["contributors"] == [0, 1, 2] and not results["failures"]
    assert results["engine"] == "flower" and results["config"]["protocol"]["name"] == "plaintext"
    ppl = results["perplexity"]
    assert math.isfinite(ppl["dense"]) and math.isfinite(ppl["fedprllm"]), ppl
    assert ppl["fedprllm"] > ppl["dense"], ppl  # half the weights gone
    assert not (tmp_path / "runs" / "flower" / "error.txt").exists()
    lines = [line for line in done.stderr.splitlines() if line.startswith("fedprllm-secure: ")]
    assert any(re.search(r"stage \d+ calibrate: 3/3 nodes answered", line) for line in lines)
    assert lingered < 15, f"processes of the deployment outlived `kill` by {lingered:.0f} s"


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_the_recipe_with_a_bad_setting_fails_with_one_line(tmp_path: Path) -> None:
    script = recipe().replace("samples-per-client=2", "samples-per-client=10000")
    assert script != recipe()
    (tmp_path / "runs" / "flower").mkdir(parents=True)
    (tmp_path / "runs" / "flower" / "results.json").write_text("{}")  # an earlier run's
    done, lingered = run_recipe(tmp_path, with_ports(script))
    assert done.returncode == 1, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "{" not in done.stdout  # no summary
    assert "only 0 of 3 nodes got through calibration" in errors[0]
    assert "needs 640000 (10000 samples x 64)" in errors[0]
    assert "--run-config seqlen=" in errors[0] and "a shorter --seqlen" not in errors[0]
    out = tmp_path / "runs" / "flower"
    assert (out / "error.txt").read_text().strip() in errors[0]
    assert not (out / "results.json").exists()  # the stale one was removed at the start
    assert lingered < 15
