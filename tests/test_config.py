"""RunConfig from TOML and `PATH=VALUE` overrides: round trip, unknown keys and types refused."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedprllm_secure.config import (
    DataConfig,
    FederationConfig,
    PruningConfig,
    RunConfig,
)
from fedprllm_secure.config_io import (
    as_dict,
    config_to_toml,
    from_dict,
    load_config,
    with_overrides,
    with_values,
)
from fedprllm_secure.errors import ConfigError
from fedprllm_secure.privacy.settings import PrivacySettings

EXAMPLE = """
model = "my-model"
seed = 3

[data]
clients = 4
split = "topic"

[pruning]
sparsity = 1          # an integer is a number
methods = ["fedprllm", "local"]

[protocol]
name = "additive"

[protocol.options]
threshold = 3

[privacy]
rr_epsilon = 2.5

[federation.drop]
2 = "masked-input"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_file_sets_what_it_names_and_leaves_the_rest_at_defaults(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, EXAMPLE))
    assert config == dataclasses.replace(
        RunConfig(),
        model="my-model",
        seed=3,
        data=DataConfig(clients=4, split="topic"),
        pruning=PruningConfig(sparsity=1.0, methods=("fedprllm", "local")),
        protocol=dataclasses.replace(
            RunConfig().protocol, name="additive", options={"threshold": 3}
        ),
        privacy=PrivacySettings(rr_epsilon=2.5),
        federation=FederationConfig(drop={2: "masked-input"}),
    )
    assert isinstance(config.pruning.sparsity, float)
    assert load_config(_write(tmp_path, "")) == RunConfig()


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('modle = "x"', "unknown setting 'modle'"),
        ("[pruning]\nsparsityy = 0.5", "unknown setting 'pruning.sparsityy'"),
        ("[prune]\nsparsity = 0.5", "unknown setting 'prune'"),
        ("[privacy]\nrr_epsilon = 1\n[privacy.x]\ny = 1", "unknown setting 'privacy.x'"),
        ('[pruning]\nsparsity = "high"', "pruning.sparsity must be a number, got 'high'"),
        ("seed = 1.5", "seed must be an integer, got 1.5"),
        ("[pruning]\nscaling = 1", "pruning.scaling must be a boolean, got 1"),
        ('[pruning]\nmethods = "local"', "pruning.methods must be a list of strings"),
        ("[pruning]\nmethods = [1]", "pruning.methods[0] must be a string, got 1"),
        ('[federation.drop]\nx = "input"', "federation.drop keys must be integers"),
        ("data = 3", "data must be a table, got 3"),
        ("[protocol]\noptions = 3", "protocol.options must be a table"),
        ("[data\n", "is not valid TOML"),
    ],
)
def test_bad_files_are_refused_naming_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(_write(tmp_path, text))
    assert fragment in str(error.value) and str(tmp_path / "run.toml") in str(error.value)


def test_a_missing_file_is_one_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_overrides_are_typed_toml_values_and_later_ones_win() -> None:
    config = with_overrides(
        RunConfig(),
        [
            "pruning.sparsity=0.6",
            "protocol.name=additive",  # not TOML: taken as the string
            'data.split="topic"',
            "protocol.options.threshold=3",
            "federation.drop.1=input",
            "pruning.methods=['local', 'fedprllm']",
            "privacy.dp_clip=2",
            "privacy.dp_clip=none",
            "seed=7",
            "seed=8",
        ],
    )
    assert config.pruning.sparsity == 0.6 and config.protocol.name == "additive"
    assert config.data.split == "topic" and config.protocol.options == {"threshold": 3}
    assert config.federation.drop == {1: "input"}
    assert config.pruning.methods == ("local", "fedprllm")
    assert config.privacy.dp_clip is None and config.seed == 8
    assert with_overrides(config, ["protocol.options.threshold=none"]).protocol.options == {}
    replaced = with_overrides(config, ["protocol.options={neighbors = 2}"])
    assert replaced.protocol.options == {"neighbors": 2}


@pytest.mark.parametrize(
    "item, fragment",
    [
        ("pruning.sparsityy=0.5", "unknown setting 'pruning.sparsityy'"),
        ("sparsity=0.5", "unknown setting 'sparsity'"),
        ("pruning=1", "'pruning' is a section"),
        ("pruning.sparsity.x=1", "unknown setting 'pruning.sparsity.x'"),
        ("protocol.options.a.b=1", "unknown setting 'protocol.options.a.b'"),
        ("federation.drop.x=input", "federation.drop keys must be integers"),
        ("pruning.sparsity=abc", "pruning.sparsity must be a number, got 'abc'"),
        ("pruning.sparsity=none", "pruning.sparsity must be a number, got None"),
        ("data.clients=2.5", "data.clients must be an integer, got 2.5"),
        ("pruning.scaling=yes", "pruning.scaling must be a boolean, got 'yes'"),
        ("pruning.sparsity", "must look like PATH=VALUE"),
        ("=3", "must look like PATH=VALUE"),
    ],
)
def test_bad_overrides_are_refused_naming_the_path(item: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        with_overrides(RunConfig(), [item])
    assert fragment in str(error.value)


def test_with_values_takes_python_values() -> None:
    config = with_values(RunConfig(), {"data.client_data": "/x", "federation.drop": {0: "input"}})
    assert config.data.client_data == "/x" and config.federation.drop == {0: "input"}
    with pytest.raises(ConfigError, match="data.clients must be an integer"):
        with_values(RunConfig(), {"data.clients": True})


def _optional(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if len(args) == 1 and len(typing.get_args(hint)) == 2 else None


SCALAR = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=12),
)


def _strategy(hint: Any) -> st.SearchStrategy[Any]:
    """Values of a config field's type, read from the dataclasses (new fields are covered)."""
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        fields = {f.name: _strategy(hints[f.name]) for f in dataclasses.fields(hint)}
        return st.builds(hint, **fields)
    if _optional(hint) is not None:
        return st.none() | _strategy(_optional(hint))
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        return st.lists(_strategy(args[0]), max_size=4).map(tuple)
    if origin is not None and args and hint not in (str, int, float, bool):
        keys = st.integers(0, 99) if args[0] is int else st.text(max_size=8)
        return st.dictionaries(keys, _strategy(args[1]), max_size=3)
    if hint is Any:
        return SCALAR | st.lists(st.integers(), max_size=3)
    return {
        bool: st.booleans(),
        int: st.integers(-(2**63), 2**63 - 1),
        float: st.floats(allow_nan=False),
        str: st.text(max_size=16),
    }[hint]


@settings(max_examples=150, deadline=None)
@given(_strategy(RunConfig))
def test_toml_and_dict_round_trip(
    tmp_path_factory: pytest.TempPathFactory, config: RunConfig
) -> None:
    path = tmp_path_factory.mktemp("rt") / "run.toml"
    path.write_text(config_to_toml(config), encoding="utf-8")
    assert load_config(path) == config
    assert from_dict(json.loads(json.dumps(as_dict(config)))) == config


def test_every_optional_field_defaults_to_none() -> None:
    """TOML has no null: the dump leaves None out, which reads back only as a None default."""

    def walk(cls: type) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name])
            elif _optional(hints[f.name]) is not None:
                assert f.default is None, f"{cls.__name__}.{f.name}"

    walk(RunConfig)
