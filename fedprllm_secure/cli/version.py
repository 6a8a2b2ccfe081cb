"""`fedprllm-secure version` and the top-level `--version`."""

from __future__ import annotations

import typer

from .. import __version__
from .progress import out


def version() -> None:
    """Print the version."""
    out.print(__version__)


def print_version(value: bool) -> None:
    """Eager callback of `--version`: print the version and exit 0."""
    if value:
        print(f"fedprllm-secure {__version__}")
        raise typer.Exit()
