"""Inputs synthesised from recorded shapes: refused before allocation when too large; and
the tensor mapper the recorder and the value check run on every op's arguments."""

from __future__ import annotations

import collections
import time

import pytest
import torch

from slimgraph._core.inputs import InputSpec, check_input_bytes, map_tensors, synthesize
from slimgraph.errors import TraceError

HUGE = InputSpec((10**7, 10**6), "float32")  # 10**13 elements, 40 TB


def test_a_huge_recorded_shape_is_refused_before_any_allocation():
    start = time.perf_counter()
    with pytest.raises(TraceError, match=r"10000000x1000000 float32\) take 40000000000000 bytes"):
        synthesize([HUGE])
    assert time.perf_counter() - start < 1


def test_the_limit_can_be_raised():
    spec = InputSpec((4, 4), "float32")
    with pytest.raises(TraceError, match="over the limit of 32;"):
        synthesize([spec], max_input_bytes=32)
    assert synthesize([spec], max_input_bytes=64)[0].shape == (4, 4)


def test_the_meta_device_allocates_nothing_and_has_no_limit():
    assert synthesize([HUGE], "meta")[0].shape == HUGE.shape


def test_an_unknown_dtype_is_refused():
    with pytest.raises(TraceError, match="'floot32' is no torch dtype"):
        check_input_bytes([InputSpec((1,), "floot32")])


def test_map_tensors_maps_tensors_in_every_container_and_hands_leaves_back() -> None:
    Pair = collections.namedtuple("Pair", "a b")
    t = torch.ones(2)
    args = (t, [t, 3], {"k": t}, Pair(t, 1.5), collections.OrderedDict(x=t), None, torch.int8)
    out = map_tensors(lambda x: x * 2, args)
    assert type(out) is tuple and out[0].tolist() == [2.0, 2.0]
    assert type(out[1]) is list and out[1][0].tolist() == [2.0, 2.0] and out[1][1] == 3
    assert out[2]["k"].tolist() == [2.0, 2.0]
    assert type(out[3]) is Pair and out[3].a.tolist() == [2.0, 2.0] and out[3].b == 1.5
    assert type(out[4]) is collections.OrderedDict and out[4]["x"].tolist() == [2.0, 2.0]
    assert out[5] is None and out[6] is torch.int8
    size = torch.Size([2, 3])
    assert map_tensors(lambda x: x, size) == size
