"""Results are written atomically: into a hidden staging folder renamed into place at the end.

A run that fails or is interrupted leaves no half-written output folder behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ConfigError


def check_output_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out} already holds results; pass --overwrite to replace them")


def unwritable(out: Path, exc: OSError) -> ConfigError:
    """The one-line error for an --out folder that cannot be created or written."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        reason = "part of the path is a file, not a folder"
    else:
        reason = exc.strerror or type(exc).__name__
    return ConfigError(f"--out {out} cannot be written: {reason}")


def make_output_dir(folder: Path, out: Path | None = None) -> Path:
    """Create `folder` (and its parents); an OSError becomes a one-line ConfigError naming
    `out` (default: `folder`), the --out the user gave."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise unwritable(out or folder, exc) from None
    return folder


@contextmanager
def atomic_output_dir(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging folder; on success it replaces `out`, on failure it is removed.

    An `out` whose folder cannot be created (read-only, /proc, ...) is a ConfigError, raised
    before the caller's work starts."""
    out = out.expanduser().resolve()
    check_output_dir(out, overwrite)
    make_output_dir(out.parent, out)
    try:
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    except OSError as exc:
        raise unwritable(out, exc) from None
    try:
        yield staging
        if out.exists():
            retired = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, retired / "old")
            os.replace(staging, out)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, out)
        os.chmod(out, 0o755)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename in the same folder)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)
