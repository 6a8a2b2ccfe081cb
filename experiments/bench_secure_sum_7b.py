"""The `additive` secure sum of LLaMA-7B's prunable weights, one aggregation per decoder block.

    python experiments/bench_secure_sum_7b.py                # 32 blocks, 6.48 billion entries
    python experiments/bench_secure_sum_7b.py --blocks 4     # a quick check, extrapolated to 32

One session (keys set up once), one aggregation per block under its own index, as the iterative
mode runs it: the server releases each block's sums before the next block's exist. Each client's
masks are synthetic random bits generated chunk by chunk on the fly (no party ever holds the
whole vector). The parties run in separate processes so that each peak RSS is its own:

* this process: the server (and the message routing a server does anyway);
* one process with client 0 alone: "one client";
* two processes with the other clients.

Messages go through the wire codec and OS pipes. Reported: wall time of the whole simulation (all
clients and the server share this machine's cores), the server's and client 0's CPU seconds, peak
RSS of the server and of client 0, upload bytes per entry, each against the issue's targets
(15 min, 2 GB server RSS, 0.4 B/entry). With --blocks K < 32 the 32-block times are extrapolated
(per-block mean x 32 plus the key setup); the peaks are per block and do not grow with blocks
(the per-block server RSS is in the JSON). The result JSON goes to experiments/results/scale/.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedprllm_secure.outputs import write_json
from fedprllm_secure.randomness import SeededRandomSource
from fedprllm_secure.secure_sum import registry
from fedprllm_secure.secure_sum.api import AggregationSpec, ChunkSpec, SessionConfig
from fedprllm_secure.secure_sum.driver import drive
from fedprllm_secure.secure_sum.messages import decode, encode

# LLaMA-7B: 32 blocks of (q, k, v, o, gate, up, down), 6,476,005,376 prunable weights
HIDDEN, INTERMEDIATE, BLOCKS = 4096, 11008, 32
LLAMA7B_BLOCK = {
    "q": HIDDEN * HIDDEN,
    "k": HIDDEN * HIDDEN,
    "v": HIDDEN * HIDDEN,
    "o": HIDDEN * HIDDEN,
    "gate": INTERMEDIATE * HIDDEN,
    "up": INTERMEDIATE * HIDDEN,
    "down": HIDDEN * INTERMEDIATE,
}
TARGETS = {"wall_s": 15 * 60, "server_peak_rss_mib": 2 * 1024, "upload_bytes_per_entry": 0.4}
RESULTS = Path(__file__).parent / "results" / "scale"


def synthetic_bits(client: int, index: int, chunk: ChunkSpec) -> np.ndarray:
    """Client `client`'s 0/1 mask entries of one chunk (benchmark data, reproducible)."""
    rng = np.random.default_rng([client, index, chunk.offset])
    raw = np.frombuffer(rng.bytes(-(-chunk.length // 8)), dtype=np.uint8)
    return np.unpackbits(raw)[: chunk.length]


def block_spec(block: int) -> AggregationSpec:
    return AggregationSpec.from_lengths(
        block, {f"b{block}.{name}": size for name, size in LLAMA7B_BLOCK.items()}, 1
    )


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def host(ids: list[int], config: SessionConfig, identities: dict, conn: Any) -> None:
    """A client process: answers each batch of wire messages for its clients until told to stop."""
    os.environ["OMP_NUM_THREADS"] = "1"
    info = registry.get("additive")
    rng = SeededRandomSource("bench-7b")
    input_seconds = dict.fromkeys(ids, 0.0)

    def provider(client: int):  # noqa: ANN202
        def read(index: int, chunk: ChunkSpec) -> np.ndarray:
            start = time.process_time()
            bits = synthetic_bits(client, index, chunk)
            input_seconds[client] += time.process_time() - start
            return bits

        return read

    clients = {
        c: info.make_client(config, c, rng.child(f"client-{c}"), provider(c), identities.get(c))
        for c in ids
    }
    cpu = dict.fromkeys(ids, 0.0)
    baseline = current_rss_mib()
    while True:
        batch = conn.recv()
        if batch is None:
            break
        replies = []
        for client, wire in batch:
            start = time.process_time()
            reply = clients[client].handle(decode(wire))
            replies.append((client, None if reply is None else encode(reply)))
            cpu[client] += time.process_time() - start
        conn.send(replies)
    conn.send(
        {
            "cpu_s": cpu,
            "input_s": input_seconds,
            "peak_rss_mib": peak_rss_mib(),
            "baseline_rss_mib": baseline,
        }  # fmt: skip
    )


def run(blocks: int, clients: int) -> dict[str, Any]:
    start_rss = current_rss_mib()
    info = registry.get("additive")
    rng = SeededRandomSource("bench-7b")
    roster = tuple(range(clients))
    config, identities = info.enroll(
        SessionConfig(rng.child("session-id").random_bytes(32), roster, {}), rng.child("enroll")
    )
    groups = [[0], list(range(1, clients // 2 + 1)), list(range(clients // 2 + 1, clients))]
    groups = [g for g in groups if g]
    ctx = mp.get_context("fork")
    links, procs = [], []
    for ids in groups:
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(
            target=host, args=(ids, config, {c: identities.get(c) for c in ids}, theirs)
        )
        proc.start()
        links.append((set(ids), mine))
        procs.append(proc)
    server = info.make_server(config, rng.child("server"))
    uplink = dict.fromkeys(roster, 0)

    def deliver(outgoing: dict) -> dict:
        wires = {c: encode(m) for c, m in outgoing.items()}
        for ids, conn in links:
            conn.send([(c, w) for c, w in wires.items() if c in ids])
        replies = {}
        for _ids, conn in links:
            for client, wire in conn.recv():
                if wire is not None:
                    uplink[client] += len(wire)
                    replies[client] = decode(wire)
        return replies

    per_block, wall_start, cpu_start = [], time.perf_counter(), time.process_time()
    for block in range(blocks):
        t0 = time.perf_counter()
        spec = block_spec(block)
        result = drive(server, spec, deliver)
        if block in (0, blocks - 1):  # spot check one chunk against the plain sum
            chunk = spec.chunks[3]
            plain = sum(synthetic_bits(c, block, chunk).astype(np.int64) for c in roster)
            assert np.array_equal(result.sums[chunk.name].astype(np.int64), plain)
        del result  # the block's sums are released before the next block's exist
        per_block.append({"block": block, "seconds": time.perf_counter() - t0,
                          "server_rss_mib": current_rss_mib(), "server_peak_rss_mib": peak_rss_mib()})  # fmt: skip
        print(f"block {block}: {per_block[-1]['seconds']:.1f} s, server RSS "
              f"{per_block[-1]['server_rss_mib']:.0f} MiB", file=sys.stderr, flush=True)  # fmt: skip
    wall = time.perf_counter() - wall_start
    server_cpu = time.process_time() - cpu_start
    hosts = []
    for (_ids, conn), proc in zip(links, procs, strict=True):
        conn.send(None)
        hosts.append(conn.recv())
        proc.join()
    one = hosts[0]
    entries = blocks * sum(LLAMA7B_BLOCK.values())
    return {
        "protocol": "additive", "clients": clients, "blocks": blocks, "entries": entries,
        "largest_chunk": max(LLAMA7B_BLOCK.values()), "wall_s": wall, "server_cpu_s": server_cpu,
        "client0_cpu_s": one["cpu_s"][0] - one["input_s"][0], "client0_input_s": one["input_s"][0],
        "server_peak_rss_mib": peak_rss_mib(), "server_start_rss_mib": start_rss,
        "client0_peak_rss_mib": one["peak_rss_mib"], "client0_start_rss_mib": one["baseline_rss_mib"],
        "upload_bytes_per_entry": uplink[0] / entries, "per_block": per_block,
    }  # fmt: skip


def extrapolate(row: dict[str, Any]) -> dict[str, Any]:
    """32-block times from the measured blocks: the first block also sets the keys up."""
    seconds = [b["seconds"] for b in row["per_block"]]
    steady = seconds[1:] or seconds
    scale = lambda measured: measured * BLOCKS / row["blocks"]  # noqa: E731
    return {
        "wall_s": seconds[0] + float(np.mean(steady)) * (BLOCKS - 1),
        "server_cpu_s": scale(row["server_cpu_s"]),
        "client0_cpu_s": scale(row["client0_cpu_s"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=BLOCKS, help="blocks to run (32 = all)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None, help="result JSON path")
    args = parser.parse_args()
    if not 1 <= args.blocks <= BLOCKS or args.clients < 4:
        parser.error(f"--blocks must lie in [1, {BLOCKS}] and --clients be at least 4")
    row = run(args.blocks, args.clients)
    full = args.blocks == BLOCKS
    row["extrapolated_to_32_blocks"] = None if full else extrapolate(row)
    times = row if full else row["extrapolated_to_32_blocks"]
    row["deployment_estimate_s"] = times["server_cpu_s"] + times["client0_cpu_s"]
    label = "measured" if full else f"EXTRAPOLATED from {args.blocks} blocks"
    lines = [
        f"LLaMA-7B layer shapes, {row['entries']:,} entries ({args.blocks} blocks), "
        f"{args.clients} clients, additive; 32-block times {label}",
        f"{'':44}{'value':>12}{'target':>10}{'ratio':>8}",
    ]
    for key, value, target in (
        ("simulation wall, all parties here (s)", times["wall_s"], TARGETS["wall_s"]),
        ("server CPU + one client CPU (s)", row["deployment_estimate_s"], TARGETS["wall_s"]),
        ("server peak RSS (MiB)", row["server_peak_rss_mib"], TARGETS["server_peak_rss_mib"]),
        ("client 0 peak RSS (MiB)", row["client0_peak_rss_mib"], None),
        ("upload bytes / entry", row["upload_bytes_per_entry"], TARGETS["upload_bytes_per_entry"]),
    ):
        ratio = f"{value / target:8.2f}" if target else ""
        lines.append(f"{key:44}{value:12.3f}{target or '':>10}{ratio}")
    print("\n".join(lines))
    row["table"] = lines
    out = args.out or RESULTS / f"secure_sum_7b_{args.blocks}blocks.json"
    write_json(out, row)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
