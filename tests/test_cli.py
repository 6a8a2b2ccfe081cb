"""The command line: errors are one line with a non-zero exit (2 for usage errors, 130 for an
interrupt); results are written atomically; --config/--set layer over the flags; help at 80
columns."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import typing
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import typer

import fedprllm_secure.cli.simulate as simulate_command
from fedprllm_secure import __version__
from fedprllm_secure.cli import app, main, options
from fedprllm_secure.config import RunConfig
from fedprllm_secure.errors import ConfigError, DataError


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedprllm_secure.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["simulate", "--protocol", "nope"], "unknown protocol 'nope'"),
        (["simulate", "--sparsity", "1.5"], "--sparsity must lie in (0, 1)"),
        (["simulate", "--sparsity", "0"], "--sparsity must lie in (0, 1)"),
        (["simulate", "--clients", "abc"], "--clients"),
        (["simulate", "--group", "diagonal"], "'diagonal' is not one of 'layer', 'row', 'column'"),
        (["simulate", "--client-data", "/no/such/folder"], "path not found"),
        (["simulate", "--drop", "x@input"], "CLIENT@ROUND"),
        (["simulate", "--bogus-flag"], "No such option"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(args: list[str], fragment: str) -> None:
    done = run_cli(*args)
    assert done.returncode == 2  # every one is a usage error
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0]
    assert "Traceback" not in done.stdout + done.stderr


def test_more_clients_than_articles_and_bad_model_are_one_line(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "corpus.json"
    corpus.write_text(
        json.dumps({f"t{i}": {"extract": "words " * 50, "topic": "x"} for i in range(3)})
    )
    code = main(["simulate", "--model", str(tiny_model_dir), "--corpus", str(corpus),
                 "--clients", "9", "--device", "cpu", "--out", str(tmp_path / "o")])  # fmt: skip
    assert code != 0
    assert "more clients (9) than articles" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    code = main(["simulate", "--model", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code != 0 and "not a model directory" in capsys.readouterr().err


def test_simulate_writes_results_atomically(
    tiny_model_dir: Path, client_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = [
        "simulate", "--model", str(tiny_model_dir), "--client-data", str(client_dir),
        "--eval-text", str(client_dir.parent / "eval.txt"), "--samples-per-client", "2",
        "--seqlen", "32", "--eval-windows", "2", "--device", "cpu", "--method", "fedprllm,local",
        "--out", str(out), "--no-progress",
    ]  # fmt: skip
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["perplexity"]) == {"dense", "fedprllm", "local", "local_mean"}
    assert results["protocol"]["uplink_bytes_per_client"]
    # A second run into the same folder is refused unless --overwrite; the old results stay.
    assert main(args) != 0
    assert json.loads((out / "results.json").read_text()) == results
    # A failing run (data too short for the samples) leaves no half-written folder.
    failing = args[:-3] + ["--samples-per-client", "500", "--out", str(tmp_path / "failed")]
    assert main(failing) != 0
    assert not (tmp_path / "failed").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".failed")]


def test_help_explains_the_flags() -> None:
    done = run_cli("simulate", "--help")
    assert done.returncode == 0
    for flag in ("--protocol", "--clients", "--split", "--group", "--method", "--save-model"):
        assert flag in done.stdout


# --- configuration layers, exit codes, help: no model needed ---------------------------------


@pytest.fixture()
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The RunConfig `simulate` would run (the run itself is replaced)."""
    seen: dict[str, Any] = {}

    def write_run(config: RunConfig, out_dir: Path, **kwargs: Any) -> dict[str, Any]:
        seen.update(config=config, out=out_dir, **kwargs)
        return {}

    monkeypatch.setattr(simulate_command, "write_run", write_run)
    return seen


def test_no_flags_is_the_default_config(captured: dict[str, Any]) -> None:
    assert main(["simulate"]) == 0
    assert captured["config"] == RunConfig()
    assert captured["out"] == Path("runs/latest") and captured["progress"] is True


