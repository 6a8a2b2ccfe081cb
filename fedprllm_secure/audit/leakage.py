"""A topic-inference attacker and the views of a client it attacks.

The attacker knows the topics and holds labelled *shadow* views (views of clients whose topic it
knows, produced exactly as the target's view is: same model, same protocol, same layout). It
predicts a target's topic as the topic whose mean shadow feature vector is nearest (Euclidean) to
the target's features. Any view becomes features the same way: the bits of its bytes, or the 0/1
mask itself, or a normalised aggregate; views of different lengths are cut to the shortest.

Chance is 1 / number of topics when targets are balanced over topics; `accuracy_interval` gives a
Wilson interval so "beats chance" and "at chance" are statements with error bars.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..secure_sum.transport import Received


def bits_of(payloads: Sequence[bytes]) -> np.ndarray:
    """The features of a server view: every bit of the client's messages, in order, as float32."""
    joined = b"".join(payloads)
    return np.unpackbits(np.frombuffer(joined, dtype=np.uint8)).astype(np.float32)


def client_view(received: Sequence[Received], client: int) -> list[bytes]:
    """Everything the server received from `client` (needs a bus with record_payloads=True)."""
    view = []
    for message in received:
        if message.sender == client:
            if message.payload is None:
                raise ConfigError("the bus did not record payloads (use record_payloads=True)")
            view.append(message.payload)
    return view


@dataclass(frozen=True)
class AttackResult:
    """Accuracy of the attacker on the targets, against chance, with a 95% Wilson interval."""

    correct: int
    total: int
    chance: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        return accuracy_interval(self.correct, self.total, z)

    def as_dict(self) -> dict[str, float | int]:
        low, high = self.interval()
        return {
            "accuracy": round(self.accuracy, 4),
            "ci95_low": round(low, 4),
            "ci95_high": round(high, 4),
            "chance": round(self.chance, 4),
            "targets": self.total,
        }


def accuracy_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if total == 0:
        return (0.0, 1.0)
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def _stack(features: Sequence[np.ndarray], length: int) -> np.ndarray:
    return np.stack([np.asarray(f, dtype=np.float32).reshape(-1)[:length] for f in features])


def nearest_centroid_attack(
    shadow: Sequence[np.ndarray],
    shadow_topics: Sequence[str],
    targets: Sequence[np.ndarray],
    target_topics: Sequence[str],
) -> AttackResult:
    """Predict each target's topic by the nearest mean shadow feature vector; score the guesses."""
    if not shadow or not targets:
        raise ConfigError("the attack needs shadow and target views")
    topics = sorted(set(shadow_topics))
    length = min(min(f.size for f in shadow), min(f.size for f in targets))
    shadow_x, target_x = _stack(shadow, length), _stack(targets, length)
    labels = np.array(shadow_topics)
    centroids = np.stack([shadow_x[labels == t].mean(axis=0) for t in topics])
    distances = (
        (target_x**2).sum(axis=1, keepdims=True)
        - 2 * target_x @ centroids.T
        + (centroids**2).sum(axis=1)[None, :]
    )
    guesses = [topics[int(i)] for i in distances.argmin(axis=1)]
    correct = sum(g == t for g, t in zip(guesses, target_topics, strict=True))
    return AttackResult(correct, len(targets), 1.0 / len(topics))
