"""Calibration and whole simulations on a tiny random LLaMA (no download)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fedprllm_secure.client import calibrate
from fedprllm_secure.client.calibrate import (
    block_statistics,
    capture_block_inputs,
    local_masks,
    masked_weights,
    run_block,
)
from fedprllm_secure.client.scores import row_mask, wanda_scores
from fedprllm_secure.config import (
    DataConfig,
    FederationConfig,
    ProtocolConfig,
    PruningConfig,
    RunConfig,
)
from fedprllm_secure.model import block_linears, decoder_blocks, load_model, prunable_layers
from fedprllm_secure.pipeline import Pipeline, run
from fedprllm_secure.pipeline.strategies import Server
from fedprllm_secure.pipeline.timer import Timer
from fedprllm_secure.privacy.settings import PrivacySettings
from fedprllm_secure.progress import SilentProgress
from fedprllm_secure.secure_sum.additive.layout import WordLayout
from fedprllm_secure.secure_sum.api import AggregationSpec
from fedprllm_secure.secure_sum.messages import decode
from fedprllm_secure.secure_sum.packing import unpack_uint

from .conftest import add_fourth_client, make_tiny_model


def tiny_samples(count: int, seqlen: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (count, seqlen), generator=torch.Generator().manual_seed(seed))


def test_layout_is_every_linear_of_every_block_in_order() -> None:
    model = make_tiny_model(layers=2)
    names = [layer.name for layer in prunable_layers(model)]
    assert len(names) == 14
    assert names[:7] == [
        f"model.layers.0.{n}"
        for n in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                  "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    ]  # fmt: skip


def test_one_shot_equals_sequential_on_a_one_block_model() -> None:
    model = make_tiny_model(layers=1)
    samples = tiny_samples(5)
    one_shot, stats_a = local_masks(model, samples, 0.5, calibration="one-shot", batch_size=2)
    sequential, stats_b = local_masks(model, samples, 0.5, calibration="sequential", batch_size=3)
    assert one_shot.keys() == sequential.keys()
    for name in one_shot:
        assert torch.equal(one_shot[name], sequential[name])
        assert torch.allclose(stats_a[name].sq_sum, stats_b[name].sq_sum)


def test_sequential_block_inputs_come_from_the_clients_own_pruned_blocks() -> None:
    model = make_tiny_model(layers=2)
    samples = tiny_samples(4)
    masks, stats = local_masks(model, samples, 0.5, calibration="sequential")
    # Recompute block 1's statistics by hand: block 0 pruned with the client's own masks.
    inputs = capture_block_inputs(model, samples)
    block0 = block_linears(model, 0)
    with masked_weights(block0, masks):
        inputs = run_block(decoder_blocks(model)[0], inputs)
    expected, _ = block_statistics(decoder_blocks(model)[1], block_linears(model, 1), inputs, False)
    for layer in block_linears(model, 1):
        assert torch.allclose(stats[layer.name].sq_sum, expected[layer.name].sq_sum)
        assert torch.equal(
            masks[layer.name],
            row_mask(wanda_scores(layer.module.weight, expected[layer.name].sq_mean), 0.5),
        )
    # And they differ from the dense (one-shot) statistics.
    _, dense = local_masks(model, samples, 0.5, calibration="one-shot")
    name = block_linears(model, 1)[0].name
    assert not torch.allclose(stats[name].sq_sum, dense[name].sq_sum)
    # The model is left dense.
    assert all(bool((layer.module.weight != 0).all()) for layer in prunable_layers(model))


SECTIONS = {
    "data": (DataConfig, {f for f in DataConfig.__dataclass_fields__}),
    "pruning": (PruningConfig, {f for f in PruningConfig.__dataclass_fields__}),
}


def config_for(tiny_model_dir: Path, client_dir: Path, **overrides) -> RunConfig:
    """A tiny run's RunConfig; `overrides` by field name (protocol, protocol_options, drop,
    privacy, reproducible_noise, or any field of DataConfig / PruningConfig / RunConfig)."""
    settings: dict = dict(samples_per_client=2, seqlen=32, eval_windows=3)
    settings.update(overrides)
    privacy = settings.pop("privacy", PrivacySettings())
    if settings.pop("reproducible_noise", False):
        privacy = replace(privacy, reproducible_noise=True)
    sections = {
        name: kind(**{k: settings.pop(k) for k in list(settings) if k in fields})
        for name, (kind, fields) in SECTIONS.items()
    }
    sections["data"] = replace(
        sections["data"],
        client_data=str(client_dir),
        eval_text=str(client_dir.parent / "eval.txt"),
    )
    protocol = ProtocolConfig(
        settings.pop("protocol", "plaintext"), settings.pop("protocol_options", {})
    )
    federation = FederationConfig(drop=settings.pop("drop", {}))
    return RunConfig(
        model=str(tiny_model_dir),
        device=settings.pop("device", "cpu"),
        protocol=protocol,
        federation=federation,
        privacy=privacy,
        **sections,
        **settings,
    )


def server_for(pipe: Pipeline, config: RunConfig | None = None) -> Server:
    """The server side of a fedprllm run on `pipe` (to drive its steps one by one)."""
    return Server(
        config or pipe.config, pipe.bench, pipe.federation, Timer(), SilentProgress(),
        pipe.described,
    )  # fmt: skip


def test_counts_equal_the_sum_of_client_masks(tiny_model_dir: Path, client_dir: Path) -> None:
    pipe = Pipeline(config_for(tiny_model_dir, client_dir))
    server = server_for(pipe)
    server.calibrate("masks")
    session = server.open_session()
    server.command("prepare", {"aggregation": 0, "upload": "masks"})
    sums, contributors = server.sum(session, AggregationSpec.from_lengths(0, pipe.bench.lengths, 1))
    assert contributors == 3
    local = pipe.local()
    for layer in pipe.bench.layers:
        expected = sum(local[c][layer.name].astype(np.int64) for c in range(3))
        assert np.array_equal(sums[layer.name].reshape(expected.shape), expected)


def test_one_client_equals_centralized(
    tiny_model_dir: Path, client_dir: Path, tmp_path: Path
) -> None:
    single = tmp_path / "single"
    single.mkdir()
    (single / "only.txt").write_text((client_dir / "alice.txt").read_text())
    for group in ("layer", "row"):
        results = run(
            config_for(
                tiny_model_dir, single, group=group, methods=("fedprllm", "centralized", "local")
            )
        )
        ppl = results["perplexity"]
        assert ppl["fedprllm"] == ppl["centralized"] == ppl["local_mean"]
        assert ppl["fedprllm"] != ppl["dense"]


def test_simulation_results_and_dropouts(tiny_model_dir: Path, client_dir: Path) -> None:
    results = run(
        config_for(
            tiny_model_dir, client_dir, drop={1: "input"}, calibration="one-shot", scaling=True
        )
    )
    assert results["protocol"]["contributors"] == [0, 2]
    assert results["protocol"]["dropped"] == [1]
    assert results["sparsity"]["fedprllm"]["overall"] == pytest.approx(0.5)
    assert results["model"]["prunable_layers"] == 14
    assert results["data"]["eval"]["windows"] == 3


def test_magnitude_pruner_needs_no_calibration(tiny_model_dir: Path, client_dir: Path) -> None:
    results = run(
        config_for(
            tiny_model_dir, client_dir, pruner="magnitude", methods=("fedprllm", "centralized")
        )
    )
    assert results["perplexity"]["fedprllm"] == results["perplexity"]["centralized"]


def test_saved_model_loads_with_from_pretrained(
    tiny_model_dir: Path, client_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    run(config_for(tiny_model_dir, client_dir), save_model_to=tmp_path / "saved")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    zeros = sum(int((layer.module.weight == 0).sum()) for layer in prunable_layers(model))
    total = sum(layer.numel for layer in prunable_layers(model))
    assert zeros / total == pytest.approx(0.5, abs=0.01)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_masks_equal_cpu_masks(tiny_model_dir: Path) -> None:
    samples = tiny_samples(6)
    cpu = load_model(str(tiny_model_dir), "cpu").model
    gpu = load_model(str(tiny_model_dir), "cuda").model
    for calibration in ("one-shot", "sequential"):
        a, _ = local_masks(cpu, samples, 0.5, calibration=calibration)
        b, _ = local_masks(gpu, samples, 0.5, calibration=calibration)
        differing = sum(int((a[n] != b[n]).sum()) for n in a)
        total = sum(a[n].numel() for n in a)
        assert differing / total < 1e-3  # float rounding can swap near-ties only


@pytest.mark.parametrize(
    "protocol, drop_round, options",
    [
        ("additive", "masked-input", {}),
        ("additive", "share-keys", {}),
        ("ckks", "encrypted-input", {}),
        ("ckks", "encrypted-input", {"he_scheme": "bfv"}),
    ],
)
def test_secure_protocols_give_the_plaintext_pruned_model(
    tiny_model_dir: Path, client_dir: Path, protocol: str, drop_round: str, options: dict
) -> None:
    clients = 3
    if protocol == "additive":
        # additive clients act on a survivor list only with a quorum of max(t, floor(2n/3) + 1)
        # signatures: with three clients no one may drop, so a fourth joins.
        add_fourth_client(client_dir)
        clients = 4

    def global_masks(name: str, drop: dict[int, str], opts: dict) -> tuple[dict, dict]:
        # Two survivors of three: below the default minimum cohort, lowered on purpose.
        config = config_for(
            tiny_model_dir,
            client_dir,
            protocol=name,
            drop=drop,
            protocol_options=opts,
            privacy=PrivacySettings(min_cohort=2),
        )
        result = Pipeline(config).fedprllm()
        return result.masks, result.protocol

    for dropped in ({}, {1: drop_round}):
        reference, plain = global_masks("plaintext", {c: "input" for c in dropped}, {})
        secure, report = global_masks(protocol, dropped, options)
        assert (
            report["contributors"]
            == plain["contributors"]
            == [c for c in range(clients) if c not in dropped]
        )
        assert report["secure"] and not plain["secure"]
        for name in reference:
            assert np.array_equal(reference[name], secure[name])


def test_iterative_equals_one_shot_on_a_one_block_model(
    tiny_one_block_dir: Path, client_dir: Path
) -> None:
    def masks(mode: str) -> dict:
        config = config_for(
            tiny_one_block_dir,
            client_dir,
            mode=mode,
            protocol="additive",
            protocol_options={"threshold": 2},
        )
        return Pipeline(config).fedprllm().masks

    one_shot, iterative = masks("one-shot"), masks("iterative")
    for name in one_shot:
        assert np.array_equal(one_shot[name], iterative[name])


def test_iterative_clients_see_the_globally_pruned_blocks(
    tiny_model_dir: Path, client_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Block 1's client statistics are computed on inputs from the *global* pruned block 0."""
    from fedprllm_secure.client import calibrate

    config = config_for(tiny_model_dir, client_dir, mode="iterative")
    pipe = Pipeline(config)
    model = pipe.bench.model
    seen: list[tuple[int, dict]] = []
    original = calibrate.BlockwiseCalibration.statistics

    def spy(self: calibrate.BlockwiseCalibration) -> dict:
        stats = original(self)
        seen.append((self.index, {n: s.sq_sum.clone() for n, s in stats.items()}))
        return stats

    monkeypatch.setattr(calibrate.BlockwiseCalibration, "statistics", spy)
    result = pipe.fedprllm()
    masks = result.masks
    block0 = block_linears(model, 0)
    for client, node in sorted(pipe.federation.nodes.items()):
        samples = node.samples(2, 32)
        inputs = capture_block_inputs(model, samples, config.pruning.batch_size)
        with masked_weights(block0, {k: torch.as_tensor(v) for k, v in masks.items()}):
            inputs = run_block(decoder_blocks(model)[0], inputs)
        expected, _ = block_statistics(
            decoder_blocks(model)[1], block_linears(model, 1), inputs, False
        )
        observed = [stats for index, stats in seen if index == 1][client]
        for name, value in expected.items():
            assert torch.allclose(observed[name], value.sq_sum)
    assert result.protocol["aggregations"] == 2
    assert all(bool((layer.module.weight != 0).all()) for layer in pipe.bench.layers)  # dense


