"""Load a causal LM and describe its prunable layout.

A model spec is one of: an embedded name (`smollm2-135m`), a local `.gguf` file, a local
directory with a Hugging Face checkpoint, or a Hub id (needs the network or a warm HF cache).
The embedded GGUF is de-quantized once and cached as a float32 safetensors checkpoint next to it,
so later loads take seconds.

The *mask layout* is every `nn.Linear` inside the decoder blocks, in block order and, within a
block, in module order: `prunable_layers(model)`. Masks, counts and protocol chunks all follow it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import assets
from .errors import ModelError


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object
    name: str
    device: torch.device


@dataclass(frozen=True)
class PrunableLayer:
    name: str  # full module name, e.g. "model.layers.3.mlp.up_proj"
    block: int
    module: nn.Linear

    @property
    def numel(self) -> int:
        return int(self.module.weight.numel())


def resolve_device(device: str) -> torch.device:
    """`auto` picks CUDA when present; `cuda` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for but no CUDA GPU is available")
    if device not in ("cpu", "cuda"):
        raise ModelError(f"unknown device {device!r} (use auto, cpu or cuda)")
    return torch.device(device)


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str) -> torch.dtype | str:
    """`auto` (the checkpoint's own dtype, float32 for GGUF) or one of DTYPES; ModelError else."""
    if dtype == "auto":
        return "auto"
    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r} (use auto, {', '.join(DTYPES)})")
    return DTYPES[dtype]


def _from_pretrained(
    path: str, gguf_file: str | None = None, dtype: torch.dtype | str = torch.float32
) -> tuple[nn.Module, object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    if gguf_file and dtype == "auto":
        dtype = torch.float32  # GGUF weights are de-quantized: float32 is their own precision
    os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF de-quantizer has its own bar
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    except (OSError, ValueError, ImportError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load model {path!r}: {first_line}") from exc
    return model, tokenizer


def forget_gguf_origin(model: nn.Module) -> None:
    """Make a GGUF-loaded model saveable: its weights are already de-quantized float tensors,
    only the loader's quantizer marker blocks `save_pretrained`."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None  # type: ignore[assignment]
    for attribute in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(model.config, attribute):
            delattr(model.config, attribute)
    model.is_quantized = False  # type: ignore[assignment]


def _embedded_checkpoint(name: str) -> Path:
    """The float32 checkpoint converted from the embedded GGUF, built on first use."""
    converted = assets.asset_dir(name) / "hf-float32"
    if (converted / "config.json").is_file():
        return converted
    gguf = assets.fetch(name)
    model, tokenizer = _from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    forget_gguf_origin(model)
    staging = Path(tempfile.mkdtemp(dir=converted.parent, prefix=".convert-"))
    try:
        model.save_pretrained(staging)  # type: ignore[operator]
        tokenizer.save_pretrained(staging)  # type: ignore[attr-defined]
        os.replace(staging, converted)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return converted


def model_kind(spec: str) -> str:
    """The kind of `spec`: "embedded", "gguf", "folder" or "hub" (a Hub id); ModelError for a
    local path that cannot be a model (checked without loading anything)."""
    path = Path(spec).expanduser()
    if spec in assets.ASSETS:
        if assets.ASSETS[spec].kind != "model":
            raise ModelError(f"{spec!r} is a corpus, not a model")
        return "embedded"
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ModelError(f"model file not found: {spec}")
        return "gguf"
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"{spec} is not a model directory (no config.json)")
        return "folder"
    if spec.startswith((".", "/", "~")):
        raise ModelError(f"model path not found: {spec}")
    return "hub"


def cheap_tokenizer(spec: str) -> object | None:
    """The tokenizer of `spec` if it loads in a moment without the model and without the network
    (a local folder, the embedded model once converted, a Hub id in the local cache); else None."""
    kind = model_kind(spec)
    if kind == "gguf":
        return None
    source = str(Path(spec).expanduser()) if kind == "folder" else spec
    if kind == "embedded":
        source = str(assets.asset_dir(spec) / "hf-float32")
        if not (Path(source) / "config.json").is_file():
            return None
    from transformers import AutoTokenizer

    _quiet_transformers()
    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=True)
    except Exception:  # noqa: BLE001 -- no cheap tokenizer: the model load reports the problem
        return None


def load_model(spec: str, device: str = "auto", dtype: str = "float32") -> LoadedModel:
    """Load a model spec (embedded name, .gguf path, checkpoint dir, or Hub id).

    `dtype`: float32 (the default), bfloat16, float16, or auto (the checkpoint's own dtype from
    its config; float32 for the embedded model and GGUF files, which are de-quantized). The
    activation statistics accumulate in float64 whatever the weights' dtype (client/calibrate).
    """
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    path = Path(spec).expanduser()
    kind = model_kind(spec)
    if kind == "embedded":
        model, tokenizer = _from_pretrained(str(_embedded_checkpoint(spec)), dtype=torch_dtype)
    elif kind == "gguf":
        model, tokenizer = _from_pretrained(str(path.parent), path.name, torch_dtype)
        forget_gguf_origin(model)
    else:
        source = str(path) if kind == "folder" else spec
        model, tokenizer = _from_pretrained(source, dtype=torch_dtype)
    model.eval()
    model.to(target)
    decoder_blocks(model)  # fail early on architectures we cannot prune
    return LoadedModel(model=model, tokenizer=tokenizer, name=spec, device=target)


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks: the ModuleList whose length is config.num_hidden_layers."""
    expected = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for candidate in ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers"):
        module: object = model
        for part in candidate.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.ModuleList) and (expected is None or len(module) == expected):
            return module
    raise ModelError(f"cannot find the decoder blocks of {type(model).__name__}")


def block_prefix(model: nn.Module) -> str:
    blocks = decoder_blocks(model)
    for name, module in model.named_modules():
        if module is blocks:
            return name
    raise ModelError("decoder blocks are not a submodule of the model")


def block_linears(model: nn.Module, index: int) -> list[PrunableLayer]:
    """The prunable linears of decoder block `index`, in module order."""
    prefix = f"{block_prefix(model)}.{index}"
    block = decoder_blocks(model)[index]
    return [
        PrunableLayer(f"{prefix}.{name}", index, module)
        for name, module in block.named_modules()
        if isinstance(module, nn.Linear)
    ]


def prunable_layers(model: nn.Module) -> list[PrunableLayer]:
    """Every prunable linear of the decoder blocks in mask-layout order."""
    layers: list[PrunableLayer] = []
    for index in range(len(decoder_blocks(model))):
        layers.extend(block_linears(model, index))
    if not layers:
        raise ModelError("the model has no nn.Linear layers inside its decoder blocks")
    return layers
