"""The CLI's consoles (`out`: results on stdout, `err`: progress and messages on stderr) and
`RichProgress`, the library's `Progress` drawn on stderr.

Every bar names its phase ("phase 4 of 6: fedprllm"), what it counts ("decoder block 3/30") and
shows the elapsed time and an ETA; a status line with a spinner covers steps without a count
(loading the model).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichBar

err = Console(stderr=True)
out = Console()

# What a bar counts when the library did not say (first word of its description).
UNITS = {
    "iterative": "decoder block",
    "stats": "round",
    "calibrate": "step",
    "secure": "sum",
    "perplexity": "window",
    "prune": "layer",
}


def unit_for(description: str, unit: str) -> str:
    return unit or UNITS.get(description.split(" ", 1)[0], "step")


class RichProgress:
    """Progress on `console` (default: stderr); `enabled=False` draws nothing, notes included."""

    def __init__(self, enabled: bool, console: Console | None = None) -> None:
        self.enabled = enabled
        self.console = console or err
        self.phases: list[str] = []
        self.current = 0
        self.name = ""

    def plan(self, phases: Sequence[str]) -> None:
        """The run's phases, in order (their count is the n of "phase k of n")."""
        self.phases, self.current = list(phases), 0

    def phase(self, name: str) -> None:
        """Start the next phase: one line "phase k of n: name"."""
        self.current += 1
        self.name = name
        total = max(len(self.phases), self.current)
        self.note(f"[bold]phase {self.current} of {total}[/bold]: {name}")

    def _prefix(self) -> str:
        if not self.current:
            return ""
        return f"[{self.current}/{max(len(self.phases), self.current)}] "

    @contextmanager
    def stage(self, description: str, total: int, unit: str = "") -> Iterator[Any]:
        """A bar of `total` steps of `unit`; yields the function that advances it by one."""
        if not self.enabled:
            yield lambda: None
            return
        columns = (
            TextColumn("{task.description:<34}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[unit]} {task.completed:.0f}/{task.total:.0f}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        with RichBar(*columns, console=self.console, transient=False) as bar:
            task = bar.add_task(
                self._prefix() + description, total=total, unit=unit_for(description, unit)
            )
            yield lambda: bar.advance(task)

    @contextmanager
    def status(self, text: str) -> Iterator[None]:
        """A spinner line while the block runs, then "text: done in X s"."""
        if not self.enabled:
            yield
            return
        started = time.perf_counter()
        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        with RichBar(*columns, console=self.console, transient=True) as bar:
            bar.add_task(self._prefix() + text + " ...", total=None)
            yield
        self.note(f"{self._prefix()}{text}: done in {time.perf_counter() - started:.1f} s")

    def note(self, text: str) -> None:
        """One line on the console."""
        if self.enabled:
            self.console.print(text)