def test_config_file_then_explicit_flags_then_set(tmp_path: Path, captured: dict[str, Any]) -> None:
    run = tmp_path / "run.toml"
    run.write_text(
        'seed = 4\n[data]\nclients = 3\nsplit = "topic"\n'
        '[pruning]\ngroup = "row"\nsparsity = 0.7\nscaling = true\n'
        '[protocol]\nname = "additive"\n[protocol.options]\nneighbors = 2\n'
    )
    args = ["simulate", "--config", str(run), "--clients", "5", "--no-scaling", "--threshold", "2",
            "--method", "fedprllm,local", "--drop", "1@input", "--set", "pruning.sparsity=0.6",
            "--set", "data.clients=6", "--seed", "0"]  # fmt: skip
    assert main(args) == 0
    config = captured["config"]
    assert config.seed == 0  # an explicit flag wins over the file, even at its default value
    assert config.data.split == "topic" and config.pruning.group == "row"  # the file's
    assert config.pruning.scaling is False  # --no-scaling over the file's true
    assert config.data.clients == 6 and config.pruning.sparsity == 0.6  # --set over both
    assert config.protocol.name == "additive"
    assert config.protocol.options == {"neighbors": 2, "threshold": 2}  # merged
    assert config.pruning.methods == ("fedprllm", "local") and config.federation.drop == {
        1: "input"
    }


