"""RunConfig from and to TOML, with dotted-path overrides (`pruning.sparsity=0.6`).

    config = load_config("run.toml")                      # [data] [pruning] [protocol] ...
    config = with_overrides(config, ["pruning.sparsity=0.6", "protocol.options.threshold=3"])
    text = config_to_toml(config)                         # load(dump(c)) == c

Every value is checked against its dataclass field's type (an int is accepted for a float; a
missing optional field is None); an unknown key, a wrong type or an unreadable file raises
ConfigError naming the dotted path. Range checks are `RunConfig.validate()`'s job, not this one's.
Mapping fields take one more path component: `protocol.options.threshold`, `federation.drop.3`.
Optional fields default to None, so TOML (which has no null) leaves them out; `--set` accepts
`PATH=none` to clear one.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from . import config as base
from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with tomli (a dependency there)
    import tomli as tomllib

__all__ = [
    "as_dict",
    "config_to_toml",
    "from_dict",
    "load_config",
    "with_overrides",
    "with_values",
]


def _fields(cls: type) -> dict[str, Any]:
    """Field name -> resolved type hint of dataclass `cls`."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _optional(hint: Any) -> Any | None:
    """X for `X | None`, else None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0]
    return None


def _is_mapping(hint: Any) -> bool:
    return typing.get_origin(hint) in (Mapping, dict, typing.Mapping)


def _kind(hint: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    plurals = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
    if hint in names:
        return names[hint]
    if _optional(hint) is not None:
        return _kind(_optional(hint))
    if typing.get_origin(hint) is tuple:
        return f"a list of {plurals.get(typing.get_args(hint)[0], 'values')}"
    if _is_mapping(hint):
        return "a table"
    return "a value"


def _coerce(value: Any, hint: Any, path: str) -> Any:
    """`value` (from TOML or Python) as the field type `hint`, or ConfigError naming `path`."""
    inner = _optional(hint)
    if inner is not None:
        return None if value is None else _coerce(value, inner, path)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        if isinstance(hint, type) and isinstance(value, hint):
            return value
        return _build(hint, value, path)
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, str):
        return value
    if typing.get_origin(hint) is tuple and isinstance(value, (list, tuple)):
        item = typing.get_args(hint)[0]
        return tuple(_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value))
    if _is_mapping(hint) and isinstance(value, Mapping):
        key_type, value_type = typing.get_args(hint) or (str, Any)
        return {
            _key(k, key_type, path): _coerce(v, value_type, f"{path}.{k}") for k, v in value.items()
        }
    raise ConfigError(f"{path} must be {_kind(hint)}, got {value!r}")


def _key(key: Any, key_type: Any, path: str) -> Any:
    if key_type is int:
        if isinstance(key, int) and not isinstance(key, bool):
            return key
        if isinstance(key, str) and key.strip().isdigit():
            return int(key)
        raise ConfigError(f"{path} keys must be integers, got {key!r}")
    if not isinstance(key, str):
        raise ConfigError(f"{path} keys must be strings, got {key!r}")
    return key


def _build(cls: type, table: Any, prefix: str) -> Any:
    """An instance of dataclass `cls` from `table`; absent fields keep their defaults."""
    where = prefix or "the configuration"
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table, got {table!r}")
    fields = _fields(cls)
    for key in table:
        if key not in fields:
            known = ", ".join(fields)
            raise ConfigError(f"unknown setting {_join(prefix, str(key))!r} (known: {known})")
    values = {k: _coerce(v, fields[k], _join(prefix, k)) for k, v in table.items()}
    return cls(**values)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def from_dict(values: Mapping[str, Any]) -> base.RunConfig:
    """A RunConfig from nested plain data (a parsed TOML file, `as_dict`'s output)."""
    return _build(base.RunConfig, values, "")


def load_config(path: str | Path) -> base.RunConfig:
    """The RunConfig a TOML file describes (absent settings keep their defaults)."""
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {file}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {file}: {exc}") from None
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None
    try:
        return from_dict(values)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def as_dict(config: base.RunConfig) -> dict[str, Any]:
    """Nested plain data (dicts with string keys, lists, scalars, None), JSON-ready;
    `from_dict(as_dict(c)) == c`."""
    return dict(_plain(config))


def _field_type(path: str) -> tuple[list[str], Any, bool]:
    """The parts of a dotted `path`, the type of the value it names, and whether it names an
    entry of a mapping field (ConfigError if it names nothing)."""
    parts = path.split(".")
    hint: Any = base.RunConfig
    for depth, part in enumerate(parts):
        if dataclasses.is_dataclass(hint):
            fields = _fields(hint)
            if part not in fields:
                raise ConfigError(f"unknown setting {path!r}")
            hint = fields[part]
        elif _is_mapping(hint) and depth == len(parts) - 1 and part:
            key_type, value_type = typing.get_args(hint) or (str, Any)
            _key(part, key_type, ".".join(parts[:-1]))
            return parts, value_type, True
        else:
            raise ConfigError(f"unknown setting {path!r}")
    if dataclasses.is_dataclass(hint):
        raise ConfigError(f"{path!r} is a section: set one of its fields, e.g. {path}.FIELD")
    return parts, hint, False


def with_values(config: base.RunConfig, values: Mapping[str, Any]) -> base.RunConfig:
    """`config` with each dotted path of `values` set (typed values; checked as when loading).

    Setting a whole mapping (`protocol.options`) replaces it; `protocol.options.KEY` sets one
    entry (None removes it)."""
    tree = as_dict(config)
    for path, value in values.items():
        parts, hint, entry = _field_type(path)
        node = tree
        for part in parts[:-1]:
            node = node[part]
        if entry and value is None:
            node.pop(parts[-1], None)
            continue
        _coerce(value, hint, path)  # the error names the path given, not a rebuilt one
        node[parts[-1]] = _plain(value)
    return from_dict(tree)


def _parse_value(text: str) -> Any:
    """A --set value: a TOML value (`0.6`, `true`, `"x"`, `[1, 2]`, `{a = 1}`), `none`, or
    else the text itself as a string (`protocol.name=additive`)."""
    if text.strip() == "none":
        return None
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def with_overrides(config: base.RunConfig, items: Iterable[str]) -> base.RunConfig:
    """`config` with `PATH=VALUE` overrides applied in order (later ones win)."""
    values: dict[str, Any] = {}
    for item in items:
        path, sep, text = item.partition("=")
        path = path.strip()
        if not sep or not path:
            raise ConfigError(f"override {item!r} must look like PATH=VALUE, e.g. seed=1")
        _field_type(path)
        values.pop(path, None)
        values[path] = _parse_value(text)
    return with_values(config, values)


def _toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    bare = key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key)
    return key if bare else _toml_string(key)


