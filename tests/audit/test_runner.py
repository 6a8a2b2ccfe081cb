"""The audit sweep on a tiny random LLaMA: every point, the report, and resuming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedprllm_secure.audit import runner as runner_module
from fedprllm_secure.audit.config import AuditConfig
from fedprllm_secure.audit.plan import plan
from fedprllm_secure.audit.report import write_report
from fedprllm_secure.audit.runner import run_audit, store_settings
from fedprllm_secure.audit.store import PointStore
from fedprllm_secure.errors import ConfigError

TOPIC_WORDS = {
    "rivers": "water river flows cold sea delta bank stream fish boat",
    "stars": "light star sky night planet orbit moon sun galaxy comet",
    "trade": "market price coin sell buy goods bank ship port merchant",
    "music": "song voice drum note choir string tune dance beat hymn",
}


def write_corpus(folder: Path) -> Path:
    corpus = {}
    for t, (topic, words) in enumerate(TOPIC_WORDS.items()):
        vocabulary = words.split()
        for i in range(30):
            text = " ".join(vocabulary[(i * 7 + k * k + t) % len(vocabulary)] for k in range(120))
            corpus[f"{topic} article {i}"] = {"extract": text, "topic": topic}
    path = folder / "corpus.json"
    path.write_text(json.dumps(corpus))
    return path


class Interrupted(Exception):
    """Stands for a kill in the middle of a sweep."""


def tiny_config(model: Path, corpus: Path, **overrides) -> AuditConfig:
    settings = dict(
        model=str(model),
        corpus=str(corpus),
        protocols=["plaintext", "additive"],
        clients=[3],
        splits=["topic"],
        rr_epsilons=[1.0],
        dp_epsilons=[2.0],
        dp_clip=50.0,
        cost_clients=[3],
        samples_per_client=2,
        seqlen=32,
        eval_windows=2,
        device="cpu",
        leakage={"topics": 2, "shadows": 2, "targets": 2, "entries_per_layer": 256, "cohort": 2,
                 "samples_per_client": 2, "blocks": 1},
    )  # fmt: skip
    settings.update(overrides)
    return AuditConfig.load(None, settings)


def test_sweep_report_and_resume(tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    config = tiny_config(tiny_model_dir, write_corpus(tmp_path))
    store = PointStore(tmp_path / "out" / "points", store_settings(config))
    ids = [p.id for p in plan(config)]
    # Interrupt the sweep at the fourth point: the first three are stored, nothing else.
    original = runner_module.AuditRun.measure
    calls: list[str] = []
    armed = [True]

    def interrupted(self, point):
        calls.append(point.id)
        if armed[0] and len(calls) == 4:
            armed[0] = False
            raise Interrupted
        return original(self, point)

    monkeypatch.setattr(runner_module.AuditRun, "measure", interrupted)
    with pytest.raises(Interrupted):
        run_audit(config, store)
    assert sorted(store.all()) == sorted(ids[:3])
    # Resuming measures only the remaining points.
    calls.clear()
    results = run_audit(config, store)
    assert calls == ids[3:]
    assert sorted(results) == sorted(ids)
    none = results["utility-topic-c3-none"]
    assert none["contributors"] == 3 and none["perplexity"] > 1
    assert results["utility-topic-c3-dp-eps2"]["statistics_dp"]["releases_made"] == 2
    assert 0 < results["utility-topic-c3-rr-eps1"]["agreement_with_noiseless_mask"] < 1
    assert all(results[f"cost-{p}-c3"]["exact"] for p in ("plaintext", "additive"))
    leakage = results["leakage"]
    assert set(leakage["server_view"]) == {"plaintext", "additive"}
    # A finished sweep measures nothing.
    calls.clear()
    run_audit(config, store)
    assert calls == []
    written = write_report(tmp_path / "out", config, results)
    names = {p.name for p in written}
    assert {"report.md", "results.json", "results.csv", "perplexity_vs_epsilon.png",
            "cost_vs_clients.png", "leakage.png"} <= names  # fmt: skip
    assert all(p.stat().st_size > 0 for p in written)
    assert "What holds against whom" in (tmp_path / "out" / "report.md").read_text()


def test_points_of_other_settings_are_not_reused(tmp_path: Path) -> None:
    store = PointStore(tmp_path, {"seed": 0})
    store.save("dense", {"perplexity": 1.0})
    with pytest.raises(ConfigError, match="other audit settings"):
        PointStore(tmp_path, {"seed": 1}).load("dense")


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"protocols": ["nope"]}, "unknown protocol"),
        ({"clients": [0]}, "clients must be"),
        ({"rr_epsilons": [-1]}, "rr_epsilons"),
        ({"bogus": 1}, "unknown audit setting"),
        ({"leakage": {"bogus": 1}}, "unknown leakage setting"),
    ],
)
def test_bad_settings_are_config_errors(overrides: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        AuditConfig.load(None, overrides)


def test_config_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "grid.json"
    path.write_text(json.dumps({"clients": [2, 4], "rr_epsilons": [0.5]}))
    config = AuditConfig.load(path, {"rr_epsilons": [3.0], "clients": None})
    assert config.clients == [2, 4] and config.rr_epsilons == [3.0]
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        AuditConfig.load(path, {})


def test_the_sweep_says_what_it_is_doing(tiny_model_dir: Path, tmp_path: Path) -> None:
    from rich.console import Console

    from fedprllm_secure.cli.progress import RichProgress

    config = tiny_config(
        tiny_model_dir, write_corpus(tmp_path), protocols=["plaintext"], rr_epsilons=[],
        dp_epsilons=[],
    )  # fmt: skip
    store = PointStore(tmp_path / "out" / "points", store_settings(config))
    console = Console(record=True, force_terminal=True, width=140, color_system=None)
    run_audit(config, store, RichProgress(True, console))
    text = console.export_text()
    points = plan(config)
    assert f"audit: {len(points)} points, 0 already measured" in text
    assert "loading model" in text
    for k, point in enumerate(points, start=1):
        assert f"point {k}/{len(points)} ({point.id}): {point.describe()}" in text
    assert "perplexity of the federated mask: 3 clients, topic split, no noise" in text
    assert f"point {len(points)}/{len(points)}" in text and "ETA" in text


def test_stats_dp_points_measure_distributed_and_local_noise(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The audit's stats-mode points: distributed noise on the sum has the plan's std, about
    sqrt(n) below local noise at the same budget and clip (n = 3); client level is reported."""
    from fedprllm_secure.audit.plan import Point
    from fedprllm_secure.audit.runner import AuditRun
    from fedprllm_secure.randomness import SystemRandomSource

    config = tiny_config(tiny_model_dir, write_corpus(tmp_path), stats_dp_epsilons=[4.0])
    ids = {p.id for p in plan(config)}
    assert {"utility-topic-c3-ddp-eps4", "utility-topic-c3-ddp-client-eps4",
            "utility-topic-c3-ldp-stats-eps4"} <= ids  # fmt: skip
    run = AuditRun(config, SystemRandomSource())
    out = {m: run.measure(Point("utility", 3, "topic", m, 4.0))
           for m in ("ddp", "ddp-client", "ldp-stats")}  # fmt: skip
    for result in out.values():
        report = result["statistics_dp"]
        assert result["perplexity"] > 1
        assert report["measured_sum_std"] == pytest.approx(report["plan_sum_std"], rel=0.2)
    ratio = (
        out["ldp-stats"]["statistics_dp"]["measured_sum_std"]
        / (out["ddp"]["statistics_dp"]["measured_sum_std"])
    )
    assert ratio == pytest.approx(3**0.5, rel=0.2)
    assert "client" in out["ddp-client"]["statistics_dp"]["adjacency"]
    assert out["ddp"]["statistics_dp"]["epsilon_spent"] <= 4.0
