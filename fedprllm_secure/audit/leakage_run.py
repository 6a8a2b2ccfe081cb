"""The leakage experiment on a real model: can a curious server tell a client's topic?

Topic-pure clients (disjoint articles of one topic each); masks of the first `blocks` decoder
blocks, sliced to the first `entries_per_layer` entries of each layer. The attacker
(`leakage.nearest_centroid_attack`) labels its reference views with shadow clients and attacks:

(a) each target's plaintext mask (also after randomized response at each RR epsilon, and with DP
    statistics at each DP epsilon: the sigma of the full-model budget);
(b) everything the server receives from the target under each protocol, in cohorts of `cohort`
    clients whose ids are dealt at random (ids must not encode the topic);
(c) the released aggregate of the target's cohort (the same for every member).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from .. import data
from ..pipeline.layout import unpack
from ..pipeline.workbench import Workbench
from ..privacy.randomized_response import randomize_bits
from ..randomness import RandomSource, random_below
from .config import AuditConfig
from .leakage import bits_of, client_view, nearest_centroid_attack
from .sessions import calibrate, sum_bits


def _topic_clients(articles: list[data.Article], config: AuditConfig) -> list[data.ClientText]:
    """`shadows + targets` topic-pure clients for each of the `topics` largest topics."""
    leak = config.leakage
    pool, _ = data.heldout_split(articles)
    by_topic: dict[str, list[data.Article]] = {}
    for article in pool:
        by_topic.setdefault(article.topic, []).append(article)
    topics = sorted(by_topic, key=lambda t: (-len(by_topic[t]), t))[: leak.topics]
    shuffler = random.Random(config.seed)  # deals public articles; nothing secret depends on it
    clients = []
    per_topic = leak.shadows + leak.targets
    for topic in topics:
        articles = list(by_topic[topic])
        shuffler.shuffle(articles)
        for i in range(per_topic):
            texts = tuple(a.text for a in articles[i::per_topic])
            clients.append(data.ClientText(f"{topic}-{i}", texts, (topic,)))
    return clients


def _slice(packed: dict[str, np.ndarray], lengths: dict[str, int], entries: int) -> np.ndarray:
    return np.concatenate(
        [unpack(packed[name], length)[:entries] for name, length in lengths.items()]
    )


def _cohorts(members: list[int], size: int, source: RandomSource) -> list[list[int]]:
    """Members shuffled (Fisher-Yates from `source`) and cut into cohorts of at least `size`."""
    order = list(members)
    for i in range(len(order) - 1, 0, -1):
        j = random_below(source, i + 1)
        order[i], order[j] = order[j], order[i]
    cohorts = [order[i : i + size] for i in range(0, len(order), size)]
    if len(cohorts) > 1 and len(cohorts[-1]) < size:
        cohorts[-2] += cohorts.pop()
    return cohorts


def _server_views(
    protocol: str, vectors: list[np.ndarray], cohorts: list[list[int]], source: RandomSource
) -> dict[int, np.ndarray]:
    views = {}
    for number, cohort in enumerate(cohorts):
        inputs = {slot: (lambda _i, _c, v=vectors[m]: v) for slot, m in enumerate(cohort)}
        _, session, _ = sum_bits(
            protocol,
            inputs,
            {"slice": vectors[0].size},
            source.child(f"{protocol}-{number}"),
            record_payloads=True,
        )
        for slot, member in enumerate(cohort):
            views[member] = bits_of(client_view(session.bus.log.received, slot))
    return views


class _Setup:
    """The topic-pure clients, their samples, who is shadow and who is target, the slice."""

    def __init__(self, bench: Workbench, articles: list[data.Article], config: AuditConfig) -> None:
        leak = config.leakage
        self.bench, self.config = bench, config
        self.clients = _topic_clients(articles, config)
        self.samples = [
            data.calibration_samples(bench.tokenizer, c, leak.samples_per_client, config.seqlen)
            for c in self.clients
        ]
        self.blocks = min(leak.blocks, bench.blocks)
        self.limit = self.blocks if self.blocks < bench.blocks else None
        self.lengths = {
            layer.name: layer.numel for layer in bench.layers if layer.block < self.blocks
        }
        self.topics = [c.topics[0] for c in self.clients]
        per_topic = leak.shadows + leak.targets
        indices = range(len(self.clients))
        self.shadow = [i for i in indices if i % per_topic < leak.shadows]
        self.targets = [i for i in indices if i % per_topic >= leak.shadows]

    def vectors(self, dp_epsilon: float | None, source: RandomSource) -> list[np.ndarray]:
        """Every client's sliced mask; with DP statistics at the full model's sigma (one
        release per block of the whole model, applied to the blocks computed here)."""
        vectors = []
        for index, samples in enumerate(self.samples):
            packed, _ = calibrate(
                self.bench.model,
                samples,
                self.config,
                dp_epsilon=dp_epsilon,
                releases=self.bench.blocks,
                source=source.child(f"dp/{dp_epsilon}/{index}"),
                max_blocks=self.limit,
            )
            vectors.append(_slice(packed, self.lengths, self.config.leakage.entries_per_layer))
        return vectors

    def attack(self, shadow_x: list[np.ndarray], target_x: list[np.ndarray]) -> dict[str, Any]:
        return nearest_centroid_attack(
            shadow_x,
            [self.topics[i] for i in self.shadow],
            target_x,
            [self.topics[i] for i in self.targets],
        ).as_dict()

    def describe(self, entries: int) -> dict[str, Any]:
        return {
            "topics": sorted(set(self.topics)),
            "shadow_clients": len(self.shadow),
            "target_clients": len(self.targets),
            "blocks": self.blocks,
            "entries": entries,
            "cohort": self.config.leakage.cohort,
        }


def run_leakage(
    bench: Workbench, articles: list[data.Article], config: AuditConfig, source: RandomSource
) -> dict[str, Any]:
    """Views (a) plaintext and RR masks, (b) server views per protocol, (c) the aggregate."""
    setup = _Setup(bench, articles, config)
    vectors = setup.vectors(None, source)
    shadow, targets = setup.shadow, setup.targets
    results: dict[str, Any] = {
        "setup": setup.describe(int(vectors[0].size)),
        "plaintext_mask": setup.attack([vectors[i] for i in shadow], [vectors[i] for i in targets]),
        "rr_mask": {},
        "server_view": {},
    }
    for epsilon in config.rr_epsilons:
        noisy = [
            randomize_bits(vectors[i], epsilon, source.child(f"rr/{epsilon}/{i}")) for i in targets
        ]
        results["rr_mask"][str(epsilon)] = setup.attack([vectors[i] for i in shadow], noisy)
    shadow_cohorts = _cohorts(shadow, config.leakage.cohort, source.child("shadow-cohorts"))
    target_cohorts = _cohorts(targets, config.leakage.cohort, source.child("target-cohorts"))
    for protocol in config.protocols:
        seen = {
            **_server_views(protocol, vectors, shadow_cohorts, source.child(f"s/{protocol}")),
            **_server_views(protocol, vectors, target_cohorts, source.child(f"t/{protocol}")),
        }
        results["server_view"][protocol] = setup.attack(
            [seen[i] for i in shadow], [seen[i] for i in targets]
        )
    aggregates = {}
    for cohort in target_cohorts:
        mean = np.mean([vectors[m] for m in cohort], axis=0)
        aggregates.update({m: mean for m in cohort})
    results["aggregate"] = setup.attack(
        [vectors[i] for i in shadow], [aggregates[i] for i in targets]
    )
    return results


def run_leakage_dp(
    bench: Workbench,
    articles: list[data.Article],
    config: AuditConfig,
    epsilon: float | None,
    source: RandomSource,
) -> dict[str, Any]:
    """View (a) when every client (shadows too) calibrates with DP statistics at `epsilon`."""
    setup = _Setup(bench, articles, config)
    vectors = setup.vectors(epsilon, source)
    result = setup.attack([vectors[i] for i in setup.shadow], [vectors[i] for i in setup.targets])
    return {**result, "setup": setup.describe(int(vectors[0].size))}
