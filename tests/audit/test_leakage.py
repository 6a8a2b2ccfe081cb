"""The topic attacker beats chance on plaintext masks and is at chance on additive's server view.

Synthetic non-IID setup: 4 topics; a client's mask is Bernoulli with a topic-specific probability
per weight (as a Wanda mask depends on topic-specific activation statistics).
"""

from __future__ import annotations

import numpy as np
import pytest

from fedprllm_secure.audit.leakage import (
    accuracy_interval,
    bits_of,
    client_view,
    nearest_centroid_attack,
)
from fedprllm_secure.randomness import SeededRandomSource
from fedprllm_secure.secure_sum.api import AggregationSpec
from fedprllm_secure.secure_sum.session import SimulatedSession

TOPICS = ("art", "law", "sea", "war")
LENGTH = 2048


def topic_probabilities() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)  # public synthetic data, not a secret
    base = rng.uniform(0.3, 0.7, LENGTH)
    return {t: np.clip(base + rng.normal(0, 0.15, LENGTH), 0.02, 0.98) for t in TOPICS}


def synthetic_masks(rounds: int, seed: int) -> tuple[list[list[np.ndarray]], list[str]]:
    """`rounds` cohorts of one client per topic, topics dealt to client ids at random (client
    ids appear in every message, so a fixed id-to-topic map would leak through the id alone)."""
    probabilities = topic_probabilities()
    rng = np.random.default_rng(seed)
    cohorts, topics = [], []
    for _ in range(rounds):
        order = [TOPICS[i] for i in rng.permutation(len(TOPICS))]
        cohorts.append([(rng.random(LENGTH) < probabilities[t]).astype(np.uint8) for t in order])
        topics += order
    return cohorts, topics


def server_views(protocol: str, cohorts: list[list[np.ndarray]], label: str) -> list[np.ndarray]:
    views = []
    for number, masks in enumerate(cohorts):
        inputs = {c: (lambda _i, _chunk, m=m: m) for c, m in enumerate(masks)}
        session = SimulatedSession(
            protocol, inputs, SeededRandomSource(f"{label}-{number}"), record_payloads=True
        )
        session.aggregate(AggregationSpec.from_lengths(0, {"layer": LENGTH}, bound=1))
        views += [bits_of(client_view(session.bus.log.received, c)) for c in range(len(masks))]
    return views


@pytest.fixture(scope="module")
def cohorts():
    return synthetic_masks(3, seed=1), synthetic_masks(12, seed=2)


def test_attacker_beats_chance_on_plaintext_masks(cohorts) -> None:
    (shadow, shadow_topics), (targets, target_topics) = cohorts
    result = nearest_centroid_attack(
        [m for c in shadow for m in c],
        shadow_topics,
        [m for c in targets for m in c],
        target_topics,
    )
    assert result.chance == 0.25
    assert result.interval()[0] > 0.8


@pytest.mark.parametrize("protocol, leaks", [("plaintext", True), ("additive", False)])
def test_attacker_on_the_server_view(cohorts, protocol: str, leaks: bool) -> None:
    (shadow, shadow_topics), (targets, target_topics) = cohorts
    result = nearest_centroid_attack(
        server_views(protocol, shadow, "shadow"),
        shadow_topics,
        server_views(protocol, targets, "target"),
        target_topics,
    )
    low, high = result.interval()
    if leaks:  # power control: the same attacker reads the plaintext protocol's messages
        assert low > 0.8
    else:
        assert low <= result.chance <= high, result.as_dict()
        assert result.accuracy < 0.45


def test_wilson_interval() -> None:
    low, high = accuracy_interval(12, 48)
    assert low < 0.25 < high
    assert accuracy_interval(48, 48)[0] > 0.9
