"""The ServerApp: the pipeline's strategies (`pipeline.strategies`) over a Flower Grid.

The run is the one `simulate` runs (one strategy per mode: one-shot masks, iterative masks, stats
one-shot, stats sequential; randomized response, DP statistics), with `FlowerFederation` as its
federation: every node answers the pipeline's commands with its own `ClientNode` (client_app.py)
and takes part in each secure-sum session through its own protocol client. Stages, each bounded
(a node that misses one is left out, and said so):

1. wait for `num-nodes` SuperNodes (at most `federation.node_wait_s`);
2. describe and calibrate: each node builds its samples from its own text, then calibrates
   (`federation.calibrate_timeout_s`); a node whose model's layout differs is left out;
3. per session: enrollment, each secret made on its node, public parts attested and relayed
   (`trust.py`); then the protocol's rounds, driven by `secure_sum.driver.drive`
   (`federation.round_timeout_s` each);
4. `simulate`'s release guard on every sum (minimum cohort, RR debiasing), global masks;
5. the perplexity of the dense and the pruned model on the evaluation text (`data.eval_text`, else
   the corpus' held-out part; `eval-windows` x `eval-seqlen` tokens), as `simulate` reports it;
6. written to `out`: masks.npz, counts.npz (one-shot masks mode), results.json (last).

Each stage is one line on the ServerApp's log (`flwr run --stream`, `flwr log RUN_ID`) and in
`out/progress.json` (`run_status.RunStatus`); outputs of an earlier run in `out` are removed at the
start; a failure is `out/error.txt`, one line (no traceback for a failure the project raised on
purpose).

Run config: `settings.flower_run_config` (RunConfig field paths, e.g. `pruning.sparsity`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from ... import __version__
from ...config import RunConfig
from ...errors import ConfigError, FedPrError
from ...pipeline.federation import NodeCommand
from .federation import FlowerFederation, NodeFailure, StageReport, exchange, wait_for_nodes
from .run_status import RunFailed, RunStatus, quiet_tracebacks, write_atomic
from .settings import FlowerOptions, cohort_of, flower_run_config

__all__ = ["FlowerResult", "NodeFailure", "exchange", "prune_on_flower", "prune_with_flower"]


@dataclass
class FlowerResult:
    masks: dict[str, np.ndarray]
    scales: dict[str, np.ndarray] | None
    counts: dict[str, np.ndarray]  # one-shot masks: the released counts per layer
    contributors: list[int]
    nodes: dict[int, int]  # client id -> Flower node id
    failures: dict[int, str]  # client id -> why it was left out
    uplink_bytes: dict[int, int]  # client id -> protocol bytes it sent
    rounds: int
    timings_s: dict[str, float]
    protocol: dict[str, Any]
    privacy: dict[str, Any]


def prune_on_flower(
    grid: Grid,
    config: RunConfig,
    options: FlowerOptions,
    progress: StageReport | None = None,
) -> tuple[FlowerResult, Any]:
    """Run the strategy of `config` over the first `options.num_nodes` nodes of `grid`; the
    result and the server's Workbench (left dense)."""
    from ...pipeline.blockwise_bench import BlockwiseBench
    from ...pipeline.layout import fingerprint
    from ...pipeline.run import privacy_summary, protocol_report
    from ...pipeline.strategies import Server, strategy_for
    from ...pipeline.timer import Timer
    from ...pipeline.workbench import Workbench
    from ...progress import SilentProgress

    wait_s = config.federation.node_wait_s
    if progress is not None:
        progress.stage("wait for nodes", f"{options.num_nodes} SuperNodes (at most {wait_s:.0f} s)")
    nodes = wait_for_nodes(grid, options.num_nodes, wait_s)
    fed = FlowerFederation(
        grid, nodes, config.federation.round_timeout_s, options.poll_interval_s, progress,
        chunk_entries=config.federation.chunk_entries,
    )  # fmt: skip
    fed.min_cohort = cohort_of(config)
    fed.keep_sums = not config.pruning.blockwise  # blockwise: no counts.npz, one block's sums
    timer = Timer()
    if progress is not None:
        progress.stage("load model", config.model)
    with timer.phase("load_model"):
        kind = BlockwiseBench if config.pruning.blockwise else Workbench
        bench = kind(config.model, config.device, config.dtype)
    fed.layout = fingerprint(bench.lengths)
    server = Server(config, bench, fed, timer, SilentProgress())
    d = config.data
    describe = NodeCommand(
        "describe", {"samples_per_client": d.samples_per_client, "seqlen": d.seqlen}
    )
    answers = fed.command(
        "describe", {c: describe for c in fed.clients}, config.federation.calibrate_timeout_s
    )
    fed.need(answers, "calibration", fed.min_cohort)
    server.described = {c: dict(a.settings) for c, a in answers.items()}
    try:
        masks, scales = strategy_for(config)(server)
    finally:
        bench.restore()
    return FlowerResult(
        masks=masks,
        scales=scales,
        counts=_counts(config, fed, bench.shapes),
        contributors=list(server.last_contributors),
        nodes=dict(fed.node_of),
        failures=dict(fed.failures),
        uplink_bytes=dict(fed.uplink),
        rounds=fed.rounds,
        timings_s={**fed.timings, **timer.timings},
        protocol=protocol_report(server),
        privacy=privacy_summary(server),
    ), bench


