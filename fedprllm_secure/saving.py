"""Saving the pruned model: in the dtype of the checkpoint it came from, with a model card.

`checkpoint_dtype(spec)` reads the dtype recorded in the source checkpoint's `config.json`
(`dtype`, or `torch_dtype` in older files): the embedded model's converted checkpoint, a model
folder, or a Hub id's cached config; None (keep the loaded dtype) for a `.gguf` file, whose
weights are quantized, or when no config is at hand. The model keeps computing in its loaded
dtype; only the saved copy is converted (tied weights stay tied).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import assets

EMBEDDED_CHECKPOINT = "hf-float32"  # the folder model.py converts the embedded GGUF into


def _config_path(spec: str) -> Path | None:
    if spec in assets.ASSETS:
        return assets.asset_dir(spec) / EMBEDDED_CHECKPOINT / "config.json"
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        return None
    if path.is_dir():
        return path / "config.json"
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(spec, "config.json")
    except Exception:  # not a Hub id, no cache: nothing recorded
        return None
    return Path(cached) if isinstance(cached, str) else None


def checkpoint_dtype(spec: str) -> str | None:
    """The dtype name ("bfloat16", "float32", ...) the source checkpoint of `spec` records."""
    path = _config_path(spec)
    if path is None or not path.is_file():
        return None
    config = json.loads(path.read_text(encoding="utf-8"))
    name = config.get("dtype") or config.get("torch_dtype")
    if isinstance(name, str) and isinstance(getattr(torch, name, None), torch.dtype):
        return name
    return None


def _converted_state(model: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The state dict with floating tensors in `dtype`; tensors sharing storage stay shared."""
    converted: dict[tuple[int, tuple[int, ...]], torch.Tensor] = {}
    state = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if key not in converted:
            converted[key] = tensor.to(dtype) if tensor.is_floating_point() else tensor
        state[name] = converted[key]
    return state


def save_pretrained(
    model: nn.Module,
    tokenizer: Any,
    folder: Path,
    dtype: str | None,
    card: Mapping[str, Any] | None = None,
) -> None:
    """`from_pretrained`-loadable model and tokenizer in `folder`, weights in `dtype` (None:
    as loaded), and README.md from `card` (see `model_card`)."""
    target = getattr(torch, dtype) if dtype else None
    state = _converted_state(model, target) if target is not None else None
    model.save_pretrained(folder, state_dict=state)  # type: ignore[operator]
    if dtype:  # save_pretrained records the dtype of the model in memory
        path = folder / "config.json"
        config = json.loads(path.read_text(encoding="utf-8"))
        config["dtype" if "dtype" in config or "torch_dtype" not in config else "torch_dtype"] = (
            dtype
        )
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tokenizer.save_pretrained(folder)
    if card is not None:
        saved = dtype or str(next(model.parameters()).dtype).removeprefix("torch.")
        (folder / "README.md").write_text(model_card({**card, "dtype": saved}), encoding="utf-8")


def model_card(card: Mapping[str, Any]) -> str:
    """README.md of a saved pruned model: what it is, how it was made, how good it is.

    `card` keys: base_model, method, sparsity, group, pruner, protocol, privacy, seed,
    perplexity (and perplexity_se, bits_per_byte, dense_perplexity), dtype, command, version."""

    def value(key: str) -> str:
        item = card.get(key)
        if isinstance(item, float):
            return f"{item:.4f}"
        return "-" if item is None else str(item)

    rows = [
        ("base model", "base_model"), ("method", "method"), ("sparsity", "sparsity"),
        ("comparison group", "group"), ("local pruner", "pruner"),
        ("secure-sum protocol", "protocol"), ("privacy", "privacy"), ("seed", "seed"),
        ("perplexity (held-out)", "perplexity"), ("perplexity standard error", "perplexity_se"),
        ("bits per byte", "bits_per_byte"), ("dense perplexity", "dense_perplexity"),
        ("saved dtype", "dtype"), ("fedprllm-secure version", "version"),
    ]  # fmt: skip
    lines = [
        "---",
        f"base_model: {json.dumps(str(card.get('base_model', '')))}",
        "library_name: transformers",
        "tags: [pruned, fedprllm, wanda, federated-learning]",
        "---",
        "",
        f"# {value('base_model')} pruned to {value('sparsity')} sparsity by federated pruning",
        "",
        "Made by fedprllm-secure (FedPrLLM): every client computed a pruning mask on its own "
        "text, the server learned only the sum of the masks through the secure-sum protocol "
        "below and pruned the model by those counts. Pruned weights are zeros in a dense "
        "checkpoint; load it with `AutoModelForCausalLM.from_pretrained(folder)`.",
        "",
        "| | |",
        "|---|---|",
        *(f"| {label} | {value(key)} |" for label, key in rows),
        "",
        "Command:",
        "",
        "```bash",
        value("command"),
        "```",
        "",
    ]
    return "\n".join(lines)
