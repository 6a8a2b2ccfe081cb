"""Flower's SecAgg+ against our `additive`, through the same Flower path, at n clients.

    python experiments/bench_flower_secagg.py --entries 1K,1M,10M --clients 8

Three ways to sum n vectors of d random bits (a pruning mask each), every one checked exact:

* flower-secagg+  Flower 1.42's `SecAggPlusWorkflow` + `secaggplus_mod` (legacy FedAvg round;
                  max_weight=1, clipping_range=1, quantization_range=2^22 so 0/1 quantize to
                  exact integers; the average times n is rounded and compared with the true sum);
                  num_shares = n, reconstruction_threshold = our default threshold for n.
* additive/flower our `additive` through our ServerApp/ClientApp (enroll + protocol rounds,
                  protocol client saved to and restored from `context.state` every message).
* additive/inproc our `additive` over the in-memory bus (`SimulatedSession`), no Flower.

Each variant first runs one untimed warm-up round at d = 1000 in the same process (imports and
first-call costs belong to no round). Both Flower variants run on `LocalGrid`: the ServerApp logic calls ClientApps in process, so the
times are the protocols' own (no network, no 3 s SuperNode polling that a deployment adds to
every round for both). Each variant runs in its own subprocess; peak memory is that process's
max RSS (server and all n clients). Upload bytes: what the clients put in their reply records
(arrays and config bytes), summed over all rounds, per client, divided by d.
"""

from __future__ import annotations

import argparse
import atexit
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from statistics import median
from typing import Any

import numpy as np

VARIANTS = ("flower-secagg+", "additive/flower", "additive/inproc")


def entries(text: str) -> int:
    return int(float(text.upper().replace("M", "e6").replace("K", "e3")))


def client_bits(client: int, d: int) -> np.ndarray:
    return np.random.default_rng([7, client]).integers(0, 2, d, dtype=np.uint8)


def expected_sum(n: int, d: int) -> np.ndarray:
    total = np.zeros(d, dtype=np.int64)
    for c in range(n):
        total += client_bits(c, d)
    return total


def run_flower_secaggplus(n: int, d: int) -> dict[str, Any]:
    from flwr.app import Context, RecordDict
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    from fedprllm_secure.integrations.flower.local import LocalGrid
    from fedprllm_secure.secure_sum.additive.params import default_neighbors, default_threshold

    class Bits(NumPyClient):
        def __init__(self, index: int) -> None:
            self.index = index

        def fit(self, parameters: list, config: dict) -> tuple[list, int, dict]:
            return [client_bits(self.index, d).astype(np.float64)], 1, {}

    def client_fn(context: Context) -> Any:
        return Bits(int(context.node_config["index"])).to_client()

    client_app = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
    captured: dict[str, Any] = {}

    class Capture(FedAvg):
        def aggregate_fit(self, server_round: int, results: list, failures: list) -> Any:
            captured["average"] = parameters_to_ndarrays(results[0][1].parameters)[0]
            captured["results"] = len(results)
            return super().aggregate_fit(server_round, results, failures)

    grid = LocalGrid(client_app, {100 + c: {"index": c} for c in range(n)})
    strategy = Capture(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=n,
        min_available_clients=n,
        initial_parameters=ndarrays_to_parameters([np.zeros(1)]),
    )
    context = LegacyContext(
        context=Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={}),
        config=ServerConfig(num_rounds=1),
        strategy=strategy,
    )
    threshold = default_threshold(default_neighbors(n))
    workflow = DefaultWorkflow(
        fit_workflow=SecAggPlusWorkflow(
            num_shares=n,
            reconstruction_threshold=threshold,
            max_weight=1.0,
            clipping_range=1.0,
            quantization_range=2**22,
            modulus_range=2**32,
            timeout=600,
        )
    )
    started = time.perf_counter()
    workflow(grid, context)
    seconds = time.perf_counter() - started
    counts = np.rint(captured["average"] * n).astype(np.int64)
    exact = bool(np.array_equal(counts, expected_sum(n, d)))
    return {
        "seconds": seconds,
        "parallel_seconds": grid.parallel_seconds(seconds),
        "uplink": dict(grid.uplink_bytes),
        "exact": exact,
    }


