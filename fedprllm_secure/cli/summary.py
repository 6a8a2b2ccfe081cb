"""`simulate --json`: one machine-readable summary object on stdout, nothing else there."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def json_summary(results: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """The summary: where the results are, perplexity (with its standard error and bits per
    byte), sparsity, the protocol's contributors and upload, timings."""
    protocol = results.get("protocol") or None
    if protocol:
        per_client = protocol["uplink_bytes_per_client"]
        protocol = {
            "name": protocol["name"],
            "he_scheme": (protocol.get("options") or {}).get("he_scheme"),
            "contributors": protocol["contributors"],
            "dropped": protocol["dropped"],
            "uplink_bytes_per_client_mean": sum(per_client.values()) / max(len(per_client), 1),
            "uplink_bytes_per_weight": protocol["uplink_bytes_per_weight"],
        }
    return {
        "results": str(out_dir / "results.json"),
        "perplexity": results["perplexity"],
        "perplexity_se": results.get("perplexity_se"),
        "bits_per_byte": results.get("bits_per_byte"),
        "eval_windows": results.get("eval_windows"),  # asked and used
        "sparsity": {k: v.get("overall") for k, v in results["sparsity"].items()},
        "protocol": protocol,
        "saved_model": results.get("saved_model"),
        "saved_masks": results.get("saved_masks"),
        "timings_s": results["timings_s"],
    }


def print_json_summary(results: dict[str, Any], out_dir: Path) -> None:
    sys.stdout.write(json.dumps(json_summary(results, out_dir)) + "\n")
    sys.stdout.flush()
