"""Benchmark the `ckks` secure sum: bytes per entry, throughput, peak memory, packing gain.

    python experiments/bench_ckks.py                 # n = 8 clients, d = 10M entries
    python experiments/bench_ckks.py --full          # d = 106.2M (SmolLM2-135M's prunable weights)
    python experiments/bench_ckks.py --scheme bfv --out results.json

Chunks follow the SmolLM2-135M layout (q, k, v, o, gate, up, down per block; 576 / 192 / 1536
wide), cut at d. Inputs are random mask bits. The run aggregates once with the automatic packing
and once with one count per slot (`max_per_slot=1`, the unpacked baseline, on the first
`--baseline-entries` entries), through the real protocol and the in-memory bus, and reports:
uplink bytes per entry per client, encrypt / add / decrypt throughput in entries per second
(encrypt: client time incl. packing, one-time pads, encryption, serialization and signing; add:
server time incl. signature checks, parsing and the homomorphic running sum; decrypt: key-authority
time incl. statement signature checks, decryption of the ONE summed ciphertext per part, pad
derivation (X25519 + HKDF + AES-CTR per contributor) and removal, rounding and range checks), the
bytes the key authority receives (one aggregate per chunk plus ~200 B of signed statement per
contributor, compared with one client's upload), and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fedprllm_secure.randomness import SeededRandomSource
from fedprllm_secure.secure_sum.api import AggregationSpec, ClientProtocol
from fedprllm_secure.secure_sum.ckks.messages import EncryptedChunk
from fedprllm_secure.secure_sum.ckks.settings import AUTHORITY_LINK, PUBLIC_CONTEXT, session_packing
from fedprllm_secure.secure_sum.session import SimulatedSession
from fedprllm_secure.secure_sum.transport import InMemoryBus

HIDDEN, KV, MLP, BLOCKS = 576, 192, 1536, 30
BLOCK = (
    ("q", HIDDEN, HIDDEN),
    ("k", KV, HIDDEN),
    ("v", KV, HIDDEN),
    ("o", HIDDEN, HIDDEN),
    ("gate", MLP, HIDDEN),
    ("up", MLP, HIDDEN),
    ("down", HIDDEN, MLP),
)
FULL = BLOCKS * sum(rows * cols for _, rows, cols in BLOCK)  # 106,168,320


def layout(total: int) -> dict[str, int]:
    """SmolLM2 layer lengths in order, the last one cut so they add up to `total`."""
    lengths: dict[str, int] = {}
    left = total
    for block in range(BLOCKS):
        for name, rows, cols in BLOCK:
            if left <= 0:
                return lengths
            lengths[f"{block}.{name}"] = min(rows * cols, left)
            left -= lengths[f"{block}.{name}"]
    return lengths


def mask_provider(client: int) -> Callable[[int, Any], np.ndarray]:
    def read(index: int, chunk: Any) -> np.ndarray:
        rng = np.random.default_rng([client, index, chunk.offset])
        return rng.integers(0, 2, chunk.length, dtype=np.uint8)

    return read


class Timed(ClientProtocol):
    """Wraps a client and accumulates the time it spends answering."""

    def __init__(self, inner: ClientProtocol, clock: dict[str, float]) -> None:
        self.inner, self.clock, self.client_id = inner, clock, inner.client_id

    @property
    def state(self) -> str:
        return self.inner.state

    def handle(self, message: object) -> object:
        start = time.perf_counter()
        try:
            return self.inner.handle(message)
        finally:
            self.clock["encrypt"] += time.perf_counter() - start


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run(clients: int, entries: int, scheme: str, max_per_slot: int | None) -> dict[str, Any]:
    lengths = layout(entries)
    options: dict[str, Any] = {"he_scheme": scheme}
    if max_per_slot is not None:
        options["max_per_slot"] = max_per_slot
    inputs = {c: mask_provider(c) for c in range(clients)}
    sim = SimulatedSession("ckks", inputs, SeededRandomSource(b"bench"), options=options)
    clock = {"encrypt": 0.0, "server": 0.0, "decrypt": 0.0}
    link = sim.config.options[AUTHORITY_LINK]
    request = link.request

    def timed_request(message: Any) -> Any:
        start = time.perf_counter()
        try:
            return request(message)
        finally:
            clock["decrypt"] += time.perf_counter() - start

    link.request = timed_request
    server = sim.bus.server
    handle = server.handle

    def timed_handle(replies: Any) -> Any:
        start = time.perf_counter()
        try:
            return handle(replies)
        finally:
            clock["server"] += time.perf_counter() - start

    server.handle = timed_handle  # type: ignore[method-assign]
    clients_timed = {c: Timed(p, clock) for c, p in sim.bus.clients.items()}
    bus = InMemoryBus(server, clients_timed)
    spec = AggregationSpec.from_lengths(0, lengths, 1)
    start = time.perf_counter()
    result = bus.run(spec)
    wall = time.perf_counter() - start
    # Spot-check exactness on the first and last chunk against the plaintext sum.
    for chunk in (spec.chunks[0], spec.chunks[-1]):
        expected = sum(mask_provider(c)(0, chunk).astype(np.int64) for c in range(clients))
        assert np.array_equal(result.sums[chunk.name], expected), chunk.name
    assert result.contributors == tuple(range(clients))
    uplink = bus.log.uplink_by_client()
    add_time = clock["server"] - clock["decrypt"]
    packing = session_packing(sim.config, 1)
    return {
        "scheme": scheme,
        "clients": clients,
        "entries": entries,
        "chunks": len(lengths),
        "largest_chunk": max(lengths.values()),
        "counts_per_slot": packing.per_slot,
        "base": packing.base,
        "error_bound": packing.error_bound,
        "bytes_per_entry_per_client": uplink[0] / entries,
        "uplink_bytes_per_client": uplink[0],
        "public_context_bytes": len(sim.config.options[PUBLIC_CONTEXT]),
        "authority_bytes_in": link.bytes_to_authority,
        "authority_bytes_in_per_client_upload": link.bytes_to_authority / uplink[0],
        "encrypt_entries_per_s": clients * entries / clock["encrypt"],
        "add_entries_per_s": clients * entries / add_time,
        "decrypt_entries_per_s": entries / clock["decrypt"],
        "wall_s": wall,
        "peak_rss_mb": peak_rss_mb(),
    }


def client_only(clients: int, entries: int, scheme: str) -> None:
    """One client encrypting every chunk, ciphertexts dropped after sizing: its peak RSS shows
    the client's memory is O(chunk), not O(d)."""
    lengths = layout(entries)
    inputs = {c: mask_provider(c) for c in range(clients)}
    sim = SimulatedSession("ckks", inputs, SeededRandomSource(b"bench"), {"he_scheme": scheme})
    spec = AggregationSpec.from_lengths(0, lengths, 1)
    first = sim.bus.server.begin(spec)[0]
    client, sent = sim.bus.clients[0], 0
    for chunk in spec.chunks:
        reply = client.handle(dataclasses.replace(first, chunk=chunk))
        assert isinstance(reply, EncryptedChunk)
        sent += sum(len(c) for c in reply.ciphertexts)
    print(json.dumps({"entries": entries, "bytes": sent, "client_peak_rss_mb": peak_rss_mb()}))


