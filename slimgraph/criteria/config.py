"""``PruneConfig``: what the user wants cut, validated before anything is traced."""

from __future__ import annotations

import fnmatch
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from slimgraph.criteria.latency import LatencyModel
from slimgraph.criteria.registry import CRITERIA

__all__ = ["PruneConfig"]


class PruneConfig(BaseModel):
    """The user's intent. Frozen, ``extra="forbid"``: a typo'd field is an error.

    Fractions point two ways: ``ratio``, ``max_ratio`` and the ``overrides`` are fractions
    of a group's channels *dropped*; ``target_macs`` and ``target_params`` are fractions of
    the model's MACs or parameters *kept*. Channels are the indices of a group's widest
    parameter dim (:meth:`DependencyGraph.channel_counts`); ``round_to`` and ``min_keep``
    count them too. A group whose module matches ``ignore`` is *ignored*: not planned.

    >>> from slimgraph import PruneConfig
    >>> PruneConfig(ratio=0.5, round_to=8).ratio
    0.5
    >>> PruneConfig(ratio=1.0)
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for PruneConfig
    ratio
      Input should be less than 1 [type=less_than, input_value=1.0, input_type=float]
        For further information visit https://errors.pydantic.dev/.../v/less_than
    >>> PruneConfig(scope="global", ratio=0.5, max_ratio=0.3)
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for PruneConfig
      Value error, max_ratio=0.3 is below ratio=0.5: no group may drop more than ...
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ratio: float = Field(
        0.5, ge=0.0, lt=1.0, description="fraction of channels DROPPED per group (0.3 keeps 70 %)"
    )
    importance: str = Field("l2", description="criterion name: l1, l2, random, ...")
    scope: Literal["local", "global", "isomorphic"] = Field(
        "local",
        description="local: every group drops ratio of its channels; global: the units of all "
        "groups are ranked together, one budget of ratio of all channels; isomorphic: ranked "
        "together only among groups of the same structure, each such class losing ratio of "
        "its channels",
    )
    reduction: Literal["mean", "sum", "max"] = Field(
        "mean",
        description="how a unit's score combines the group's parameter slices (l1, l2, "
        "bn_scale, taylor): the mean over all their weights, or the sum or max of each "
        "slice's mean",
    )
    normalize: Literal["mean", "max", "sum", "standard", "none"] = Field(
        "mean",
        description="global and isomorphic scope: each group's scores are divided by their "
        "mean, max or sum, standardised ((s - mean) / std) or left as they are (none) before "
        "they are ranked with other groups'",
    )
    max_ratio: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="global and isomorphic scope: the largest fraction of its channels a group "
        "may DROP; with target_macs or target_params, also the largest ratio the search may "
        "choose",
    )
    round_to: int = Field(1, ge=1, description="kept channels per group are a multiple of this")
    min_keep: int = Field(1, ge=1, description="never keep fewer channels than this in a group")
    ignore: tuple[str, ...] = Field(
        (),
        description="glob patterns over module names; groups with a match are ignored: not planned",
    )
    overrides: dict[str, float] = Field(
        default_factory=dict,
        description="glob pattern over module names -> the ratio (fraction DROPPED) of its groups",
    )
    prune_residual: bool = Field(
        True, description="False skips residual-stream groups (plan.skipped says so)"
    )
    target_macs: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="fraction of the model's MACs KEPT, not dropped; the planner then "
        "searches the ratio that keeps it",
    )
    target_params: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="fraction of the model's parameters KEPT; the planner then searches the "
        "ratio that keeps it",
    )
    target_latency: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="fraction of the model's latency KEPT, as latency_model predicts it on "
        "its runtime; the planner then searches the ratio that keeps it",
    )
    latency_model: LatencyModel | None = Field(
        None,
        description="what slimgraph.profile_latency measured; needed by target_latency. In "
        "global and isomorphic scope, units then rank by score per millisecond they cost",
    )
    bias_compensation: bool = Field(
        False,
        description="fold the calibration mean of every dropped input channel into the bias "
        "of the layers that read it (needs calibration inputs)",
    )
    seed: int = 0

    @field_validator("importance")
    @classmethod
    def _known_importance(cls, name: str) -> str:
        if name not in CRITERIA:
            raise ValueError(f"unknown importance {name!r}; known: {sorted(CRITERIA)}")
        return name

    @field_validator("overrides")
    @classmethod
    def _override_ratios(cls, overrides: dict[str, float]) -> dict[str, float]:
        for pattern, ratio in overrides.items():
            if not 0.0 <= ratio < 1.0:
                raise ValueError(f"override {pattern!r}: ratio {ratio} is not in [0, 1)")
        return overrides

    @model_validator(mode="after")
    def _max_ratio_reachable(self) -> PruneConfig:
        targets = [
            name
            for name in ("target_macs", "target_params", "target_latency")
            if getattr(self, name) is not None
        ]
        if len(targets) > 1:
            raise ValueError(f"give one budget, not {' and '.join(targets)}")
        if self.target_latency is not None and self.latency_model is None:
            raise ValueError(
                "target_latency needs latency_model=sg.profile_latency(model, inputs, ...): "
                "what the runtime measured"
            )
        # With a target the planner chooses the ratio, below max_ratio.
        budget = bool(targets)
        if self.max_ratio is not None and not budget and self.max_ratio < self.ratio:
            raise ValueError(
                f"max_ratio={self.max_ratio} is below ratio={self.ratio}: no group may drop "
                "more than max_ratio, so ratio cannot be reached; raise max_ratio or lower ratio"
            )
        return self

    def is_ignored(self, module: str) -> bool:
        """Whether ``module`` matches an ``ignore`` pattern (its groups are not planned)."""
        return any(fnmatch.fnmatchcase(module, p) for p in self.ignore)

    def ratio_for(self, modules: list[str]) -> float:
        """The ratio (fraction dropped) of a group: the first override matching any of its
        modules, else ``ratio``."""
        for pattern, ratio in self.overrides.items():
            if any(fnmatch.fnmatchcase(m, pattern) for m in modules):
                return ratio
        return self.ratio
