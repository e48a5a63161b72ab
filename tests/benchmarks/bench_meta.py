"""Trace and plan huge LLM configs on the meta device (no weights, shapes only).

Usage: python tests/benchmarks/bench_meta.py [--configs 7b 70b] [--ratio 0.5]
       [--seq 16] [--json out.json]

Each config is a ``transformers.LlamaForCausalLM`` shaped like a Llama-2 checkpoint, built
entirely on the meta device (``with torch.device("meta")``) and traced with meta
``input_ids`` of shape (1, ``--seq``). Timed separately: ``sg.trace(model, inputs)`` and
``sg.plan(graph, sg.PruneConfig(ratio=..., importance="random"))``. The criterion is
``random`` because magnitude criteria (``l1``, ``l2``) need real weights and raise
``PlanError`` on meta parameters: this benchmark measures the shape work (tracing,
grouping, choosing units, counting parameters), not the quality of the choice.
``prune_residual`` is left at its default (True), so the hidden width is planned too.

Each config runs in a fresh subprocess (the script re-invokes itself with ``--one NAME``)
so the peak resident memory (``ru_maxrss``) is per config; it includes Python, torch and
transformers (the "RSS before trace" column is that baseline after building the model).
Targets (GB = 1e9 bytes): 7B trace + plan under 5 s and 2 GB peak; 70B under 30 s and 3 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {
    "7b": {
        "num_hidden_layers": 32,
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "intermediate_size": 11008,
        "vocab_size": 32000,
    },
    "70b": {
        "num_hidden_layers": 80,
        "hidden_size": 8192,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "intermediate_size": 28672,
        "vocab_size": 32000,
    },
}
# trace + plan seconds and peak GB a config must stay under (issue: 7B < 5 s; 70B < 30 s, 3 GB)
TARGETS = {"7b": (5.0, 2.0), "70b": (30.0, 3.0)}


def peak_rss_gb() -> float:
    return (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    )  # ru_maxrss is KiB on Linux; GB = 1e9 bytes


def heads_kept(graph, plan, shape: dict) -> list[tuple[int, int]]:
    """Per layer: (query heads, key/value heads) left after ``plan``."""
    head_dim = shape["hidden_size"] // shape["num_attention_heads"]
    q_heads, kv_heads = shape["num_attention_heads"], shape["num_key_value_heads"]
    out = []
    for i in range(shape["num_hidden_layers"]):
        prefix = f"model.layers.{i}.self_attn"
        gid = f"{prefix}.q_proj.weight:0"
        cut = plan.cut(gid)
        if cut is None:  # not planned (skipped or not prunable): all heads kept
            out.append((q_heads, kv_heads))
            continue
        units = graph.unit_map(gid)
        drop = set(cut.drop)
        kept = []
        for proj in ("q_proj", "k_proj"):
            rows = units[f"{prefix}.{proj}.weight:0"]
            kept.append(sum(1 for u in rows if u not in drop) // head_dim)
        out.append((kept[0], kept[1]))
    return out


def run_one(name: str, args) -> dict:
    import torch
    import transformers

    import slimgraph as sg

    shape = CONFIGS[name]
    config = transformers.LlamaConfig(**shape)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    model.eval()
    inputs = {"input_ids": torch.zeros(1, args.seq, dtype=torch.long, device="meta")}
    rss_before = peak_rss_gb()

    t0 = time.perf_counter()
    graph = sg.trace(model, inputs)
    t1 = time.perf_counter()
    plan = sg.plan(graph, sg.PruneConfig(ratio=args.ratio, importance="random"))
    t2 = time.perf_counter()

    heads = heads_kept(graph, plan, shape)
    return {
        "config": name,
        **shape,
        "trace_s": t1 - t0,
        "plan_s": t2 - t1,
        "rss_before_gb": rss_before,
        "peak_rss_gb": peak_rss_gb(),
        "groups": len(graph.groups),
        "prunable_groups": len(graph.prunable_groups()),
        "cuts": len(plan.cuts),
        "skipped": len(plan.skipped),
        "params_before": plan.params_before,
        "params_after": plan.params_after,
        "heads_kept": sorted({f"{q}/{kv}" for q, kv in heads}),
    }


def run_subprocess(name: str, args) -> dict:
    cmd = [sys.executable, __file__, "--one", name, "--ratio", str(args.ratio)]
    cmd += ["--seq", str(args.seq)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"config": name, **CONFIGS[name], "error": tail[:160], "wall_s": wall}
    return {**json.loads(lines[-1]), "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--seq", type=int, default=16, help="length of the meta input_ids")
    parser.add_argument("--one", choices=list(CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.one:  # child process: one config, one JSON line on stdout
        print(json.dumps(run_one(args.one, args)))
        return

    rows = [run_subprocess(name, args) for name in args.configs]
    print(f"LlamaForCausalLM on the meta device, input_ids 1x{args.seq};")
    print(f"PruneConfig(ratio={args.ratio}, importance='random'); one subprocess per config\n")
    print(
        "| config | layers | hidden | heads q/kv | groups (prunable) | trace s | plan s "
        "| RSS before trace GB | peak RSS GB | params before -> after | q/kv heads kept per layer |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        head = (
            f"| {r['config']} | {r['num_hidden_layers']} | {r['hidden_size']} "
            f"| {r['num_attention_heads']}/{r['num_key_value_heads']}"
        )
        if "error" in r:
            print(f"{head} | failed: {r['error']} | | | | | | |")
            continue
        print(
            f"{head} | {r['groups']} ({r['prunable_groups']}) | {r['trace_s']:.1f} "
            f"| {r['plan_s']:.1f} | {r['rss_before_gb']:.2f} | {r['peak_rss_gb']:.2f} "
            f"| {r['params_before'] / 1e9:.2f}B -> {r['params_after'] / 1e9:.2f}B "
            f"({r['params_after'] / r['params_before']:.3f}) | {', '.join(r['heads_kept'])} |"
        )
    for r in rows:
        if r["config"] in TARGETS and "error" not in r:
            seconds, (most_s, most_gb) = r["trace_s"] + r["plan_s"], TARGETS[r["config"]]
            ok = seconds < most_s and r["peak_rss_gb"] < most_gb
            print(
                f"\n{r['config']} target (trace + plan < {most_s:.0f} s, peak < {most_gb:.0f} GB): "
                f"{seconds:.1f} s, {r['peak_rss_gb']:.2f} GB -> {'met' if ok else 'NOT met'}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
