"""``python -m slimgraph.cli``: the same as the ``slimgraph`` command."""

from slimgraph.cli.main import main

raise SystemExit(main())
