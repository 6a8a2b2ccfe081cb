"""Benchmark the `additive` secure sum against `plaintext` on one machine.

    python experiments/bench_additive.py --entries 10M            # d = 10,000,000
    python experiments/bench_additive.py --entries smollm         # d = 106.2M, SmolLM2 layer shapes

Each protocol runs in its own subprocess (so peak RSS is its own) with n clients (default 8) over an
in-memory bus: every message goes through the wire codec. Reported per protocol: mean time per client
(excluding the time to produce its input bits), server time, upload bytes per entry per client,
peak RSS, and the additive/plaintext ratios. Inputs are random mask bits (bound 1).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from typing import Any

import numpy as np

from fedprllm_secure.randomness import SeededRandomSource
from fedprllm_secure.secure_sum.additive.layout import WordLayout
from fedprllm_secure.secure_sum.api import AggregationSpec, ChunkSpec
from fedprllm_secure.secure_sum.session import SimulatedSession

# SmolLM2-135M: 30 blocks of (q, k, v, o, gate, up, down); 106,168,320 prunable weights
SMOLLM_BLOCK = {
    "q": 576 * 576,
    "k": 576 * 192,
    "v": 576 * 192,
    "o": 576 * 576,
    "gate": 576 * 1536,
    "up": 576 * 1536,
    "down": 1536 * 576,
}


def bits_per_entry(clients: int) -> float:
    """Upload bits per 0/1 entry of `additive`'s word layout (3.2 at 8 clients)."""
    layout = WordLayout.for_max_sum(clients)
    return layout.bits / layout.per_word


def layout(entries: str, chunk: int) -> dict[str, int]:
    if entries == "smollm":
        return {f"b{b}.{name}": size for b in range(30) for name, size in SMOLLM_BLOCK.items()}
    total = int(float(entries.upper().replace("M", "e6").replace("K", "e3")))
    sizes = {}
    for i, start in enumerate(range(0, total, chunk)):
        sizes[f"chunk{i}"] = min(chunk, total - start)
    return sizes


