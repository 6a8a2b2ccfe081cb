"""Issue 16 in the pipeline: the weights' dtype, one-shot masks summed block by block, the
blockwise client (one decoder block in memory)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fedprllm_secure.cli.options import build_run_config
from fedprllm_secure.config import RunConfig
from fedprllm_secure.errors import ConfigError
from fedprllm_secure.integrations.flower.settings import flower_run_config
from fedprllm_secure.pipeline import Pipeline

from .test_pipeline import config_for


def test_dtype_is_a_run_setting_of_every_front_end() -> None:
    assert RunConfig().dtype == "auto"
    assert build_run_config({"dtype": "bfloat16"}, ["dtype"]).dtype == "bfloat16"
    assert flower_run_config({"dtype": "float16"})[0].dtype == "float16"
    with pytest.raises(ConfigError, match="unknown dtype 'int8'"):
        replace(RunConfig(), dtype="int8").validate()


def test_the_pipeline_loads_the_weights_in_the_asked_dtype(
    tiny_model_dir: Path, client_dir: Path
) -> None:
    auto = Pipeline(config_for(tiny_model_dir, client_dir))
    assert auto.bench.model.model.layers[0].mlp.up_proj.weight.dtype == torch.float32  # stored
    config = replace(config_for(tiny_model_dir, client_dir), dtype="bfloat16")
    bf16 = Pipeline(config)
    assert bf16.bench.model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    masks = bf16.fedprllm().masks
    assert all(m.mean() == pytest.approx(0.5, abs=0.02) for m in masks.values())
    with pytest.raises(ConfigError, match="keeps the pipeline's model, device, dtype"):
        auto.fedprllm(config)
