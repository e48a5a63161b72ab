"""Wall time of ``sg.slim`` against Torch-Pruning's ``MetaPruner`` build + step.

Run from the repository root::

    python tests/benchmarks/bench_speed.py [--models resnet50 mobilenet_v2 ...] [--repeats 5]
        [--threads N] [--json out.json] [--profile 25] [--zoo [--max-params 100e6]]

What is timed is what a user of each tool calls: ``sg.slim(model, (x,), ratio=0.5)``
(trace, plan, the meta dry run, the rewrite and its forward checks) and Torch-Pruning's
``MetaPruner`` constructor (which builds its DependencyGraph) plus ``step()``, with
``MagnitudeImportance(p=2)`` at local scope, ratio 0.5 and the final classifier in
``ignored_layers`` (``tests/peer.py``). Every run gets a fresh copy of the model (random
weights, eval mode, the copy is not timed) and a 1x3x224x224 input.

The two tools run interleaved in one process, model by model (slimgraph, then
Torch-Pruning, then slimgraph ...), so that a change in the machine's load hits both;
the table gives the minimum and the median of each, their ratios, and the load average
(``os.getloadavg``) at the start and the end. One untimed run of each tool warms the
process up first (imports, torch.export's first-call cost). A tool that fails on a model
is reported with its error, and its other repeats there are skipped.

Every timed call starts from a collected heap (an untimed ``gc.collect()`` before it):
in one process each tool's uncollected garbage (Torch-Pruning's dependency graph holds
its pruned model and the forward's autograd graph in reference cycles) otherwise turns
the other's allocations into fresh pages, and a full collection that lands in a call
frees the other's garbage on its time. Measured on resnet50: sg.slim's reference forward
took 0.7-0.9 s right after Torch-Pruning calls and 0.23 s after a collection.

A call that runs past ``--max-seconds`` (300) is stopped with ``TimeoutError``, and the
process's memory is capped at ``--max-gb`` (12 GB, ``RLIMIT_DATA``) so that a tool that
needs more fails with an allocation error; both are reported as that tool's failure on
the model, instead of ending the run.

``--zoo`` times every torchvision classifier up to ``--max-params`` parameters instead
(the last row is then the zoo median; the larger ones are named as left out).
``--profile N`` adds a cProfile of one ``sg.slim`` call on the first model, top N
functions by own time. This is a script, not a timed test: the figures depend on the
machine and its load.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import gc
import io
import json
import os
import pstats
import resource
import signal
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import slimgraph as sg  # noqa: E402
from tests.peer import meta_pruner  # noqa: E402

RATIO = 0.5
MODELS = ("resnet50", "mobilenet_v2", "densenet121", "vit_b_16", "convnext_tiny")
TOOLS = ("slimgraph", "torch_pruning")

Builder = Callable[[str], tuple[nn.Module, torch.Tensor]]


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    """A torchvision model with seeded random weights in eval mode, and its input."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    return model, torch.randn(1, 3, 224, 224)


def zoo(max_params: float) -> tuple[list[str], list[str]]:
    """torchvision's classifiers with at most ``max_params`` parameters (counted on the
    meta device where the model builds there), and the names of those left out."""
    kept, left = [], []
    for name in sorted(torchvision.models.list_models(module=torchvision.models)):
        try:
            with torch.device("meta"):
                model = torchvision.models.get_model(name)
        except NotImplementedError:  # widths computed from tensor values (RegNet)
            model = torchvision.models.get_model(name)
        size = sum(p.numel() for p in model.parameters())
        (kept if size <= max_params else left).append(name)
    return kept, left


def run_slimgraph(model: nn.Module, x: torch.Tensor) -> None:
    sg.slim(model, (x,), ratio=RATIO)


def run_torch_pruning(model: nn.Module, x: torch.Tensor) -> None:
    meta_pruner(model, x, RATIO).step()


RUNNERS: dict[str, Callable[[nn.Module, torch.Tensor], None]] = {
    "slimgraph": run_slimgraph,
    "torch_pruning": run_torch_pruning,
}


LIMIT = {"seconds": 300.0}  # a call that runs longer is stopped and reported (--max-seconds)


def timed(tool: str, model: nn.Module, x: torch.Tensor) -> float:
    """Seconds one call of ``tool`` takes on a fresh copy of ``model``, from a collected
    heap (neither the copy nor the collection is timed); a call over ``LIMIT["seconds"]``
    raises ``TimeoutError``."""
    fresh = copy.deepcopy(model)
    gc.collect()
    signal.signal(signal.SIGALRM, _over_time)
    start = time.perf_counter()
    # again every second after: code that catches every exception swallows the first
    signal.setitimer(signal.ITIMER_REAL, LIMIT["seconds"], 1.0)
    try:
        RUNNERS[tool](fresh, x)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return time.perf_counter() - start


def _over_time(*_: Any) -> None:
    raise TimeoutError(f"did not finish in {LIMIT['seconds']:g} s")


def cap_memory(gb: float) -> None:
    """Limit the process's data segment (heap and anonymous maps) to ``gb``: a tool that
    needs more fails with an allocation error instead of the machine's OOM killer ending
    the whole run (Torch-Pruning grows past 16 GB on maxvit_t and swin_t)."""
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (int(gb * 1e9), hard))


