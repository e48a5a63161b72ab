"""Progress on stderr: a spinner per slow step (timed), and a bar for loops over steps
(iterative slimming, recovery). Silent when disabled or when stderr is not a terminal, so
logs, pipes and CI stay clean.

>>> progress = Progress(enabled=False)
>>> with progress.step("load", "building…"):
...     pass
>>> list(progress.seconds)
['load']
>>> with progress_bar(3, "steps", enabled=False) as update:
...     update(description="step 1")
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["Progress", "counted", "progress_bar"]


class Progress:
    """Spinner lines and bars on stderr, and how long each named step took (``seconds``).

    ``enabled=False`` (``--json``, ``progress=False``) or a stderr that is not a terminal
    shows nothing; the steps are timed all the same.
    """

    def __init__(self, enabled: bool) -> None:
        # rich is imported here, not at module level: importing slimgraph should not pay
        # for it, and only a run that shows progress needs it.
        from rich.console import Console

        # bound to the stderr of now: a step whose work redirects sys.stderr (an exporter's
        # noise) keeps its spinner on the console
        self.console = Console(file=sys.stderr)
        self.enabled = enabled and self.console.is_terminal
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str, text: str) -> Iterator[None]:
        """Show ``text`` with a spinner while the block runs; then a tick and its time."""
        start = time.perf_counter()
        with self.console.status(text) if self.enabled else nullcontext():
            yield
        self.seconds[name] = time.perf_counter() - start
        if self.enabled:
            self.console.print(f"[green]✓[/] {text.rstrip('…')} ({self.seconds[name]:.1f} s)")

    @contextmanager
    def bar(self, total: int | None, description: str) -> Iterator[Callable[..., None]]:
        """Yield ``update(advance=1, description=...)`` that moves a bar of ``total`` steps."""
        if not self.enabled:

            def nothing(advance: int = 1, **fields: Any) -> None:
                return None

            yield nothing
            return
        from rich.progress import Progress as Bar  # lazy for the reason given in __init__

        with Bar(*Bar.get_default_columns(), console=self.console) as bar:
            task = bar.add_task(description, total=total)

            def update(advance: int = 1, **fields: Any) -> None:
                bar.update(task, advance=advance, **fields)

            yield update


@contextmanager
def progress_bar(
    total: int | None, description: str, enabled: bool
) -> Iterator[Callable[..., None]]:
    """Yield ``update(advance=1, description=...)`` of a bar on stderr (:meth:`Progress.bar`);
    a no-op when ``enabled`` is false or stderr is not a terminal.

    >>> with progress_bar(2, "steps", enabled=False) as update:
    ...     update()
    """
    with Progress(enabled).bar(total, description) as update:
        yield update


def counted(items: Iterable[T], description: str, enabled: bool = True) -> Iterator[T]:
    """``items`` one by one, moving a bar on stderr after each (:func:`progress_bar`: a
    no-op off a terminal); the bar's total is ``len(items)`` when they have one.

    >>> list(counted([1, 2], "batches"))
    [1, 2]
    """
    total = len(items) if isinstance(items, Sized) else None
    with progress_bar(total, description, enabled) as update:
        for item in items:
            yield item
            update()
