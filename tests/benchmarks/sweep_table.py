"""The README's sweep tables: every model type of one of transformers' auto mappings
(tests/sweep.py TASKS), built tiny, slimmed at ratio 0.5, saved, reloaded (and generating).

Usage: python tests/benchmarks/sweep_table.py TASK [family ...] > table.md
(TASK: causal-lm, masked-lm or image-classification; one JSON line per family goes to
stderr as it finishes, about 5 s a family)
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from tests import sweep  # noqa: E402
from tests.zoo.test_hf_sweep import FAILS, MACS_KEPT, WEAK  # noqa: E402


def main() -> None:
    task = sys.argv[1]
    families = sys.argv[2:] or sweep.TASKS[task][0]
    outcomes = []
    for family in families:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = sweep.run(family, task)
        seconds = round(time.perf_counter() - start, 1)
        print(json.dumps(vars(out) | {"seconds": seconds}), file=sys.stderr, flush=True)
        outcomes.append(out)
    built = [o for o in outcomes if o.stage != "build"]
    slim = [o for o in built if o.stage == "done" and (o.macs_kept or 1) <= MACS_KEPT]
    reloads = [o for o in built if o.stage == "done" and (o.max_diff or 0) <= 1e-5]
    print(
        f"{len(outcomes)} families; {len(built)} build tiny; {len(slim)} slim to <= "
        f"{MACS_KEPT} of their MACs; {len(reloads)} reload with equal logits and generate\n"
    )
    print("| family | MACs kept | reloads with | note |")
    print("|---|---:|---|---|")
    for o in built:
        kept = f"{o.macs_kept:.2f}" if o.macs_kept is not None else "-"
        note = (
            FAILS.get((task, o.family))
            or WEAK.get((task, o.family))
            or ("" if o.stage == "done" else o.error)
        )
        print(f"| {o.family} | {kept} | {o.reload} | {note} |")
    skipped = [o.family for o in outcomes if o.stage == "build"]
    print(f"\nNot built tiny ({len(skipped)}): {', '.join(skipped)}")


if __name__ == "__main__":
    main()