def bench(
    names: Sequence[str],
    repeats: int,
    builder: Builder = build,
    warmup: bool = True,
    report: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Times of both tools on every model, interleaved; with the load before and after.
    ``report(name, entry)`` hears of each model as it is done (a long run killed part way
    keeps what it printed)."""
    result: dict[str, Any] = {
        "ratio": RATIO,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_start": os.getloadavg(),
        "models": {},
    }
    if warmup and names:
        model, x = builder(names[0])
        for tool in TOOLS:
            # a failure here is reported below, when the timed runs fail the same way
            with contextlib.suppress(Exception):
                timed(tool, model, x)
    for name in names:
        model, x = builder(name)
        times: dict[str, list[float]] = {tool: [] for tool in TOOLS}
        errors: dict[str, str] = {}
        for _ in range(repeats):
            for tool in TOOLS:
                if tool in errors:
                    continue
                try:
                    times[tool].append(timed(tool, model, x))
                except Exception as err:  # a tool that cannot slim this model: say why
                    first = (str(err).strip().splitlines() or [""])[0][:160]
                    errors[tool] = f"{type(err).__name__}: {first}"
        result["models"][name] = {"times": times, "errors": errors}
        del model
        gc.collect()  # untimed: the garbage of one model is not the next one's pause
        if report is not None:
            report(name, result["models"][name])
    result["load_end"] = os.getloadavg()
    return result


def summary(times: list[float]) -> tuple[float, float] | None:
    return (min(times), statistics.median(times)) if times else None


def ratios(result: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Per model, slimgraph's time over Torch-Pruning's: (of the minima, of the medians)."""
    found = {}
    for name, entry in result["models"].items():
        ours, theirs = (summary(entry["times"][tool]) for tool in TOOLS)
        if ours and theirs:
            found[name] = (ours[0] / theirs[0], ours[1] / theirs[1])
    return found


def table(result: dict[str, Any]) -> str:
    load = "/".join(f"{v:.1f}" for v in result["load_start"])
    load_end = "/".join(f"{v:.1f}" for v in result["load_end"])
    rows = [
        f"sg.slim vs Torch-Pruning MetaPruner (build + step), ratio {result['ratio']}, "
        f"1x3x224x224, CPU, {result['repeats']} interleaved repeats, "
        f"{result['threads']} torch threads on {result['cpus']} CPUs (seconds)",
        f"load average (1/5/15 min): {load} at start, {load_end} at end",
        "",
        "| model | sg min | sg median | tp min | tp median | sg/tp (min) | sg/tp (median) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    found = ratios(result)
    for name, entry in result["models"].items():
        cells = []
        for tool in TOOLS:
            s = summary(entry["times"][tool])
            cells += [f"{s[0]:.2f}", f"{s[1]:.2f}"] if s else ["failed", "failed"]
        r = found.get(name)
        cells += [f"{r[0]:.2f}x", f"{r[1]:.2f}x"] if r else ["-", "-"]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    if found:
        mins, meds = zip(*found.values())
        rows.append(
            f"| median over models | | | | | {statistics.median(mins):.2f}x "
            f"| {statistics.median(meds):.2f}x |"
        )
    for name, entry in result["models"].items():
        for tool, error in entry["errors"].items():
            rows.append(f"{name}: {tool} failed: {error}")
    return "\n".join(rows)


def progress(name: str, entry: dict[str, Any]) -> None:
    """One line per model as the zoo goes (stderr), with the process's peak memory."""
    cells = [f"{tool} {summary(entry['times'][tool]) or 'failed'}" for tool in TOOLS]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux
    print(f"{name}: {'; '.join(cells)}; peak RSS {peak:.1f} GB", file=sys.stderr, flush=True)


def profile(name: str, top: int, builder: Builder = build) -> str:
    model, x = builder(name)
    prof = cProfile.Profile()
    prof.runcall(sg.slim, model, (x,), ratio=RATIO)
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None, builder: Builder = build) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="torchvision names")
    parser.add_argument(
        "--zoo",
        action="store_true",
        help="every torchvision classifier up to --max-params (the zoo median)",
    )
    parser.add_argument("--max-params", type=float, default=100e6, help="largest model --zoo times")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per tool and model")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (default: torch's own choice)"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=LIMIT["seconds"], help="stop a call after this long"
    )
    parser.add_argument(
        "--max-gb", type=float, default=12.0, help="memory cap of the process (RLIMIT_DATA)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the raw times as JSON")
    parser.add_argument("--no-warmup", action="store_true", help="time the first calls too")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="cProfile sg.slim, top N"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    LIMIT["seconds"] = args.max_seconds
    cap_memory(args.max_gb)
    names, left = zoo(args.max_params) if args.zoo else (args.models, [])
    result = bench(names, args.repeats, builder, not args.no_warmup, progress if args.zoo else None)
    print(table(result))
    if left:
        print(f"left out, over {args.max_params / 1e6:g}M parameters: {', '.join(left)}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if args.profile:
        print(profile(args.models[0], args.profile, builder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
