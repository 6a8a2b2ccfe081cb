"""The `fedprllm-secure audit` command (registered in cli.py): flags -> AuditConfig -> report."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError


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
        typer.Option("--out", help="Report folder (points/ holds one file per finished point)."),
    ] = Path("runs/audit"),
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config", help="JSON grid (e.g. experiments/audit_small.json); flags override it."
        ),
    ] = None,
    protocols: Annotated[str | None, typer.Option(help="Comma-separated protocols.")] = None,
    clients: Annotated[
        str | None, typer.Option(help="Client counts for utility, e.g. 4,8.")
    ] = None,
    splits: Annotated[str | None, typer.Option(help="Splits: iid,topic.")] = None,
    rr_epsilons: Annotated[
        str | None, typer.Option(help="Randomized-response eps per weight.")
    ] = None,
    dp_epsilons: Annotated[
        str | None, typer.Option(help="DP-statistics eps per client mask.")
    ] = None,
    dp_delta: Annotated[
        float | None, typer.Option(help="delta of the statistics mechanism.")
    ] = None,
    dp_clip: Annotated[
        float | None, typer.Option(help="Per-sample L2 clip C of the statistics.")
    ] = None,
    cost_clients: Annotated[
        str | None, typer.Option(help="Client counts for the cost sweep.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model (default: smollm2-135m).")] = None,
    corpus: Annotated[str | None, typer.Option(help="Corpus (default: wiki-topics).")] = None,
    samples_per_client: Annotated[
        int | None, typer.Option(help="Calibration windows per client.")
    ] = None,
    seqlen: Annotated[int | None, typer.Option(help="Tokens per window.")] = None,
    eval_windows: Annotated[int | None, typer.Option(help="Held-out evaluation windows.")] = None,
    sparsity: Annotated[float | None, typer.Option(help="Fraction of weights pruned.")] = None,
    min_cohort: Annotated[
        int | None, typer.Option(help="Minimum cohort for releasing counts.")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the splits and the audit's randomness.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    reproducible_noise: Annotated[
        bool,
        typer.Option(
            help="Draw the noise (RR, DP) and protocol secrets from --seed instead of the OS "
            "CSPRNG: reproducible, and NOT private (the seed is in the results)."
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Discard finished points in --out instead of resuming.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar over the sweep.")] = True,
) -> None:
    """Sweep protocols, noise levels, client counts and splits; write a report with plots.

    An interrupted sweep resumes where it stopped: rerun the same command.
    """
    from ..cli import RichProgress, out
    from .config import AuditConfig
    from .report import write_report
    from .runner import run_audit, store_settings
    from .store import PointStore

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
        "device": device,
        "reproducible_noise": reproducible_noise or None,
    }
    if config_file is not None and not config_file.expanduser().is_file():
        raise ConfigError(f"--config file not found: {config_file}")
    config = AuditConfig.load(config_file, overrides)
    folder = out_dir.expanduser()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {folder} exists and is not a folder")
    if overwrite and (folder / "points").is_dir():
        shutil.rmtree(folder / "points")
    store = PointStore(folder / "points", store_settings(config))
    results = run_audit(config, store, RichProgress(progress))
    written = write_report(folder, config, results)
    out.print(f"audit: {len(results)} points; report in {folder / 'report.md'}")
    for path in written:
        out.print(f"  {path}")
