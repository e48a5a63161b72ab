"""Stage 3: the plan model and what it resolves to (indices, slices, cost, summary)."""
