"""`fedprllm-secure flower deploy`: a real Flower deployment on 127.0.0.1 (one SuperLink, one
SuperNode per --data, `flwr run`, then every process started here is stopped), or with
--write-app only the Flower App project for running it by hand (docs/flower.md).

`fedprllm-secure flower run APP_DIR [CONNECTION]`: submit that project to a running SuperLink
(`flwr run`), print one line per stage, and wait for the result: exit 0 and a JSON summary, or
exit 1 and one line (`error: ...`) with the ServerApp's error. `flwr run --stream` itself exits 0
however the run ends (Flower 1.42).

The libraries behind them: `integrations.flower.deploy` (run_deployment, write_app_dir) and
`integrations.flower.submit` (run_app).
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import ConfigError, one_line
from .help import PanelCommand, PanelGroup

app = typer.Typer(
    cls=PanelGroup,
    help="Run the pruning round on Flower (SuperLink + SuperNodes, `flwr run`).",
    no_args_is_help=True,
)


def parse_run_config(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` items as Flower run config entries (VALUE as JSON, else the string)."""
    run_config: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--run-config {item!r} must look like KEY=VALUE, e.g. seqlen=128")
        try:
            run_config[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            run_config[key.strip()] = value
    return run_config


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


@app.command("deploy", cls=PanelCommand)
def deploy(
    model: Annotated[str, typer.Option(help="The global model (folder, .gguf, name).")],
    data: Annotated[
        list[str], typer.Option(metavar="PATH", help="One SuperNode's text (repeat per node).")
    ] = [],  # noqa: B006
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder for the run's results.json.")
    ] = Path("runs/flower"),
    run_config: Annotated[
        list[str],
        typer.Option(metavar="KEY=VALUE", help="Flower run config entry (VALUE: JSON or text)."),
    ] = [],  # noqa: B006
    timeout: Annotated[float, typer.Option(help="Seconds the run may take.")] = 600.0,
    workdir: Annotated[
        Path | None, typer.Option(help="Logs and FLWR_HOME (default: a new temp folder).")
    ] = None,
    ledger_dir: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="The nodes' contribution ledgers, DIR/node-I (default: each node's own, "
            "~/.cache/fedprllm-secure/flower-ledger, kept across runs).",
        ),
    ] = None,
    write_app: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Only write the Flower App project (pyproject.toml) to DIR, for `flwr run DIR`.",
        ),
    ] = None,
) -> None:
    """Start a SuperLink and one SuperNode per --data on 127.0.0.1, run the app, stop them all.

    Prints the contributors, failures and timings as JSON. SIGTERM stops it like Ctrl-C.
    """
    from ..integrations.flower import deploy as library

    settings = parse_run_config(run_config)
    if write_app is not None:
        config = {"model": library.model_spec(model), "out": str(out_dir.resolve())}
        config.update(settings)
        print(library.write_app_dir(write_app, config))
        return
    if not data:
        raise ConfigError("give one --data per SuperNode (or --write-app DIR)")
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the processes started here stop too.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = library.run_deployment(
            model, data, out_dir, settings, timeout, workdir, ledger_dir
        )
    except OSError as exc:  # e.g. the work folder cannot be written
        print(f"error: {type(exc).__name__}: {one_line(str(exc))}", file=sys.stderr)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        print("error: interrupted (every process started here was stopped)", file=sys.stderr)
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(json.dumps({k: result[k] for k in ("contributors", "failures", "timings_s")}, indent=1))


@app.command("run", cls=PanelCommand)
def run(
    app_dir: Annotated[
        Path,
        typer.Argument(help="The Flower App project (written by `flower deploy --write-app`)."),
    ],
    connection: Annotated[
        str, typer.Argument(help="The SuperLink connection in $FLWR_HOME/config.toml.")
    ] = "local",
    run_config: Annotated[
        list[str],
        typer.Option(
            metavar="KEY=VALUE", help="Override a run config entry (VALUE: JSON or text)."
        ),
    ] = [],  # noqa: B006
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the result.")] = 600.0,
) -> None:
    """Submit the app to a running SuperLink and wait for its results.json (one line per stage).

    Exit 0 with a JSON summary (results path, contributors, failures, perplexity), or exit 1 with
    the run's one-line error. SIGTERM stops the waiting like Ctrl-C (the run goes on: `flwr stop`).
    """
    from ..integrations.flower.submit import run_app

    def say(line: str) -> None:
        print(f"fedprllm-secure: {line}", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        path, result = run_app(app_dir, connection, parse_run_config(run_config), timeout, say)
    except KeyboardInterrupt:
        print("error: interrupted (the Flower run goes on; `flwr stop RUN_ID`)", file=sys.stderr)
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    keys = ("contributors", "failures", "perplexity")
    print(json.dumps({"results": str(path), **{k: result.get(k) for k in keys}}, indent=1))
