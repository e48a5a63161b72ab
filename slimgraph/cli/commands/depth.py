"""``--drop-blocks N|auto`` of ``slim`` and ``plan``: whole residual blocks out first, then
the width is planned on what remains, and the plan records the blocks; ``auto`` lets the
latency planner choose how many (``sg.slim(..., drop_blocks="auto")``)."""

from __future__ import annotations

import argparse
from typing import Any

from torch import nn

import slimgraph as sg
from slimgraph._core.progress import Progress
from slimgraph.errors import UsageError

__all__ = ["add_depth_flag", "best_mix", "blocks_first", "check_auto"]


def add_depth_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--drop-blocks",
        type=_count_or_auto,
        metavar="N|auto",
        help="first drop the N residual blocks that change the example inputs least "
        "(1 - cos of a block's input and output), then plan the width of what remains "
        "(--ratio 0: depth only); the plan records them, and apply replays both. 'auto', "
        "with --target-latency: weigh 0 to half the blocks against width and keep the mix "
        "whose slim model departs least from the original on the example inputs",
    )


def _count_or_auto(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a count nor 'auto'") from None


def check_auto(args: argparse.Namespace, config: sg.PruneConfig) -> None:
    """Refuse ``--drop-blocks auto`` without a latency budget, before the model is built."""
    if args.drop_blocks == "auto" and config.target_latency is None:
        raise UsageError(
            "--drop-blocks auto weighs whole blocks against width under a latency budget: "
            "give --target-latency too"
        )


def best_mix(
    model: nn.Module, example: Any, config: sg.PruneConfig, tries: int, progress: Progress
) -> sg.SlimResult:
    """``--drop-blocks auto``: ``sg.slim(..., drop_blocks="auto")`` at ``config``, whose
    latency model is measured or read already."""
    with progress.step("plan", "weighing blocks against width (a slim model per mix)…"):
        return sg.slim(
            model, example, **dict(config), drop_blocks="auto", latency_tries=tries, progress=False
        )


def blocks_first(
    args: argparse.Namespace,
    model: nn.Module,
    example: Any,
    graph: sg.DependencyGraph,
    progress: Progress,
) -> tuple[nn.Module, sg.DependencyGraph, sg.DepthResult | None]:
    """The model the width is planned on, its graph, and what dropping blocks did: with
    ``--drop-blocks``, a copy without them, traced; otherwise the model as it was."""
    n = args.drop_blocks
    if n is None or n == "auto":  # auto: best_mix slims the mixes itself
        return model, graph, None
    if n < 1:
        raise UsageError(f"--drop-blocks {n}: give how many blocks to drop, 1 or more")
    with progress.step("depth", f"dropping {n} blocks…"):
        try:
            depth = sg.drop_blocks(model, example, n=n, progress=False)
        except sg.RewriteError as err:
            raise UsageError(f"--drop-blocks {n}: {err}") from err
    with progress.step("trace", "tracing without them…"):
        graph = sg.trace(depth.model, example)
    return depth.model, graph, depth
