"""What the CLI's flags mean in RunConfig terms: one table (field path -> flag), the allowed
values of each choice flag, and the flags -> RunConfig builder (file < explicit flags < --set).

The choices mirror the library's own lists (tests/test_cli.py checks they agree); the library
validates again, whatever the source of a value (a TOML file, --set, Flower's run config).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:  # the config imports torch (privacy settings): not for `--help`
    from ..config import RunConfig

# Help panels of `simulate --help`, in the order they are shown.
RUN, DATA, PRUNING, PROTOCOL, PRIVACY, FEDERATION, OUTPUT = (
    "Run",
    "Data",
    "Pruning",
    "Protocol",
    "Privacy",
    "Federation",
    "Output",
)


class Group(str, Enum):
    layer = "layer"
    row = "row"
    column = "column"


class Split(str, Enum):
    iid = "iid"
    topic = "topic"


class Pruner(str, Enum):
    wanda = "wanda"
    ria = "ria"
    magnitude = "magnitude"


class Layerwise(str, Enum):
    uniform = "uniform"
    owl = "owl"


class Refine(str, Enum):
    none = "none"
    dsnot = "dsnot"


class Calibration(str, Enum):
    sequential = "sequential"
    one_shot = "one-shot"


class Mode(str, Enum):
    one_shot = "one-shot"
    iterative = "iterative"


class Aggregate(str, Enum):
    masks = "masks"
    stats = "stats"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Dtype(str, Enum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class Accountant(str, Enum):
    rdp = "rdp"
    prv = "prv"
    gaussian = "gaussian"


class DpNoise(str, Enum):
    distributed = "distributed"
    local = "local"


class DpMechanism(str, Enum):
    skellam = "skellam"
    ddgauss = "ddgauss"


class DpUnit(str, Enum):
    window = "window"
    client = "client"


class DpDomain(str, Enum):
    raw = "raw"
    group = "group"
    feature = "feature"


class HeScheme(str, Enum):
    ckks = "ckks"
    bfv = "bfv"


METHODS = ("fedprllm", "centralized", "local")

# Every RunConfig field `simulate` has a flag for: dotted path -> flag. The flag's parameter
# name is the flag without dashes (`--dp-accountant` -> dp_accountant).
FLAGS: dict[str, str] = {
    "model": "--model",
    "device": "--device",
    "dtype": "--dtype",
    "seed": "--seed",
    "data.corpus": "--corpus",
    "data.client_data": "--client-data",
    "data.eval_text": "--eval-text",
    "data.clients": "--clients",
    "data.split": "--split",
    "data.samples_per_client": "--samples-per-client",
    "data.seqlen": "--seqlen",
    "data.eval_windows": "--eval-windows",
    "data.eval_seqlen": "--eval-seqlen",
    "pruning.sparsity": "--sparsity",
    "pruning.group": "--group",
    "pruning.pruner": "--pruner",
    "pruning.sparsity_type": "--sparsity-type",
    "pruning.layerwise": "--layerwise",
    "pruning.owl_lambda": "--owl-lambda",
    "pruning.owl_m": "--owl-m",
    "pruning.ria_alpha": "--ria-alpha",
    "pruning.refine": "--refine",
    "pruning.calibration": "--calibration",
    "pruning.mode": "--mode",
    "pruning.aggregate": "--aggregate",
    "pruning.stats_precision_bits": "--stats-precision-bits",
    "pruning.scaling": "--scaling",
    "pruning.methods": "--method",
    "pruning.batch_size": "--batch-size",
    "pruning.blockwise": "--blockwise",
    "protocol.name": "--protocol",
    "protocol.options.threshold": "--threshold",
    "protocol.options.neighbors": "--neighbors",
    "protocol.options.he_scheme": "--he-scheme",
    "protocol.options.authority": "--authority",
    "privacy.rr_epsilon": "--rr-epsilon",
    "privacy.dp_stats_epsilon": "--dp-stats-epsilon",
    "privacy.dp_delta": "--dp-delta",
    "privacy.dp_clip": "--dp-clip",
    "privacy.accountant": "--dp-accountant",
    "privacy.min_cohort": "--min-cohort",
    "privacy.reproducible_noise": "--reproducible-noise",
    "privacy.dp_noise": "--dp-noise",
    "privacy.dp_mechanism": "--dp-mechanism",
    "privacy.dp_unit": "--dp-unit",
    "privacy.dp_min_survivors": "--dp-min-survivors",
    "privacy.dp_domain": "--dp-domain",
    "federation.drop": "--drop",
}


def opt(panel: str, help: str, *names: str, **kwargs: Any) -> Any:
    """`typer.Option(*names, help=help, rich_help_panel=panel, **kwargs)`: one short line each."""
    import typer

    return typer.Option(*names, help=help, rich_help_panel=panel, **kwargs)


def param_name(flag: str) -> str:
    """The Python parameter behind `flag` (`--dp-accountant` -> `dp_accountant`)."""
    return flag.lstrip("-").replace("-", "_")


def parse_drops(values: Iterable[str]) -> dict[int, str]:
    """`--drop 3@masked-input` (repeatable, or comma-separated) as {client: round}."""
    drops: dict[int, str] = {}
    for value in values:
        for item in filter(None, (part.strip() for part in value.split(","))):
            client, sep, round_name = item.partition("@")
            if not sep or not client.isdigit() or not round_name:
                raise ConfigError(
                    f"--drop {item!r} must look like CLIENT@ROUND, e.g. 3@masked-input"
                )
            drops[int(client)] = round_name
    return drops


def parse_methods(values: Iterable[str]) -> tuple[str, ...]:
    """`--method a,b --method c` as (a, b, c), first occurrence kept."""
    methods = [m.strip() for value in values for m in value.split(",") if m.strip()]
    return tuple(dict.fromkeys(methods))


def _flag_value(param: str, value: Any) -> Any:
    """A parsed flag value as its RunConfig field value."""
    if param == "method":
        return parse_methods(value)
    if param == "drop":
        return parse_drops(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value


def explicit_values(params: Mapping[str, Any], given: Iterable[str]) -> dict[str, Any]:
    """{field path: value} for the flags of FLAGS whose parameter is in `given`."""
    given = set(given)
    return {
        path: _flag_value(param_name(flag), params[param_name(flag)])
        for path, flag in FLAGS.items()
        if param_name(flag) in given
    }


def given_params(ctx: Any) -> list[str]:
    """The parameters of click context `ctx` set on the command line (or from the environment),
    not left at their defaults."""
    given = []
    for name in ctx.params:
        source = ctx.get_parameter_source(name)
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT", "PROMPT"):
            given.append(name)
    return given


def build_run_config(
    params: Mapping[str, Any],
    given: Iterable[str],
    config_file: Path | None = None,
    overrides: Iterable[str] = (),
) -> RunConfig:
    """The run's configuration: `config_file` (else the defaults), then the flags in `given`,
    then the `PATH=VALUE` overrides (--set), each overriding what came before."""
    from ..config import RunConfig
    from ..config_io import load_config, with_overrides, with_values

    base = load_config(config_file) if config_file is not None else RunConfig()
    with flag_names():
        flagged = with_values(base, explicit_values(params, given))
    return with_overrides(flagged, overrides)


# What `to_flags` rewrites: dotted paths only ("model", "seed" are also plain words in prose),
# plus paths that library messages name as a whole, set by several flags or by a run() argument.
MESSAGE_FLAGS = {
    **{path: flag for path, flag in FLAGS.items() if "." in path},
    "protocol.options": "--threshold/--neighbors/--he-scheme/--authority",
    "save_model_to": "--save-model",
    "save_masks_to": "--save-masks",
}
_PATHS = sorted(MESSAGE_FLAGS, key=len, reverse=True)
_PATH = re.compile(r"(?<![\w.-])(" + "|".join(map(re.escape, _PATHS)) + r")(?![\w.])")


def to_flags(message: str) -> str:
    """`message` with each RunConfig field path that has a flag written as that flag."""
    return _PATH.sub(lambda m: MESSAGE_FLAGS[m.group(1)], message)


@contextmanager
def flag_names() -> Iterator[None]:
    """Re-raise a ConfigError from the block naming flags instead of field paths (for checks of
    values that came from flags; a file's or --set's errors keep naming the field)."""
    try:
        yield
    except ConfigError as exc:
        raise ConfigError(to_flags(str(exc))) from exc
