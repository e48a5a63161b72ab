"""MACs-targeted against latency-targeted plans, measured in ONNX Runtime.

Usage: python tests/benchmarks/latency_plans.py [--models resnet50 ...] [--target 0.5]
       [--threads 1] [--runs 20] [--cache PATH] [--json out.json]

For each model (random weights, eval, 1x3x224x224): ``sg.profile_latency`` measures its
layers in ONNX Runtime (CPU, ``--threads``); then ``sg.slim`` plans with ``target_macs=T``,
with ``target_latency=T, latency_model=...`` in local scope (every group cut alike), the
same with ``latency_tries=--tries`` (the slim model measured, and re-planned while it misses
T by more than 3 %), and in global scope (units ranked by score per millisecond they cost),
on a latency model profiled with ``config=PruneConfig(scope="global")`` (its knots are
global plans) and, for comparison, on the uniform one (its knots are uniform slims); Torch-Pruning's
MetaPruner (l2, local) slims a copy to about the MACs the local latency plan kept; and,
for a model with at least twice ``--depth`` droppable blocks, ``sg.drop_blocks`` drops the
``--depth`` of least influence on the example input (depth only: for its cost; with
random weights nothing says what it would cost in accuracy), and a mixed plan drops them
and plans the width for the rest of the latency budget; ``drop_blocks="auto"`` lets the
latency planner choose how many (the mix whose slim departs least from the original on
the example input). The
original and the slim copies are exported with ``sg.export_onnx`` and timed with
``sg.measure_latency`` in ``--rounds`` interleaved rounds (each a median of ``--runs``
after warm-up; the table gives the median round), all in one process. The table gives
MACs kept, the measured latency, the speed-up, the latency efficiency (speed-up x MACs
kept: 1.0 when every MAC saved is time saved) and the middle half of its values round
by round (each round's slim against that round's original: rows whose ranges overlap
are not told apart by this run), each row's efficiency over the MACs plan's, round by
round (the median, and in how many rounds it was ahead), the latency kept against the
target, and
for the latency plans what the model predicted: in milliseconds (which carries the
machine's drift since profiling) and as a share of the original's. The load average is
printed at the start and the end: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import slimgraph as sg  # noqa: E402
from tests.peer import meta_pruner  # noqa: E402

MODELS = ("resnet50", "mobilenet_v2", "efficientnet_b0", "convnext_tiny", "vit_b_16")


def build(name: str) -> tuple[nn.Module, tuple[torch.Tensor]]:
    torch.manual_seed(0)
    return torchvision.models.get_model(name).eval(), (torch.randn(1, 3, 224, 224),)


def exported(model: nn.Module, x: tuple, folder: Path, tag: str) -> Path:
    path = folder / f"{tag}.onnx"
    sg.export_onnx(model, x, path, check=False)
    return path


def interleaved_ms(paths: dict[str, Path], x: tuple, args) -> dict[str, list[float]]:
    """``--rounds`` medians per file, the files taking turns in every round."""
    seen: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(args.rounds):
        for k, path in paths.items():
            report = sg.measure_latency(path, x, threads=args.threads, runs=args.runs)
            seen[k].append(report.median_ms)
    return seen


def torch_pruning_copy(name: str, macs_kept: float) -> nn.Module:
    """Torch-Pruning's MetaPruner (l2, local) at the channel ratio that keeps about
    ``macs_kept`` of the MACs (MACs fall with both widths of a layer: ratio 1 - sqrt).
    A ViT's widths are cut in multiples of its head count and its ``hidden_dim`` is set
    afterwards, as Torch-Pruning's own torchvision benchmark does: without them the pruned
    model does not run (Torch-Pruning keeps the head count, so the width must divide)."""
    model, x = build(name)
    heads = [m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    options = {"round_to": heads[0]} if heads else {}
    meta_pruner(model, x[0], 1 - macs_kept**0.5, **options).step()
    if hasattr(model, "hidden_dim"):
        model.hidden_dim = model.conv_proj.out_channels
    return model


def rows_for(name: str, args, folder: Path) -> list[dict]:
    model, x = build(name)
    started = time.perf_counter()
    lm = sg.profile_latency(model, x, threads=args.threads, cache=args.cache, progress=False)
    profiled = time.perf_counter() - started
    started = time.perf_counter()
    config = sg.PruneConfig(scope="global")
    on_global = sg.profile_latency(  # its own plans timed on the uniform fit
        model, x, threads=args.threads, cache=args.cache, progress=False, config=config, uniform=lm
    )
    profiled_global = time.perf_counter() - started
    macs = sg.count_macs(model, x)
    latency = {"target_latency": args.target, "latency_model": lm}
    plans = {
        f"target_macs={args.target}": {"target_macs": args.target},
        f"target_latency={args.target}": latency,
        f"target_latency={args.target}, {args.tries} tries": {
            **latency,
            "latency_tries": args.tries,
        },
        f"target_latency={args.target}, global": {
            **latency,
            "latency_model": on_global,
            "scope": "global",
        },
        f"target_latency={args.target}, global on uniform knots": {**latency, "scope": "global"},
    }
    deep = len(sg.find_blocks(model, x)) >= 2 * args.depth
    if deep:  # the blocks pay part of the budget, the width the rest
        plans[f"{args.depth} blocks + target_latency={args.target}"] = {
            **latency,
            "drop_blocks": args.depth,
        }
    if sg.find_blocks(model, x):  # the latency planner chooses the mix
        plans[f"auto depth + target_latency={args.target}"] = {**latency, "drop_blocks": "auto"}
    results = {kind: sg.slim(model, x, **fields) for kind, fields in plans.items()}
    for kind in [k for k in results if k.startswith("auto depth")]:  # say what it chose
        chosen = results.pop(kind)
        results[kind.replace("auto depth", f"auto: {len(chosen.plan.blocks)} blocks")] = chosen
    slims = {k: r.model for k, r in results.items()}
    local = sg.count_macs(slims[f"target_latency={args.target}"], x) / macs
    slims["torch-pruning, same MACs"] = torch_pruning_copy(name, local)
    if deep:
        slims[f"depth: {args.depth} blocks dropped"] = sg.drop_blocks(
            model, x, n=args.depth, progress=False
        ).model
    paths = {"original": exported(model, x, folder, f"{name}-original")}
    paths |= {k: exported(m, x, folder, f"{name}-{i}") for i, (k, m) in enumerate(slims.items())}
    rounds = interleaved_ms(paths, x, args)
    rows = []
    base = f"target_macs={args.target}"
    kept_by = {kind: sg.count_macs(slim, x) / macs for kind, slim in slims.items()}
    for kind, kept in kept_by.items():
        plan = results[kind].plan if kind in results else None
        rows.append(
            {
                "model": name,
                "plan": kind,
                **measured(rounds, kind, kept, base, kept_by[base]),
                "predicted_ms": plan.predicted_latency_ms if plan else None,
                "measured_in_slim": plan.measured_latency_kept if plan else None,
                "predicted_original_ms": plans.get(kind, latency)
                .get("latency_model", lm)
                .predict({}),
                "round_to": lm.round_to,
                "check_error": lm.check_error,
                "profile_s": profiled,
                "global_check_error": on_global.check_error,
                "global_profile_s": profiled_global,
            }
        )
    return rows


def measured(
    rounds: dict[str, list[float]], kind: str, kept: float, base: str, base_kept: float
) -> dict:
    """The columns of ``kind``'s row that its timing gives: its median round against the
    original's, and round by round against the original and the ``base`` plan."""
    ms = {k: statistics.median(v) for k, v in rounds.items()}
    # each round's efficiency against the original's time in that round: the spread of
    # these says how far apart two rows must be to differ
    paired = [o / t * kept for o, t in zip(rounds["original"], rounds[kind], strict=True)]
    # and against the MACs plan's in the same round (the two timed back to back), which a
    # drifting load moves less than either against the original timed first
    ratio = kept / base_kept
    against = [b / t * ratio for b, t in zip(rounds[base], rounds[kind], strict=True)]
    return {
        "macs_kept": kept,
        "original_ms": ms["original"],
        "ms": ms[kind],
        "speedup": ms["original"] / ms[kind],
        "efficiency": ms["original"] / ms[kind] * kept,
        "round_efficiency": sorted(paired),
        "round_ms": rounds[kind],
        "against_macs_plan": [] if kind == base else against,
        "latency_kept": ms[kind] / ms["original"],
    }


