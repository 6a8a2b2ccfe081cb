"""Problems that need no model fail before it loads, with one line and exit 2 (issue 17, items 2
and 5): protocol options against the real client count, options a protocol does not take,
dropouts of clients that do not exist, unreadable / binary / short text, an unreachable Hub;
evaluation windows the text cannot give are reported, not dropped silently."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedprllm_secure.cli import main
from fedprllm_secure.config import DataConfig, ProtocolConfig, RunConfig
from fedprllm_secure.errors import ConfigError, DataError
from fedprllm_secure.pipeline import run
from fedprllm_secure.secure_sum import registry

from .conftest import synthetic_text


@pytest.fixture()
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the model fails the test: every check here must come before it."""
    import fedprllm_secure.pipeline.workbench as workbench

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the model was loaded before the check")

    monkeypatch.setattr(workbench, "load_model", refuse)


def _corpus(tmp_path: Path, articles: int = 6) -> Path:
    """`articles` calibration articles and one held out ("held-out 0": SHA-256 below 13)."""
    corpus = tmp_path / "corpus.json"
    entries = {f"t{i}": {"extract": synthetic_text(i, 300), "topic": "x"} for i in range(articles)}
    entries["held-out 0"] = {"extract": synthetic_text(99, 300), "topic": "x"}
    corpus.write_text(json.dumps(entries))
    return corpus


def _simulate(model: Path, out: Path, *args: str) -> list[str]:
    return ["simulate", "--model", str(model), "--samples-per-client", "2", "--seqlen", "32",
            "--eval-windows", "1", "--device", "cpu", "--out", str(out), "--no-progress",
            *args]  # fmt: skip


def _refused(argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert code == 2 and len(err) == 1, captured.err
    assert err[0].startswith("error: ") and fragment in err[0], err[0]
    assert "Traceback" not in captured.out + captured.err
    return err[0]


def _write(folder: Path, name: str, content: str | bytes) -> None:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--protocol", "additive", "--threshold", "5"], "--threshold 5 exceeds the 3 holders"),
        (["--protocol", "additive", "--threshold", "0"], "--threshold 0 is unsafe"),
        (["--protocol", "plaintext", "--threshold", "2"],
         "--threshold is not an option of protocol plaintext (it takes no options)"),
        (["--protocol", "additive", "--he-scheme", "bfv"],
         "--he-scheme is not an option of protocol additive"),
        (["--protocol", "ckks", "--neighbors", "2"], "--neighbors is not an option of protocol ckks"),
        (["--protocol", "ckks", "--authority", "7"], "the key authority 7 is not a client"),
        (["--protocol", "additive", "--drop", "5@masked-input"],
         "--drop names client 5, but the 3 clients are 0..2"),
        (["--drop", "3@input"], "--drop names client 3, but the 3 clients are 0..2"),
        (["--protocol", "ckks", "--clients", "9"], None),  # --clients is ignored: 3 clients
    ],
)  # fmt: skip
def test_protocol_options_are_checked_against_the_real_client_count(
    flags: list[str],
    fragment: str | None,
    tiny_model_dir: Path,
    client_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_model_load: None,
) -> None:
    """--client-data holds 3 clients, whatever --clients says."""
    out = tmp_path / "out"
    argv = _simulate(tiny_model_dir, out, "--client-data", str(client_dir), *flags)
    if fragment is None:  # a valid run: it gets as far as loading the model
        with pytest.raises(AssertionError, match="model was loaded"):
            main([*argv, "--eval-text", str(client_dir.parent / "eval.txt")])
        return
    _refused(argv, fragment, capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--protocol", "additive", "--clients", "2"], "at least 3 clients (the minimum cohort)"),
        (["--protocol", "ckks", "--clients", "1"], "at least 3 clients (the minimum cohort)"),
        (["--protocol", "additive", "--clients", "1", "--min-cohort", "1"],
         "additive protocol needs at least 2 clients"),
        (["--clients", "9"], "more clients (9) than articles"),
        (["--clients", "2", "--samples-per-client", "400"], "fewer than the 12800 tokens"),
        (["--clients", "2", "--eval-seqlen", "100000"], "fewer than one window of 100000"),
    ],
)  # fmt: skip
def test_the_corpus_split_is_checked_before_the_model_loads(
    flags: list[str],
    fragment: str,
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_model_load: None,
) -> None:
    out = tmp_path / "out"
    argv = _simulate(tiny_model_dir, out, "--corpus", str(_corpus(tmp_path)), *flags)
    _refused(argv, fragment, capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("bob.jsonl", "", "client bob.jsonl has no text"),
        ("bob.txt", "  \n\n ", "client bob.txt has no text"),
        ("bob.txt", b"\x00" * 20_000, "bob.txt holds NUL bytes: binary data, not text"),
        ("bob.txt", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40, "cannot read"),
        ("bob.txt", "tiny text", "client bob has 12 bytes of text, fewer than the 64 tokens"),
        # enough bytes for the bound (+3 a document), too few tokens (+2 a document here)
        ("bob.jsonl", "\n".join(json.dumps("x" * 3) for _ in range(12)),
         "bob has 60 tokens of text, needs 64"),
    ],
)  # fmt: skip
def test_unusable_client_text_is_one_line_naming_it(
    name: str,
    content: str | bytes,
    fragment: str,
    tiny_model_dir: Path,
    client_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_model_load: None,
) -> None:
    (client_dir / "bob.jsonl").unlink()
    _write(client_dir, name, content)
    out = tmp_path / "out"
    line = _refused(
        _simulate(tiny_model_dir, out, "--client-data", str(client_dir)), fragment, capsys
    )
    assert "bob" in line and not out.exists()


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"\x00" * 20_000, "holds NUL bytes"),
        (b"\xff\xfe" * 100, "cannot read --eval-text"),
        ("short", "the evaluation text has 5 bytes, fewer than one window of 32 tokens"),
    ],
)
def test_unusable_eval_text_is_one_line(
    content: str | bytes,
    fragment: str,
    tiny_model_dir: Path,
    client_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_model_load: None,
) -> None:
    _write(tmp_path, "bad-eval.txt", content)
    argv = _simulate(tiny_model_dir, tmp_path / "out", "--client-data", str(client_dir),
                     "--eval-text", str(tmp_path / "bad-eval.txt"))  # fmt: skip
    _refused(argv, fragment, capsys)


