"""Python's cyclic garbage collector paused for one call, and the call's own garbage
collected young when it returns.

A trace makes tens of thousands of objects in reference cycles (fx nodes and their users,
networkx adjacency dicts, torch's pytree closures) that live for the whole call and die
at its end. With the collector running, the young collections during the call find them
alive and promote them; promoted objects count towards the next full collection, which
then walks the whole process heap (torch and transformers hold about 400 000 objects):
about 0.26 s, once every three or four ``sg.slim`` calls on a small network. Paused, the
objects stay young; on return one collection of the youngest generation frees the cycles
among them (a few milliseconds for resnet50) and promotes only what the caller keeps.

The pause is process-wide, as ``gc.disable`` is: another thread's cycles wait for the
call to return. A caller who disabled the collector keeps it disabled, and nested paused
calls collect once, at the outermost.

>>> import gc
>>> with gc_paused():
...     gc.isenabled()
False
>>> gc.isenabled()
True
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["gc_paused"]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic collector paused for the block, then the youngest generation collected.
    A context manager, not a decorator: a wrapper frame would shift the ``stacklevel`` of
    every warning raised inside."""
    if not gc.isenabled():  # the caller's choice, or an outer paused block
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect(0)