def test_a_session_reused_over_blocks_never_repeats_a_keystream(
    tiny_model_dir: Path, client_dir: Path, recorded_sessions: list
) -> None:
    """Iterative additive: every masked upload of every block differs from every other one."""
    config = config_for(
        tiny_model_dir,
        client_dir,
        mode="iterative",
        protocol="additive",
        protocol_options={"threshold": 2},
    )
    pipe = Pipeline(config)
    pipe.fedprllm()
    assert len(recorded_sessions) == 1  # one session for all blocks

    uploads = [
        decode(r.payload)
        for r in recorded_sessions[0].bus.log.received
        if r.tag == "additive/masked-input"
    ]
    assert len(uploads) == 3 * 14  # 3 clients x 7 layers x 2 blocks
    assert {u.aggregation for u in uploads} == {0, 1}
    # Inputs are bits of 3 clients: radix 4, 32 entries per 64-bit word. Had two uploads reused
    # one keystream, their difference plus pack(ones) would be pack(x1 - x2 + 1), whose base-4
    # digits (the 2-bit fields of the words) lie in {0, 1, 2}, never 3. With fresh keystreams
    # about a quarter of the digits are 3.
    layout = WordLayout.for_max_sum(3)
    assert (layout.radix, layout.per_word, layout.bits) == (4, 32, 64)
    words = []
    for u in uploads:
        length = pipe.bench.layers[u.chunk_index].numel
        ones = layout.pack(np.ones(length, dtype=np.uint8))
        words.append((unpack_uint(u.data, layout.bits, layout.words(length)), ones))
    for i in range(len(words)):
        for j in range(i + 1, len(words)):
            (a, ones), (b, _) = words[i], words[j]
            if a.shape == b.shape:
                shifted = a - b + ones  # wraps mod 2^64
                digits = unpack_uint(shifted.astype("<u8").tobytes(), 2, shifted.size * 32)
                assert np.mean(digits == 3) > 0.1