class Timed:
    """Wraps one protocol party and accumulates the time spent in its calls."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.peak_bytes = 0  # largest transient allocation during one call (tracemalloc)
        self.client_id = getattr(inner, "client_id", None)

    @property
    def state(self) -> str:
        return self.inner.state

    def _timed(self, fn: Any, *args: Any) -> Any:
        tracing = tracemalloc.is_tracing()
        if tracing:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds += time.perf_counter() - start
            if tracing:
                peak = tracemalloc.get_traced_memory()[1] - base
                self.peak_bytes = max(self.peak_bytes, peak)

    def handle(self, msg: Any) -> Any:
        return self._timed(self.inner.handle, msg)

    def begin(self, spec: AggregationSpec) -> Any:
        return self._timed(self.inner.begin, spec)


def run_one(protocol: str, entries: str, clients: int, chunk: int, trace: bool) -> dict[str, Any]:
    sizes = layout(entries, chunk)
    spec = AggregationSpec.from_lengths(0, sizes, 1)
    input_seconds = dict.fromkeys(range(clients), 0.0)

    def provider(client: int):
        def read(index: int, piece: ChunkSpec) -> np.ndarray:
            start = time.perf_counter()
            rng = np.random.default_rng([client, piece.offset])  # benchmark data only
            bits = rng.integers(0, 2, piece.length, dtype=np.uint8)
            input_seconds[client] += time.perf_counter() - start
            return bits

        return read

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    session = SimulatedSession(
        protocol, {c: provider(c) for c in range(clients)}, SeededRandomSource("bench")
    )
    bus = session.bus
    timed_server = Timed(bus.server)
    timed_clients = {c: Timed(p) for c, p in bus.clients.items()}
    bus.server = timed_server  # type: ignore[assignment]  # duck-typed wrapper
    bus.clients = timed_clients  # type: ignore[assignment]
    if trace:  # allocation tracing slows numpy-heavy code; timings are taken without it
        tracemalloc.start()
    start = time.perf_counter()
    result = session.aggregate(spec)
    wall = time.perf_counter() - start
    d = spec.total_length
    if trace:
        tracemalloc.stop()
    client_seconds = [timed_clients[c].seconds - input_seconds[c] for c in range(clients)]
    # spot check against the plaintext sum on the first and last chunk
    for piece in (spec.chunks[0], spec.chunks[-1]):
        expected = sum(provider(c)(0, piece).astype(np.int64) for c in range(clients))
        assert np.array_equal(result.sums[piece.name].astype(np.int64), expected)
    upload = bus.log.uplink_by_client()
    return {
        "protocol": protocol,
        "entries": d,
        "chunks": len(spec.chunks),
        "largest_chunk": max(sizes.values()),
        "clients": clients,
        "bits_per_entry_layout": bits_per_entry(clients) if protocol == "additive" else 1,
        "client_seconds_mean": float(np.mean(client_seconds)),
        "client_seconds_max": float(np.max(client_seconds)),
        "server_seconds": timed_server.seconds,
        "wall_seconds": wall,
        "upload_bytes_per_entry": float(np.mean([upload[c] for c in range(clients)])) / d,
        "upload_bytes_per_client": float(np.mean([upload[c] for c in range(clients)])),
        "client_peak_alloc_mib": max(t.peak_bytes for t in timed_clients.values()) / 2**20,
        "server_peak_alloc_mib": timed_server.peak_bytes / 2**20,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_session_mib": rss_before / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="additive vs plaintext secure-sum benchmark")
    parser.add_argument("--entries", default="10M", help="e.g. 10M, 500K, or 'smollm' (106.2M)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=1 << 19, help="entries per chunk (not smollm)")
    parser.add_argument("--protocol", choices=["additive", "plaintext", "both"], default="both")
    parser.add_argument("--json", action="store_true", help="print one JSON line per protocol")
    parser.add_argument(
        "--trace-alloc",
        action="store_true",
        help="also measure the largest allocation inside one client/server call (slower)",
    )
    args = parser.parse_args()
    if args.protocol != "both":
        row = run_one(args.protocol, args.entries, args.clients, args.chunk, args.trace_alloc)
        print(json.dumps(row))
        return
    rows = {}
    for protocol in ("additive", "plaintext"):
        cmd = [sys.executable, __file__, "--protocol", protocol, "--entries", args.entries]
        cmd += ["--clients", str(args.clients), "--chunk", str(args.chunk)]
        cmd += ["--trace-alloc"] if args.trace_alloc else []
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows[protocol] = json.loads(out.strip().splitlines()[-1])
    if args.json:
        for row in rows.values():
            print(json.dumps(row))
        return
    a, p = rows["additive"], rows["plaintext"]
    b = a["bits_per_entry_layout"]
    print(
        f"d = {a['entries']:,} entries in {a['chunks']} chunks (largest {a['largest_chunk']:,}),"
        f" n = {a['clients']} clients, {b:.2f} bits per entry"
    )
    print(f"{'':28}{'additive':>14}{'plaintext':>14}{'ratio':>10}")
    keys = [
        ("client_seconds_mean", "time per client (s)"),
        ("server_seconds", "server time (s)"),
        ("wall_seconds", "wall time (s)"),
        ("upload_bytes_per_entry", "upload bytes / entry"),
        ("client_peak_alloc_mib", "client peak alloc (MiB)"),
        ("server_peak_alloc_mib", "server call peak alloc (MiB)"),
        ("peak_rss_mib", "peak RSS (MiB)"),
    ]
    for key, label in keys:
        if "alloc" in key and not args.trace_alloc:
            continue
        ratio = a[key] / p[key] if p[key] else float("nan")
        print(f"{label:28}{a[key]:>14.4f}{p[key]:>14.4f}{ratio:>10.2f}")
    print(
        f"upload target b/8 = {b / 8:.3f} bytes/entry; additive overhead "
        f"{a['upload_bytes_per_client'] - a['entries'] * b / 8:,.0f} bytes per client"
    )


if __name__ == "__main__":
    main()
