"""Issue 12, item 10: privacy noise and protocol secrets never come from the public --seed
unless the user asks for reproducible noise, and results.json says which.

results.json records --seed; noise drawn from it can be redrawn, hence removed, exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedprllm_secure.cli import main
from fedprllm_secure.pipeline import Pipeline
from fedprllm_secure.privacy.noise_source import OS_CSPRNG, SEEDED
from fedprllm_secure.privacy.settings import PrivacySettings
from fedprllm_secure.secure_sum.messages import decode
from fedprllm_secure.secure_sum.packing import unpack_uint

from ..test_pipeline import config_for


def _server_view(tiny_model_dir: Path, client_dir: Path, recorded: list, **overrides) -> dict:
    """What the server receives (RR bits of every client and layer) and the DP noise draws."""
    config = config_for(
        tiny_model_dir,
        client_dir,
        privacy=PrivacySettings(rr_epsilon=1.0, dp_stats_epsilon=8.0, dp_clip=5.0),
        **overrides,
    )
    pipe = Pipeline(config)
    result = pipe.fedprllm()
    session = recorded.pop()
    lengths = pipe.bench.lengths
    view = {}
    for message in session.bus.log.received:
        submission = decode(message.payload)
        view[(submission.sender, submission.chunk_name)] = unpack_uint(
            submission.data, 1, lengths[submission.chunk_name]
        )
    view["session_id"] = session.config.session_id
    view["noise_source"] = result.privacy["noise_source"]
    return view


def _same(a: dict, b: dict) -> bool:
    return all(
        np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else a[k] == b[k] for k in a
    )


def test_noise_and_session_secrets_are_fresh_by_default_and_seeded_only_on_request(
    tiny_model_dir: Path, client_dir: Path, recorded_sessions: list
) -> None:
    first = _server_view(tiny_model_dir, client_dir, recorded_sessions)
    second = _server_view(tiny_model_dir, client_dir, recorded_sessions)
    assert first["noise_source"] == second["noise_source"] == OS_CSPRNG
    assert first["session_id"] != second["session_id"]
    differing = [k for k in first if isinstance(first[k], np.ndarray)]
    assert differing and not any(np.array_equal(first[k], second[k]) for k in differing)
    seeded = [
        _server_view(tiny_model_dir, client_dir, recorded_sessions, reproducible_noise=True)
        for _ in range(2)
    ]
    assert seeded[0]["noise_source"] == SEEDED
    assert _same(seeded[0], seeded[1])


@pytest.mark.parametrize("reproducible", [False, True])
def test_results_json_says_where_the_noise_came_from(
    tiny_model_dir: Path, client_dir: Path, tmp_path: Path, reproducible: bool
) -> None:
    perplexities, sources = [], set()
    for run in range(2):
        out = tmp_path / f"run-{run}"
        args = ["simulate", "--model", str(tiny_model_dir), "--client-data", str(client_dir),
                "--eval-text", str(client_dir.parent / "eval.txt"), "--samples-per-client", "2",
                "--seqlen", "32", "--eval-windows", "1", "--device", "cpu",
                "--dp-stats-epsilon", "2", "--dp-clip", "5", "--seed", "3",
                "--out", str(out), "--no-progress"]  # fmt: skip
        assert main(args + (["--reproducible-noise"] if reproducible else [])) == 0
        results = json.loads((out / "results.json").read_text())
        perplexities.append(results["perplexity"]["fedprllm"])
        sources.add(results["privacy"]["noise_source"])
        sources.add(results["randomness"]["noise_and_protocol_secrets"])
        assert results["config"]["privacy"]["reproducible_noise"] is reproducible
    assert sources == {SEEDED if reproducible else OS_CSPRNG}
    assert (perplexities[0] == perplexities[1]) is reproducible


def test_the_audit_draws_from_the_os_csprng_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedprllm_secure.audit import runner
    from fedprllm_secure.audit.config import AuditConfig
    from fedprllm_secure.randomness import SeededRandomSource, SystemRandomSource

    seen = []

    class Stop(Exception):
        pass

    def capture(self, config, source, *_rest):  # type: ignore[no-untyped-def]
        seen.append(source)
        raise Stop

    monkeypatch.setattr(runner.AuditRun, "__init__", capture)
    for reproducible in (False, True):
        with pytest.raises(Stop):
            runner.run_audit(AuditConfig(reproducible_noise=reproducible), store=None)  # type: ignore[arg-type]
    assert isinstance(seen[0], SystemRandomSource)
    assert isinstance(seen[1], SeededRandomSource)
