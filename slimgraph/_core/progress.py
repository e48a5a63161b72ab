"""A progress bar on stderr for loops over steps (iterative slimming, recovery)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["progress_bar"]


@contextmanager
def progress_bar(
    total: int | None, description: str, enabled: bool
) -> Iterator[Callable[..., None]]:
    """Yield ``update(advance=1, description=...)``; a no-op when ``enabled`` is false or
    stderr is not a terminal (logs and CI stay clean).

    >>> with progress_bar(3, "steps", enabled=False) as update:
    ...     update(description="step 1")
    """
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    if not (enabled and console.is_terminal):

        def nothing(advance: int = 1, **fields: Any) -> None:
            return None

        yield nothing
        return
    with Progress(*Progress.get_default_columns(), console=console) as bar:
        task = bar.add_task(description, total=total)

        def update(advance: int = 1, **fields: Any) -> None:
            bar.update(task, advance=advance, **fields)

        yield update
