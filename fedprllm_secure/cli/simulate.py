"""`fedprllm-secure simulate`: flags (and --config / --set) -> RunConfig -> OUT/results.json."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from . import options as o
from .options import DATA, FEDERATION, OUTPUT, PRIVACY, PROTOCOL, PRUNING, RUN, opt
from .progress import RichProgress, out

if TYPE_CHECKING:
    from ..config import RunConfig

DEFAULT_OUT = Path("runs/latest")


def simulate(
    ctx: typer.Context,
    config_file: Annotated[
        Path | None,
        opt(RUN, "TOML run configuration; flags override it.", "--config"),
    ] = None,
    overrides: Annotated[
        list[str],
        opt(
            RUN,
            "Override a setting, e.g. pruning.sparsity=0.6 (repeatable; wins over flags).",
            "--set",
            metavar="PATH=VALUE",
        ),
    ] = [],  # noqa: B006
    print_config: Annotated[
        bool,
        opt(RUN, "Print the settings as TOML (a file for --config) and exit.", "--print-config"),
    ] = False,
    model: Annotated[
        str, opt(RUN, "smollm2-135m, a .gguf file, a model folder or a Hub id.")
    ] = "smollm2-135m",
    device: Annotated[o.Device, opt(RUN, "auto: CUDA when present.")] = o.Device.auto,
    dtype: Annotated[
        o.Dtype,
        opt(
            RUN,
            "Weights: auto (stored), float32, bfloat16, float16.",
            metavar="DTYPE",
            show_default=False,
        ),
    ] = o.Dtype.auto,
    seed: Annotated[int, opt(RUN, "Seed of the split and tie breaking.")] = 0,
    corpus: Annotated[str, opt(DATA, "wiki-topics or a JSON file in its format.")] = "wiki-topics",
    client_data: Annotated[
        Path | None, opt(DATA, "Folder: one .txt/.jsonl file or folder per client.")
    ] = None,
    eval_text: Annotated[
        Path | None, opt(DATA, "Evaluation text (default: held-out articles).")
    ] = None,
    clients: Annotated[int, opt(DATA, "Clients (unless --client-data).")] = 8,
    split: Annotated[o.Split, opt(DATA, "topic: non-IID (1-2 topics each).")] = o.Split.iid,
    samples_per_client: Annotated[int, opt(DATA, "Calibration windows per client.")] = 8,
    seqlen: Annotated[int, opt(DATA, "Tokens per calibration window.")] = 512,
    eval_windows: Annotated[int, opt(DATA, "Evaluation windows.")] = 16,
    eval_seqlen: Annotated[
        int | None,
        opt(DATA, "Tokens per evaluation window (default: --seqlen).", show_default=False),
    ] = None,
    sparsity: Annotated[float, opt(PRUNING, "Fraction of weights pruned, in (0, 1).")] = 0.5,
    group: Annotated[o.Group, opt(PRUNING, "Server comparison group.")] = o.Group.layer,
    pruner: Annotated[o.Pruner, opt(PRUNING, "Scores (magnitude: no data).")] = o.Pruner.wanda,
    sparsity_type: Annotated[
        str,
        opt(
            PRUNING,
            "unstructured, 2:4, 4:8, any N:M.",
            metavar="TYPE",
        ),
    ] = "unstructured",
    layerwise: Annotated[o.Layerwise, opt(PRUNING, "owl: outlier-weighted.")] = o.Layerwise.uniform,
    owl_lambda: Annotated[float, opt(PRUNING, "owl: spread.")] = 0.08,
    owl_m: Annotated[float, opt(PRUNING, "owl: outlier factor.")] = 5.0,
    ria_alpha: Annotated[float, opt(PRUNING, "ria: exponent.")] = 0.5,
    refine: Annotated[o.Refine, opt(PRUNING, "dsnot: prune-and-grow.")] = o.Refine.none,
    calibration: Annotated[
        o.Calibration, opt(PRUNING, "one-shot: dense activations only.")
    ] = o.Calibration.sequential,
    mode: Annotated[o.Mode, opt(PRUNING, "iterative: one secure sum per block.")] = o.Mode.one_shot,
    aggregate: Annotated[
        o.Aggregate, opt(PRUNING, "stats: the exact centralized method's mask.")
    ] = o.Aggregate.masks,
    stats_precision_bits: Annotated[int, opt(PRUNING, "stats: fixed-point bits.")] = 48,
    scaling: Annotated[bool, opt(PRUNING, "Scale kept weights by (m - C) / m.")] = False,
    method: Annotated[
        list[str], opt(PRUNING, "fedprllm, centralized, local (comma-separated).", metavar="NAMES")
    ] = ["fedprllm"],  # noqa: B006
    batch_size: Annotated[int, opt(PRUNING, "Windows per forward pass.")] = 8,
    blockwise: Annotated[
        bool,
        opt(PRUNING, "One decoder block in memory at a time.", "--blockwise", show_default=False),
    ] = False,
    protocol: Annotated[
        str, opt(PROTOCOL, "plaintext, additive, ckks (see `protocols`).")
    ] = "plaintext",
    threshold: Annotated[int | None, opt(PROTOCOL, "additive: Shamir threshold t.")] = None,
    neighbors: Annotated[int | None, opt(PROTOCOL, "additive: SecAgg+ neighbors k.")] = None,
    he_scheme: Annotated[o.HeScheme | None, opt(PROTOCOL, "ckks: bfv is exact, smaller.")] = None,
    authority: Annotated[
        str | None, opt(PROTOCOL, "ckks: who decrypts: separate or a client id.")
    ] = None,
    rr_epsilon: Annotated[float | None, opt(PRIVACY, "Randomized response eps per weight.")] = None,
    dp_stats_epsilon: Annotated[
        float | None, opt(PRIVACY, "DP statistics eps per client mask.")
    ] = None,
    dp_delta: Annotated[
        float, opt(PRIVACY, "delta of the DP (default 1e-5).", show_default=False)
    ] = 1e-5,
    dp_clip: Annotated[
        float | None, opt(PRIVACY, "Per-sample L2 clip C (distributed: auto).")
    ] = None,
    dp_accountant: Annotated[
        o.Accountant, opt(PRIVACY, "Accountant that sets sigma.")
    ] = o.Accountant.rdp,
    min_cohort: Annotated[
        int | None,
        opt(PRIVACY, "Fewest clients summed (3, plaintext 1).", show_default=False),
    ] = None,
    reproducible_noise: Annotated[
        bool, opt(PRIVACY, "Noise and secrets from --seed: NOT private.")
    ] = False,
    dp_noise: Annotated[
        o.DpNoise | None,
        opt(PRIVACY, "Default: distributed in stats + secure.", show_default=False),
    ] = None,
    dp_mechanism: Annotated[
        o.DpMechanism, opt(PRIVACY, "distributed noise (skellam default).", show_default=False)
    ] = o.DpMechanism.skellam,
    dp_unit: Annotated[
        o.DpUnit, opt(PRIVACY, "What DP hides (default: window).", show_default=False)
    ] = o.DpUnit.window,
    dp_min_survivors: Annotated[
        int | None, opt(PRIVACY, "Honest shares needed (default: protocol).", show_default=False)
    ] = None,
    dp_domain: Annotated[
        o.DpDomain, opt(PRIVACY, "Scale before clip (default: group).", show_default=False)
    ] = o.DpDomain.group,
    drop: Annotated[
        list[str], opt(FEDERATION, "Drop a client, e.g. 3@masked-input.", metavar="CLIENT@ROUND")
    ] = [],  # noqa: B006
    out_dir: Annotated[Path, opt(OUTPUT, "Folder for results.json.", "--out")] = DEFAULT_OUT,
    overwrite: Annotated[
        bool, opt(OUTPUT, "Replace an existing --out folder.", "--overwrite", show_default=False)
    ] = False,
    save_model: Annotated[
        bool, opt(OUTPUT, "Save the pruned model in OUT/model.", "--save-model", show_default=False)
    ] = False,
    save_masks: Annotated[
        bool,
        opt(OUTPUT, "Save the global masks in OUT/masks.npz.", "--save-masks", show_default=False),
    ] = False,
    json_summary: Annotated[
        bool, opt(OUTPUT, "Print only a JSON summary on stdout.", "--json")
    ] = False,
    progress: Annotated[bool, opt(OUTPUT, "Show progress bars.")] = True,
) -> None:
    """Run a whole federated pruning round on this machine and write OUT/results.json.

    Settings come from --config (TOML), then the flags given, then each --set.
    """
    given = o.given_params(ctx)
    config = o.build_run_config(ctx.params, given, config_file, overrides)
    if print_config:
        from ..config_io import config_to_toml

        print(config_to_toml(config), end="")
        return
    write_run(
        config, out_dir, overwrite=overwrite, save_model=save_model, progress=progress,
        save_masks=save_masks, json_summary=json_summary, command=_command_line(ctx),
    )  # fmt: skip


def _command_line(ctx: typer.Context) -> str:
    """The command as typed (cli.main passes its argv in ctx.obj; else sys.argv)."""
    import shlex
    import sys

    argv = (ctx.obj or {}).get("argv") if isinstance(ctx.obj, dict) else None
    return "fedprllm-secure " + shlex.join(sys.argv[1:] if argv is None else argv)


def write_run(
    config: RunConfig,
    out_dir: Path,
    *,
    overwrite: bool,
    save_model: bool,
    progress: bool,
    save_masks: bool = False,
    json_summary: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Validate `config`, run it, write OUT/results.json (and OUT/model, OUT/masks.npz)
    atomically, print the summary (a table, or one JSON object with `json_summary`); return
    the results."""
    from ..outputs import atomic_output_dir, check_output_dir, write_json

    with o.flag_names():
        config.validate()
    check_output_dir(out_dir.expanduser(), overwrite)
    shown = RichProgress(progress)
    shown.note(f"fedprllm-secure simulate: loading libraries, then model {config.model} ...")
    from ..pipeline import run  # transformers: seconds to import

    with atomic_output_dir(out_dir, overwrite) as staging:
        with o.flag_names():
            results = run(
                config,
                shown,
                save_model_to=staging / "model" if save_model else None,
                save_masks_to=staging / "masks.npz" if save_masks else None,
                command=command,
            )
        if save_model:
            results["saved_model"] = str(out_dir / "model")
        if save_masks:
            results["saved_masks"] = str(out_dir / "masks.npz")
        write_json(staging / "results.json", results)
    if json_summary:
        from .summary import print_json_summary

        print_json_summary(results, out_dir)
    else:
        _print_summary(results, out_dir)
    return results


