"""The honest summary of a run's privacy, for results.json: what holds, per whom.

Pure function of the configuration and what the run measured; no claim here is stronger than
what the mechanisms and the protocol actually give.
"""

from __future__ import annotations

from typing import Any

from .noise_source import OS_CSPRNG
from .randomized_response import flip_probability


def _holds(guarantee: str, against: str, not_against: str) -> dict[str, str]:
    return {"guarantee": guarantee, "against": against, "not_against": not_against}


def _protocol_guarantee(protocol: str, secure: bool, contributors: int) -> dict[str, str]:
    if not secure:
        return _holds(
            "none from the protocol: plaintext sends every mask in the clear",
            "nobody",
            "the server and anyone on the path",
        )
    return _holds(
        f"secure sum ({protocol}): the server learns only the sum over the "
        f"{contributors} contributors and who contributed",
        "the honest-but-curious server (additive: also a malicious server and "
        "coalitions below the threshold t; ckks: only if the key authority does not "
        "collude with the server)",
        "anyone who sees the released sum: it is exact without noise",
    )


def _rr_guarantee(rr_epsilon: float, weights: int) -> dict[str, str]:
    return _holds(
        f"local DP of randomized response: each submitted bit is "
        f"{rr_epsilon}-DP with respect to that client's true bit; the whole mask only "
        f"{rr_epsilon * weights:.4g}-DP (basic composition over d = {weights} weights), "
        "which is no meaningful bound on the mask as a whole",
        "everyone, including the server colluding with every other client "
        "(and with the ckks key authority), whatever the protocol",
        "inference from many weights together: the per-weight bound "
        "does not protect what the mask as a whole reveals (e.g. the topic)",
    )


def _statistics_guarantee(statistics: dict[str, Any]) -> dict[str, str]:
    return _holds(
        f"sample-level ({statistics['epsilon']}, {statistics['delta']})-DP "
        f"of each client's whole mask (Gaussian mechanism on clipped activation "
        f"statistics, {statistics['releases_made']} releases, accountant "
        f"{statistics['accountant']}, L2 sensitivity sqrt(2) C = "
        f"{statistics['sensitivity']}); replacing one calibration window (their number "
        "is public) changes what anyone can infer by at most that much",
        "everyone, including the server colluding with every other client "
        "and the key authority, whatever the protocol",
        "properties shared by all of a client's windows (its topic): "
        "the unit of privacy is one window, not the client",
    )


def _distributed_guarantee(report: dict[str, Any]) -> list[dict[str, str]]:
    unit = "one calibration window" if report["adjacency"].startswith("replace-one calibration")\
        else "one client's whole calibration set"  # fmt: skip
    return [
        _holds(
            f"({report['epsilon']}, {report['delta']})-DP of the released statistics and every "
            f"mask computed from them for replacing {unit} ({report['mechanism']} noise added "
            f"inside the secure sum, {report['releases_made']} release(s), epsilon spent "
            f"{report['epsilon_spent']}), as long as at least {report['min_survivors']} honest "
            "clients' noise shares are in each sum (the server refuses to decode fewer)",
            "the honest-but-curious server and anyone who sees only the released sums",
            f"a party that sees one client's residues (plaintext is refused; an additive server "
            f"with >= t colluding clients, a ckks server with the key authority): against it "
            f"only that client's share protects it, epsilon {report['epsilon_if_one_share_is_seen']}"
            "; clients colluding with the server, who subtract their own shares",
        )
    ]


def _seeded_noise_warning(noise_source: str) -> dict[str, str]:
    return _holds(
        "none of the above against whoever knows --seed: randomized "
        "response, DP noise and every protocol secret were derived from it "
        f"({noise_source})",
        "only parties that never see the seed",
        "anyone holding results.json, which records the seed",
    )


def privacy_report(
    *,
    protocol: str,
    protocol_secure: bool,
    weights: int,
    contributors: int,
    min_cohort: int,
    rr_epsilon: float | None,
    statistics: dict[str, Any] | None,
    noise_source: str = OS_CSPRNG,
    distributed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Describe, for one run, each guarantee and the adversaries it holds against.

    `weights` is d, the number of mask bits each client submits; `statistics` is
    `StatisticsMechanism.report()` of one client (all clients share the budget) or None.
    `noise_source` is `noise_source.describe(...)`: seeded noise voids every guarantee below
    against whoever knows the seed (results.json records it).
    """
    holds = [_protocol_guarantee(protocol, protocol_secure, contributors)]
    rr: dict[str, Any] | None = None
    if rr_epsilon is not None:
        rr = {
            "epsilon_per_weight": rr_epsilon,
            "flip_probability": flip_probability(rr_epsilon),
            "weights": weights,
            "epsilon_whole_mask": rr_epsilon * weights,
            "debiased_with_contributors": contributors,
        }
        holds.append(_rr_guarantee(rr_epsilon, weights))
    if statistics is not None:
        holds.append(_statistics_guarantee(statistics))
    if distributed is not None:
        holds += _distributed_guarantee(distributed)
    if noise_source != OS_CSPRNG:
        holds.append(_seeded_noise_warning(noise_source))
    return {
        "noise_source": noise_source,
        "cohort": {"contributors": contributors, "min_cohort": min_cohort},
        "randomized_response": rr,
        "statistics_dp": statistics,
        "distributed_dp": distributed,
        "guarantees": holds,
    }
