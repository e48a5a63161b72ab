"""Stage 9: the ``slimgraph`` command line."""

from slimgraph.cli.main import main

__all__ = ["main"]
