"""The command line: errors are one line with a non-zero exit; results are written atomically."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedprllm_secure.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedprllm_secure.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["simulate", "--protocol", "nope"], "unknown protocol 'nope'"),
        (["simulate", "--sparsity", "1.5"], "--sparsity must lie in (0, 1)"),
        (["simulate", "--sparsity", "0"], "--sparsity must lie in (0, 1)"),
        (["simulate", "--clients", "abc"], "--clients"),
        (["simulate", "--group", "diagonal"], "unknown --group"),
        (["simulate", "--client-data", "/no/such/folder"], "path not found"),
        (["simulate", "--drop", "x@input"], "CLIENT@ROUND"),
        (["simulate", "--bogus-flag"], "No such option"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(args: list[str], fragment: str) -> None:
    done = run_cli(*args)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0]
    assert "Traceback" not in done.stdout + done.stderr


def test_more_clients_than_articles_and_bad_model_are_one_line(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "corpus.json"
    corpus.write_text(
        json.dumps({f"t{i}": {"extract": "words " * 50, "topic": "x"} for i in range(3)})
    )
    code = main(["simulate", "--model", str(tiny_model_dir), "--corpus", str(corpus),
                 "--clients", "9", "--device", "cpu", "--out", str(tmp_path / "o")])  # fmt: skip
    assert code != 0
    assert "more clients (9) than articles" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    code = main(["simulate", "--model", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code != 0 and "not a model directory" in capsys.readouterr().err


def test_simulate_writes_results_atomically(
    tiny_model_dir: Path, client_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = [
        "simulate", "--model", str(tiny_model_dir), "--client-data", str(client_dir),
        "--eval-text", str(client_dir.parent / "eval.txt"), "--samples-per-client", "2",
        "--seqlen", "32", "--eval-windows", "2", "--device", "cpu", "--method", "fedprllm,local",
        "--out", str(out), "--no-progress",
    ]  # fmt: skip
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["perplexity"]) == {"dense", "fedprllm", "local", "local_mean"}
    assert results["protocol"]["uplink_bytes_per_client"]
    # A second run into the same folder is refused unless --overwrite; the old results stay.
    assert main(args) != 0
    assert json.loads((out / "results.json").read_text()) == results
    # A failing run (data too short for the samples) leaves no half-written folder.
    failing = args[:-3] + ["--samples-per-client", "500", "--out", str(tmp_path / "failed")]
    assert main(failing) != 0
    assert not (tmp_path / "failed").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".failed")]


def test_help_explains_the_flags() -> None:
    done = run_cli("simulate", "--help")
    assert done.returncode == 0
    for flag in ("--protocol", "--clients", "--split", "--group", "--method", "--save-model"):
        assert flag in done.stdout