@pytest.mark.parametrize(
    "protocol, options",
    [
        ("plaintext", {}),
        ("additive", {"threshold": 2}),
        ("ckks", {}),
        ("ckks", {"he_scheme": "bfv"}),
    ],
)
@pytest.mark.parametrize("calibration", ["one-shot", "sequential"])
def test_stats_mode_gives_exactly_the_centralized_mask(
    tiny_model_dir: Path, client_dir: Path, protocol: str, options: dict, calibration: str
) -> None:
    precision = 48  # sent as two 24-bit limbs, which every protocol carries exactly
    config = config_for(
        tiny_model_dir,
        client_dir,
        protocol=protocol,
        protocol_options=options,
        aggregate="stats",
        calibration=calibration,
        stats_precision_bits=precision,
    )
    pipe = Pipeline(config)
    result = pipe.fedprllm()
    centralized = pipe.centralized()
    for name, mask in centralized.items():
        assert np.array_equal(result.masks[name], mask), name
    rounds = 1 if calibration == "one-shot" else 2
    assert result.protocol["aggregations"] == 2 * rounds
    assert all(bool((layer.module.weight != 0).all()) for layer in pipe.bench.layers)


def test_shared_input_groups_follow_the_architecture() -> None:
    model = make_tiny_model(layers=1)
    walk = calibrate.BlockwiseCalibration(model, tiny_samples(2))
    layers = walk.layers
    groups = calibrate.shared_input_groups(layers, walk.statistics())
    short = [[name.rsplit(".", 1)[-1] for name in group] for group in groups]
    assert short == [
        ["q_proj", "k_proj", "v_proj"],
        ["o_proj"],
        ["gate_proj", "up_proj"],
        ["down_proj"],
    ]
