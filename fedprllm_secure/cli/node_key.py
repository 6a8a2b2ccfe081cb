"""`fedprllm-secure node-key PATH`: a Flower node's long-term identity key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .progress import err


def node_key(
    path: Annotated[Path, typer.Argument(help="The node's identity key file (PEM).")],
) -> None:
    """Create a Flower node's long-term Ed25519 identity key if missing; print its public key.

    Give the file to the node (node config identity='PATH') and the printed key to the operator,
    who lists it in the federation's trust file (docs/flower.md)."""
    from ..integrations.flower.trust import create_identity, public_key

    key, created = create_identity(path)
    if created:
        err.print(f"created {path} (keep it on this node only)")
    print(public_key(key).hex())
