"""Inputs synthesised from recorded shapes: refused before allocation when too large."""

from __future__ import annotations

import time

import pytest

from slimgraph._core.inputs import InputSpec, check_input_bytes, synthesize
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
