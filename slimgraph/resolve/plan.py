"""``PruningPlan``: the resolved cuts, reviewable as JSON and checked against a graph."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from slimgraph.criteria.config import PruneConfig
from slimgraph.errors import PlanError
from slimgraph.resolve.summary import PlanSummary, summarize

if TYPE_CHECKING:
    from slimgraph.graph.depgraph import DependencyGraph

__all__ = ["Fold", "GroupCut", "InputShape", "PruningPlan"]


class GroupCut(BaseModel):
    """Which units one group drops. ``size`` is the group's unit count when planned."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group: str = Field(min_length=1)
    size: int = Field(ge=1)
    drop: tuple[int, ...]
    modules: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _indices(self) -> GroupCut:
        where = f"group {self.group}" + (
            f" ({', '.join(self.modules[:3])})" if self.modules else ""
        )
        if len(set(self.drop)) != len(self.drop):
            # one counting pass: drop.count per index was quadratic on large groups
            dup = sorted(i for i, n in Counter(self.drop).items() if n > 1)
            raise ValueError(f"{where}: duplicate drop indices {dup[:5]}")
        bad = [i for i in self.drop if not 0 <= i < self.size]
        if bad:
            raise ValueError(f"{where}: drop indices {bad[:5]} out of range for {self.size} units")
        if len(self.drop) >= self.size:
            raise ValueError(f"{where}: drops all {self.size} units; at least one must be kept")
        if list(self.drop) != sorted(self.drop):
            raise ValueError(f"{where}: drop indices must be sorted")
        return self


