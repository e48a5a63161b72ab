"""The width budget of a model whose whole blocks were dropped first.

A latency model is measured on the whole model, and its tables are named by its modules;
without some blocks, the later members of their containers are renumbered
(``layers.5`` is ``layers.4``). The tables follow the renumbering, and a
``target_latency``, a fraction of the whole model's latency, becomes the fraction of
the shorter model's latency that meets it: the blocks pay part of the budget, and the
width the rest.
"""

from __future__ import annotations

from collections.abc import Mapping

from slimgraph.criteria.config import PruneConfig

__all__ = ["width_budget"]


def width_budget(config: PruneConfig, renamed: Mapping[str, str | None]) -> PruneConfig:
    """``config`` for the width of the model without the blocks ``renamed`` reports (a
    dropped module -> ``None``, a moved one -> its new path): its latency model follows
    the new paths, and ``target_latency`` is rescaled by the whole model's predicted
    latency over the shorter model's. Where the blocks alone meet the target, no width
    goes (``ratio=0``).

    >>> from slimgraph.criteria.latency import LatencyModel, LayerTable
    >>> t = LayerTable(shape=(2, 2), outs=(2,), ins=(2,), ms=((1.0,),))
    >>> lm = LatencyModel(runtime="torch", version="x", machine="m", threads=1,
    ...                   layers={f"b.{i}.fc": t for i in range(4)})
    >>> half = PruneConfig(target_latency=0.5, latency_model=lm)
    >>> width_budget(half, {"b.3": None}).target_latency  # 4 ms -> 3 ms; 2 ms is 2/3 of it
    0.6666666666666666
    >>> width_budget(half, {"b.1": None, "b.3": None, "b.2": "b.1"}).ratio  # 2 ms: met
    0.0
    """
    latency = config.latency_model
    if latency is None:
        return config
    short = latency.renamed(renamed)
    update: dict = {"latency_model": short}
    if config.target_latency is not None:
        target = config.target_latency * latency.predict({}) / short.predict({})
        if target >= 1.0:
            update |= {"target_latency": None, "ratio": 0.0}
        else:
            update["target_latency"] = target
    return PruneConfig.model_validate({**dict(config), **update})
