"""The progress display, recorded (no screenshot): a rich Console with record=True drives the real
progress of a run on the tiny model; its text must name the phases, count what it counts
("decoder block k/n", "window k/n", "phase k of n") and show an ETA."""

from __future__ import annotations

import re
from pathlib import Path

from rich.console import Console

from fedprllm_secure.cli.progress import RichProgress
from fedprllm_secure.config import DataConfig, PruningConfig, RunConfig
from fedprllm_secure.pipeline import run


def _recorded_run(model: Path, client_dir: Path, methods: tuple[str, ...]) -> str:
    console = Console(record=True, force_terminal=True, width=140, color_system=None)
    config = RunConfig(
        model=str(model),
        device="cpu",
        data=DataConfig(
            client_data=str(client_dir),
            eval_text=str(client_dir.parent / "eval.txt"),
            samples_per_client=2,
            seqlen=32,
            eval_windows=3,
        ),  # fmt: skip
        pruning=PruningConfig(methods=methods),
    )
    run(config, RichProgress(True, console))
    return console.export_text()


def test_progress_names_phases_units_counts_and_eta(tiny_model_dir: Path, client_dir: Path) -> None:
    text = _recorded_run(tiny_model_dir, client_dir, ("fedprllm", "centralized"))
    phases = ["load model", "prepare data", "evaluate dense", "fedprllm", "centralized"]
    for k, name in enumerate(phases, start=1):
        assert f"phase {k} of {len(phases)}: {name}" in text, text
    assert "loading model" in text and re.search(r"loading model .*: done in \d+\.\d s", text)
    assert "decoder block 2/2" in text  # centralized calibration counts the 2 decoder blocks
    assert "window 3/3" in text  # the 3 evaluation windows
    assert "layer 14/14" in text  # pruning: 7 linears per block
    assert re.search(r"\[5/5\] calibrate centralized", text)
    assert text.count("ETA") >= 4 and re.search(r"ETA\s+\d+:\d\d:\d\d", text)


def test_disabled_progress_draws_nothing() -> None:
    console = Console(record=True, force_terminal=True, width=100)
    progress = RichProgress(False, console)
    progress.plan(["a"])
    progress.phase("a")
    with progress.status("loading"), progress.stage("perplexity (dense)", 2) as advance:
        advance()
    assert console.export_text() == ""
