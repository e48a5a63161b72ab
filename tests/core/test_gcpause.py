"""The collector paused for a block: nothing the block made is promoted to the oldest
generation, its cycles are freed on leaving it, and the collector's state is the caller's."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

import slimgraph as sg
from slimgraph._core.gcpause import gc_paused


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def _busy() -> _Node:
    keep = _Node()
    for _ in range(50_000):  # allocations enough for young and middle collections
        _Node()
    return keep


def _in_oldest(obj: object) -> bool:
    return any(o is obj for o in gc.get_objects(generation=2))


def test_what_a_paused_block_keeps_stays_young() -> None:
    gc.collect()
    assert _in_oldest(_busy())  # the mechanism: running, the collector promotes it
    gc.collect()
    with gc_paused():
        kept = _busy()
    assert not _in_oldest(kept)


def test_cycles_made_in_the_block_are_freed_on_leaving_it() -> None:
    with gc_paused():
        ref = weakref.ref(_Node())
        assert ref() is not None
    assert ref() is None


def test_the_collector_comes_back_after_an_error() -> None:
    with pytest.raises(ValueError), gc_paused():
        raise ValueError("no")
    assert gc.isenabled()


def test_a_disabled_collector_stays_disabled() -> None:
    gc.disable()
    try:
        with gc_paused():
            _busy()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_sg_slim_runs_paused() -> None:
    seen = []
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    net[1].register_forward_hook(lambda *_: seen.append(gc.isenabled()))
    sg.slim(net, (torch.randn(2, 4),), ratio=0.5)
    assert seen and not any(seen)
    assert gc.isenabled()
