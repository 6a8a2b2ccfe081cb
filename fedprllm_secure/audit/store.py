"""One JSON file per finished point, written atomically; a resumed sweep skips what exists.

A point's file also records the audit settings it was measured under; a file written under other
settings is not reused (the sweep refuses to mix them). `check_audit_folder` refuses, before any
work, an output folder that is not a resumable audit of the same settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..outputs import write_json


def check_audit_folder(folder: Path, settings: dict[str, Any]) -> None:
    """Accept a missing or empty `folder`, or an audit folder (it holds points/) whose readable
    point files were all measured under `settings`; raise ConfigError (one line) otherwise."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {folder} exists and is not a folder")
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    points = folder / "points"
    if not points.is_dir():
        raise ConfigError(
            f"--out {folder} already holds files and is not an audit folder (no points/); "
            "use another --out or pass --overwrite"
        )
    for path in sorted(points.glob("*.json")):
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # unreadable: measured again on resume
        if not isinstance(stored, dict) or stored.get("settings") != settings:
            raise ConfigError(
                f"--out {folder} holds an audit with other settings ({path.name}); "
                "use another --out or pass --overwrite"
            )


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
