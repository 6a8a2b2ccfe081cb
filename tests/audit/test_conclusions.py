"""The audit report's conclusions come from its points: only swept mechanisms are discussed, and
"at chance" is said only when the attack had power. The plots: integer client ticks, legends
outside the data, distinguishable curves, one panel per epsilon kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedprllm_secure.audit import plots
from fedprllm_secure.audit.conclusions import holds_section, verdict
from fedprllm_secure.audit.report import combined_leakage


def _view(accuracy: float, low: float, high: float) -> dict[str, Any]:
    return {"accuracy": accuracy, "ci95_low": low, "ci95_high": high, "chance": 0.25,
            "targets": 16}  # fmt: skip


def _leakage(plain: dict[str, Any], additive: dict[str, Any]) -> dict[str, Any]:
    return {
        "setup": {"cohort": 4},
        "plaintext_mask": plain,
        "rr_mask": {},
        "server_view": {"plaintext": plain, "additive": additive},
        "aggregate": _view(0.5, 0.28, 0.72),
    }


def _text(results: dict[str, dict[str, Any]]) -> str:
    return "\n".join(holds_section(results, combined_leakage(results), 3))


def test_verdict_reads_the_interval() -> None:
    assert verdict(_view(0.12, 0.04, 0.36), 0.25).startswith("at chance (0.12 [0.04, 0.36])")
    assert verdict(_view(0.88, 0.64, 0.96), 0.25).startswith("above chance")
    assert verdict(_view(0.02, 0.01, 0.2), 0.25).startswith("below chance")


def test_at_chance_only_when_the_attack_has_power() -> None:
    powerful = {"leakage": _leakage(_view(0.88, 0.64, 0.96), _view(0.12, 0.04, 0.36))}
    text = _text(powerful)
    assert "`additive` at chance (0.12 [0.04, 0.36])" in text and "has power" in text
    assert "no power" not in text
    # The plaintext attacker itself at chance: a warning, and no "at chance" conclusion.
    weak = {"leakage": _leakage(_view(0.38, 0.18, 0.61), _view(0.25, 0.1, 0.49))}
    text = _text(weak)
    assert "no power at this sample size" in text
    assert "at chance" not in text and "it leaks" not in text


def test_only_swept_mechanisms_are_discussed() -> None:
    cost = {"cost-plaintext-c3": {"point": {"kind": "cost", "protocol": "plaintext"}}}
    text = _text(cost)
    assert "Secure sum" not in text and "ckks" not in text
    assert "Randomized response" not in text and "DP statistics" not in text
    assert "No leakage point was measured" in text
    rr = {
        "u": {"point": {"kind": "utility", "mechanism": "rr", "epsilon": 2.0}},
        "cost-additive-c3": {"point": {"kind": "cost", "protocol": "additive"}},
    }
    text = _text(rr)
    assert "Randomized response" in text and "`additive`" in text
    assert "DP statistics" not in text and "ckks" not in text


def _cost_rows(counts: list[int]) -> dict[str, dict[str, Any]]:
    return {
        f"{p}-{n}": {
            "point": {"kind": "cost", "clients": n, "protocol": p},
            "uplink_bytes_per_client": 1e6 * (i + 1),
            "seconds": 1.0,
        }  # fmt: skip
        for i, p in enumerate(("plaintext", "additive"))
        for n in counts
    }


def test_one_client_count_gives_one_integer_tick() -> None:
    fig = plots.cost_figure(_cost_rows([3]))
    for ax in fig.axes:
        assert list(ax.get_xticks()) == [3]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["3"]
    fig = plots.cost_figure(_cost_rows([3, 5, 8]))
    assert list(fig.axes[0].get_xticks()) == [3, 5, 8]


def _utility_rows() -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {"dense": {"perplexity": 14.0}}
    for split in ("iid", "topic"):
        for mechanism, epsilons in (("rr", (1.0, 2.0, 4.0)), ("dp", (8.0, 32.0))):
            for e in epsilons:
                rows[f"{split}-{mechanism}-{e}"] = {
                    "point": {
                        "kind": "utility",
                        "clients": 4,
                        "split": split,
                        "mechanism": mechanism,
                        "epsilon": e,
                    },  # fmt: skip
                    "perplexity": 100.0 / e + 36,  # the two splits overlap exactly
                }
    return rows


def test_epsilon_panels_legend_outside_and_distinct_curves(tmp_path: Path) -> None:
    fig = plots.perplexity_figure(_utility_rows())
    fig.canvas.draw()
    axes = fig.axes
    assert len(axes) == 2
    assert "per weight" in axes[0].get_xlabel() and "per client mask" in axes[1].get_xlabel()
    for ax in axes:  # no panel mixes the two kinds of budget
        xs = {x for line in ax.get_lines() for x in line.get_xdata() if len(line.get_xdata()) > 2}
        assert xs <= {1.0, 2.0, 4.0} or xs <= {8.0, 32.0}
        curves = [line for line in ax.get_lines() if line.get_marker() not in (None, "None")]
        styles = {(line.get_marker(), line.get_linestyle()) for line in curves}
        assert len(curves) == 2 and len(styles) == 2  # overlapping curves stay distinguishable
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    legend = axes[-1].get_legend().get_window_extent(renderer)
    for ax in axes:
        assert not legend.overlaps(ax.get_window_extent(renderer))
    plots.perplexity_vs_epsilon(_utility_rows(), tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
