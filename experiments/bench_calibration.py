"""Federated vs centralized one-shot calibration time, measured side by side in one run.

Federated: m clients each calibrate on their own S/m samples (m separate passes through the
model). Centralized: one pass over all S samples. Same samples, same batch size. The target is a
ratio <= 1.2: federated calibration wastes no compute (the official FedPrLLM code forwards a
buffer sized for every client's samples, ~64x the work). Two ratios are printed: `statistics`
(the activation pass: every block's statistics, dense propagation) and `with masks` (plus each
client's own per-row mask selection over all 106M weights, which a federated run repeats m times
by design: every client prunes locally).

    python experiments/bench_calibration.py --model both --clients 8 --samples 32 --seqlen 256
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedprllm_secure.client.calibrate import BlockwiseCalibration, local_masks  # noqa: E402
from fedprllm_secure.model import load_model  # noqa: E402


def tiny_model() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def compare(name: str, model: torch.nn.Module, args: argparse.Namespace) -> float:
    vocab = model.config.vocab_size
    samples = torch.randint(
        0, vocab, (args.samples, args.seqlen), generator=torch.Generator().manual_seed(0)
    )
    per_client = args.samples // args.clients
    shards = [samples[i * per_client : (i + 1) * per_client] for i in range(args.clients)]

    def statistics(shard: torch.Tensor) -> None:
        walk = BlockwiseCalibration(model, shard, args.batch_size)
        while not walk.done:
            walk.statistics()
            walk.propagate_dense()

    def masks(shard: torch.Tensor) -> None:
        local_masks(model, shard, 0.5, calibration="one-shot", batch_size=args.batch_size)

    ratios = {}
    for label, work in (("statistics", statistics), ("with masks", masks)):
        fed_times, cen_times = [], []
        for _ in range(args.repeats):  # interleaved so machine noise hits both alike
            fed_times.append(timed(lambda w=work: [w(shard) for shard in shards]))
            cen_times.append(timed(lambda w=work: w(samples)))
        fed, cen = min(fed_times), min(cen_times)
        ratios[label] = fed / cen
        print(
            f"{name:<14} {label:<11} clients={args.clients} samples={args.samples} "
            f"seqlen={args.seqlen} federated={fed:.2f}s centralized={cen:.2f}s "
            f"ratio={fed / cen:.3f} ({'meets' if fed / cen <= 1.2 else 'MISSES'} target <= 1.2)",
            flush=True,
        )
    return ratios["statistics"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=["tiny", "smollm2-135m", "both"], default="both")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--samples", type=int, default=32, help="S, all clients together")
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if args.samples % args.clients:
        parser.error("--samples must be a multiple of --clients")
    if args.model in ("tiny", "both"):
        device = (
            "cuda"
            if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
            else "cpu"
        )
        compare("tiny-llama", tiny_model().to(device), args)
    if args.model in ("smollm2-135m", "both"):
        compare("smollm2-135m", load_model("smollm2-135m", args.device).model, args)


if __name__ == "__main__":
    main()
