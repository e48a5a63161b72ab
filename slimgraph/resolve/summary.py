"""Review a plan before anything is cut: per layer, shapes, parameters and MACs before and
after, and the groups that keep every unit with the reason: *frozen* by the graph, *skipped*
by the plan, or *ignored* by ``PruneConfig.ignore``.

Everything is measured on meta-device copies (no compute, no weights touched).

>>> import torch, slimgraph as sg
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
>>> graph = sg.trace(net, (torch.randn(1, 4),))
>>> summary = sg.plan(graph, ratio=0.5).summary()
>>> [(r.layer, r.params_before, r.params_after, r.macs_before, r.macs_after) for r in summary.layers]
[('0', 40, 20, 32, 16), ('2', 18, 10, 16, 8)]
>>> summary.untouched["2.weight:0"]
"model output: its shape is part of the model's contract"
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from slimgraph.resolve.cost import count_params, plan_module_macs, slim_meta_copy
from slimgraph.resolve.indices import check_plan

if TYPE_CHECKING:
    from slimgraph.graph.depgraph import DependencyGraph, Group
    from slimgraph.resolve.plan import PruningPlan

__all__ = ["LayerChange", "PlanSummary", "dims", "held_note", "summarize"]


class LayerChange(BaseModel):
    """One layer (a module with parameters of its own) before and after the plan."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layer: str
    kind: str
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]  # parameter -> (before, after)
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int


class PlanSummary(BaseModel):
    """What a plan does, layer by layer; ``untouched``: group -> why it keeps every unit
    (frozen, skipped or ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: tuple[LayerChange, ...]
    untouched: dict[str, str]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    scored_by: str = ""  # the criterion, and where the data it read came from
    compensated: tuple[str, ...] = ()  # tensors that took the dropped channels' means
    blocks: tuple[str, ...] = ()  # whole blocks dropped first: the layers are the rest's
    held: tuple[str, ...] = ()  # groups a budget search held at a lighter cut (plan.held)
    ratio: float | None = None  # the ratio the plan's other groups took

    def changed(self) -> list[LayerChange]:
        """The layers whose shapes change."""
        return [r for r in self.layers if any(a != b for a, b in r.shapes.values())]

    def __str__(self) -> str:
        rows = [("layer", "type", "shape before -> after", "params", "MACs")]
        for r in self.changed():
            shapes = "; ".join(f"{dims(a)} -> {dims(b)}" for a, b in r.shapes.values() if a != b)
            rows.append(
                (
                    r.layer,
                    r.kind,
                    shapes,
                    f"{r.params_before:,} -> {r.params_after:,}",
                    f"{r.macs_before:,} -> {r.macs_after:,}",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
        lines.append(
            f"total params {self.params_before:,} -> {self.params_after:,} "
            f"({_ratio(self.params_after, self.params_before)}), MACs {self.macs_before:,} -> "
            f"{self.macs_after:,} ({_ratio(self.macs_after, self.macs_before)})"
        )
        if self.blocks:
            lines.append(f"after dropping blocks {', '.join(self.blocks)} (totals without them)")
        if self.scored_by:
            lines.append(f"scored by {self.scored_by}")
        if self.held:
            lines.append(self.held_line())
        if self.compensated:
            shown = ", ".join(self.compensated[:3])
            more = f", … ({len(self.compensated)} tensors)" if len(self.compensated) > 3 else ""
            lines.append(f"dropped channels' means folded into {shown}{more}")
        if self.untouched:
            lines.append(f"{len(self.untouched)} groups untouched:")
            for why, ids in self.untouched_by_reason().items():
                shown = ", ".join(ids[:3]) + (f", … ({len(ids)} groups)" if len(ids) > 3 else "")
                lines.append(f"  {why}: {shown}")
        return "\n".join(lines)

    def held_line(self) -> str:
        """Which groups the budget search held, and whose the plan's ratio is."""
        return held_note(self.held, self.ratio)

    def untouched_by_reason(self) -> dict[str, list[str]]:
        """Reason -> the untouched groups it accounts for, most common first."""
        found: dict[str, list[str]] = {}
        for gid, why in self.untouched.items():
            found.setdefault(why, []).append(gid)
        return dict(sorted(found.items(), key=lambda kv: -len(kv[1])))

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{c}</th>" for c in ("layer", "type", "shapes", "params", "MACs"))
        body = "".join(
            f"<tr><td><code>{html.escape(r.layer)}</code></td><td>{r.kind}</td><td>"
            + "<br>".join(f"{dims(a)} → {dims(b)}" for a, b in r.shapes.values() if a != b)
            + f"</td><td>{r.params_before:,} → {r.params_after:,}</td>"
            f"<td>{r.macs_before:,} → {r.macs_after:,}</td></tr>"
            for r in self.changed()
        )
        untouched = "".join(
            f"<li>{html.escape(why)}: "
            + ", ".join(f"<code>{html.escape(g)}</code>" for g in ids)
            + "</li>"
            for why, ids in self.untouched_by_reason().items()
        )
        return (
            f"<p><b>PruningPlan</b>: params {self.params_before:,} → {self.params_after:,} "
            f"({_ratio(self.params_after, self.params_before)}), MACs {self.macs_before:,} → "
            f"{self.macs_after:,} ({_ratio(self.macs_after, self.macs_before)})</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            + (f"<p>{html.escape(self.held_line())}</p>" if self.held else "")
            + (
                f"<details><summary>{len(self.untouched)} groups untouched</summary><ul>"
                f"{untouched}</ul></details>"
                if untouched
                else ""
            )  # fmt: skip
        )


