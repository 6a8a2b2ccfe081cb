"""PNG plots of an audit (matplotlib, headless). Each `*_figure` builds one figure from the rows;
the functions of the same name without `_figure` write it to a file.

Randomized response (eps per weight) and DP statistics (eps per client mask) are budgets of
different things: they get separate panels, each with its own labelled epsilon axis. Every
setting has its own marker and line style, so overlapping curves stay distinguishable, and the
legends sit outside the data. Client counts are integer (categorical) ticks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")
PANELS = (
    ("rr", "randomized response", "epsilon per weight (local DP of each mask bit)"),
    ("dp", "DP statistics", "epsilon per client mask ((eps, delta)-DP per window)"),
    ("ddp", "distributed DP statistics", "epsilon per window (stats, one release)"),
    ("ddp-client", "distributed DP, client level", "epsilon per client (stats, one release)"),
    ("ldp-stats", "local DP statistics (stats)", "epsilon per window (stats, one release)"),
)


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def perplexity_vs_epsilon(results: dict[str, dict[str, Any]], path: Path) -> None:
    _save(perplexity_figure(results), path)


def perplexity_figure(results: dict[str, dict[str, Any]]) -> Figure:
    """Perplexity against epsilon, one panel per mechanism that was swept, one styled curve per
    (clients, split); noiseless, dense and magnitude pruning as horizontal references."""
    utility = _kind(results, "utility")
    panels = [p for p in PANELS if any(r["point"]["mechanism"] == p[0] for r in utility)]
    panels = panels or [PANELS[0]]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels) + 2.5, 4.5), squeeze=False)
    settings = sorted({(r["point"]["clients"], r["point"]["split"]) for r in utility})
    for ax, (mechanism, title, xlabel) in zip(axes[0], panels, strict=True):
        for i, (clients, split) in enumerate(settings):
            rows = [
                r
                for r in utility
                if (r["point"]["clients"], r["point"]["split"]) == (clients, split)
            ]  # noqa: E501
            style = {"marker": MARKERS[i % len(MARKERS)], "ls": LINESTYLES[i % len(LINESTYLES)]}
            points = sorted(
                (r["point"]["epsilon"], r["perplexity"]) for r in rows
                if r["point"]["mechanism"] == mechanism
            )  # fmt: skip
            if points:
                ax.plot(*zip(*points, strict=True), label=f"{clients} clients, {split}",
                        alpha=0.85, markersize=7 - i % 3, **style)  # fmt: skip
            for r in rows:
                if r["point"]["mechanism"] == "none":
                    ax.axhline(r["perplexity"], color="grey", lw=0.8, ls=style["ls"],
                               label=f"no noise, {clients} clients, {split}")  # fmt: skip
        _references(ax, results)
        ax.set_xscale("log")
        epsilons = sorted(
            {r["point"]["epsilon"] for r in utility if r["point"]["mechanism"] == mechanism}
        )
        if epsilons:
            ax.set_xticks(epsilons, [f"{e:g}" for e in epsilons])
            ax.minorticks_off()
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("perplexity (held-out)")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.suptitle("Utility of the federated mask vs privacy budget")
    fig.tight_layout()
    return fig


def _references(ax: Any, results: dict[str, dict[str, Any]]) -> None:
    dense = results.get("dense", {}).get("perplexity")
    if dense:
        ax.axhline(dense, color="black", lw=0.8, label="dense model")
    magnitude = results.get("magnitude", {}).get("perplexity")
    if magnitude:
        ax.axhline(magnitude, color="tab:red", lw=0.8, ls="-.", label="magnitude (no data)")


def cost_vs_clients(results: dict[str, dict[str, Any]], path: Path) -> None:
    _save(cost_figure(results), path)


def cost_figure(results: dict[str, dict[str, Any]]) -> Figure:
    """Upload bytes per client and wall time of the secure sum against the number of clients."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    rows = _kind(results, "cost")
    counts = sorted({r["point"]["clients"] for r in rows})
    for i, protocol in enumerate(sorted({r["point"]["protocol"] for r in rows})):
        mine = sorted(
            (r["point"]["clients"], r["uplink_bytes_per_client"], r["seconds"])
            for r in rows
            if r["point"]["protocol"] == protocol
        )
        clients = [m[0] for m in mine]
        style = {"marker": MARKERS[i % len(MARKERS)], "ls": LINESTYLES[i % len(LINESTYLES)]}
        left.plot(clients, [m[1] / 1e6 for m in mine], label=protocol, **style)
        right.plot(clients, [m[2] for m in mine], label=protocol, **style)
    left.set_ylabel("upload per client (MB)")
    right.set_ylabel("secure sum wall time, all parties (s)")
    for ax in (left, right):
        ax.set_xlabel("clients")
        ax.set_xticks(counts, [str(c) for c in counts])
        if len(counts) == 1:
            ax.set_xlim(counts[0] - 1, counts[0] + 1)
        ax.grid(alpha=0.3)
    right.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.suptitle("Cost of the secure sum over the whole mask")
    fig.tight_layout()
    return fig


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
    _save(fig, path)


def _kind(results: dict[str, dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in results.values() if r.get("point", {}).get("kind") == kind]
