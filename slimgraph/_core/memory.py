"""Handing freed memory back to the operating system between large tensors.

glibc serves allocations above a threshold with their own ``mmap`` (unmapped when freed),
but raises that threshold to the size of each such block freed, up to 32 MiB; from then
on tensors of a few MiB live in the heap, and a pass that reads tensors of varying sizes
one at a time (a checkpoint streamed shard by shard) can leave gigabytes of freed but
fragmented heap resident. :func:`release_freed` returns the free pages (``malloc_trim``);
elsewhere than glibc it does nothing.

>>> release_freed()
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

__all__ = ["release_freed"]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        return None


def release_freed() -> None:
    """Return the heap's free pages to the operating system (glibc ``malloc_trim(0)``)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
