"""What differs between two plans: the model they were made for, their config fields, and
per group the units each drops and how many only one of them drops.

>>> from slimgraph.resolve.plan import GroupCut
>>> cut = lambda *drop: (GroupCut(group="fc.weight:0", size=4, drop=drop),)
>>> a = PruningPlan(fingerprint="0" * 16, criterion="l2", cuts=cut(0, 1))
>>> diff_plans(a, a)["totals"]["groups_differ"]
0
"""

from __future__ import annotations

from typing import Any

from slimgraph.criteria.config import PruneConfig
from slimgraph.resolve.plan import PruningPlan

__all__ = ["diff_plans"]


def diff_plans(a: PruningPlan, b: PruningPlan) -> dict[str, Any]:
    """What differs between plans ``a`` and ``b``: the fingerprint, the config fields, and
    per group (present in either) the units each drops and how many only one of them drops.

    >>> from slimgraph.resolve.plan import GroupCut
    >>> cut = lambda *drop: (GroupCut(group="fc.weight:0", size=4, drop=drop),)
    >>> a = PruningPlan(fingerprint="0" * 16, criterion="l2", cuts=cut(0, 1))
    >>> b = PruningPlan(fingerprint="0" * 16, criterion="l2", cuts=cut(1, 2, 3))
    >>> d = diff_plans(a, b)
    >>> d["same_model"], d["config"], d["totals"]["groups_differ"]
    (True, [], 1)
    >>> {k: d["groups"][0][k] for k in ("dropped_a", "dropped_b", "only_a", "only_b")}
    {'dropped_a': 2, 'dropped_b': 3, 'only_a': 1, 'only_b': 2}
    """
    cuts_a, cuts_b = {c.group: c for c in a.cuts}, {c.group: c for c in b.cuts}
    groups = []
    for gid in [*cuts_a, *(g for g in cuts_b if g not in cuts_a)]:
        ca, cb = cuts_a.get(gid), cuts_b.get(gid)
        either = ca if ca is not None else cuts_b[gid]
        da, db = set(ca.drop if ca else ()), set(cb.drop if cb else ())
        groups.append(
            {
                "id": gid,
                "modules": list(either.modules),
                "units_a": ca.size if ca else None,
                "units_b": cb.size if cb else None,
                "dropped_a": len(da) if ca else None,
                "dropped_b": len(db) if cb else None,
                "only_a": len(da - db),
                "only_b": len(db - da),
            }
        )
    config_a = a.config.model_dump(mode="json") if a.config else {}
    config_b = b.config.model_dump(mode="json") if b.config else {}
    differ = [g for g in groups if g["only_a"] or g["only_b"] or g["units_a"] != g["units_b"]]
    return {
        "same_model": a.fingerprint == b.fingerprint,
        "fingerprints": {"a": a.fingerprint, "b": b.fingerprint},
        "blocks": {"a": list(a.blocks), "b": list(b.blocks)},
        "config": [
            {"field": name, "a": config_a.get(name), "b": config_b.get(name)}
            for name in PruneConfig.model_fields
            if config_a.get(name) != config_b.get(name)
        ],
        "groups": groups,
        "totals": {
            "groups": len(groups),
            "groups_differ": len(differ),
            "dropped": {"a": a.dropped, "b": b.dropped},
            "params_after": {"a": a.params_after, "b": b.params_after},
        },
    }
