"""The "What holds against whom" section of an audit report, computed from the points it has.

A mechanism is discussed only when the sweep measured it. An attacker's accuracy is compared
with chance through its 95% interval, and only when the attack had power: the plaintext-mask
attacker (nothing hides the topic there) must be above chance with an interval excluding it;
otherwise the section warns that nothing can be concluded at this sample size.
"""

from __future__ import annotations

from typing import Any

SECURE = ("additive", "ckks")


def _interval(view: dict[str, Any]) -> str:
    return f"{view['accuracy']:.2f} [{view['ci95_low']:.2f}, {view['ci95_high']:.2f}]"


def verdict(view: dict[str, Any], chance: float) -> str:
    """Where an attacker's 95% interval lies against chance, in words."""
    if view["ci95_low"] > chance:
        return f"above chance ({_interval(view)}): it leaks"
    if view["ci95_high"] < chance:
        return f"below chance ({_interval(view)}): no sign of leakage"
    return f"at chance ({_interval(view)})"


def _kinds(results: dict[str, dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in results.values() if r.get("point", {}).get("kind") == kind]


def _swept(results: dict[str, dict[str, Any]], mechanism: str) -> list[float]:
    epsilons = {
        r["point"]["epsilon"]
        for r in _kinds(results, "utility") + _kinds(results, "leakage-dp")
        if r["point"].get("mechanism") == mechanism
    }
    return sorted(epsilons)


def holds_section(
    results: dict[str, dict[str, Any]], leakage: dict[str, Any] | None, min_cohort: int
) -> list[str]:
    """The section's markdown lines (`leakage`: `report.combined_leakage(results)`)."""
    lines = ["", "## What holds against whom", ""]
    protocols = {r["point"]["protocol"] for r in _kinds(results, "cost")}
    if leakage:
        protocols |= set(leakage.get("server_view", {}))
    power = None
    if leakage:
        plain, chance = leakage["plaintext_mask"], leakage["plaintext_mask"]["chance"]
        power = plain["ci95_low"] > chance
        if power:
            lines.append(
                f"- The topic attack has power here: on the plaintext mask it scores "
                f"{_interval(plain)} against chance {chance:.2f} ({plain.get('targets', '?')} "
                "targets), so a protected view at chance is evidence, not a small sample."
            )
        else:
            lines.append(
                f"- **Warning: the attack has no power at this sample size.** The topic "
                f"attacker on the plaintext mask itself scores {_interval(plain)} against "
                f"chance {chance:.2f}, so a protected view that scores no better proves nothing. "
                "Measure more targets (leakage.targets) before concluding."
            )
    else:
        lines.append("- No leakage point was measured: nothing is concluded about what any "
                     "party learns of a client's topic.")  # fmt: skip
    secure = sorted(p for p in protocols if p in SECURE)
    if secure:
        lines.append(_secure_line(secure, leakage, power, min_cohort))
    if _swept(results, "rr"):
        lines.append(_rr_line(leakage, power))
    if _swept(results, "dp"):
        lines.append(_dp_line(leakage, power))
    lines += ["", "Threat models: `threat_models/README.md`.", ""]
    return lines


def _secure_line(
    secure: list[str], leakage: dict[str, Any] | None, power: bool | None, min_cohort: int
) -> str:
    names = ", ".join(f"`{p}`" for p in secure)
    text = f"- **Secure sum** ({names}): counts over fewer than {min_cohort} clients are never "
    text += "released; the server still learns the exact sum."
    if not leakage:
        return text
    chance = leakage["plaintext_mask"]["chance"]
    views = leakage.get("server_view", {})
    measured = [p for p in secure if p in views]
    if power and measured:
        parts = [f"`{p}` {verdict(views[p], chance)}" for p in measured]
        text += " The attacker on everything the server receives from one client: "
        text += "; ".join(parts) + "."
    aggregate = leakage.get("aggregate")
    if aggregate and power:
        text += (
            f" On the released sum of a cohort of {leakage['setup']['cohort']}: "
            f"{verdict(aggregate, chance)}."
        )
    return text


def _rr_line(leakage: dict[str, Any] | None, power: bool | None) -> str:
    text = ("- **Randomized response**: eps per weight against everyone (server, colluders, "
            "key authority); d x eps over the whole mask is vacuous.")  # fmt: skip
    if leakage and power and leakage.get("rr_mask"):
        chance = leakage["plaintext_mask"]["chance"]
        parts = [f"eps {e}: {verdict(v, chance)}" for e, v in leakage["rr_mask"].items()]
        text += " The topic attacker on the randomized mask: " + "; ".join(parts) + "."
    return text


def _dp_line(leakage: dict[str, Any] | None, power: bool | None) -> str:
    text = ("- **DP statistics**: (eps, delta) per client mask against everyone, for one "
            "calibration window; a property shared by all of a client's windows (its topic) "
            "is not protected by it.")  # fmt: skip
    if leakage and power and leakage.get("dp_stats_mask"):
        chance = leakage["plaintext_mask"]["chance"]
        parts = [f"eps {e}: {verdict(v, chance)}" for e, v in leakage["dp_stats_mask"].items()]
        text += " The topic attacker on the mask: " + "; ".join(parts) + "."
    return text