class InputShape(BaseModel):
    """Shape and dtype of one example input, so a plan can dry-run without real data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shape: tuple[int, ...]
    dtype: str
    name: str | None = None

    @field_validator("shape")
    @classmethod
    def _non_negative(cls, shape: tuple[int, ...]) -> tuple[int, ...]:
        if any(s < 0 for s in shape):
            raise ValueError(f"negative size in shape {shape}")
        return shape

    @field_validator("dtype")
    @classmethod
    def _torch_dtype(cls, dtype: str) -> str:
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; name a torch dtype such as float32")
        return dtype


class Fold(BaseModel):
    """The calibration means of the input channels one layer loses, folded where its
    output keeps their average contribution (``PruneConfig.bias_compensation``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reads: str = Field(description='"weight:dim": the layer and the dim that loses inputs')
    into: str = Field(
        description="its bias (added), or the running_mean of the BatchNorm reading a "
        "bias-free layer (subtracted)"
    )
    means: tuple[float, ...] = Field(description="one per dropped input index, in order")

    @model_validator(mode="after")
    def _fits(self) -> Fold:
        layer, _, dim = self.reads.rpartition(":")
        if not layer.endswith("weight") or not dim.isdigit():
            raise ValueError(f'fold reads "{self.reads}"; expected "<layer>.weight:<dim>"')
        if not self.into.endswith((".bias", ".running_mean")) and self.into not in (
            "bias",
            "running_mean",
        ):
            raise ValueError(
                f"fold of {self.reads} goes into {self.into}; only a bias or a BatchNorm "
                "running_mean can take the dropped channels' means"
            )
        if not all(math.isfinite(m) for m in self.means):
            raise ValueError(f"fold of {self.reads}: its means must be finite numbers")
        return self


class PruningPlan(BaseModel):
    """The resolved list of units to drop, with what it was computed from.

    Validated on its own (indices unique, sorted, in range, never everything) and, when a
    graph is given as context, against that graph (same model, known groups, same sizes)::

        plan = PruningPlan.model_validate_json(text, context={"graph": graph})
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    fingerprint: str = Field(pattern=r"^[0-9a-f]{16}$")
    criterion: str
    config: PruneConfig | None = None
    inputs: tuple[InputShape, ...] = ()
    training: bool = Field(False, description="the model was traced in train mode")
    head_dims: bool = Field(False, description="traced with head-dim units, not whole heads")
    query_heads: bool = Field(
        False, description="traced with query heads inside KV groups, not whole KV groups"
    )
    blocks: tuple[str, ...] = Field(
        (),
        description="whole blocks dropped before the cuts, by module path in the original "
        "model; the fingerprint, inputs and cuts are of the model without them",
    )
    cuts: tuple[GroupCut, ...] = ()
    held: tuple[str, ...] = Field(
        (),
        description="groups a budget search held at a lighter plan's cut because cutting them "
        "one step deeper oversteps the budget (whole heads, or many groups stepping at once); "
        "config.ratio is the other groups'",
    )
    skipped: dict[str, str] = Field(
        default_factory=dict, description="group id -> why the plan skipped it (drops none of it)"
    )
    params_before: int = Field(0, ge=0)
    params_after: int = Field(0, ge=0)
    predicted_latency_ms: float | None = Field(
        None, description="what config.latency_model predicts for the slim model"
    )
    measured_latency_kept: float | None = Field(
        None,
        gt=0.0,
        description="the slim model's latency over the original's, measured on the latency "
        "model's runtime (sg.slim with latency_tries)",
    )
    latency_tries: tuple[PositiveFloat, ...] = Field(
        (),
        description="what each slim model tried measured, in order (sg.slim with "
        "latency_tries): measured_latency_kept is the one chosen",
    )
    provenance: dict[str, str] = Field(
        default_factory=dict,
        description='where data-aware scores came from: "gradients", "activations" -> source',
    )
    compensation: tuple[Fold, ...] = Field(
        (), description="means of dropped channels folded into biases (bias_compensation)"
    )

    @model_validator(mode="after")
    def _chosen_among_tries(self) -> PruningPlan:
        if self.latency_tries and self.measured_latency_kept not in self.latency_tries:
            raise ValueError(
                f"measured_latency_kept {self.measured_latency_kept} is not one of the "
                f"latency_tries {self.latency_tries}"
            )
        return self

    @model_validator(mode="after")
    def _unique_groups(self, info: ValidationInfo) -> PruningPlan:
        seen: set[str] = set()
        for cut in self.cuts:
            if cut.group in seen:
                raise ValueError(f"group {cut.group} appears twice in the plan")
            seen.add(cut.group)
        for i, gid in enumerate(self.held):
            if gid not in seen:
                raise ValueError(f"held group {gid} is not one of the plan's cuts")
            if gid in self.held[:i]:
                raise ValueError(f"held group {gid} appears twice")
        _check_blocks(self.blocks)
        graph = (info.context or {}).get("graph") if info.context else None
        if graph is not None:
            self.check(graph)
        return self

    _graph: DependencyGraph | None = PrivateAttr(default=None)  # set by sg.plan

    def __eq__(self, other: object) -> bool:
        """Plans are equal when their data is: the remembered graph does not count."""
        if not isinstance(other, PruningPlan):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # (its dict fields never hashed anyway)

    def for_graph(self, graph: DependencyGraph) -> PruningPlan:
        """This plan, remembering the graph it was made on (for :meth:`summary` and the
        notebook view; not serialised, and not part of equality)."""
        bound = self.model_copy()
        bound._graph = graph
        return bound

    def summary(self, graph: DependencyGraph | None = None) -> PlanSummary:
        """Per layer: shapes, params and MACs before -> after, and the groups that keep
        every unit with the reason: frozen, skipped or ignored (see
        :mod:`slimgraph.resolve.summary`). ``graph`` is the traced graph the plan fits; a
        plan made by :func:`slimgraph.plan` remembers its own."""
        graph = graph or self._graph
        if graph is None:
            raise PlanError(
                "summary() needs the traced graph of the model: plan.summary(sg.trace(model, inputs))"
            )
        return summarize(graph, self)

    def _repr_html_(self) -> str:
        if self._graph is not None:
            return self.summary()._repr_html_()
        rows = "".join(
            f"<tr><td><code>{c.group}</code></td><td>{len(c.drop)} of {c.size}</td></tr>"
            for c in self.cuts
            if c.drop
        )
        return (
            f"<p><b>PruningPlan</b> ({self.criterion}): params {self.params_before:,} → "
            f"{self.params_after:,}</p><table><thead><tr><th>group</th><th>dropped</th></tr>"
            f"</thead><tbody>{rows}</tbody></table>"
        )

    def check(self, graph: DependencyGraph) -> None:
        """Raise :class:`PlanError` unless this plan fits ``graph`` exactly."""
        if self.fingerprint != graph.fingerprint:
            raise PlanError(
                f"this plan was made for another model (fingerprint {self.fingerprint}, the "
                f"traced model has {graph.fingerprint}); re-plan with sg.plan(graph, config)"
            )
        for cut in self.cuts:
            group = graph.group(cut.group)
            layers = ", ".join(group.modules[:3])
            if cut.size != group.size:
                raise PlanError(
                    f"group {cut.group} ({layers}) has {group.size} prunable units, the plan "
                    f"expects {cut.size}"
                )

    def with_blocks(self, blocks: Sequence[str], params_before: int) -> PruningPlan:
        """This plan, made on a model without ``blocks``, as the plan of the model with
        them (which had ``params_before`` parameters): :func:`slimgraph.apply` drops them
        first, then makes the cuts."""
        data = {**dict(self), "blocks": tuple(blocks), "params_before": params_before}
        plan = PruningPlan.model_validate(data)
        return plan if self._graph is None else plan.for_graph(self._graph)

    @property
    def dropped(self) -> int:
        return sum(len(c.drop) for c in self.cuts)

    def cut(self, group: str) -> GroupCut | None:
        return next((c for c in self.cuts if c.group == group), None)

    def describe(self) -> str:
        """One line per group that loses units (no graph needed; see also :meth:`summary`)."""
        lines = [
            f"plan {self.fingerprint} by {self.criterion}: {self.dropped} units dropped, "
            f"params {self.params_before:,} -> {self.params_after:,}"
        ]
        if self.blocks:
            lines.append(f"  blocks dropped: {', '.join(self.blocks)}")
        for c in self.cuts:
            if c.drop:
                lines.append(f"  {c.group}: keep {c.size - len(c.drop)}/{c.size}")
        for group, why in self.skipped.items():
            lines.append(f"  {group}: skipped, {why}")
        for what, where in self.provenance.items():
            lines.append(f"  {what} from {where}")
        for fold in self.compensation:
            lines.append(
                f"  means of {len(fold.means)} dropped inputs of {fold.reads} -> {fold.into}"
            )
        return "\n".join(lines)


def _check_blocks(blocks: tuple[str, ...]) -> None:
    """Module paths, each once, none inside another (dropping the outer one drops it)."""
    for name in blocks:
        if not re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*", name):
            raise ValueError(f"block {name!r} is not a module path such as 'layer1.2'")
    if len(set(blocks)) != len(blocks):
        raise ValueError(f"a block appears twice in {list(blocks)}")
    for a in blocks:
        inner = [b for b in blocks if b.startswith(f"{a}.")]
        if inner:
            raise ValueError(f"blocks {inner} are inside block {a!r}, which is dropped whole")