def table_row(r: dict) -> str:
    predicted = r["predicted_ms"]
    error = share = ""
    if predicted:
        error = f"{predicted / r['ms'] - 1:+.1%}"
        share = f"{predicted / r['predicted_original_ms'] / r['latency_kept'] - 1:+.1%}"
    return (
        f"| {r['model']} | {r['plan']} | {r['macs_kept']:.3f} | "
        f"{r['original_ms']:.1f} -> {r['ms']:.1f} | {r['speedup']:.2f} | "
        f"{r['efficiency']:.2f} | {_spread(r['round_efficiency'])} | "
        f"{_against(r['against_macs_plan'])} | {r['latency_kept']:.3f} | "
        f"{f'{predicted:.1f}' if predicted else ''} | {error} | {share} |"
    )


def _spread(values: list[float]) -> str:
    """The middle half of the rounds' values (all of them, for fewer than 4 rounds)."""
    if len(values) >= 4:
        values = values[len(values) // 4 : len(values) - len(values) // 4]
    return f"{min(values):.2f}-{max(values):.2f}"


def _against(ratios: list[float]) -> str:
    """The median round's efficiency over the MACs plan's, and the rounds it was ahead
    (nothing for the MACs plan itself)."""
    if not ratios:
        return ""
    ahead = sum(r > 1.0 for r in ratios)
    return f"{statistics.median(ratios):.3f} ({ahead}/{len(ratios)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", default=None)
    parser.add_argument("--depth", type=int, default=4, help="blocks the depth-only row drops")
    parser.add_argument("--tries", type=int, default=3, help="latency_tries of the measured row")
    parser.add_argument("--json")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    load = os.getloadavg()
    print(
        f"ONNX Runtime CPU, {args.threads} thread(s); median of {args.rounds} interleaved "
        f"medians of {args.runs} runs; target {args.target}\n"
    )
    print(
        "| model | plan | MACs kept | latency (ms) | speed-up | latency efficiency "
        "| efficiency by round (middle half) | against the MACs plan (rounds ahead) "
        "| latency kept | predicted (ms) "
        "| error of prediction | error of predicted share |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:  # each model's rows as they come: a run takes minutes
            found = rows_for(name, args, Path(tmp))
            for r in found:
                print(table_row(r), flush=True)
            rows += found
    end = os.getloadavg()
    print(
        f"\nload average (1/5/15 min): {'/'.join(f'{v:.1f}' for v in load)} at start, "
        f"{'/'.join(f'{v:.1f}' for v in end)} at end"
    )
    first = {r["model"]: r for r in rows}
    print(
        "\nlatency models: "
        + "; ".join(
            f"{r['model']} round_to {r['round_to']}, check error {r['check_error']:+.1%}, "
            f"profiled in {r['profile_s']:.0f} s; with global knots, check error "
            f"{r['global_check_error']:+.1%}, {r['global_profile_s']:.0f} s more"
            for r in first.values()
        )
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