def _print_summary(results: dict[str, Any], out_dir: Path) -> None:
    table = Table(title=f"fedprllm-secure simulate -> {out_dir / 'results.json'}")
    table.add_column("model")
    table.add_column("perplexity", justify="right")
    table.add_column("± s.e.", justify="right")
    table.add_column("bits/byte", justify="right")
    table.add_column("sparsity", justify="right")
    se, bpb = results.get("perplexity_se", {}), results.get("bits_per_byte", {})
    for name, value in results["perplexity"].items():
        if isinstance(value, list):
            continue
        sparsity = results["sparsity"].get(name.replace("_mean", ""), {}).get("overall")
        table.add_row(
            name, _number(value, 3), _number(se.get(name), 3), _number(bpb.get(name), 4),
            "-" if sparsity is None else f"{sparsity:.4f}",
        )  # fmt: skip
    out.print(table)
    protocol = results.get("protocol")
    if protocol:
        per_client = protocol["uplink_bytes_per_client"]
        average = sum(per_client.values()) / max(len(per_client), 1)
        out.print(
            f"protocol {protocol_label(protocol)}: {len(protocol['contributors'])} contributors, "
            f"dropped {protocol['dropped'] or 'none'}, upload {average / 1e6:.2f} MB per client "
            f"({protocol['uplink_bytes_per_weight']} bytes per weight)"
        )
    if results.get("evaluation"):
        out.print(f"evaluation: {results['evaluation']}")
    windows = results.get("eval_windows", {})
    if windows.get("used", 0) < windows.get("asked", 0):
        out.print(
            f"evaluation: {windows['used']} windows, not the {windows['asked']} asked for "
            "(--eval-windows): the evaluation text gives no more"
        )
    timings = results["timings_s"]
    out.print("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))


def _number(value: Any, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


def protocol_label(protocol: dict[str, Any]) -> str:
    """`ckks (bfv)` under --he-scheme bfv: the protocol and, when set, its HE scheme."""
    scheme = (protocol.get("options") or {}).get("he_scheme")
    return f"{protocol['name']} ({scheme})" if scheme else str(protocol["name"])
