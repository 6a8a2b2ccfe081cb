"""Progress reporting that library code can call without knowing about the terminal.

A run is a sequence of named *phases* (`plan` announces them, `phase` starts the next); inside a
phase, *stages* count `total` steps of one `unit` ("decoder block", "window", ...); `status` is a
line shown while something without steps runs (loading a model); `note` is one line of text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

Advance = Callable[[], None]


class Progress(Protocol):
    def stage(
        self, description: str, total: int, unit: str = ""
    ) -> AbstractContextManager[Advance]: ...

    def note(self, text: str) -> None: ...

    def plan(self, phases: Sequence[str]) -> None: ...

    def phase(self, name: str) -> None: ...

    def status(self, text: str) -> AbstractContextManager[None]: ...


class SilentProgress:
    """Reports nothing (library default, tests)."""

    @contextmanager
    def stage(self, description: str, total: int, unit: str = "") -> Iterator[Advance]:
        yield lambda: None

    def note(self, text: str) -> None:
        pass

    def plan(self, phases: Sequence[str]) -> None:
        pass

    def phase(self, name: str) -> None:
        pass

    @contextmanager
    def status(self, text: str) -> Iterator[None]:
        yield
