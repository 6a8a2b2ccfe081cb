"""`fedprllm-secure simulate`: flags (and --config / --set) -> RunConfig -> OUT/results.json."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from . import options as o
from .options import DATA, FEDERATION, OUTPUT, PRIVACY, PROTOCOL, PRUNING, RUN
from .progress import RichProgress, out

if TYPE_CHECKING:
    from ..config import RunConfig
    from ..simulate import SimulationConfig


def simulate(
    ctx: typer.Context,
    config_file: Annotated[
        Path | None,
        typer.Option("--config", help="TOML run configuration; flags override it.", rich_help_panel=RUN),
    ] = None,
    overrides: Annotated[
        list[str],
        typer.Option("--set", metavar="PATH=VALUE", help="Override a setting, e.g. pruning.sparsity=0.6 (repeatable; wins over flags).", rich_help_panel=RUN),
    ] = [],  # noqa: B006
    model: Annotated[str, typer.Option(help="smollm2-135m, a .gguf file, a model folder or a Hub id.", rich_help_panel=RUN)] = "smollm2-135m",
    device: Annotated[o.Device, typer.Option(help="auto: CUDA when present.", rich_help_panel=RUN)] = o.Device.auto,
    seed: Annotated[int, typer.Option(help="Seed of the split and tie breaking.", rich_help_panel=RUN)] = 0,
    corpus: Annotated[str, typer.Option(help="wiki-topics or a JSON file in its format.", rich_help_panel=DATA)] = "wiki-topics",
    client_data: Annotated[Path | None, typer.Option(help="Folder: one .txt/.jsonl file or folder per client.", rich_help_panel=DATA)] = None,
    eval_text: Annotated[Path | None, typer.Option(help="Evaluation text (default: held-out articles).", rich_help_panel=DATA)] = None,
    clients: Annotated[int, typer.Option(help="Clients m (ignored with --client-data).", rich_help_panel=DATA)] = 8,
    split: Annotated[o.Split, typer.Option(help="topic: non-IID, 1-2 topics per client.", rich_help_panel=DATA)] = o.Split.iid,
    samples_per_client: Annotated[int, typer.Option(help="Calibration windows per client.", rich_help_panel=DATA)] = 8,
    seqlen: Annotated[int, typer.Option(help="Tokens per calibration window.", rich_help_panel=DATA)] = 512,
    eval_windows: Annotated[int, typer.Option(help="Evaluation windows.", rich_help_panel=DATA)] = 16,
    eval_seqlen: Annotated[int | None, typer.Option(help="Tokens per evaluation window (default: --seqlen).", show_default=False, rich_help_panel=DATA)] = None,
    sparsity: Annotated[float, typer.Option(help="Fraction of weights pruned, in (0, 1).", rich_help_panel=PRUNING)] = 0.5,
    group: Annotated[o.Group, typer.Option(help="Server comparison group.", rich_help_panel=PRUNING)] = o.Group.layer,
    pruner: Annotated[o.Pruner, typer.Option(help="Local pruner (magnitude: no data).", rich_help_panel=PRUNING)] = o.Pruner.wanda,
    calibration: Annotated[o.Calibration, typer.Option(help="one-shot: dense activations only.", rich_help_panel=PRUNING)] = o.Calibration.sequential,
    mode: Annotated[o.Mode, typer.Option(help="iterative: one secure sum per block.", rich_help_panel=PRUNING)] = o.Mode.one_shot,
    aggregate: Annotated[o.Aggregate, typer.Option(help="stats: exact centralized Wanda mask.", rich_help_panel=PRUNING)] = o.Aggregate.masks,
    stats_precision_bits: Annotated[int, typer.Option(help="stats: fixed-point bits.", rich_help_panel=PRUNING)] = 48,
    scaling: Annotated[bool, typer.Option(help="Scale kept weights by (m - C) / m.", rich_help_panel=PRUNING)] = False,
    method: Annotated[list[str], typer.Option(metavar="NAMES", help="fedprllm, centralized, local (comma-separated).", rich_help_panel=PRUNING)] = ["fedprllm"],  # noqa: B006
    batch_size: Annotated[int, typer.Option(help="Calibration windows per forward pass.", rich_help_panel=PRUNING)] = 8,
    protocol: Annotated[str, typer.Option(help="plaintext, additive, ckks (see `protocols`).", rich_help_panel=PROTOCOL)] = "plaintext",
    threshold: Annotated[int | None, typer.Option(help="additive: Shamir threshold t.", rich_help_panel=PROTOCOL)] = None,
    neighbors: Annotated[int | None, typer.Option(help="additive: SecAgg+ neighbors k.", rich_help_panel=PROTOCOL)] = None,
    he_scheme: Annotated[o.HeScheme | None, typer.Option(help="ckks: bfv is exact, smaller.", rich_help_panel=PROTOCOL)] = None,
    authority: Annotated[str | None, typer.Option(help="ckks: who decrypts: separate or a client id.", rich_help_panel=PROTOCOL)] = None,
    rr_epsilon: Annotated[float | None, typer.Option(help="Randomized response eps per weight.", rich_help_panel=PRIVACY)] = None,
    dp_stats_epsilon: Annotated[float | None, typer.Option(help="DP statistics eps per client mask.", rich_help_panel=PRIVACY)] = None,
    dp_delta: Annotated[float, typer.Option(help="delta of --dp-stats-epsilon.", rich_help_panel=PRIVACY)] = 1e-5,
    dp_clip: Annotated[float | None, typer.Option(help="Per-sample L2 clip C of the statistics.", rich_help_panel=PRIVACY)] = None,
    dp_accountant: Annotated[o.Accountant, typer.Option(help="Accountant that sets sigma.", rich_help_panel=PRIVACY)] = o.Accountant.rdp,
    min_cohort: Annotated[int | None, typer.Option(help="Fewest clients in a release (default: 3, plaintext 1).", show_default=False, rich_help_panel=PRIVACY)] = None,
    reproducible_noise: Annotated[bool, typer.Option(help="Noise and secrets from --seed: NOT private.", rich_help_panel=PRIVACY)] = False,
    drop: Annotated[list[str], typer.Option(metavar="CLIENT@ROUND", help="Drop a client, e.g. 3@masked-input.", rich_help_panel=FEDERATION)] = [],  # noqa: B006
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for results.json.", rich_help_panel=OUTPUT)] = Path("runs/latest"),
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out folder.", rich_help_panel=OUTPUT)] = False,
    save_model: Annotated[bool, typer.Option(help="Save the pruned model in OUT/model.", rich_help_panel=OUTPUT)] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.", rich_help_panel=OUTPUT)] = True,
) -> None:  # fmt: skip
    """Run a whole federated pruning round on this machine and write OUT/results.json.

    Settings come from --config (TOML), then the flags given, then each --set.
    """
    given = o.given_params(ctx)
    config = o.build_run_config(ctx.params, given, config_file, overrides)
    write_run(config, out_dir, overwrite=overwrite, save_model=save_model, progress=progress)


def write_run(
    config: RunConfig, out_dir: Path, *, overwrite: bool, save_model: bool, progress: bool
) -> dict[str, Any]:
    """Validate `config`, run it, write OUT/results.json (and OUT/model) atomically, print the
    summary; return the results."""
    from ..outputs import atomic_output_dir, check_output_dir, write_json
    from ..simulate import run_simulation

    with o.flag_names():
        _legacy(config).validate()
    check_output_dir(out_dir.expanduser(), overwrite)
    with atomic_output_dir(out_dir, overwrite) as staging:
        with o.flag_names():
            results = run_simulation(
                _legacy(config),
                RichProgress(progress),
                save_model_to=staging / "model" if save_model else None,
            )
        if save_model:
            results["saved_model"] = str(out_dir / "model")
        write_json(staging / "results.json", results)
    _print_summary(results, out_dir)
    return results


def _legacy(config: RunConfig) -> SimulationConfig:
    """TEMPORARY (deleted when `pipeline.run(RunConfig)` lands): today's flat SimulationConfig."""
    from ..simulate import SimulationConfig

    data, pruning = config.data, config.pruning
    return SimulationConfig(
        model=config.model,
        device=config.device,
        seed=config.seed,
        corpus=data.corpus,
        client_data=data.client_data,
        eval_text=data.eval_text,
        clients=data.clients,
        split=data.split,
        samples_per_client=data.samples_per_client,
        seqlen=data.seqlen,
        eval_windows=data.eval_windows,
        eval_seqlen=data.eval_seqlen,
        sparsity=pruning.sparsity,
        group=pruning.group,
        pruner=pruning.pruner,
        calibration=pruning.calibration,
        mode=pruning.mode,
        aggregate=pruning.aggregate,
        stats_precision_bits=pruning.stats_precision_bits,
        scaling=pruning.scaling,
        methods=pruning.methods,
        batch_size=pruning.batch_size,
        protocol=config.protocol.name,
        protocol_options=dict(config.protocol.options),
        drop=dict(config.federation.drop),
        privacy=config.privacy,
        reproducible_noise=config.privacy.reproducible_noise,
    )


def _print_summary(results: dict[str, Any], out_dir: Path) -> None:
    table = Table(title=f"fedprllm-secure simulate -> {out_dir / 'results.json'}")
    table.add_column("model")
    table.add_column("perplexity", justify="right")
    table.add_column("sparsity", justify="right")
    for name, value in results["perplexity"].items():
        if isinstance(value, list):
            continue
        sparsity = results["sparsity"].get(name.replace("_mean", ""), {}).get("overall")
        table.add_row(name, f"{value:.3f}", "-" if sparsity is None else f"{sparsity:.4f}")
    out.print(table)
    protocol = results.get("protocol")
    if protocol:
        per_client = protocol["uplink_bytes_per_client"]
        average = sum(per_client.values()) / max(len(per_client), 1)
        out.print(
            f"protocol {protocol['name']}: {len(protocol['contributors'])} contributors, "
            f"dropped {protocol['dropped'] or 'none'}, upload {average / 1e6:.2f} MB per client "
            f"({protocol['uplink_bytes_per_weight']} bytes per weight)"
        )
    timings = results["timings_s"]
    out.print("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
