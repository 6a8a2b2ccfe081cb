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


def _fake_sweep(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Replace the sweep (no model): it stores one point, or finds it stored; the report is one
    file. Returns what each run found in its store before measuring."""
    import fedprllm_secure.audit.report as report
    import fedprllm_secure.audit.runner as runner

    found: list[dict] = []

    def run_audit(config, store, progress):  # noqa: ANN001, ANN202
        found.append(store.all())
        if store.load("p1") is None:
            store.save("p1", {"kind": "utility"})
        return store.all()

    def write_report(folder: Path, config, results):  # noqa: ANN001, ANN202
        (folder / "report.md").write_text("report\n")
        return [folder / "report.md"]

    monkeypatch.setattr(runner, "run_audit", run_audit)
    monkeypatch.setattr(report, "write_report", write_report)
    return found


def test_out_must_be_empty_or_a_resumable_audit_of_the_same_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    found = _fake_sweep(monkeypatch)
    run = tmp_path / "run"  # a `simulate` run folder
    run.mkdir()
    (run / "results.json").write_text('{"perplexity": {}}\n')
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.iterdir()}
    assert main(["audit", "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not an audit folder" in err[0] and str(run) in err[0], err
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.iterdir()} == before
    assert found == []  # refused before any work

    report = tmp_path / "report"
    args = ["audit", "--out", str(report), "--no-progress"]
    assert main(args) == 0 and found == [{}]
    assert main(args) == 0 and found[-1] == {"p1": {"kind": "utility"}}  # resumed
    assert main([*args, "--sparsity", "0.6"]) == 2  # other settings: refused, untouched
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds an audit with other settings (p1.json)" in err[-1], err
    assert len(found) == 2
    assert main([*args, "--sparsity", "0.6", "--overwrite"]) == 0 and found[-1] == {}
    assert main([*args, "--sparsity", "0.6"]) == 0 and found[-1] == {"p1": {"kind": "utility"}}
