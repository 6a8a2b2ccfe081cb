"""Flower's simulation engine (a SuperLink in simulation mode, virtual SuperNodes on Ray, `flwr
run`): each virtual node calibrates on its partition of the corpus, split as `simulate` splits it,
and the global masks equal the in-process run's with the same seed. About 1 minute; skipped
without flwr's simulation extra (ray)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr", reason="flwr is not installed (pip install '.[flower]')")
pytest.importorskip("ray", reason="ray is not installed (pip install '.[flower]')")

from fedprllm_secure.config import DataConfig, PruningConfig, RunConfig  # noqa: E402
from fedprllm_secure.integrations.flower.deploy import run_simulation_engine  # noqa: E402
from fedprllm_secure.pipeline import Pipeline  # noqa: E402

pytestmark = [
    pytest.mark.flower,
    pytest.mark.skipif(
        shutil.which("flower-superlink", path=str(Path(sys.executable).parent)) is None,
        reason="flower-superlink is not installed next to this Python",
    ),
]

RUN = {"samples-per-client": 2, "seqlen": 32, "split": "iid", "seed": 3, "node-wait-s": 120}


@pytest.mark.parametrize("mode", ["one-shot", "iterative"])
def test_virtual_nodes_on_their_corpus_partitions_prune_like_simulate(
    tiny_model_dir: Path, tmp_path: Path, mode: str
) -> None:
    """One-shot masks, and iterative masks (each node's block walk saved between messages)."""
    nodes = 4
    result = run_simulation_engine(
        str(tiny_model_dir), nodes, tmp_path / "out",
        {**RUN, "protocol": "plaintext", "pruning.mode": mode},
        timeout=300, workdir=tmp_path / "work",
    )  # fmt: skip
    assert result["contributors"] == list(range(nodes)) and not result["failures"]
    config = RunConfig(
        model=str(tiny_model_dir), device="cpu", seed=3,
        data=DataConfig(clients=nodes, samples_per_client=2, seqlen=32, split="iid", eval_windows=1),
        pruning=PruningConfig(mode=mode),
    )  # fmt: skip
    expected = Pipeline(config).fedprllm().masks
    masks = np.load(tmp_path / "out" / "masks.npz")
    assert sorted(masks.files) == sorted(expected)
    for name, mask in expected.items():
        assert np.array_equal(masks[name], mask), name
