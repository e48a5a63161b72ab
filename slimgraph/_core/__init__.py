"""Stage 0: helpers every stage uses (inputs, rule expressions, components, progress)."""
