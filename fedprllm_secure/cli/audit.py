"""`fedprllm-secure audit`: flags (over a JSON grid) -> AuditConfig -> report folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError
from .options import Device
from .progress import RichProgress, out

SWEEP, RUN, OUTPUT = "Sweep", "Run", "Output"


def _numbers(flag: str, value: str | None, kind: type) -> list | None:
    if value is None:
        return None
    try:
        return [kind(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(
            f"{flag} must be a comma-separated list of numbers, got {value!r}"
        ) from None


def _names(value: str | None) -> list[str] | None:
    return None if value is None else [p.strip() for p in value.split(",") if p.strip()]


def audit(
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Report folder (points/ holds one file per finished point).",
            rich_help_panel=OUTPUT,
        ),
    ] = Path("runs/audit"),
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="JSON grid (e.g. experiments/audit_small.json); flags override it.",
            rich_help_panel=RUN,
        ),
    ] = None,
    protocols: Annotated[
        str | None, typer.Option(help="Comma-separated protocols.", rich_help_panel=SWEEP)
    ] = None,
    clients: Annotated[
        str | None, typer.Option(help="Client counts for utility, e.g. 4,8.", rich_help_panel=SWEEP)
    ] = None,
    splits: Annotated[
        str | None, typer.Option(help="Splits: iid,topic.", rich_help_panel=SWEEP)
    ] = None,
    rr_epsilons: Annotated[
        str | None, typer.Option(help="Randomized-response eps per weight.", rich_help_panel=SWEEP)
    ] = None,
    dp_epsilons: Annotated[
        str | None, typer.Option(help="DP-statistics eps per client mask.", rich_help_panel=SWEEP)
    ] = None,
    dp_delta: Annotated[
        float | None, typer.Option(help="delta of the statistics mechanism.", rich_help_panel=SWEEP)
    ] = None,
    dp_clip: Annotated[
        float | None,
        typer.Option(help="Per-sample L2 clip C of the statistics.", rich_help_panel=SWEEP),
    ] = None,
    cost_clients: Annotated[
        str | None, typer.Option(help="Client counts for the cost sweep.", rich_help_panel=SWEEP)
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model (default: smollm2-135m).", rich_help_panel=RUN)
    ] = None,
    corpus: Annotated[
        str | None, typer.Option(help="Corpus (default: wiki-topics).", rich_help_panel=RUN)
    ] = None,
    samples_per_client: Annotated[
        int | None, typer.Option(help="Calibration windows per client.", rich_help_panel=RUN)
    ] = None,
    seqlen: Annotated[
        int | None, typer.Option(help="Tokens per window.", rich_help_panel=RUN)
    ] = None,
    eval_windows: Annotated[
        int | None, typer.Option(help="Held-out evaluation windows.", rich_help_panel=RUN)
    ] = None,
    sparsity: Annotated[
        float | None, typer.Option(help="Fraction of weights pruned.", rich_help_panel=RUN)
    ] = None,
    min_cohort: Annotated[
        int | None, typer.Option(help="Minimum cohort for releasing counts.", rich_help_panel=SWEEP)
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Seed of the splits and the audit's randomness.", rich_help_panel=RUN),
    ] = None,
    device: Annotated[
        Device | None,
        typer.Option(help="auto: CUDA when present [default: auto].", rich_help_panel=RUN),
    ] = None,
    reproducible_noise: Annotated[
        bool,
        typer.Option(
            help="Draw the noise (RR, DP) and protocol secrets from --seed instead of the OS "
            "CSPRNG: reproducible, and NOT private (the seed is in the results).",
            rich_help_panel=RUN,
        ),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            help="Discard finished points in --out instead of resuming (and accept an --out "
            "that is not an audit folder).",
            rich_help_panel=OUTPUT,
        ),
    ] = False,
    progress: Annotated[
        bool, typer.Option(help="Show a progress bar over the sweep.", rich_help_panel=OUTPUT)
    ] = True,
) -> None:
    """Sweep protocols, noise levels, client counts and splits; write a report with plots.

    An interrupted sweep resumes where it stopped: rerun the same command.
    """
    from ..audit.config import AuditConfig
    from ..audit.report import write_report
    from ..audit.runner import run_audit, store_settings
    from ..audit.store import PointStore, check_audit_folder
    from ..outputs import make_output_dir
    from ..preflight import check_audit

    overrides = {
        "protocols": _names(protocols),
        "clients": _numbers("--clients", clients, int),
        "splits": _names(splits),
        "rr_epsilons": _numbers("--rr-epsilons", rr_epsilons, float),
        "dp_epsilons": _numbers("--dp-epsilons", dp_epsilons, float),
        "dp_delta": dp_delta,
        "dp_clip": dp_clip,
        "cost_clients": _numbers("--cost-clients", cost_clients, int),
        "model": model,
        "corpus": corpus,
        "samples_per_client": samples_per_client,
        "seqlen": seqlen,
        "eval_windows": eval_windows,
        "sparsity": sparsity,
        "min_cohort": min_cohort,
        "seed": seed,
        "device": device.value if device is not None else None,
        "reproducible_noise": reproducible_noise or None,
    }
    if config_file is not None and not config_file.expanduser().is_file():
        raise ConfigError(f"--config file not found: {config_file}")
    config = AuditConfig.load(config_file, overrides)
    folder, settings = out_dir.expanduser(), store_settings(config)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {folder} exists and is not a folder")
    if not overwrite:  # before any work: only a resumable audit of the same settings
        check_audit_folder(folder, settings)
    elif (folder / "points").is_dir():
        shutil.rmtree(folder / "points")
    make_output_dir(folder)  # an unwritable --out: one line, before any work
    check_audit(config)  # what needs no model, before it loads
    store = PointStore(make_output_dir(folder / "points", folder), settings)
    results = run_audit(config, store, RichProgress(progress))
    written = write_report(folder, config, results)
    out.print(f"audit: {len(results)} points; report in {folder / 'report.md'}")
    for path in written:
        out.print(f"  {path}")
