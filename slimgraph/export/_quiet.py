"""Keeping the exporters' noise off the console, and their errors short in ours.

torch's exporters print warnings and graph dumps, onnxsim's C++ core writes to the
process's file descriptors, and onnxruntime.quantization advises through the root logger:
none of it says anything a user can act on, and a failure comes back as an exception.

>>> one_line(ValueError("\\x1b[31mshape mismatch\\x1b[0m\\nat node 3"))
'shape mismatch'
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import random
import re
import sys
import warnings
from collections.abc import Iterator

import numpy as np

__all__ = [
    "captured",
    "kept_random_state",
    "one_line",
    "quiet_root_logger",
    "reason",
    "silent_fds",
]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # torch's export errors colour their text


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-blank line of ``exc`` without colour codes, at most ``limit`` long."""
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def reason(exc: BaseException) -> str:
    """``Type: first line``, and the same of the root cause the exporters wrap it around.

    >>> try:
    ...     raise RuntimeError("export failed") from KeyError("x")
    ... except RuntimeError as exc:
    ...     reason(exc)
    "RuntimeError: export failed (caused by KeyError: 'x')"
    """
    root = exc
    while root.__cause__ is not None and root.__cause__ is not root:
        root = root.__cause__
    text = f"{type(exc).__name__}: {one_line(exc)}"
    return text if root is exc else f"{text} (caused by {type(root).__name__}: {one_line(root)})"


@contextlib.contextmanager
def captured() -> Iterator[None]:
    """Keep an exporter's warnings and dumps off the console; failures come back as errors."""
    sink = io.StringIO()
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def silent_fds() -> Iterator[None]:
    """Send the process's stdout and stderr to /dev/null: onnxsim's C++ core prints a line
    for every node its constant folding cannot run, which says nothing to act on."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in (1, 2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(null)


@contextlib.contextmanager
def quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization advises pre-processing through the root logger; hush it."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def kept_random_state() -> Iterator[None]:
    """Python's and numpy's global random state as they were on entry: importing onnxsim
    draws from ``random``, and its check draws inputs from ``np.random``, which would change
    what a user's seeded code does after an export.

    >>> random.seed(0)
    >>> with kept_random_state():
    ...     _ = random.random()
    >>> random.random() == random.Random(0).random()
    True
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