def run_additive_flower(n: int, d: int) -> dict[str, Any]:
    from flwr.app import ArrayRecord, ConfigRecord

    from fedprllm_secure.integrations.flower import client_app as ca
    from fedprllm_secure.integrations.flower import trust as T
    from fedprllm_secure.integrations.flower.federation import FlowerFederation
    from fedprllm_secure.integrations.flower.local import LocalGrid
    from fedprllm_secure.integrations.flower.records import Array
    from fedprllm_secure.secure_sum import registry
    from fedprllm_secure.secure_sum.api import AggregationSpec

    # each node pinned as an operator would set it up (identity key, trust file, ledger folder)
    folder = tempfile.mkdtemp(prefix="bench-flower-nodes-")
    atexit.register(shutil.rmtree, folder, True)
    pinned = T.pinned_node_configs(folder, [{}] * n)
    grid = LocalGrid(ca.app, {100 + c: cfg for c, cfg in enumerate(pinned)})
    for c, node in enumerate(sorted(grid.contexts)):  # what `calibrate` leaves in the state
        state = grid.contexts[node].state
        state[ca.MASKS] = ArrayRecord({"bench": Array(np.packbits(client_bits(c, d)))})
        state[ca.LAYOUT] = ConfigRecord({"names": ["bench"], "lengths": [d]})
    fed = FlowerFederation(grid, sorted(grid.contexts), round_timeout_s=600)
    options = registry.get("additive").with_cohort({}, 3)
    started = time.perf_counter()
    session = fed.open_session("additive", options, tuple(range(n)))
    result = session.aggregate(AggregationSpec.from_lengths(0, {"bench": d}, bound=1))
    seconds = time.perf_counter() - started
    total = np.concatenate([result.sums[chunk.name] for chunk in result.spec.chunks])
    exact = bool(np.array_equal(total.astype(np.int64), expected_sum(n, d)))
    return {
        "seconds": seconds,
        "parallel_seconds": grid.parallel_seconds(seconds),
        "uplink": dict(grid.uplink_bytes),
        "exact": exact,
    }


def run_additive_inproc(n: int, d: int) -> dict[str, Any]:
    from fedprllm_secure.randomness import SystemRandomSource
    from fedprllm_secure.secure_sum.api import AggregationSpec
    from fedprllm_secure.secure_sum.session import SimulatedSession

    bits = {c: client_bits(c, d) for c in range(n)}
    inputs = {c: (lambda _i, chunk, c=c: bits[c]) for c in range(n)}
    started = time.perf_counter()
    session = SimulatedSession("additive", inputs, SystemRandomSource())
    steps: dict[int, list[float]] = {}

    class Timed:  # times each client's work per bus step (round)
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def handle(self, message: Any) -> Any:
            begun = time.perf_counter()
            reply = self.inner.handle(message)
            steps.setdefault(session.bus._step, []).append(time.perf_counter() - begun)
            return reply

    session.bus.clients = {c: Timed(x) for c, x in session.bus.clients.items()}  # type: ignore[misc]
    result = session.aggregate(AggregationSpec.from_lengths(0, {"bench": d}, bound=1))
    seconds = time.perf_counter() - started
    exact = bool(np.array_equal(result.sums["bench"].astype(np.int64), expected_sum(n, d)))
    rounds = list(steps.values())
    parallel = seconds - sum(map(sum, rounds)) + sum(map(max, rounds))
    return {
        "seconds": seconds,
        "parallel_seconds": parallel,
        "uplink": session.bus.log.uplink_by_client(),
        "exact": exact,
    }


RUNNERS = {
    "flower-secagg+": run_flower_secaggplus,
    "additive/flower": run_additive_flower,
    "additive/inproc": run_additive_inproc,
}