def held_note(held: tuple[str, ...] | list[str], ratio: float | None) -> str:
    """The line that names the groups a budget search held at a lighter cut (``plan.held``)
    and says that the plan's ratio is the other groups'."""
    shown = ", ".join(held[:3]) + (f", … ({len(held)} groups)" if len(held) > 3 else "")
    rest = f"; the ratio {ratio:.4f} is the other groups'" if ratio is not None else ""
    return f"held at a lighter cut (one step deeper oversteps the budget): {shown}{rest}"


def dims(shape: tuple[int, ...]) -> str:
    """``(64, 3, 7, 7)`` -> ``"64×3×7×7"``, ``()`` -> ``"scalar"``."""
    return "×".join(map(str, shape)) or "scalar"


def _ratio(after: int, before: int) -> str:
    return f"{after / before:.1%}" if before else "-"


def summarize(graph: DependencyGraph, plan: PruningPlan) -> PlanSummary:
    """Layer-by-layer effect of ``plan`` on the model ``graph`` was traced from."""
    check_plan(graph, plan)
    model = graph.model
    after = slim_meta_copy(graph, plan)
    macs_before, macs_after = plan_module_macs(graph, plan)
    # by module and attribute, not by parameter name: named_parameters() lists a tied
    # tensor under its first name only (lm_head.weight is absent beside embed_tokens)
    after_modules = dict(after.named_modules())
    layers = []
    for name, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False))
        if not own:
            continue
        slim_own = dict(after_modules[name].named_parameters(recurse=False))
        shapes = {p: (tuple(t.shape), tuple(slim_own[p].shape)) for p, t in own.items()}
        layers.append(
            LayerChange(
                layer=name,
                kind=type(module).__name__,
                shapes=shapes,
                params_before=sum(math.prod(a) for a, _ in shapes.values()),
                params_after=sum(math.prod(b) for _, b in shapes.values()),
                macs_before=macs_before.get(name, 0),
                macs_after=macs_after.get(name, 0),
            )
        )
    cut = {c.group for c in plan.cuts if c.drop}
    untouched = {g.id: _why_untouched(plan, g) for g in graph.groups if g.id not in cut}
    return PlanSummary(
        layers=tuple(layers),
        untouched=untouched,
        params_before=count_params(model),  # a tied tensor counted once, not per layer
        params_after=count_params(after),
        macs_before=macs_before.get("", 0),
        macs_after=macs_after.get("", 0),
        scored_by=plan.criterion
        + "".join(f"; {what} from {where}" for what, where in plan.provenance.items()),
        compensated=tuple(fold.into for fold in plan.compensation),
        blocks=plan.blocks,
        held=plan.held,
        ratio=plan.config.ratio if plan.held and plan.config is not None else None,
    )


def _why_untouched(plan: PruningPlan, group: Group) -> str:
    """Why ``group`` keeps every unit: the plan skipped it, the graph froze it (the first
    reason), it was ignored, or the plan chose to drop none of it."""
    if plan.skipped.get(group.id):
        return plan.skipped[group.id]
    if not group.prunable:
        return next(iter(group.frozen.values()), "a single unit")
    if plan.config is not None and any(plan.config.is_ignored(m) for m in group.modules):
        return "ignored (PruneConfig.ignore)"
    return "skipped: the plan drops none of its units"
