"""The report folder of an audit: results.json, results.csv, PNG plots and report.md."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ..outputs import write_json
from ..privacy.noise_source import describe
from ..privacy.randomized_response import flip_probability
from .conclusions import holds_section
from .config import AuditConfig

CSV_FIELDS = (
    "id", "kind", "clients", "split", "mechanism", "epsilon", "protocol", "perplexity",
    "agreement_with_noiseless_mask", "count_rmse_first_layer", "noise_multiplier", "seconds",
    "uplink_bytes_per_client", "uplink_bytes_per_weight", "exact", "wall_s",
)  # fmt: skip


def _row(point_id: str, result: dict[str, Any]) -> dict[str, Any]:
    point = result.get("point", {})
    row = {key: result.get(key) for key in CSV_FIELDS}
    row.update({key: point.get(key) for key in ("kind", "clients", "split", "mechanism")})
    row.update({"id": point_id, "epsilon": point.get("epsilon"), "protocol": point.get("protocol")})
    row["noise_multiplier"] = (result.get("statistics_dp") or {}).get("noise_multiplier")
    return row


def combined_leakage(results: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The leakage point with every leakage-dp point merged in as `dp_stats_mask[eps]`."""
    if "leakage" not in results:
        return None
    leakage = dict(results["leakage"])
    leakage["dp_stats_mask"] = {
        str(r["point"]["epsilon"]): r
        for r in results.values()
        if r.get("point", {}).get("kind") == "leakage-dp"
    }
    return leakage


