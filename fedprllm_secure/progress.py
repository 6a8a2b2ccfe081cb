"""Progress reporting that library code can call without knowing about the terminal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

Advance = Callable[[], None]


class Progress(Protocol):
    def stage(self, description: str, total: int) -> AbstractContextManager[Advance]: ...

    def note(self, text: str) -> None: ...


class SilentProgress:
    """Reports nothing (library default, tests)."""

    @contextmanager
    def stage(self, description: str, total: int) -> Iterator[Advance]:
        yield lambda: None

    def note(self, text: str) -> None:
        pass
