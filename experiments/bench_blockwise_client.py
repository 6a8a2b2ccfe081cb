"""One client calibrating a LLaMA-architecture checkpoint larger than it could hold, block by block.

    python experiments/bench_blockwise_client.py --shape 1b     # TinyLlama-1.1B shapes, ~2.2 GB
    python experiments/bench_blockwise_client.py --shape 7b     # LLaMA-7B shapes, ~13.5 GB

1. A random-weight checkpoint in bfloat16 is written to a temporary folder, one shard per
   decoder block (never the whole model in memory), with a small word-level tokenizer.
2. A fresh process (its peak RSS is its own) opens it with `open_blockwise` (dtype auto =
   bfloat16), calibrates 2 windows of 512 random tokens (Wanda, `--calibration`, 50%) block by
   block with `iter_block_masks`, and streams the pruned checkpoint with `PrunedCheckpointWriter`.
3. Another process reloads the pruned checkpoint: 1b with `from_pretrained` (whole, bfloat16);
   7b on the meta device (`from_config` under `init_empty_weights`) with every stored tensor's
   shape checked against the model's, and the first and last blocks' linears read back.
   In both, each checked linear has at least int(in * 0.5) zeros in every row and its other
   entries equal the source checkpoint's.

The folder is removed afterwards. Results: experiments/results/scale/blockwise_client_<shape>.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from fedprllm_secure.outputs import write_json

SHAPES = {  # hidden, intermediate, layers, heads, kv heads, vocab
    "tiny": (64, 128, 2, 4, 2, 300),  # a smoke test of this script
    "small": (1024, 2816, 10, 16, 4, 8000),  # ~0.2 GB: a check that runs in seconds
    "1b": (2048, 5632, 22, 32, 4, 32000),
    "7b": (4096, 11008, 32, 32, 32, 32000),
}
RESULTS = Path(__file__).parent / "results" / "scale"
RSS_TARGET_MIB = 4 * 1024


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def config_for(shape: str):  # noqa: ANN201
    from transformers import LlamaConfig

    hidden, inter, layers, heads, kv, vocab = SHAPES[shape]
    return LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=2048,
        tie_word_embeddings=False, dtype="bfloat16",
    )  # fmt: skip


def save_tokenizer(folder: Path, vocab: int) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {f"w{i}": i for i in range(vocab - 1)} | {"<unk>": vocab - 1}
    core = Tokenizer(models.WordLevel(vocab=words, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>").save_pretrained(folder)


def generate(shape: str, folder: Path) -> dict[str, Any]:
    """Write the random bfloat16 checkpoint shard by shard; returns its size and time."""
    from safetensors.torch import save_file

    start = time.perf_counter()
    config = config_for(shape)
    config.save_pretrained(folder)
    save_tokenizer(folder, config.vocab_size)
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = h * config.num_key_value_heads // config.num_attention_heads
    shapes = {"self_attn.q_proj": (h, h), "self_attn.k_proj": (kv, h), "self_attn.v_proj": (kv, h),
              "self_attn.o_proj": (h, h), "mlp.gate_proj": (i, h), "mlp.up_proj": (i, h),
              "mlp.down_proj": (h, i)}  # fmt: skip
    total, weight_map = layers + 1, {}
    generator = torch.Generator().manual_seed(0)

    def randn(*size: int) -> torch.Tensor:
        return (torch.randn(*size, generator=generator) * 0.02).to(torch.bfloat16)

    def save(number: int, tensors: dict[str, torch.Tensor]) -> None:
        name = f"model-{number:05d}-of-{total:05d}.safetensors"
        save_file(tensors, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))

    ones = torch.ones(h, dtype=torch.bfloat16)
    save(1, {"model.embed_tokens.weight": randn(config.vocab_size, h),
             "model.norm.weight": ones, "lm_head.weight": randn(config.vocab_size, h)})  # fmt: skip
    for block in range(layers):
        prefix = f"model.layers.{block}"
        tensors = {f"{prefix}.{k}.weight": randn(*s) for k, s in shapes.items()}
        tensors[f"{prefix}.input_layernorm.weight"] = ones.clone()
        tensors[f"{prefix}.post_attention_layernorm.weight"] = ones.clone()
        save(block + 2, tensors)
    index = {"metadata": {}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    return {"checkpoint_bytes": size, "generate_s": time.perf_counter() - start,
            "generate_peak_rss_mib": peak_rss_mib()}  # fmt: skip


def client(folder: Path, out: Path, calibration: str) -> dict[str, Any]:
    """The measured client: open, calibrate block by block, stream the pruned checkpoint."""
    from fedprllm_secure.blockwise import iter_block_masks, open_blockwise
    from fedprllm_secure.checkpoint import PrunedCheckpointWriter

    torch.set_num_threads(1)
    start = time.perf_counter()
    bm = open_blockwise(str(folder), "cpu", "auto")
    opened = time.perf_counter() - start
    vocab = bm.model.config.vocab_size
    samples = torch.randint(0, vocab, (2, 512), generator=torch.Generator().manual_seed(1))
    writer = PrunedCheckpointWriter(bm.reader, out, bm.prefix, bm.blocks)
    seconds, write_seconds, rss = [], [], []
    tick = time.perf_counter()
    for result in iter_block_masks(bm, samples, 0.5, calibration=calibration, batch_size=2):
        calibrated = time.perf_counter()
        writer.write_block(result.index, result.masks)
        done = time.perf_counter()
        seconds.append(calibrated - tick)
        write_seconds.append(done - calibrated)
        rss.append(peak_rss_mib())
        print(f"block {result.index}: {seconds[-1]:.1f} s calibrate, {write_seconds[-1]:.1f} s "
              f"write, peak RSS {rss[-1]:.0f} MiB", file=sys.stderr, flush=True)  # fmt: skip
        tick = time.perf_counter()
    writer.finish()
    return {"dtype": str(bm.dtype), "open_s": opened, "blocks": bm.blocks,
            "calibrate_s_per_block": seconds, "write_s_per_block": write_seconds,
            "peak_rss_mib_after_block": rss, "peak_rss_mib": peak_rss_mib(),
            "total_s": time.perf_counter() - start}  # fmt: skip


def _check_linear(name: str, pruned: torch.Tensor, source: torch.Tensor) -> None:
    zeros = (pruned == 0).sum(dim=1)
    assert bool((zeros >= int(pruned.shape[1] * 0.5)).all()), f"{name}: a row is under-pruned"
    kept = pruned != 0
    assert torch.equal(pruned[kept], source[kept]), f"{name}: kept entries differ from the source"


def reload(shape: str, source: Path, out: Path) -> dict[str, Any]:
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    from fedprllm_secure.checkpoint import CheckpointReader

    pruned, original = CheckpointReader(out), CheckpointReader(source)
    linears = [n for n in pruned.names if n.endswith("_proj.weight")]
    if shape != "7b":
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
        params = dict(model.named_parameters())
        checked = linears
        for name in checked:
            _check_linear(name, params[name].data, original.read([name])[name])
        how = "from_pretrained (bfloat16, whole model); every prunable linear checked"
    else:
        with init_empty_weights():
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(out))
        params = dict(model.named_parameters())
        from safetensors import safe_open

        for name, shard in pruned.weight_map.items():
            with safe_open(str(out / shard), framework="pt") as handle:
                stored = tuple(handle.get_slice(name).get_shape())
            assert stored == tuple(params[name].shape), f"{name}: {stored} vs model"
        last = model.config.num_hidden_layers - 1
        checked = [n for n in linears if n.startswith(("model.layers.0.", f"model.layers.{last}."))]
        for name in checked:
            _check_linear(name, pruned.read([name])[name], original.read([name])[name])
        how = ("from_config on the meta device + every stored shape matched; linears of blocks 0 "
               f"and {last} read back")  # fmt: skip
    assert set(pruned.names) == set(params), "the pruned checkpoint's tensors are not the model's"
    return {"reload": how, "linears_checked": len(checked), "tensors": len(pruned.names),
            "reload_peak_rss_mib": peak_rss_mib()}  # fmt: skip


def _stage(*args: str) -> dict[str, Any]:
    """Run one stage of this script in a fresh process; its last stdout line is its JSON."""
    cmd = [sys.executable, __file__, *args]
    done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="1b")
    parser.add_argument("--calibration", choices=["sequential", "one-shot"], default="sequential")
    parser.add_argument("--workdir", type=Path, default=None, help="where the temp folder goes")
    parser.add_argument("--stage", choices=["generate", "client", "reload"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage == "generate":
        print(json.dumps(generate(args.shape, args.folder)))
        return
    if args.stage == "client":
        print(json.dumps(client(args.folder, args.out, args.calibration)))
        return
    if args.stage == "reload":
        print(json.dumps(reload(args.shape, args.folder, args.out)))
        return
    root = Path(tempfile.mkdtemp(prefix=f"synthetic-{args.shape}-", dir=args.workdir))
    try:
        source, out = root / "source", root / "pruned"
        source.mkdir()
        row = {"shape": args.shape, "calibration": args.calibration, "windows": [2, 512],
               "sparsity": 0.5, "torch_threads": 1}  # fmt: skip
        row.update(_stage("--stage", "generate", "--shape", args.shape, "--folder", str(source)))
        row.update(_stage("--stage", "client", "--folder", str(source), "--out", str(out),
                          "--calibration", args.calibration))  # fmt: skip
        row.update(_stage("--stage", "reload", "--shape", args.shape, "--folder", str(source),
                          "--out", str(out)))  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
    per_block = row["calibrate_s_per_block"]
    row["calibrate_s_per_block_mean"] = sum(per_block) / len(per_block)
    row["checkpoint_gib"] = row["checkpoint_bytes"] / 2**30
    row["peak_rss_ratio_to_target"] = row["peak_rss_mib"] / RSS_TARGET_MIB
    print(f"{args.shape}: checkpoint {row['checkpoint_bytes'] / 2**30:.2f} GiB bfloat16, "
          f"{row['blocks']} blocks, 2 x 512 tokens, {args.calibration}")  # fmt: skip
    print(f"client peak RSS {row['peak_rss_mib']:.0f} MiB (target {RSS_TARGET_MIB}, ratio "
          f"{row['peak_rss_mib'] / RSS_TARGET_MIB:.2f}); {row['calibrate_s_per_block_mean']:.1f} s "
          f"per block calibrating + {sum(row['write_s_per_block']) / len(per_block):.1f} s writing")  # fmt: skip
    print(f"reload: {row['reload']}")
    name = f"blockwise_client_{args.shape}" + (
        "" if args.calibration == "sequential" else "_oneshot"
    )
    write_json(RESULTS / f"{name}.json", row)
    print(f"wrote {RESULTS / (name + '.json')}")


if __name__ == "__main__":
    main()
