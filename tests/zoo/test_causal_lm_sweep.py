"""Every causal LM that transformers can build tiny slims, reloads with the same logits and
generates; none is silently left unpruned (tests/sweep.py builds them, no per-family code).

A family whose tiny model does not build or run is skipped with transformers' reason (that
is the shrinker's limit, not slimgraph's). The families below that slim but fail a check
are listed with the reason, as strict xfails: fixing one makes its test fail until the
entry goes.
"""

from __future__ import annotations

import pytest

from tests import sweep

pytestmark = [pytest.mark.zoo, pytest.mark.filterwarnings("ignore")]

MACS_KEPT = 0.45  # ratio 0.5 on heads, MLP and hidden keeps about a quarter to a third

# family -> why it fails today (strict: a fix shows up as XPASS, then the entry goes)
FAILS: dict[str, str] = {}

# family -> why ratio 0.5 keeps more than MACS_KEPT of its MACs
WEAK: dict[str, str] = {}


def _params() -> list:
    return [
        pytest.param(f, marks=pytest.mark.xfail(reason=FAILS[f], strict=True)) if f in FAILS else f
        for f in sweep.FAMILIES
    ]


@pytest.mark.parametrize("family", _params())
def test_causal_lm_slims_reloads_and_generates(family: str) -> None:
    out = sweep.run(family)
    if out.stage == "build":
        pytest.skip(f"{family} does not build tiny from its config class: {out.error}")
    assert out.stage == "done", out.error
    assert out.max_diff is not None and out.max_diff <= 1e-5, out.reload
    assert out.macs_kept is not None
    if out.macs_kept > 0.99:  # nothing dropped: sg.slim must have said why
        assert any(w.startswith("the plan drops nothing") for w in out.warnings), out.warnings
    if family not in WEAK:
        assert out.macs_kept <= MACS_KEPT