def client_memory(clients: int, entries: int, scheme: str) -> float:
    """Peak RSS of `client_only` run in a fresh process."""
    command = [sys.executable, __file__, "--client-only", "--entries", str(entries)]
    command += ["--clients", str(clients), "--scheme", scheme]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return float(json.loads(output.strip().splitlines()[-1])["client_peak_rss_mb"])


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--entries", type=int, default=10_000_000)
    parser.add_argument("--full", action="store_true", help=f"d = {FULL:,} (SmolLM2-135M)")
    parser.add_argument("--scheme", choices=("ckks", "bfv"), default="ckks")
    parser.add_argument(
        "--baseline-entries",
        type=int,
        default=10_000_000,
        help="entries for the one-count-per-slot baseline (capped at d)",
    )
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument("--client-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    entries = FULL if args.full else args.entries
    if args.client_only:
        client_only(args.clients, entries, args.scheme)
        return
    client_rss = {
        d: client_memory(args.clients, d, args.scheme) for d in sorted({1_000_000, entries})
    }
    print(json.dumps({"client_only_peak_rss_mb": client_rss}), flush=True)
    packed = run(args.clients, entries, args.scheme, None)
    print(json.dumps({"packed": packed}, indent=1), flush=True)
    baseline = run(args.clients, min(entries, args.baseline_entries), args.scheme, 1)
    ratio = baseline["bytes_per_entry_per_client"] / packed["bytes_per_entry_per_client"]
    results = {
        "packed": packed,
        "one_count_per_slot": baseline,
        "size_ratio": ratio,
        "client_only_peak_rss_mb": client_rss,
    }
    print(json.dumps({"one_count_per_slot": baseline, "size_ratio": ratio}, indent=1))
    print(
        f"\n{args.scheme}, n={args.clients}, d={entries:,}: "
        f"{packed['bytes_per_entry_per_client']:.2f} B/entry/client "
        f"({packed['counts_per_slot']} counts per slot), {ratio:.1f}x smaller than one count per "
        f"slot ({baseline['bytes_per_entry_per_client']:.1f} B/entry); encrypt "
        f"{packed['encrypt_entries_per_s'] / 1e6:.2f}M/s, add {packed['add_entries_per_s'] / 1e6:.1f}M/s, "
        f"decrypt {packed['decrypt_entries_per_s'] / 1e6:.1f}M/s; peak RSS {packed['peak_rss_mb']:.0f} MB "
        f"(one client alone: {client_rss})"
    )
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
