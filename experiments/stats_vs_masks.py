"""`--aggregate stats` vs `--aggregate masks` on one setup, side by side in one run.

Checks that the statistics mode yields exactly the centralized Wanda mask (and so the same
perplexity), and prints the upload per client of both modes through the same protocol with their
ratio.

    python experiments/stats_vs_masks.py --protocol additive --clients 8 --samples 4 --seqlen 256
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from statistics import mean

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedprllm_secure.config import DataConfig, ProtocolConfig, PruningConfig, RunConfig  # noqa: E402
from fedprllm_secure.outputs import write_json  # noqa: E402
from fedprllm_secure.pipeline import Pipeline  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--protocol", default="additive")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4, help="per client")
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--eval-windows", type=int, default=8)
    parser.add_argument("--calibration", default="sequential")
    parser.add_argument("--out", type=Path, default=Path("experiments/results/stats_vs_masks.json"))
    args = parser.parse_args()
    config = RunConfig(
        model=args.model,
        data=DataConfig(
            clients=args.clients,
            samples_per_client=args.samples,
            seqlen=args.seqlen,
            eval_windows=args.eval_windows,
        ),
        pruning=PruningConfig(calibration=args.calibration, aggregate="stats", group="layer"),
        protocol=ProtocolConfig(args.protocol),
    )
    pipe = Pipeline(config)
    rows: dict[str, dict] = {}

    def measure(label: str, compute) -> dict:  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        masks, scales, report = compute()
        seconds = time.perf_counter() - started
        ppl, _ = pipe.evaluate(label, masks, scales)
        upload = mean(report["uplink_bytes_per_client"].values()) if report else None
        rows[label] = {"ppl": ppl, "upload_bytes_per_client": upload, "seconds": round(seconds, 1)}
        print(
            f"{label:<28} ppl {ppl:9.4f}  upload {upload or 0:>12,.0f} B  {seconds:7.1f} s",
            flush=True,
        )
        return masks

    def fedprllm(variant: RunConfig):  # type: ignore[no-untyped-def]
        def compute():  # type: ignore[no-untyped-def]
            result = pipe.fedprllm(variant)
            return result.masks, result.scales, result.protocol

        return compute

    central = measure("centralized", lambda: (pipe.centralized(), None, {}))
    stats = measure("fedprllm stats", fedprllm(config))
    identical = all(np.array_equal(stats[name], central[name]) for name in central)
    masks_mode = replace(config, pruning=replace(config.pruning, aggregate="masks"))
    measure("fedprllm masks (layer)", fedprllm(masks_mode))
    ratio = (
        rows["fedprllm masks (layer)"]["upload_bytes_per_client"]
        / rows["fedprllm stats"]["upload_bytes_per_client"]
    )
    summary = {
        "settings": {k: str(v) for k, v in vars(args).items()},
        "rows": rows,
        "stats_mask_equals_centralized": identical,
        "upload_ratio_masks_over_stats": ratio,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
