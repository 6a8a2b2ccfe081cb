"""The `fedprllm-secure` command line: thin commands over the library, one module per command.

Exit status: 0 success; 1 an error the project raised on purpose (data, model, protocol,
deployment); 2 a usage error (an unknown flag, a bad or inconsistent value, a bad config file);
130 interrupted (Ctrl-C, or SIGTERM under `flower deploy`). Every error is one line on stderr
(`error: ...`); tracebacks are for bugs only.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from ..errors import ConfigError, FedPrError, one_line
from . import assets, audit, flower, node_key, protocols, simulate, version
from .help import PanelCommand, PanelGroup
from .progress import RichProgress, err, out

__all__ = ["RichProgress", "app", "err", "main", "out", "run"]

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

app = typer.Typer(
    name="fedprllm-secure",
    cls=PanelGroup,
    help="Federated pruning of LLMs (FedPrLLM) where the server only learns the sum of the masks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            callback=version.print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Federated pruning of LLMs (FedPrLLM) where the server only learns the sum of the masks."""


app.command("simulate", cls=PanelCommand)(simulate.simulate)
app.command("audit", cls=PanelCommand)(audit.audit)
app.command("protocols")(protocols.list_protocols)
app.add_typer(assets.app, name="assets")
app.add_typer(flower.app, name="flower")
app.command("node-key")(node_key.node_key)
app.command("version")(version.version)

USAGE = 2
INTERRUPTED = 130


def _fail(message: str, code: int) -> int:
    print(f"error: {one_line(message)}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` (default: sys.argv[1:]); return the exit status (see the module)."""
    command = typer.main.get_command(app)
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        with command.make_context("fedprllm-secure", args, obj={"argv": args}) as ctx:
            command.invoke(ctx)
    except ConfigError as exc:
        return _fail(str(exc), USAGE)
    except FedPrError as exc:
        return _fail(str(exc), 1)
    except KeyboardInterrupt:
        return _fail("interrupted", INTERRUPTED)
    except Exception as exc:
        return _click_exit(exc)
    return 0


def _click_exit(exc: Exception) -> int:
    """The exit status for click's own exceptions (from click, or from the copy of click that
    newer typer vendors: recognised by shape, not class); re-raises anything else (a bug)."""
    kind = type(exc).__name__
    if kind == "Exit":  # --help, --version, or a command's typer.Exit(code)
        return int(getattr(exc, "exit_code", 0))
    if kind == "Abort":
        return _fail("interrupted", INTERRUPTED)
    if kind == "NoArgsIsHelpError":  # the help: typer's rich help printed it already
        text = exc.format_message()  # type: ignore[attr-defined]
        if text.strip():
            print(text)
        return 0
    if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
        return _fail(exc.format_message(), int(exc.exit_code) or USAGE)
    raise exc


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
