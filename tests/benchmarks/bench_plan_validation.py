"""How long ``PruningPlan`` validation takes on a very large group (issue 13, item 6).

Usage: python tests/benchmarks/bench_plan_validation.py [--units 1000000]

Validates, from JSON, a plan whose one group drops every unit but one, then a cut with
duplicate indices (the refusal path, which used to count each index separately and took
35-60 s on a 40,000-unit group). Prints the seconds each took; both should stay under one
second at a million units.
"""

from __future__ import annotations

import argparse
import contextlib
import time

from pydantic import ValidationError

from slimgraph.resolve.plan import GroupCut, PruningPlan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1_000_000)
    n = parser.parse_args().units
    cut = GroupCut(group="g", size=n + 1, drop=tuple(range(n)))
    text = PruningPlan(fingerprint="0" * 16, criterion="l2", cuts=(cut,)).model_dump_json()
    start = time.perf_counter()
    PruningPlan.model_validate_json(text)
    print(f"valid plan, {n:,} units: {time.perf_counter() - start:.3f} s")
    start = time.perf_counter()
    with contextlib.suppress(ValidationError):
        GroupCut(group="g", size=n + 1, drop=tuple(range(n // 2)) * 2)
    print(f"duplicate indices, {n:,} units: {time.perf_counter() - start:.3f} s")


if __name__ == "__main__":
    main()
