"""One module per ``slimgraph`` command. Each has ``register(commands, parents)``, which
adds its subparser (arguments, help, examples) and sets ``run``; ``run(args)`` does the work
and returns the result and the function that prints it (``slimgraph.cli.main`` prints it
once, as a table or as JSON)."""

from slimgraph.cli.commands import apply, bench, diff, export, inspect, plan, profile, slim
from slimgraph.cli.commands.common import Outcome, Parents

__all__ = ["COMMANDS", "Outcome", "Parents"]

# In the order ``slimgraph --help`` lists them.
COMMANDS = (slim, inspect, export, bench, profile, plan, apply, diff)