def _counts(
    config: RunConfig, fed: FlowerFederation, shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    """One-shot masks: the counts of the session's aggregations (one, or one per block), per layer
    (empty in other modes)."""
    if config.pruning.aggregate != "masks" or config.pruning.mode != "one-shot" or not fed.sessions:
        return {}
    sums = {name: s for result in fed.sessions[-1].results for name, s in result.sums.items()}
    return {name: sums[name].reshape(shape) for name, shape in shapes.items() if name in sums}


def prune_with_flower(
    grid: Grid,
    run_config: Mapping[str, Any],
    model: str | None = None,
    progress: StageReport | None = None,
) -> tuple[FlowerResult, Any]:
    """`prune_on_flower` from a Flower run config (`settings.flower_run_config`); `model`, if
    given, is the run config's `model`."""
    config, options = flower_run_config({**run_config, **({"model": model} if model else {})})
    return prune_on_flower(grid, config, options, progress)


def evaluate(config: RunConfig, bench: Any, result: FlowerResult) -> dict[str, Any]:
    """Perplexity of the dense and the pruned model on the evaluation text (as `simulate`)."""
    from ...pipeline.texts import eval_text

    d = config.data
    bench.use_eval_text(eval_text(d), d.eval_seqlen or d.seqlen, d.eval_windows)
    if bench.blockwise:  # one block in memory: both walks block by block
        from ...pipeline.blockwise_eval import evaluate_masks, mask_sparsity

        evaluations = evaluate_masks(bench, result.masks, result.scales)
        dense, pruned = (e.perplexity for e in evaluations)
        sparsity = mask_sparsity(result.masks, bench.lengths)
    else:
        dense = bench.perplexity()
        pruned, sparsity = bench.evaluate(result.masks, result.scales)
    return {
        "perplexity": {"dense": dense, "fedprllm": pruned},
        "sparsity": {"fedprllm": sparsity},
        "eval": {"windows": len(bench.windows), "window_tokens": int(bench.windows[0].numel())},
    }


def write_result(
    out: Path,
    config: RunConfig,
    result: FlowerResult,
    evaluation: Mapping[str, Any] | None = None,
    run_id: int | None = None,
) -> None:
    """OUT/masks.npz (global masks), OUT/counts.npz, OUT/results.json (last); each atomically."""
    out.mkdir(parents=True, exist_ok=True)
    for name, arrays in (("masks.npz", result.masks), ("counts.npz", result.counts)):
        staging = out / f".{name}.partial.npz"
        np.savez_compressed(staging, **dict(arrays))
        staging.replace(out / name)
    evaluation = dict(evaluation or {})
    summary = {
        "fedprllm_secure_version": __version__,
        "engine": "flower",
        "flower_run_id": run_id,
        "config": asdict(config),
        "perplexity": evaluation.get("perplexity"),
        "sparsity": evaluation.get("sparsity"),
        "eval": evaluation.get("eval"),
        "contributors": result.contributors,
        "nodes": {str(c): n for c, n in result.nodes.items()},
        "failures": {str(c): why for c, why in result.failures.items()},
        "uplink_bytes_per_client": {str(c): n for c, n in result.uplink_bytes.items()},
        "protocol_rounds": result.rounds,
        "protocol": result.protocol or None,
        "privacy": result.privacy,
        "timings_s": result.timings_s,
    }
    write_atomic(out / "results.json", json.dumps(summary, indent=1, default=str) + "\n")


def save_model(bench: Any, result: FlowerResult, folder: Path) -> None:
    """The pruned model at `folder`: whole, or (blockwise) streamed one block shard at a time."""
    if not bench.blockwise:
        bench.apply(result.masks, result.scales)
        bench.save(folder)
        bench.restore()
        return
    writer = bench.writer(folder)
    try:
        for block in range(bench.blocks):
            writer.write_block(block, *bench.block_part(block, result.masks, result.scales))
        writer.finish()
    except BaseException:
        writer.abort()
        raise


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    values = dict(context.run_config)
    out = Path(str(values.get("out", "runs/flower"))).expanduser().resolve()
    status = RunStatus(out, context.run_id)
    status.clear()
    quiet_tracebacks()
    try:
        config, options = flower_run_config(values)
        if not config.model:
            raise ConfigError("run config needs model='PATH' (the global model)")
        result, bench = prune_on_flower(grid, config, options, status)
        status.stage(
            "evaluate", f"perplexity, {config.data.eval_windows} windows, dense and pruned"
        )
        evaluation = evaluate(config, bench, result)
        if values.get("save-model"):
            status.stage("save model", str(out / "model"))
            save_model(bench, result, out / "model")
        status.stage("write results", str(out))
        write_result(out, config, result, evaluation, context.run_id)
        ppl = evaluation["perplexity"]
        status.finish(
            f"done: pruned with {config.protocol.name} over clients {result.contributors} "
            f"(left out: {result.failures or 'none'}); perplexity dense {ppl['dense']:.2f}, "
            f"pruned {ppl['fedprllm']:.2f}; wrote {out / 'results.json'}"
        )
    except FedPrError as exc:  # the launcher waits for results.json or error.txt
        raise RunFailed(status.fail(exc)) from None
    except Exception as exc:  # a bug: error.txt, and Flower logs the traceback
        status.fail(exc)
        raise
