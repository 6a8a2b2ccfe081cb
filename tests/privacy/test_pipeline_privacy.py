"""The privacy flags inside a whole simulation (tiny random LLaMA, three clients)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedprllm_secure.cli import main
from fedprllm_secure.errors import PrivacyError, ProtocolError
from fedprllm_secure.pipeline import Pipeline, run
from fedprllm_secure.privacy.randomized_response import flip_probability
from fedprllm_secure.privacy.settings import PrivacySettings
from fedprllm_secure.secure_sum.messages import decode
from fedprllm_secure.secure_sum.packing import unpack_uint

from ..test_pipeline import config_for


def test_randomized_response_flips_bits_before_the_protocol(
    tiny_model_dir: Path, client_dir: Path, recorded_sessions: list
) -> None:
    """What the server receives under plaintext differs from each client's true mask at the
    flip rate 1/(1+e^eps); the released counts are debiased."""
    epsilon = 1.0
    config = config_for(tiny_model_dir, client_dir, privacy=PrivacySettings(rr_epsilon=epsilon))
    pipe = Pipeline(config)
    pipe.fedprllm()
    (session,) = recorded_sessions
    lengths = pipe.bench.lengths
    masks = pipe.local()  # the same calibration options: each node's masks, reused
    flipped = total = 0
    for message in session.bus.log.received:
        submission = decode(message.payload)
        seen = unpack_uint(submission.data, 1, lengths[submission.chunk_name])
        truth = masks[submission.sender][submission.chunk_name].reshape(-1)
        flipped += int((seen != truth).sum())
        total += seen.size
    rate = flipped / total
    q = flip_probability(epsilon)
    assert abs(rate - q) < 5 * np.sqrt(q * (1 - q) / total), (rate, q)


def test_the_ckks_key_authority_itself_enforces_the_minimum_cohort(
    tiny_model_dir: Path, client_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under ckks the refusal comes from the key authority (min_contributors, set from the
    minimum cohort), not only from the server's release step: with the server's own guard
    skipped (a server that does not apply it), the authority still refuses two signers."""
    from fedprllm_secure.secure_sum.ckks.server import CkksServer

    monkeypatch.setattr(CkksServer, "_check_cohort", lambda self: None)
    dropped = config_for(tiny_model_dir, client_dir, protocol="ckks", drop={1: "encrypted-input"})
    with pytest.raises(ProtocolError, match="key authority's minimum is 3"):
        run(dropped)
    dropped = replace(dropped, privacy=PrivacySettings(min_cohort=2))
    assert run(dropped)["privacy"]["cohort"] == {"contributors": 2, "min_cohort": 2}


def test_simulate_refuses_a_cohort_below_the_minimum(
    tiny_model_dir: Path, client_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # simulate's own release guard, seen through plaintext (a secure protocol's releasing party
    # refuses earlier: additive's clients by quorum and min_contributors, ckks's authority).
    dropped = config_for(
        tiny_model_dir,
        client_dir,
        protocol="plaintext",
        drop={1: "input"},
        privacy=PrivacySettings(min_cohort=3),
    )
    with pytest.raises(PrivacyError, match="minimum cohort of 3"):
        run(dropped)
    dropped = replace(
        dropped, privacy=PrivacySettings(min_cohort=2)
    )  # an explicit, deliberate override
    assert run(dropped)["privacy"]["cohort"] == {"contributors": 2, "min_cohort": 2}
    out = tmp_path / "refused"
    args = ["simulate", "--model", str(tiny_model_dir), "--client-data", str(client_dir),
            "--eval-text", str(client_dir.parent / "eval.txt"), "--samples-per-client", "2",
            "--seqlen", "32", "--eval-windows", "1", "--device", "cpu", "--protocol", "plaintext",
            "--min-cohort", "3", "--drop", "1@input", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "minimum cohort" in err[0]
    assert not out.exists()


def test_dp_statistics_count_every_block_release(tiny_model_dir: Path, client_dir: Path) -> None:
    privacy = PrivacySettings(dp_stats_epsilon=4.0, dp_delta=1e-5, dp_clip=10.0)
    results = run(config_for(tiny_model_dir, client_dir, privacy=privacy))
    stats = results["privacy"]["statistics_dp"]
    assert stats["releases_made"] == stats["releases_budgeted"] == 2  # one per decoder block
    assert stats["epsilon_spent"] <= 4.0 * 1.01 and stats["noise_multiplier"] > 1
    noiseless = run(config_for(tiny_model_dir, client_dir))
    assert results["perplexity"]["fedprllm"] != noiseless["perplexity"]["fedprllm"]


def test_results_report_the_guarantees(
    tiny_model_dir: Path, client_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = ["simulate", "--model", str(tiny_model_dir), "--client-data", str(client_dir),
            "--eval-text", str(client_dir.parent / "eval.txt"), "--samples-per-client", "2",
            "--seqlen", "32", "--eval-windows", "1", "--device", "cpu", "--protocol", "additive",
            "--rr-epsilon", "2", "--dp-stats-epsilon", "8", "--dp-delta", "1e-6",
            "--dp-clip", "5", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    privacy = json.loads((out / "results.json").read_text())["privacy"]
    rr = privacy["randomized_response"]
    assert rr["epsilon_per_weight"] == 2.0
    assert rr["epsilon_whole_mask"] == 2.0 * rr["weights"] and rr["weights"] > 10_000
    assert privacy["statistics_dp"]["delta"] == 1e-6
    assert privacy["cohort"] == {"contributors": 3, "min_cohort": 3}
    against = " ".join(g["against"] for g in privacy["guarantees"])
    assert "honest-but-curious server" in against and "key authority" in against


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--rr-epsilon", "0"], "--rr-epsilon must be a positive"),
        (["--dp-stats-epsilon", "1"], "--dp-stats-epsilon needs --dp-clip"),
        (["--dp-clip", "1"], "--dp-clip needs --dp-stats-epsilon"),
        (["--dp-stats-epsilon", "1", "--dp-clip", "1", "--dp-delta", "2"], "--dp-delta"),
        (["--min-cohort", "0"], "--min-cohort must be a positive"),
    ],
)
def test_bad_privacy_flags_are_one_line(
    extra: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", *extra]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