def test_the_library_run_checks_before_loading(
    tiny_model_dir: Path, client_dir: Path, no_model_load: None
) -> None:
    """`run(config)` itself, not only the CLI: a usage error (ConfigError) that is also a
    DataError for the data problems, named by field path."""
    config = RunConfig(
        model=str(tiny_model_dir),
        data=DataConfig(client_data=str(client_dir), samples_per_client=2, seqlen=32),
        protocol=ProtocolConfig("plaintext", {"neighbors": 2}),
    )
    with pytest.raises(ConfigError, match=r"^protocol.options.neighbors is not an option"):
        run(config)
    (client_dir / "alice.txt").write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match="alice.txt holds NUL bytes") as caught:
        run(RunConfig(model=str(tiny_model_dir), data=config.data))
    assert isinstance(caught.value, ConfigError)


def test_every_documented_option_is_one_its_protocol_takes() -> None:
    """The check refuses no flag for the protocol it is documented for."""
    takes = {name: registry.get(name).option_names for name in ("plaintext", "additive", "ckks")}
    assert takes["plaintext"] == ()
    assert {"threshold", "neighbors", "min_contributors"} <= set(takes["additive"] or ())
    assert {"he_scheme", "authority", "min_contributors"} <= set(takes["ckks"] or ())


def _offline_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    # An empty Hub cache and a Hub that refuses connections (port 9, nothing listens).
    return {**env, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9", **extra}


@pytest.mark.parametrize("offline_flag", [False, True])
def test_a_hub_id_without_network_is_one_line_at_once(
    offline_flag: bool, tmp_path: Path, client_dir: Path
) -> None:
    extra = {"HF_HUB_OFFLINE": "1"} if offline_flag else {}
    done = subprocess.run(
        [sys.executable, "-m", "fedprllm_secure.cli", "simulate", "--model", "someone/some-model",
         "--client-data", str(client_dir), "--out", str(tmp_path / "out"), "--no-progress"],
        capture_output=True, text=True, timeout=120, env=_offline_env(tmp_path, **extra),
    )  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "'someone/some-model' is not in the local Hugging Face cache" in lines[0]
    assert "127.0.0.1" in lines[0] and "--model PATH" in lines[0]
    assert not (tmp_path / "out").exists()


def test_audit_checks_the_cohort_before_the_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model_load: None
) -> None:
    argv = ["audit", "--clients", "2", "--corpus", str(_corpus(tmp_path)),
            "--out", str(tmp_path / "audit"), "--no-progress"]  # fmt: skip
    _refused(argv, "--clients 2 is below the minimum cohort 3", capsys)
    argv = ["audit", "--clients", "3", "--corpus", str(_corpus(tmp_path)), "--model",
            str(tmp_path / "no-model"), "--out", str(tmp_path / "audit"), "--no-progress"]  # fmt: skip
    code = main(argv)
    assert code != 0 and "model path not found" in capsys.readouterr().err


