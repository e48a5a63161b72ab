"""``PruneConfig``: what the user wants cut, validated before anything is traced."""

from __future__ import annotations

import fnmatch
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["PruneConfig"]


class PruneConfig(BaseModel):
    """The user's intent. Frozen, ``extra="forbid"``: a typo'd field is an error.

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
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ratio: float = Field(0.5, ge=0.0, lt=1.0, description="fraction of units dropped per group")
    importance: str = Field("l2", description="criterion name: l1, l2, random, ...")
    scope: Literal["local", "global"] = "local"
    round_to: int = Field(1, ge=1, description="kept units per group are a multiple of this")
    min_keep: int = Field(1, ge=1, description="never keep fewer units than this in a group")
    ignore: tuple[str, ...] = Field((), description="glob patterns over module names left alone")
    overrides: dict[str, float] = Field(
        default_factory=dict, description="glob pattern over module names -> ratio for its groups"
    )
    prune_residual: bool = Field(True, description="False leaves residual-stream groups alone")
    target_macs: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="fraction of the model's MACs to keep; the planner then finds the ratio",
    )
    seed: int = 0

    @field_validator("importance")
    @classmethod
    def _known_importance(cls, name: str) -> str:
        from slimgraph.importance import CRITERIA

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

    def is_ignored(self, module: str) -> bool:
        return any(fnmatch.fnmatchcase(module, p) for p in self.ignore)

    def ratio_for(self, modules: list[str]) -> float:
        """The ratio of a group: the first override matching any of its modules, else ratio."""
        for pattern, ratio in self.overrides.items():
            if any(fnmatch.fnmatchcase(m, pattern) for m in modules):
                return ratio
        return self.ratio
