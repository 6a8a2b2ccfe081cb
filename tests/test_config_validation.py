"""RunConfig.validate names the bad field by its path; the CLI maps paths to its flags."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import pytest

from fedprllm_secure.cli.options import MESSAGE_FLAGS as FLAGS
from fedprllm_secure.cli.options import to_flags
from fedprllm_secure.config import DataConfig, FederationConfig, PruningConfig, RunConfig
from fedprllm_secure.errors import ConfigError
from fedprllm_secure.privacy.settings import PrivacySettings

BASE = RunConfig()


@pytest.mark.parametrize(
    "config, message",
    [
        (replace(BASE, pruning=PruningConfig(sparsity=1.5)),
         "pruning.sparsity must lie in (0, 1), got 1.5"),
        (replace(BASE, pruning=PruningConfig(group="diagonal")), "unknown pruning.group 'diagonal'"),
        (replace(BASE, data=DataConfig(split="x")), "unknown data.split 'x'"),
        (replace(BASE, pruning=PruningConfig(mode="iterative", pruner="magnitude")),
         "pruning.mode iterative needs pruning.pruner wanda"),
        (replace(BASE, pruning=PruningConfig(aggregate="stats"),
                 privacy=PrivacySettings(rr_epsilon=1.0)),
         "privacy.rr_epsilon randomizes mask bits: it needs pruning.aggregate masks"),
        (replace(BASE, pruning=PruningConfig(methods=("federated",))),
         "unknown pruning.methods 'federated'"),
        (replace(BASE, federation=FederationConfig(drop={9: "input"})),
         "federation.drop names client 9, but clients are 0..7"),
        (replace(BASE, federation=FederationConfig(drop={1: "nope"})),
         "federation.drop names round 'nope'"),
        (replace(BASE, data=DataConfig(client_data="/no/such/folder")),
         "data.client_data path not found"),
        (replace(BASE, federation=FederationConfig(engine="carrier-pigeon")),
         "unknown federation.engine 'carrier-pigeon'"),
    ],
)  # fmt: skip
def test_validate_names_the_field_path(config: RunConfig, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.validate()
    assert message in str(caught.value)


def test_the_default_config_is_valid() -> None:
    BASE.validate()


def test_every_flag_names_a_config_field() -> None:
    def paths(kind: type, prefix: str = "") -> set[str]:
        found: set[str] = set()
        for f in dataclasses.fields(kind):
            found.add(prefix + f.name)
            if dataclasses.is_dataclass(f.type) or f.name in (
                "data",
                "pruning",
                "protocol",
                "privacy",
                "federation",
            ):
                found |= paths(type(getattr(kind(), f.name)), f"{prefix}{f.name}.")
        return found

    fields = paths(RunConfig)
    assert set(FLAGS) - {"save_model_to", "save_masks_to"} <= fields | {
        "protocol.options.threshold",
        "protocol.options.neighbors",
        "protocol.options.he_scheme",
        "protocol.options.authority",
    }


def test_flag_message_rewrites_paths_only() -> None:
    assert (
        to_flags("unknown pruning.group 'x' for the model") == "unknown --group 'x' for the model"
    )
    assert to_flags("data.eval_seqlen and data.seqlen") == "--eval-seqlen and --seqlen"
    assert to_flags("save_model_to needs pruning.methods fedprllm") == (
        "--save-model needs --method fedprllm"
    )
