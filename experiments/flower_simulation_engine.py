"""The paper's setting on Flower's simulation engine: 64 clients x 2 windows of 512 tokens.

    python experiments/flower_simulation_engine.py            # 64 x 2 on smollm2-135m, ~1 h on 2 cores
    python experiments/flower_simulation_engine.py --clients 4 --seqlen 64 --out /tmp/x.json

Runs the one-shot masks mode (Wanda, sequential calibration, layer group, plaintext sum) twice with
the same seed and corpus split: (1) `flwr run` against a SuperLink in simulation mode, N virtual
SuperNodes on Ray (one CPU each), virtual node i calibrating on partition i of the corpus
(`integrations.flower.deploy.run_simulation_engine`); (2) in process (`simulate`'s pipeline), in a
child process (`pipeline.Pipeline`). Both with one thread per client (OMP_NUM_THREADS=1, as Ray gives a 1-CPU actor), so
the floating-point sums run in the same order. Writes wall time and peak memory of each, and
whether the global masks are equal, to experiments/results/flower_simulation_64x2.json.

Peak memory: in process, the child's peak RSS (ru_maxrss); on Flower, the largest sum of the RSS
of every process of the deployment (SuperLink, ServerApp, Ray and its workers), sampled each second.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "experiments" / "results" / "flower_simulation_64x2.json"


def deployment_rss(marker: bytes) -> int:
    """Bytes of RSS of every live process whose environment holds `marker` (FLWR_HOME=...)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


class PeakSampler(threading.Thread):
    def __init__(self, marker: bytes) -> None:
        super().__init__(daemon=True)
        self.marker, self.peak, self.done = marker, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, deployment_rss(self.marker))
            self.done.wait(1.0)


def run_flower(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from fedprllm_secure.integrations.flower.deploy import run_simulation_engine

    run_config = {
        "protocol": "plaintext", "corpus": args.corpus, "split": "iid", "seed": args.seed,
        "samples-per-client": args.samples, "seqlen": args.seqlen, "sparsity": args.sparsity,
        "node-wait-s": 600, "calibrate-timeout-s": 6 * 3600, "round-timeout-s": 600,
    }  # fmt: skip
    sampler = PeakSampler(f"FLWR_HOME={work / 'flwr-home'}".encode())
    sampler.start()
    started = time.perf_counter()
    result = run_simulation_engine(
        args.model, args.clients, work / "out", run_config, timeout=6 * 3600, workdir=work
    )
    wall = time.perf_counter() - started
    sampler.done.set()
    sampler.join()
    return {
        "wall_s": round(wall, 1),
        "peak_rss_mb_all_processes": round(sampler.peak / 2**20, 1),
        "contributors": len(result["contributors"]),
        "failures": result["failures"],
        "timings_s": result["timings_s"],
        "masks": str(work / "out" / "masks.npz"),
    }


def inprocess_child(args: argparse.Namespace, masks_out: Path) -> None:
    """The in-process run (simulate's pipeline): global masks to `masks_out`, stats on stdout
    and next to the masks (a finished run found there is reused: the in-process side may be run
    ahead, alone, with `--inprocess-child WORK/inprocess-masks.npz`)."""
    stats = masks_out.with_suffix(".json")
    lock = masks_out.with_suffix(".pid")  # an in-process run ahead of this one, still running
    while lock.is_file() and Path(f"/proc/{lock.read_text().strip()}").exists():
        time.sleep(10)
    if masks_out.is_file() and stats.is_file():
        print(stats.read_text().strip())
        return
    from fedprllm_secure.config import DataConfig, PruningConfig, RunConfig
    from fedprllm_secure.pipeline import Pipeline

    lock.write_text(str(os.getpid()))

    started = time.perf_counter()
    config = RunConfig(
        model=args.model, device="cpu", seed=args.seed,
        data=DataConfig(corpus=args.corpus, clients=args.clients, split="iid",
                        samples_per_client=args.samples, seqlen=args.seqlen, eval_windows=1),
        pruning=PruningConfig(sparsity=args.sparsity),
    )  # fmt: skip
    masks = Pipeline(config).fedprllm().masks
    np.savez_compressed(masks_out, **masks)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    wall = time.perf_counter() - started
    stats.write_text(json.dumps({"wall_s": round(wall, 1), "peak_rss_mb": round(peak / 2**20, 1)}))
    lock.unlink(missing_ok=True)
    print(stats.read_text())


def run_inprocess(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    masks = work / "inprocess-masks.npz"
    command = [sys.executable, __file__, "--inprocess-child", str(masks), *args.forward]
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "masks": str(masks)}


def compare(flower: Path, inprocess: Path) -> dict[str, Any]:
    a, b = np.load(flower), np.load(inprocess)
    differing = {n: int(np.count_nonzero(a[n] != b[n])) for n in b.files if n in a.files}
    return {
        "layers": len(b.files),
        "same_layer_names": sorted(a.files) == sorted(b.files),
        "entries_differing": sum(differing.values()),
        "equal": sorted(a.files) == sorted(b.files) and not any(differing.values()),
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--corpus", default="wiki-topics")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument(
        "--work", type=Path, default=None,
        help="work folder (default: a new temporary one); an in-process result in it is reused",
    )  # fmt: skip
    parser.add_argument("--inprocess-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.forward = [
        f"--model={args.model}", f"--corpus={args.corpus}", f"--clients={args.clients}",
        f"--samples={args.samples}", f"--seqlen={args.seqlen}", f"--sparsity={args.sparsity}",
        f"--seed={args.seed}",
    ]  # fmt: skip
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ["OMP_NUM_THREADS"] = "1"
    if args.inprocess_child is not None:
        inprocess_child(args, args.inprocess_child)
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="flower-sim-engine-"))
    work.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    flower = run_flower(args, work)
    inprocess = run_inprocess(args, work)
    report = {
        "what": "one-shot masks (Wanda, sequential calibration, layer group, plaintext sum): "
        "Flower simulation engine vs in process, same seed and corpus split",
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "forward", "work")}
        | {"inprocess_child": None, "threads_per_client": 1, "ray_cpus_per_node": 1},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "commit": commit,
        "flower_simulation_engine": flower,
        "in_process": inprocess,
        "global_masks": compare(Path(flower["masks"]), Path(inprocess["masks"])),
    }
    report["settings"].pop("inprocess_child")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["global_masks"]), "->", args.out)
    return 0 if report["global_masks"]["equal"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
