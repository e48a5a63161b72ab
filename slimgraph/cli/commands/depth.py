"""``--drop-blocks N`` of ``slim`` and ``plan``: whole residual blocks out first, then the
width is planned on what remains, and the plan records the blocks."""

from __future__ import annotations

import argparse
from typing import Any

from torch import nn

import slimgraph as sg
from slimgraph._core.progress import Progress
from slimgraph.errors import UsageError

__all__ = ["add_depth_flag", "blocks_first"]


def add_depth_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--drop-blocks",
        type=int,
        metavar="N",
        help="first drop the N residual blocks that change the example inputs least "
        "(1 - cos of a block's input and output), then plan the width of what remains "
        "(--ratio 0: depth only); the plan records them, and apply replays both",
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
    if n is None:
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
