"""The ``slimgraph`` reports as text: rich tables and lines on stdout. These modules only
render the dicts the commands build (``--json`` prints the same dicts instead)."""

__all__: list[str] = []