def test_eval_windows_the_text_cannot_give_are_reported(
    tiny_model_dir: Path, client_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    eval_text = client_dir.parent / "eval.txt"
    tokens = len(eval_text.read_bytes())  # the tiny byte-level tokenizer: a token per byte
    out = tmp_path / "run"
    argv = _simulate(tiny_model_dir, out, "--client-data", str(client_dir),
                     "--eval-text", str(eval_text), "--eval-windows", "100000")  # fmt: skip
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["eval_windows"] == {"asked": 100_000, "used": tokens // 32}
    assert results["data"]["eval"]["windows"] == tokens // 32
    printed = " ".join(capsys.readouterr().out.split())
    assert f"evaluation: {tokens // 32} windows, not the 100000 asked for" in printed
    argv = [*argv, "--json", "--overwrite"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["eval_windows"] == {"asked": 100_000, "used": tokens // 32}


def test_a_pipeline_variant_is_checked_before_any_calibration(
    tiny_model_dir: Path, client_dir: Path
) -> None:
    from dataclasses import replace

    from fedprllm_secure.pipeline import Pipeline

    config = RunConfig(
        model=str(tiny_model_dir),
        data=DataConfig(client_data=str(client_dir), samples_per_client=2, seqlen=32,
                        eval_text=str(client_dir.parent / "eval.txt"), eval_windows=1),
    )  # fmt: skip
    pipe = Pipeline(config)
    for options, message in (({"threshold": 5}, "threshold 5 exceeds the 3 holders"),
                             ({"he_scheme": "bfv"}, "not an option of protocol additive")):  # fmt: skip
        variant = replace(config, protocol=ProtocolConfig("additive", options))
        with pytest.raises(ConfigError, match=message):
            pipe.fedprllm(variant)
    assert not any(phase.startswith("calibration") for phase in pipe.timer.timings)
    pipe.fedprllm(replace(config, protocol=ProtocolConfig("additive", {"threshold": 3})))
    assert "calibration_clients" in pipe.timer.timings  # the phase the refusals never reached


def _hub_cache_with(model_dir: Path, hub_home: Path, repo: str) -> None:
    """`model_dir` laid out as the Hugging Face cache holds a downloaded `repo`."""
    import shutil

    root = hub_home / "hub" / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text("0" * 40)
    shutil.copytree(model_dir, root / "snapshots" / ("0" * 40))


def test_a_cached_hub_id_without_network_loads_offline(
    tiny_model_dir: Path, client_dir: Path, tmp_path: Path
) -> None:
    """The Hub unreachable, the model cached: the run goes on from the cache (offline mode set
    for huggingface_hub, instead of its retries), with no warning lines."""
    _hub_cache_with(tiny_model_dir, tmp_path / "hf", "someone/tiny")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "fedprllm_secure.cli", *_simulate(Path("someone/tiny"), out,
         "--client-data", str(client_dir), "--eval-text", str(client_dir.parent / "eval.txt"))],
        capture_output=True, text=True, timeout=300, env=_offline_env(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert json.loads((out / "results.json").read_text())["model"]["name"] == "someone/tiny"


def test_the_hub_check_goes_through_a_configured_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind an HTTPS proxy the Hub counts as reachable when the proxy is (no false refusal)."""
    import socket

    from fedprllm_secure import preflight

    for name in ("HF_ENDPOINT", "NO_PROXY", "no_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{listening.getsockname()[1]}")
        assert preflight._hub_reachable()
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # nothing listens
    assert not preflight._hub_reachable()
