"""`fedprllm-secure protocols`: the registered secure-sum protocols."""

from __future__ import annotations

from .progress import out


def list_protocols() -> None:
    """List the registered secure-sum protocols."""
    from ..secure_sum import registry

    for name in registry.available():
        info = registry.get(name)
        out.print(f"{name:<10} {'secure  ' if info.secure else 'INSECURE'}  {info.description}")
