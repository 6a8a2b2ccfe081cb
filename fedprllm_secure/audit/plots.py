"""PNG plots of an audit (matplotlib, headless). Each function writes one file from the rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def perplexity_vs_epsilon(results: dict[str, dict[str, Any]], path: Path) -> None:
    """Perplexity against epsilon for RR and DP statistics, per setting; noiseless and dense
    as horizontal references."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    dense = results.get("dense", {}).get("perplexity")
    settings = sorted(
        {(r["point"]["clients"], r["point"]["split"]) for r in _kind(results, "utility")}
    )
    for clients, split in settings:
        rows = [
            r for r in _kind(results, "utility")
            if (r["point"]["clients"], r["point"]["split"]) == (clients, split)
        ]  # fmt: skip
        label = f"{clients} clients, {split}"
        for mechanism, style in (("rr", "o-"), ("dp", "s--")):
            points = sorted(
                (r["point"]["epsilon"], r["perplexity"])
                for r in rows
                if r["point"]["mechanism"] == mechanism
            )
            if points:
                name = (
                    "randomized response (eps per weight)"
                    if mechanism == "rr"
                    else ("DP statistics (eps per client mask)")
                )
                ax.plot(*zip(*points, strict=True), style, label=f"{name}, {label}")
        for r in rows:
            if r["point"]["mechanism"] == "none":
                ax.axhline(r["perplexity"], color="grey", ls=":", label=f"no noise, {label}")
    if dense:
        ax.axhline(dense, color="black", lw=0.8, label="dense model")
    magnitude = results.get("magnitude", {}).get("perplexity")
    if magnitude:
        ax.axhline(magnitude, color="tab:red", lw=0.8, ls="-.", label="magnitude (no data)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("epsilon")
    ax.set_ylabel("perplexity (held-out)")
    ax.set_title("Utility of the federated mask vs privacy budget")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cost_vs_clients(results: dict[str, dict[str, Any]], path: Path) -> None:
    """Upload bytes per client and wall time of the secure sum against the number of clients."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    rows = _kind(results, "cost")
    for protocol in sorted({r["point"]["protocol"] for r in rows}):
        mine = sorted(
            (r["point"]["clients"], r["uplink_bytes_per_client"], r["seconds"])
            for r in rows
            if r["point"]["protocol"] == protocol
        )
        clients = [m[0] for m in mine]
        left.plot(clients, [m[1] / 1e6 for m in mine], "o-", label=protocol)
        right.plot(clients, [m[2] for m in mine], "o-", label=protocol)
    left.set_ylabel("upload per client (MB)")
    right.set_ylabel("secure sum wall time, all parties (s)")
    for ax in (left, right):
        ax.set_xlabel("clients")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle("Cost of the secure sum over the whole mask")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def leakage_accuracy(leakage: dict[str, Any], path: Path) -> None:
    """Attacker accuracy (95% Wilson interval) per view, against chance."""
    bars = [("plaintext mask (a)", leakage["plaintext_mask"])]
    bars += [(f"RR mask eps={e}", r) for e, r in leakage.get("rr_mask", {}).items()]
    bars += [(f"DP-stats mask eps={e}", r) for e, r in leakage.get("dp_stats_mask", {}).items()]
    bars += [(f"server view: {p} (b)", r) for p, r in leakage.get("server_view", {}).items()]
    bars.append(("released aggregate (c)", leakage["aggregate"]))
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(bars) + 1.5))
    names = [b[0] for b in bars]
    accuracy = [b[1]["accuracy"] for b in bars]
    errors = [
        [a - b[1]["ci95_low"] for a, b in zip(accuracy, bars, strict=True)],
        [b[1]["ci95_high"] - a for a, b in zip(accuracy, bars, strict=True)],
    ]
    ax.barh(names, accuracy, xerr=errors, color="tab:blue", alpha=0.8, capsize=3)
    ax.axvline(bars[0][1]["chance"], color="red", ls="--", label="chance")
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("topic-inference accuracy (95% interval)")
    ax.set_title("What reveals a client's topic?")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _kind(results: dict[str, dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in results.values() if r.get("point", {}).get("kind") == kind]
