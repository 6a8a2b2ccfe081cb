"""`fedprllm-secure audit`: one-line errors, a report folder, and a rerun that resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedprllm_secure.cli import main

from .test_runner import write_corpus


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--clients", "x,4"], "--clients must be a comma-separated list"),
        (["--config", "/no/such/grid.json"], "--config file not found"),
        (["--protocols", "nope"], "unknown protocol 'nope'"),
        (["--rr-epsilons", "-1"], "rr_epsilons must hold positive numbers"),
    ],
)
def test_bad_input_is_one_line(
    args: list[str], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "--out", str(tmp_path / "a"), *args]) == 2  # usage errors
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
    assert "Traceback" not in "".join(err)


def test_audit_writes_a_report_and_resumes(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = tmp_path / "grid.json"
    grid.write_text(
        json.dumps(
            {
                "protocols": ["plaintext"],
                "clients": [3],
                "rr_epsilons": [2.0],
                "dp_epsilons": [],
                "cost_clients": [3],
                "samples_per_client": 2,
                "seqlen": 32,
                "eval_windows": 2,
                "leakage": {"topics": 2, "shadows": 1, "targets": 2, "cohort": 2,
                            "entries_per_layer": 128, "samples_per_client": 1},
            }
        )
    )  # fmt: skip
    out = tmp_path / "report"
    args = ["audit", "--config", str(grid), "--model", str(tiny_model_dir), "--corpus",
            str(write_corpus(tmp_path)), "--device", "cpu", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert (out / "report.md").is_file() and (out / "leakage.png").is_file()
    before = {p.name: p.stat().st_mtime_ns for p in (out / "points").iterdir()}
    assert main(args) == 0  # resumes: every point is already there, none is rewritten
    after = {p.name: p.stat().st_mtime_ns for p in (out / "points").iterdir()}
    assert before == after
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0].startswith("id,kind") and len(rows) == 1 + len(before) - 1  # no leakage row