def _toml_value(value: Any, path: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v, path) for v in value) + "]"
    if isinstance(value, Mapping):
        items = (f"{_toml_key(str(k))} = {_toml_value(v, path)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    raise ConfigError(f"{path} cannot be written to TOML: {value!r}")


def _section(lines: list[str], name: str, obj: Any) -> None:
    """Append dataclass `obj` as `[name]`: its scalars, then its mappings as `[name.field]`
    and its dataclasses as sections of their own (None fields are left out)."""
    fields = [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]
    nested = [(k, v) for k, v in fields if dataclasses.is_dataclass(v) or isinstance(v, Mapping)]
    skip = {k for k, _ in nested}
    if name:
        lines += ["", f"[{name}]"]
    for key, value in fields:
        if value is not None and key not in skip:
            lines.append(f"{key} = {_toml_value(value, _join(name, key))}")
    for key, value in nested:
        path = _join(name, key)
        if dataclasses.is_dataclass(value):
            _section(lines, path, value)
            continue
        lines += ["", f"[{path}]"]
        for entry, item in value.items():
            if item is None:
                raise ConfigError(f"{path}.{entry} is None (TOML has no null: leave it out)")
            lines.append(f"{_toml_key(str(entry))} = {_toml_value(item, f'{path}.{entry}')}")


def config_to_toml(config: base.RunConfig) -> str:
    """`config` as a TOML file `load_config` reads back equal (None settings are left out)."""
    lines: list[str] = ["# fedprllm-secure run configuration"]
    _section(lines, "", config)
    return "\n".join(lines) + "\n"
