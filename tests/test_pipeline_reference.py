"""Every strategy on the in-process federation gives what `simulate` gave before the pipeline
existed: tests/pipeline_reference.json holds the results.json of tiny runs recorded with the old
the former `simulate.run_simulation` (main a97225c), global-mask digests included."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedprllm_secure.pipeline import Pipeline, run
from fedprllm_secure.privacy.settings import PrivacySettings

from .conftest import add_fourth_client
from .test_pipeline import config_for

REFERENCE = json.loads((Path(__file__).parent / "pipeline_reference.json").read_text())["cases"]
CASES: dict[str, dict[str, Any]] = {
    "masks-plaintext-all-methods": dict(methods=("fedprllm", "centralized", "local")),
    "masks-additive-drop-row-scaling": dict(
        protocol="additive", drop={1: "masked-input"}, group="row", scaling=True,
        four=True, privacy=PrivacySettings(min_cohort=2), calibration="one-shot",
    ),
    "iterative-additive-drop": dict(
        protocol="additive", mode="iterative", drop={2: "masked-input"}, four=True, scaling=True
    ),
    "iterative-plaintext-column": dict(mode="iterative", group="column"),
    "stats-one-shot-plaintext": dict(aggregate="stats", calibration="one-shot"),
    "stats-sequential-additive": dict(
        aggregate="stats", protocol="additive", protocol_options={"threshold": 2}
    ),
    "magnitude": dict(pruner="magnitude", methods=("fedprllm", "centralized")),
}  # fmt: skip


def _digest(arrays: dict[str, np.ndarray], as_bool: bool) -> dict[str, str]:
    def one(value: np.ndarray) -> bytes:
        value = np.ascontiguousarray(value)
        return (value.astype(bool) if as_bool else value).tobytes()

    return {n: hashlib.sha256(one(v)).hexdigest()[:16] for n, v in sorted(arrays.items())}


def _same(expected: Any, actual: Any, path: str = "") -> None:
    if isinstance(expected, dict):
        assert set(actual) == set(expected), path
        for key in expected:
            _same(expected[key], actual[key], f"{path}/{key}")
    elif isinstance(expected, float):
        # Masks, counts and scales are compared exactly (digests); a perplexity is a float32
        # model's output, which moves in the 7th digit between CPUs (AVX2 / AVX-512 kernels).
        assert actual == pytest.approx(expected, rel=1e-5), path
    else:
        assert actual == expected, path


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_pipeline_reproduces_the_recorded_simulate_result(
    tiny_model_dir: Path, client_dir: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    settings = dict(CASES[case])
    if settings.pop("four", False):
        add_fourth_client(client_dir)
    captured: dict[str, Any] = {}
    original = Pipeline.fedprllm

    def capture(self, config=None):  # type: ignore[no-untyped-def]
        result = original(self, config)
        captured["masks"] = _digest(result.masks, as_bool=True)
        scales = result.scales
        captured["scales"] = None if scales is None else _digest(scales, as_bool=False)
        return result

    monkeypatch.setattr(Pipeline, "fedprllm", capture)
    results = json.loads(json.dumps(run(config_for(tiny_model_dir, client_dir, **settings))))
    for key in ("config", "fedprllm_secure_version", "timings_s"):
        results.pop(key)
    # Newer than the recording (checked in tests/test_outputs.py): present, keyed like perplexity.
    assert set(results.pop("perplexity_se")) | {"local_mean"} >= set(results["perplexity"])
    assert set(results.pop("bits_per_byte")) | {"local_mean"} >= set(results["perplexity"])
    assert results.pop("saved_masks") is None
    results["model"].pop("name")
    windows = results.pop("eval_windows")  # newer than the reference: asked vs used
    assert windows["used"] == results["data"]["eval"]["windows"] <= windows["asked"]
    # Newer than the reference: no case uses distributed DP (tests/privacy covers it).
    assert results["privacy"].pop("distributed_dp") is None
    results["global_masks"] = captured
    _same(REFERENCE[case], results)
