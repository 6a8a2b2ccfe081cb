"""The `fedprllm-secure` command line: thin commands over the library.

Every error the project raises on purpose (and every usage error) ends as one line on stderr and
a non-zero exit status; tracebacks are for bugs only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichBar
from rich.table import Table

from . import __version__, assets
from .errors import ConfigError, FedPrError, one_line

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

app = typer.Typer(
    name="fedprllm-secure",
    help="Federated pruning of LLMs (FedPrLLM) where the server only learns the sum of the masks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
assets_app = typer.Typer(
    help="The embedded default model and corpus (fetched once, verified, cached)."
)
app.add_typer(assets_app, name="assets")
err = Console(stderr=True)
out = Console()


class RichProgress:
    """Progress bars on stderr; quiet when stderr is not a terminal unless forced."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    @contextmanager
    def stage(self, description: str, total: int) -> Iterator[Any]:
        if not self.enabled:
            yield lambda: None
            return
        columns = (
            TextColumn("{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with RichBar(*columns, console=err, transient=False) as bar:
            task = bar.add_task(description, total=total)
            yield lambda: bar.advance(task)

    def note(self, text: str) -> None:
        if self.enabled:
            err.print(text)


def _parse_drops(values: list[str]) -> dict[int, str]:
    drops: dict[int, str] = {}
    for value in values:
        for item in filter(None, (part.strip() for part in value.split(","))):
            client, sep, round_name = item.partition("@")
            if not sep or not client.isdigit() or not round_name:
                raise ConfigError(
                    f"--drop {item!r} must look like CLIENT@ROUND, e.g. 3@masked-input"
                )
            drops[int(client)] = round_name
    return drops


def _parse_methods(values: list[str]) -> tuple[str, ...]:
    methods = [m.strip() for value in values for m in value.split(",") if m.strip()]
    return tuple(dict.fromkeys(methods))


@app.command()
def simulate(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder for results.json (and the model).")
    ] = Path("runs/latest"),
    protocol: Annotated[
        str, typer.Option(help="Secure-sum protocol: plaintext, additive, ckks (see `protocols`).")
    ] = "plaintext",
    clients: Annotated[
        int, typer.Option(help="Number of clients m (ignored with --client-data).")
    ] = 8,
    samples_per_client: Annotated[int, typer.Option(help="Calibration windows per client.")] = 8,
    seqlen: Annotated[
        int, typer.Option(help="Tokens per calibration window (never the model's full context).")
    ] = 512,
    sparsity: Annotated[float, typer.Option(help="Fraction of weights to prune, in (0, 1).")] = 0.5,
    group: Annotated[
        str, typer.Option(help="Server comparison group: layer, row or column.")
    ] = "layer",
    split: Annotated[
        str,
        typer.Option(
            help="Corpus split: iid (shuffled) or topic (non-IID, 1-2 topics per client)."
        ),
    ] = "iid",
    seed: Annotated[
        int,
        typer.Option(
            help="Seed of the split and tie breaking (noise and protocol secrets come from the "
            "OS CSPRNG unless --reproducible-noise)."
        ),
    ] = 0,
    method: Annotated[
        list[str], typer.Option(help="fedprllm, centralized, local (repeat or comma-separate).")
    ] = ["fedprllm"],  # noqa: B006
    pruner: Annotated[
        str, typer.Option(help="Local pruner: wanda or magnitude (calibration-free).")
    ] = "wanda",
    calibration: Annotated[
        str,
        typer.Option(
            help="sequential (Wanda: through own pruned blocks) or one-shot (dense activations)."
        ),
    ] = "sequential",
    mode: Annotated[
        str,
        typer.Option(
            help="one-shot (one secure sum for all layers) or iterative (one per block; clients "
            "propagate through the globally pruned block)."
        ),
    ] = "one-shot",
    aggregate: Annotated[
        str,
        typer.Option(
            help="masks (the paper: clients send their masks) or stats (clients send activation "
            "statistics; the server computes exactly the centralized Wanda mask, per-row group)."
        ),
    ] = "masks",
    stats_precision_bits: Annotated[
        int, typer.Option(help="stats: fixed-point bits below each layer's largest statistic.")
    ] = 48,
    scaling: Annotated[
        bool, typer.Option(help="Scale kept weights by (m - C) / m (the paper finds it hurts).")
    ] = False,
    model: Annotated[
        str,
        typer.Option(
            help="Embedded name (smollm2-135m), a .gguf file, a model folder or a Hub id."
        ),
    ] = "smollm2-135m",
    corpus: Annotated[
        str, typer.Option(help="Embedded corpus (wiki-topics) or a JSON file in its format.")
    ] = "wiki-topics",
    client_data: Annotated[
        Path | None,
        typer.Option(
            help="Folder with one .txt/.jsonl file or folder per client (replaces the corpus split)."
        ),
    ] = None,
    eval_text: Annotated[
        Path | None,
        typer.Option(help="Evaluation text file (default: the corpus' held-out articles)."),
    ] = None,
    eval_windows: Annotated[int, typer.Option(help="Non-overlapping evaluation windows.")] = 16,
    eval_seqlen: Annotated[
        int | None, typer.Option(help="Tokens per evaluation window (default: --seqlen).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Calibration windows per forward pass.")] = 8,
    threshold: Annotated[
        int | None, typer.Option(help="additive: Shamir threshold t (default: safe majority).")
    ] = None,
    neighbors: Annotated[
        int | None,
        typer.Option(help="additive: SecAgg+ neighbors k (default: complete graph for small m)."),
    ] = None,
    he_scheme: Annotated[
        str | None, typer.Option(help="ckks: ckks (default) or bfv (exact integers, smaller).")
    ] = None,
    authority: Annotated[
        str | None,
        typer.Option(help="ckks: who decrypts the sum: 'separate' (default) or a client id."),
    ] = None,
    drop: Annotated[
        list[str], typer.Option(help="Make a client drop out: CLIENT@ROUND, e.g. 3@masked-input.")
    ] = [],  # noqa: B006
    save_model: Annotated[
        bool,
        typer.Option(
            help="Also save the pruned model (loadable with from_pretrained) in OUT/model."
        ),
    ] = False,
    rr_epsilon: Annotated[
        float | None,
        typer.Option(help="Randomized response: flip each mask bit w.p. 1/(1+e^EPS) (per weight)."),
    ] = None,
    dp_stats_epsilon: Annotated[
        float | None,
        typer.Option(help="DP on activation statistics: (EPS, --dp-delta)-DP per client mask."),
    ] = None,
    dp_delta: Annotated[float, typer.Option(help="delta of --dp-stats-epsilon.")] = 1e-5,
    dp_clip: Annotated[
        float | None, typer.Option(help="Per-sample L2 clip C of the squared activation norms.")
    ] = None,
    dp_accountant: Annotated[
        str, typer.Option(help="Accountant for sigma: rdp (opacus), prv (opacus) or gaussian.")
    ] = "rdp",
    min_cohort: Annotated[
        int | None,
        typer.Option(help="Refuse to release counts over fewer clients (default 3; secure only)."),
    ] = None,
    reproducible_noise: Annotated[
        bool,
        typer.Option(
            help="Draw RR/DP noise and protocol secrets from --seed instead of the OS CSPRNG: "
            "reproducible, and NOT private (results.json records the seed)."
        ),
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run a whole federated pruning round on this machine and write OUT/results.json."""
    from .config import (
        DataConfig,
        FederationConfig,
        ProtocolConfig,
        PruningConfig,
        RunConfig,
        flag_message,
    )
    from .outputs import atomic_output_dir, check_output_dir, write_json
    from .pipeline import run as run_pipeline
    from .privacy.settings import PrivacySettings

    options = {
        "threshold": threshold,
        "neighbors": neighbors,
        "he_scheme": he_scheme,
        "authority": authority,
    }
    config = RunConfig(
        model=model,
        device=device,
        seed=seed,
        data=DataConfig(
            corpus=corpus,
            client_data=str(client_data) if client_data else None,
            eval_text=str(eval_text) if eval_text else None,
            clients=clients,
            split=split,
            samples_per_client=samples_per_client,
            seqlen=seqlen,
            eval_windows=eval_windows,
            eval_seqlen=eval_seqlen,
        ),
        pruning=PruningConfig(
            sparsity=sparsity,
            group=group,
            pruner=pruner,
            calibration=calibration,
            mode=mode,
            aggregate=aggregate,
            stats_precision_bits=stats_precision_bits,
            scaling=scaling,
            methods=_parse_methods(method),
            batch_size=batch_size,
        ),
        protocol=ProtocolConfig(protocol, {k: v for k, v in options.items() if v is not None}),
        privacy=PrivacySettings(
            rr_epsilon=rr_epsilon,
            dp_stats_epsilon=dp_stats_epsilon,
            dp_delta=dp_delta,
            dp_clip=dp_clip,
            accountant=dp_accountant,
            min_cohort=min_cohort,
            reproducible_noise=reproducible_noise,
        ),
        federation=FederationConfig(drop=_parse_drops(drop)),
    )
    try:
        config.validate()
        check_output_dir(out_dir.expanduser(), overwrite)
        with atomic_output_dir(out_dir, overwrite) as staging:
            results = run_pipeline(
                config,
                RichProgress(progress),
                save_model_to=staging / "model" if save_model else None,
            )
            if save_model:
                results["saved_model"] = str(out_dir / "model")
            write_json(staging / "results.json", results)
    except ConfigError as exc:  # library errors name config fields; the user typed flags
        raise ConfigError(flag_message(str(exc))) from exc
    _print_summary(results, out_dir)


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


def _register_audit() -> None:
    from .audit.command import audit

    app.command("audit")(audit)


_register_audit()


@app.command("protocols")
def list_protocols() -> None:
    """List the registered secure-sum protocols."""
    from .secure_sum import registry

    for name in registry.available():
        info = registry.get(name)
        out.print(f"{name:<10} {'secure  ' if info.secure else 'INSECURE'}  {info.description}")


@assets_app.command("list")
def assets_list() -> None:
    """Show the embedded assets, their pinned wheels and whether they are cached."""
    for asset in assets.ASSETS.values():
        state = "cached" if assets.is_cached(asset.name) else "not fetched"
        out.print(
            f"{asset.name:<14} {asset.kind:<7} {asset.requirement:<32} {state}  {asset.description}"
        )
    out.print(f"cache: {assets.cache_dir()}")


@assets_app.command("fetch")
def assets_fetch(
    names: Annotated[
        list[str] | None, typer.Argument(help="Assets to fetch (default: all).")
    ] = None,
) -> None:
    """Download, verify (sha256) and cache the embedded assets."""
    for name in names or list(assets.ASSETS):
        path = assets.fetch(name)
        out.print(f"{name}: {path}")


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


@app.command("node-key")
def node_key(
    path: Annotated[Path, typer.Argument(help="The node's identity key file (PEM).")],
) -> None:
    """Create a Flower node's long-term Ed25519 identity key if missing; print its public key.

    Give the file to the node (node config identity='PATH') and the printed key to the operator,
    who lists it in the federation's trust file (docs/flower.md)."""
    from .integrations.flower.trust import create_identity, public_key

    key, created = create_identity(path)
    if created:
        err.print(f"created {path} (keep it on this node only)")
    print(public_key(key).hex())


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning expected errors into one line and an exit status."""
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="fedprllm-secure", standalone_mode=False)
    except FedPrError as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # Usage errors come from click, or from the copy of click that newer typer vendors:
        # recognise both by shape rather than by class.
        kind = type(exc).__name__
        if kind == "Exit":
            return int(getattr(exc, "exit_code", 0))
        if kind == "Abort":
            print("error: interrupted", file=sys.stderr)
            return 130
        if kind == "NoArgsIsHelpError" and getattr(exc, "ctx", None) is not None:
            print(exc.ctx.get_help())  # type: ignore[attr-defined]
            return 0
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            print(f"error: {one_line(exc.format_message())}", file=sys.stderr)
            return int(exc.exit_code) or 2
        raise
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
