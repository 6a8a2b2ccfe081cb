"""Every protocol gives the plaintext pruned model on the embedded default, with and without
dropouts: one calibration of the clients, then the same client masks summed through each protocol.

    python experiments/protocol_equivalence.py --clients 8 --samples 2 --seqlen 128
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedprllm_secure.config import (  # noqa: E402
    DataConfig,
    FederationConfig,
    ProtocolConfig,
    PruningConfig,
    RunConfig,
)
from fedprllm_secure.outputs import write_json  # noqa: E402
from fedprllm_secure.pipeline import Pipeline  # noqa: E402

VARIANTS = [
    ("plaintext", {}, "input"),
    ("additive", {}, "masked-input"),
    ("ckks", {}, "encrypted-input"),
    ("ckks", {"he_scheme": "bfv"}, "encrypted-input"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--seqlen", type=int, default=128)
    parser.add_argument(
        "--out", type=Path, default=Path("experiments/results/protocol_equivalence.json")
    )
    args = parser.parse_args()
    base = RunConfig(
        model=args.model,
        data=DataConfig(clients=args.clients, samples_per_client=args.samples,
                        seqlen=args.seqlen, eval_windows=1),
        pruning=PruningConfig(group="layer"),
    )  # fmt: skip
    pipe = Pipeline(base)  # every node calibrates once; its masks serve every variant
    dropped = {c: None for c in range(max(1, args.clients // 4))}
    results, reference = {}, {}
    for drop in (False, True):
        for protocol, options, round_name in VARIANTS:
            label = f"{protocol}{'/' + options['he_scheme'] if options else ''}{' dropped' if drop else ''}"
            variant = replace(
                base, protocol=ProtocolConfig(protocol, dict(options)),
                federation=FederationConfig(drop={c: round_name for c in dropped} if drop else {}),
            )  # fmt: skip
            started = time.perf_counter()
            result = pipe.fedprllm(variant)
            masks = result.masks
            seconds = time.perf_counter() - started
            key = "dropped" if drop else "all"
            reference.setdefault(key, masks)
            same = all(np.array_equal(masks[n], reference[key][n]) for n in masks)
            report = result.protocol
            results[label] = {
                "identical_to_plaintext": same,
                "contributors": report["contributors"],
                "upload_bytes_per_client": max(report["uplink_bytes_per_client"].values()),
                "seconds": round(seconds, 1),
            }
            print(f"{label:<22} identical={same} contributors={len(report['contributors'])} "
                  f"upload={results[label]['upload_bytes_per_client']:,} B  {seconds:.1f}s", flush=True)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(
        args.out, {"settings": {k: str(v) for k, v in vars(args).items()}, "results": results}
    )
    if not all(r["identical_to_plaintext"] for r in results.values()):
        sys.exit("a protocol gave a different pruned model")


if __name__ == "__main__":
    main()
