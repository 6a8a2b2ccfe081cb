"""One JSON file per finished point, written atomically; a resumed sweep skips what exists.

A point's file also records the audit settings it was measured under; a file written under other
settings is not reused (the sweep refuses to mix them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..outputs import write_json


class PointStore:
    def __init__(self, folder: Path, settings: dict[str, Any]) -> None:
        self.folder = folder
        self.settings = settings
        folder.mkdir(parents=True, exist_ok=True)

    def _path(self, point_id: str) -> Path:
        return self.folder / f"{point_id}.json"

    def load(self, point_id: str) -> dict[str, Any] | None:
        """The stored result, or None if the point has not finished."""
        path = self._path(point_id)
        if not path.exists():
            return None
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None  # unreadable: measure it again
        if stored.get("settings") != self.settings:
            raise ConfigError(
                f"{path} was measured with other audit settings; use another --out or --overwrite"
            )
        return stored["result"]

    def save(self, point_id: str, result: dict[str, Any]) -> None:
        write_json(self._path(point_id), {"settings": self.settings, "result": result})

    def all(self) -> dict[str, dict[str, Any]]:
        results = {}
        for path in sorted(self.folder.glob("*.json")):
            loaded = self.load(path.stem)
            if loaded is not None:
                results[path.stem] = loaded
        return results