def test_print_config_writes_a_file_for_config(
    tmp_path: Path, captured: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--clients", "4", "--threshold", "2", "--print-config"]) == 0
    run = tmp_path / "run.toml"
    run.write_text(capsys.readouterr().out)
    assert "config" not in captured  # printed, not run
    assert main(["simulate", "--config", str(run)]) == 0
    config = captured["config"]
    assert config.data.clients == 4 and config.protocol.options == {"threshold": 2}
    assert config == dataclasses.replace(
        RunConfig(),
        data=dataclasses.replace(RunConfig().data, clients=4),
        protocol=dataclasses.replace(RunConfig().protocol, options={"threshold": 2}),
    )


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--set", "pruning.sparsityy=0.5"], "unknown setting 'pruning.sparsityy'"),
        (["--set", "pruning.sparsity=high"], "pruning.sparsity must be a number"),
        (["--config", "/no/such/run.toml"], "config file not found"),
        (["--drop", "x@input"], "CLIENT@ROUND"),
        (["--group", "diagonal"], "is not one of 'layer', 'row', 'column'"),
        (["--bogus"], "No such option"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    args: list[str], fragment: str, captured: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", *args]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
    assert "config" not in captured  # nothing ran


def test_a_bad_config_file_names_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run.toml"
    run.write_text("[pruning]\nsparsityy = 0.5\n")
    assert main(["simulate", "--config", str(run)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "unknown setting 'pruning.sparsityy'" in err[0] and str(run) in err[0]


def test_errors_from_the_run_exit_1_and_config_errors_name_flags(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def data_error(*_args: Any, **_kwargs: Any) -> None:
        raise DataError("client 2 holds no text")

    monkeypatch.setattr(simulate_command, "write_run", data_error)
    assert main(["simulate"]) == 1
    assert capsys.readouterr().err == "error: client 2 holds no text\n"
    with pytest.raises(ConfigError, match=r"^--sparsity must lie in \(0, 1\), and --min-cohort"):
        with options.flag_names():
            raise ConfigError("pruning.sparsity must lie in (0, 1), and privacy.min_cohort")
    assert options.to_flags("data.eval_seqlen and data.seqlen") == "--eval-seqlen and --seqlen"
    assert options.to_flags("xdata.seqlen data.seqlen_x") == "xdata.seqlen data.seqlen_x"


def _patch_the_run(monkeypatch: pytest.MonkeyPatch, fake: Any) -> None:
    """Replace the library's run (`pipeline.run`, what `simulate` calls)."""
    import fedprllm_secure.pipeline as pipeline

    monkeypatch.setattr(pipeline, "run", fake)


def test_ctrl_c_exits_130_with_one_line_and_leaves_no_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*_args: Any, **_kwargs: Any) -> None:
        raise KeyboardInterrupt

    _patch_the_run(monkeypatch, interrupted)  # inside the staging folder
    out = tmp_path / "run"
    assert main(["simulate", "--out", str(out), "--no-progress"]) == 130
    assert capsys.readouterr().err == "error: interrupted\n"
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_ctrl_c_exits_130_from_a_subprocess() -> None:
    """The console script's own exit status (not only main's return value)."""
    code = (
        "import sys\nimport fedprllm_secure.cli.simulate as s\n"
        "def stop(*a, **k):\n    raise KeyboardInterrupt\n"
        "s.write_run = stop\nfrom fedprllm_secure.cli import run\nsys.argv[1:] = ['simulate']\n"
        "run()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert done.returncode == 130 and done.stderr == "error: interrupted\n", done.stderr


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"fedprllm-secure {__version__}\n"
    assert main(["version"]) == 0 and capsys.readouterr().out.strip() == __version__


def _simulate_params() -> dict[str, Any]:
    command = typer.main.get_command(app).commands["simulate"]  # type: ignore[attr-defined]
    return {p.name: p for p in command.params}


def test_flag_defaults_are_the_config_defaults() -> None:
    """No flag given == RunConfig(): every flag in the table defaults to its field's default."""
    params, defaults = _simulate_params(), RunConfig()
    for path, flag in options.FLAGS.items():
        param = params[options.param_name(flag)]
        node: Any = defaults
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else getattr(node, part)
        default = param.default.value if isinstance(param.default, Enum) else param.default
        if path == "pruning.methods":
            default = options.parse_methods(default)
        if path == "federation.drop":
            default = options.parse_drops(default)
        assert default == node, (flag, default, node)


def test_choices_are_the_librarys() -> None:
    from fedprllm_secure.client.calibrate import CALIBRATIONS
    from fedprllm_secure.client.scores import PRUNERS
    from fedprllm_secure.config import AGGREGATES, METHODS, MODES
    from fedprllm_secure.data import SPLITS
    from fedprllm_secure.privacy.accounting import available
    from fedprllm_secure.server.aggregate import GROUPS

    def values(enum: type[Enum]) -> tuple[str, ...]:
        return tuple(member.value for member in enum)

    assert values(options.Group) == GROUPS and values(options.Split) == SPLITS
    assert values(options.Pruner) == PRUNERS and values(options.Calibration) == CALIBRATIONS
    assert values(options.Mode) == MODES and values(options.Aggregate) == AGGREGATES
    assert sorted(values(options.Accountant)) == available() and options.METHODS == METHODS


def test_every_flag_is_in_a_panel_and_the_table() -> None:
    params = _simulate_params()
    outside = {"config_file", "overrides", "print_config", "out_dir", "overwrite", "save_model"}
    outside |= {"progress", "save_masks", "json_summary"}
    assert {options.param_name(f) for f in options.FLAGS.values()} == set(params) - outside
    assert all(p.rich_help_panel for p in params.values())  # type: ignore[attr-defined]
    for path in options.FLAGS:  # every path names a field (or a protocol option)
        options_path = path.startswith("protocol.options.")
        parts = path.split(".")[: 2 if options_path else None]
        hint: Any = RunConfig
        for part in parts:
            hint = typing.get_type_hints(hint)[part] if dataclasses.is_dataclass(hint) else None
        assert hint is not None, path


def _help(*args: str) -> str:
    env = {**os.environ, "COLUMNS": "80"}
    done = subprocess.run(
        [sys.executable, "-m", "fedprllm_secure.cli", *args, "--help"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 0 and not done.stderr, done.stderr
    return done.stdout


def test_simulate_help_is_readable_at_80_columns() -> None:
    text = _help("simulate")
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in text and len(lines) < 100
    for title in ("Run", "Data", "Pruning", "Protocol", "Privacy", "Federation", "Output"):
        assert f"─ {title} ─" in text
    for flag in options.FLAGS.values():
        assert f"{flag} " in text or f"{flag}\n" in text, flag
    for enum in (options.Group, options.Split, options.Calibration, options.Accountant):
        assert "|".join(member.value for member in enum) in text
    # help text is not squeezed into a narrow column
    assert "Fraction of weights pruned, in (0, 1)." in text
    for command in ([], ["audit"], ["flower"], ["flower", "deploy"], ["assets"]):
        assert max(len(line) for line in _help(*command).splitlines()) <= 80
    top = _help()
    assert "--version" in top and all(
        f" {name} " in top for name in ("simulate", "audit", "flower")
    )


def _unwritable(kind: str, tmp_path: Path) -> Path:
    """An --out path this process cannot create (skips where it can, e.g. a read-only folder
    under root)."""
    if kind == "read-only":
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        out = locked / "run"
    elif kind == "under-a-file":  # NotADirectoryError, even under root
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "run"
    else:
        out = Path(kind)
    try:
        out.mkdir()
    except OSError:
        return out
    out.rmdir()
    pytest.skip(f"{out} is writable here")


@pytest.mark.parametrize("kind", ["read-only", "under-a-file", "/proc/x", "/sys/x"])
@pytest.mark.parametrize("command", ["simulate", "audit"])
def test_an_unwritable_out_is_one_line(
    command: str,
    kind: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import fedprllm_secure.audit.runner as runner

    def no_work(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("the run started")

    _patch_the_run(monkeypatch, no_work)
    monkeypatch.setattr(runner, "run_audit", no_work)
    out = _unwritable(kind, tmp_path)
    try:
        code = main([command, "--out", str(out), "--no-progress"])
    finally:
        if (tmp_path / "locked").exists():
            (tmp_path / "locked").chmod(0o700)  # so that pytest can remove it
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: --out {out}") and "cannot be written" in err[0], err
