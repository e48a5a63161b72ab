"""Stage 1: trace a model and build its dependency graph from the rule tables."""
