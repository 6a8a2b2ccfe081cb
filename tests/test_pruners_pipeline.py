"""Every pruning method federated: stats mode equals centralized bit for bit; masks mode keeps
the sparsity type and OWL's targets; a 2:4 model saved and reloaded is 2:4."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedprllm_secure.client.methods import PruneMethod
from fedprllm_secure.model import prunable_layers
from fedprllm_secure.pipeline import Pipeline, run

from .test_pipeline import config_for

METHODS = {
    "ria": dict(pruner="ria"),
    "ria-owl": dict(pruner="ria", layerwise="owl", owl_lambda=0.1),
    "wanda-owl-dsnot": dict(layerwise="owl", owl_lambda=0.1, refine="dsnot"),
    "ria-dsnot": dict(pruner="ria", refine="dsnot"),
    "ria-2:4": dict(pruner="ria", sparsity_type="2:4"),
    "wanda-4:8": dict(sparsity_type="4:8"),
}
PROTOCOLS = {"plaintext": {}, "additive": {"threshold": 2}, "ckks": {}}


def assert_n_m(mask: np.ndarray, kept: int, group: int) -> None:
    grouped = np.asarray(mask).reshape(mask.shape[0], -1, group)
    assert bool(((~grouped).sum(axis=2) == kept).all())


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_stats_mode_equals_the_centralized_method_bit_for_bit(
    tiny_model_dir: Path, client_dir: Path, method: str, protocol: str
) -> None:
    calibrations = ("one-shot", "sequential") if protocol == "plaintext" else ("one-shot",)
    for calibration in calibrations:
        config = config_for(
            tiny_model_dir, client_dir, aggregate="stats", calibration=calibration,
            protocol=protocol, protocol_options=PROTOCOLS[protocol], **METHODS[method],
        )  # fmt: skip
        pipe = Pipeline(config)
        result = pipe.fedprllm()
        centralized = pipe.centralized()
        wanda = pipe.centralized(config_for(
            tiny_model_dir, client_dir, aggregate="stats", calibration=calibration,
        ))  # fmt: skip
        assert set(result.masks) == set(centralized)
        for name, mask in centralized.items():
            assert np.array_equal(result.masks[name], mask), (calibration, name)
        # the method matters: its mask is not plain Wanda's
        assert any(not np.array_equal(centralized[n], wanda[n]) for n in wanda), calibration
        n_m = PruneMethod.of(config.pruning).n_m
        if n_m is not None:
            for mask in result.masks.values():
                assert_n_m(mask, *n_m)


def test_dsnot_refines_the_mask_it_starts_from(tiny_model_dir: Path, client_dir: Path) -> None:
    one_shot = dict(pruner="ria", calibration="one-shot")  # later inputs stay dense
    plain = Pipeline(config_for(tiny_model_dir, client_dir, **one_shot))
    refined = plain.centralized(config_for(tiny_model_dir, client_dir, **one_shot,
                                           refine="dsnot"))  # fmt: skip
    base = plain.centralized()
    changed = [n for n in base if not np.array_equal(base[n], refined[n])]
    assert changed and all(".mlp." not in n for n in changed)  # attention linears only
    for name in changed:  # one-for-one swaps: every row keeps its pruned count
        assert np.array_equal(base[name].sum(axis=1), refined[name].sum(axis=1))


def test_masks_mode_keeps_n_m_and_the_owl_targets(tiny_model_dir: Path, client_dir: Path) -> None:
    pipe = Pipeline(config_for(tiny_model_dir, client_dir, sparsity_type="2:4", group="layer"))
    for mask in pipe.fedprllm().masks.values():
        assert_n_m(mask, 2, 4)
    owl = config_for(tiny_model_dir, client_dir, layerwise="owl", owl_lambda=0.1, group="row")
    result = pipe.fedprllm(owl)
    local = pipe.local(owl)
    for name, mask in result.masks.items():
        local_sparsity = np.mean([m[name].mean() for m in local])
        rows, columns = mask.shape
        assert mask.sum() == rows * int(columns * local_sparsity)  # the mean local sparsity
    by_block = {}
    for layer in pipe.bench.layers:
        by_block.setdefault(layer.block, []).append(result.masks[layer.name].mean())
    assert len({round(float(np.mean(v)), 2) for v in by_block.values()}) > 1  # not uniform


def test_a_saved_2_4_model_reloads_with_two_zeros_in_every_four(
    tiny_model_dir: Path, client_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    config = config_for(tiny_model_dir, client_dir, sparsity_type="2:4", aggregate="stats",
                        pruner="ria", calibration="one-shot")  # fmt: skip
    run(config, save_model_to=tmp_path / "saved")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    for layer in prunable_layers(model):
        weight = layer.module.weight.detach().numpy()
        zeros = (weight == 0).reshape(weight.shape[0], -1, 4).sum(axis=2)
        assert bool((zeros == 2).all()), layer.name
