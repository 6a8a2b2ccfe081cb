"""A protocol defined outside the package, registered only through the `fedprllm_secure.protocols`
entry point (an installed dist-info on sys.path), runs on Flower unchanged: its enrollment hooks run
on the nodes, every trust check applies, and the masks equal those of the built-in plaintext sum.

Runs in a child Python whose path holds the toy distribution, so this process's registry never sees
it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="flwr is not installed (pip install '.[flower]')")

pytestmark = pytest.mark.flower

CHILD = """
import json, sys
import numpy as np
from pathlib import Path
from fedprllm_secure.secure_sum import registry
from fedprllm_secure.integrations.flower import client_app as ca, records as R, trust as T
from fedprllm_secure.integrations.flower.local import LocalGrid
from fedprllm_secure.integrations.flower.server_app import prune_with_flower

model, clients, keys = sys.argv[1:4]
entries = ("alice.txt", "bob.jsonl", "carol")
nodes = [{"model": model, "data": str(Path(clients) / e)} for e in entries]
pinned = T.pinned_node_configs(keys, nodes, protocols=["toy-sum"])
grid = LocalGrid(ca.app, {1000 + i: c for i, c in enumerate(pinned)})
common = {"num-nodes": 3, "samples-per-client": 2, "seqlen": 32, "round-timeout-s": 30}
toy, _ = prune_with_flower(grid, {**common, "protocol": "toy-sum"}, model)
plain_grid = LocalGrid(ca.app, {2000 + i: c for i, c in enumerate(nodes)})
plain, _ = prune_with_flower(plain_grid, {**common, "protocol": "plaintext"}, model)
states = [c.state for c in grid.contexts.values()]
secrets = [len(R.array_blob(s.array_records[ca.SECRET]["secret"])) for s in states]
print(json.dumps({
    "module": registry.get("toy-sum").make_server.__module__,
    "contributors": toy.contributors,
    "failures": toy.failures,
    "equal": all(np.array_equal(toy.masks[n], plain.masks[n]) for n in plain.masks),
    "secrets": secrets,
    "ledgers": sorted(p.parent.name for p in Path(keys).rglob("*.ledger")),
}))
"""


def install_toy(site: Path) -> None:
    """The toy protocol as an installed distribution: its module and a dist-info naming it under
    the entry-point group."""
    site.mkdir(parents=True)
    shutil.copy(Path(__file__).with_name("toy_sum_protocol.py"), site / "toy_sum_protocol.py")
    info = site / "toy_sum_protocol-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-sum-protocol\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[fedprllm_secure.protocols]\ntoy-sum = toy_sum_protocol:INFO\n"
    )


def test_an_entry_point_protocol_runs_on_flower(
    tiny_model_dir: Path, client_dir: Path, keys: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    install_toy(site)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(root)])}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tiny_model_dir), str(client_dir), str(keys)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["module"] == "toy_sum_protocol"  # from the entry point, not the package
    assert result["contributors"] == [0, 1, 2] and not result["failures"]
    assert result["equal"]  # the same masks as the built-in plaintext sum
    assert result["secrets"] == [16, 16, 16]  # node_enroll ran on each node
    assert result["ledgers"] == ["ledger"] * 3  # each node recorded its release
