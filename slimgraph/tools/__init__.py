"""Stage 7: what users do around a slim model: latency, schedules, recovery, sparsity."""