def one(variant: str, n: int, d: int) -> dict[str, Any]:
    from fedprllm_secure.secure_sum import registry

    registry.available()  # imports every protocol module (TenSEAL too) before any timing
    RUNNERS[variant](n, 1000)  # warm-up round: lazy imports and first-call costs, not timed
    expected_sum(n, d)  # and allocates like the timed part will
    out = RUNNERS[variant](n, d)
    uplink = list(out.pop("uplink").values())
    out["upload_bytes_per_entry"] = float(np.mean(uplink)) / d if uplink else float("nan")
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def measure(variant: str, n: int, d: int, timeout: float) -> dict[str, Any]:
    """One timed round of `variant` in a fresh subprocess (its own peak RSS)."""
    proc = subprocess.run(
        [sys.executable, __file__, "--one", variant, str(n), str(d)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{variant} at d={d} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", default="1M,10M")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument(
        "--repeats", type=int, default=3, help="fresh runs per variant; times are medians"
    )
    parser.add_argument("--one", nargs=3, metavar=("VARIANT", "N", "D"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), int(args.one[2]))))
        return
    n = args.clients
    rows = []
    for text in args.entries.split(","):
        d = entries(text)
        measured = {}
        for variant in args.variants.split(","):
            runs = [measure(variant, n, d, args.timeout) for _ in range(args.repeats)]
            measured[variant] = {
                "seconds": median(r["seconds"] for r in runs),
                "parallel_seconds": median(r["parallel_seconds"] for r in runs),
                "upload_bytes_per_entry": runs[0]["upload_bytes_per_entry"],
                "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                "exact": all(r["exact"] for r in runs),
            }
            rows.append((text, variant, measured[variant]))
            m = measured[variant]
            print(
                f"  {text:>4} {variant:<16} {m['seconds']:8.2f} s  {m['parallel_seconds']:8.2f} s  "
                f"{m['upload_bytes_per_entry']:7.3f} B/entry  {m['peak_rss_mb']:8.0f} MB  "
                f"exact={m['exact']}",
                file=sys.stderr,
                flush=True,
            )
        base = measured.get("flower-secagg+")
        ours = measured.get("additive/flower")
        if base and ours:
            rows.append((text, "ratio secagg+/additive (flower)", {
                "seconds": base["seconds"] / ours["seconds"],
                "parallel_seconds": base["parallel_seconds"] / ours["parallel_seconds"],
                "upload_bytes_per_entry": base["upload_bytes_per_entry"] / ours["upload_bytes_per_entry"],
                "peak_rss_mb": base["peak_rss_mb"] / ours["peak_rss_mb"],
                "exact": None,
            }))  # fmt: skip
    print(
        f"\nn = {n} clients, random 0/1 entries; one whole aggregation round (setup/enrollment "
        f"included), median of {args.repeats} fresh runs. serial: all clients run one after "
        "another in this process; parallel: the same run minus client time plus the slowest "
        "client of each round.\n"
    )
    print(
        "| d | variant | s / round, serial | s / round, clients parallel "
        "| upload B / entry / client | peak RSS MB | exact |"
    )
    print("|---|---|---|---|---|---|---|")
    for text, variant, m in rows:
        if variant.startswith("ratio"):
            print(
                f"| {text} | **{variant}** | **{m['seconds']:.1f}x** | "
                f"**{m['parallel_seconds']:.1f}x** | **{m['upload_bytes_per_entry']:.2f}x** | "
                f"{m['peak_rss_mb']:.2f}x | |"
            )
        else:
            print(
                f"| {text} | {variant} | {m['seconds']:.2f} | {m['parallel_seconds']:.2f} | "
                f"{m['upload_bytes_per_entry']:.3f} | {m['peak_rss_mb']:.0f} | "
                f"{'yes' if m['exact'] else 'NO'} |"
            )


if __name__ == "__main__":
    main()
