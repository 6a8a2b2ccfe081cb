"""The CLI's consoles (`out`: results on stdout, `err`: progress and messages on stderr) and
`RichProgress`, the library's `Progress` drawn as rich bars."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichBar

err = Console(stderr=True)
out = Console()


class RichProgress:
    """Progress bars on stderr (`enabled=False`: nothing is drawn; notes are dropped too)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    @contextmanager
    def stage(self, description: str, total: int) -> Iterator[Any]:
        """A bar of `total` steps; yields the function that advances it by one."""
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
        """One line on stderr."""
        if self.enabled:
            err.print(text)