def write_report(
    folder: Path, config: AuditConfig, results: dict[str, dict[str, Any]]
) -> list[Path]:
    """Write every report file into `folder` (existing files are replaced); returns them."""
    from . import plots

    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "results.json", folder / "results.csv", folder / "report.md"]
    write_json(folder / "results.json", {"config": config.as_dict(), "points": results})
    rows = [
        _row(point_id, r) for point_id, r in results.items() if not point_id.startswith("leakage")
    ]
    temporary = folder / ".results.csv.tmp"
    with temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    temporary.replace(folder / "results.csv")
    if any(r.get("point", {}).get("kind") == "utility" for r in results.values()):
        plots.perplexity_vs_epsilon(results, folder / "perplexity_vs_epsilon.png")
        written.append(folder / "perplexity_vs_epsilon.png")
    if any(r.get("point", {}).get("kind") == "cost" for r in results.values()):
        plots.cost_vs_clients(results, folder / "cost_vs_clients.png")
        written.append(folder / "cost_vs_clients.png")
    leakage = combined_leakage(results)
    if leakage:
        plots.leakage_accuracy(leakage, folder / "leakage.png")
        written.append(folder / "leakage.png")
    temporary = folder / ".report.md.tmp"
    temporary.write_text(markdown(config, results), encoding="utf-8")
    temporary.replace(folder / "report.md")
    return written


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _settings_and_utility(config: AuditConfig, results: dict[str, dict[str, Any]]) -> list[str]:
    dense = results.get("dense", {})
    weights = dense.get("weights")
    lines = [
        "# fedprllm-secure audit",
        "",
        f"Model `{config.model}` ({_fmt(weights)} prunable weights), sparsity {config.sparsity}, "
        f"group `{config.group}`, {config.calibration} calibration, {config.samples_per_client} "
        f"samples x {config.seqlen} tokens per client, perplexity on {config.eval_windows} "
        f"held-out windows of {config.seqlen} tokens, seed {config.seed}, noise "
        f"{describe(config.reproducible_noise)}. Statistics DP: "
        f"delta {config.dp_delta}, clip C = {config.dp_clip}, accountant `{config.accountant}`, "
        "one release per decoder block.",
        "",
        f"Dense perplexity: **{_fmt(dense.get('perplexity'))}**; magnitude pruning (no "
        f"calibration data at all): **{_fmt(results.get('magnitude', {}).get('perplexity'))}**.",
        "",
        "## Utility vs privacy",
        "",
        "![perplexity vs epsilon](perplexity_vs_epsilon.png)",
        "",
        "| clients | split | mechanism | epsilon | guarantee | perplexity | same global mask as "
        "noiseless | sigma |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results.values():
        point = r.get("point", {})
        if point.get("kind") != "utility":
            continue
        eps, mechanism = point.get("epsilon"), point.get("mechanism")
        if mechanism == "rr":
            guarantee = (
                f"{eps}-LDP per weight (flip {flip_probability(eps):.3f}); "
                f"{eps * (weights or 0):.3g} over the mask"
            )
        elif mechanism == "dp":
            guarantee = f"({eps}, {config.dp_delta})-DP per client mask, per sample"
        elif mechanism in ("ddp", "ldp-stats"):
            guarantee = f"({eps}, {config.dp_delta})-DP per window of the released statistics"
        elif mechanism == "ddp-client":
            guarantee = f"({eps}, {config.dp_delta})-DP per client of the released statistics"
        else:
            guarantee = "none beyond the secure sum"
        lines.append(
            f"| {point.get('clients')} | {point.get('split')} | {mechanism} | {_fmt(eps)} | "
            f"{guarantee} | {_fmt(r.get('perplexity'))} | "
            f"{_fmt(r.get('agreement_with_noiseless_mask'), 4)} | "
            f"{_fmt((r.get('statistics_dp') or {}).get('noise_multiplier'))} |"
        )
    return lines


def _cost_section(results: dict[str, dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    lines += [
        "",
        "## Cost of the secure sum (whole mask, random bits, all parties on one machine)",
        "",
        "Wall time covers every party in one process (clients run one after another) on the "
        "machine that ran the audit; compare protocols with each other, not with a deployment.",
        "",
        "![cost vs clients](cost_vs_clients.png)",
        "",
        "| protocol | clients | upload per client (MB) | bytes per weight | wall time (s) | exact |",
        "|---|---|---|---|---|---|",
    ]
    for r in results.values():
        point = r.get("point", {})
        if point.get("kind") == "cost":
            lines.append(
                f"| {point['protocol']} | {point['clients']} | "
                f"{r['uplink_bytes_per_client'] / 1e6:.2f} | {r['uplink_bytes_per_weight']:.3f} | "
                f"{r['seconds']:.1f} | {r['exact']} |"
            )
    return lines


def _leakage_section(results: dict[str, dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    leakage = combined_leakage(results)
    if not leakage:
        return lines
    setup = leakage["setup"]
    lines += [
        "",
        "## Leakage: inferring a client's topic",
        "",
        f"{len(setup['topics'])} topics ({', '.join(setup['topics'])}); "
        f"{setup['shadow_clients']} shadow clients label the attacker's references, "
        f"{setup['target_clients']} targets are attacked; masks of the first "
        f"{setup['blocks']} block(s), {setup['entries']} entries; server views from cohorts "
        f"of {setup['cohort']} clients. Nearest-centroid attacker; chance = "
        f"{leakage['plaintext_mask']['chance']:.2f}.",
        "",
        "![leakage](leakage.png)",
        "",
        "| what the attacker sees | accuracy | 95% interval |",
        "|---|---|---|",
    ]
    views = [("(a) the client's plaintext mask", leakage["plaintext_mask"])]
    views += [(f"(a) its mask after RR, eps {e}", v) for e, v in leakage["rr_mask"].items()]
    views += [
        (f"(a) its mask with DP statistics, eps {e}", v)
        for e, v in leakage["dp_stats_mask"].items()
    ]
    views += [
        (f"(b) everything the server receives from it, `{p}`", v)
        for p, v in leakage["server_view"].items()
    ]
    views.append(("(c) the released aggregate of its cohort", leakage["aggregate"]))
    for name, v in views:
        lines.append(
            f"| {name} | {v['accuracy']:.2f} | [{v['ci95_low']:.2f}, {v['ci95_high']:.2f}] |"
        )
    return lines


def markdown(config: AuditConfig, results: dict[str, dict[str, Any]]) -> str:
    """report.md: settings, utility, accounting, cost, leakage, and who is protected from whom."""
    lines = _settings_and_utility(config, results)
    lines += _cost_section(results)
    lines += _leakage_section(results)
    lines += holds_section(results, combined_leakage(results), config.min_cohort)
    return "\n".join(lines)
