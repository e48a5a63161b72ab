"""The small API that rule kinds use to describe coupling while a graph is built.

A *slot* is one dim of one tensor (or a virtual reshape factor). Rules call
:meth:`Builder.couple` to say that index ``i`` of one slot and index ``j`` of another must be
dropped together, :meth:`Builder.freeze` to forbid dropping anything in a slot, and
:meth:`Builder.inexact` to record that dropping there changes the kept values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import fx

__all__ = [
    "META_MODULE",
    "META_ROLE",
    "Builder",
    "SlotInfo",
    "TensorSlots",
    "OpContext",
    "Edge",
    "Link",
    "Balance",
    "Width",
]

# What the tracer records in ``node.meta`` before the rules run (torch.fx's convention):
META_MODULE = "slimgraph.module"  # the module whose forward made the node ("" at the root)
META_ROLE = "slimgraph.role"  # a placeholder's (role, parameter or buffer name)


@dataclass
class SlotInfo:
    """One dim of one tensor. ``role`` is tensor, param, buffer, input, constant or factor."""

    node: str
    item: int
    dim: int
    size: int
    offset: int
    role: str = "tensor"
    target: str | None = None  # parameter / buffer name for params and buffers
    module: str = ""  # the module whose forward produced this tensor


@dataclass(frozen=True)
class Edge:
    a: int
    b: int
    op: str  # fx node name of the op that made the coupling
    how: str  # identity, offset, block, group, ...


@dataclass(frozen=True)
class Link:
    """Slots ``a`` and ``b`` must keep the same fraction of their indices (any ones)."""

    a: int
    b: int
    op: str
    why: str


@dataclass(frozen=True)
class Balance:
    """``slot`` is cut into consecutive ranges of ``sizes`` that must each keep the same
    fraction of their indices (equal parts lose equally many)."""

    slot: int
    sizes: tuple[int, ...]
    op: str

    @property
    def parts(self) -> int:
        return len(self.sizes)


@dataclass(frozen=True)
class Width:
    """A constant among an op's arguments (a ``normalized_shape``, split sizes) whose
    element k is the width of ``slots[k]``: the code reads it from an attribute of
    ``module`` (the module whose forward made the op), which the rewrite keeps in step."""

    module: str
    values: tuple[int, ...]
    slots: tuple[int, ...]
    op: str


@dataclass
class TensorSlots:
    """The slots of one tensor value in the graph."""

    key: tuple[str, int]
    shape: tuple[int, ...]
    slots: list[int]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def dim(self, d: int) -> int:
        """Slot of dim ``d`` (negative dims count from the end)."""
        return self.slots[d]


@dataclass
class OpContext:
    """What a rule kind sees of one call: the node, its rule and its tensors."""

    node: fx.Node
    roles: dict[str, int | None]
    exact: bool
    why: str | None
    builder: Builder
    outs: list[TensorSlots] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def out(self) -> TensorSlots:
        return self.outs[0]

    def arg(self, role: str, default: Any = None) -> Any:
        """The raw argument in ``role`` (a node, a constant, or ``default`` if absent)."""
        index = self.roles.get(role)
        if index is None:
            return default
        if index < len(self.node.args):
            return self.node.args[index]
        return self.node.kwargs.get(role, default)

    def tensor(self, role: str) -> TensorSlots | None:
        value = self.arg(role)
        return self.builder.tensor(value) if isinstance(value, fx.Node) else None

    def tensor_args(self) -> list[TensorSlots]:
        """Every tensor among the positional arguments, including inside lists."""
        found: list[TensorSlots] = []
        for value in self.node.args:
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in values:
                if isinstance(v, fx.Node):
                    t = self.builder.tensor(v)
                    if t is not None:
                        found.append(t)
        return found


def tensor_values(val: Any) -> list[torch.Tensor | None]:
    """The tensors a node produces: one, or one per item of a tuple/list output."""
    if isinstance(val, torch.Tensor):
        return [val]
    if isinstance(val, (list, tuple)):
        return [v if isinstance(v, torch.Tensor) else None for v in val]
    return []


class Builder:
    """Collects slots, coupling edges, frozen slots and inexact slots."""

    def __init__(
        self,
        relaxed: frozenset[str] = frozenset(),
        head_dim_factors: frozenset[tuple[str, int]] = frozenset(),
        head_dims: bool = False,
        indexed_factors: frozenset[tuple[str, int]] = frozenset(),
        query_heads: bool = False,
    ) -> None:
        self.relaxed = relaxed  # split ops whose parts are re-indexed (see kinds.shape.split)
        # Reshape factors (op, index) found to be attention head dims by an earlier pass,
        # and whether they, rather than the heads, carry the units (see kinds.reshape).
        self.head_dim_factors = head_dim_factors
        self.head_dims = head_dims
        self.indexed_factors = indexed_factors  # read index by index, found by an earlier pass
        # grouped-query attention: query heads inside each KV group carry units, rather
        # than whole KV groups (see kinds.reshape)
        self.query_heads = query_heads
        self.head_dim_slots: set[int] = set()  # marked by attention rules
        self.head_slots: set[int] = set()  # the heads dim of attention queries
        self.indexed_slots: set[int] = set()  # dims taken apart index by index
        self.factor_keys: dict[int, tuple[str, int]] = {}  # factor slot -> (op, index)
        self.links: list[Link] = []
        self.slots: list[SlotInfo] = []
        self.edges: list[Edge] = []
        self.same: list[tuple[int, int]] = []  # whole slots coupled index for index
        self.pairs: list[tuple[int, int, np.ndarray, np.ndarray]] = []  # index by index
        self.frozen: dict[int, str] = {}
        self.inexact_reasons: dict[int, str] = {}
        self.balances: list[Balance] = []
        self.widths: list[Width] = []  # constants that follow slot widths (see follow)
        self.residual: set[int] = set()  # slots where two streams are summed
        self._tensors: dict[tuple[str, int], TensorSlots] = {}
        self._parent: list[int] = []  # slot-level union-find, for is_frozen()
        self._frozen_roots: set[int] = set()
        self._repeat_roots: set[int] = set()  # components holding a broadcast repeat
        self._size = 0
        self._nodes: dict[str, fx.Node] = {}  # registered nodes by name; facts in node.meta

    # -- slots -------------------------------------------------------------------------
    @property
    def num_elements(self) -> int:
        return self._size

    def new_slot(self, node: str, item: int, dim: int, size: int, role: str, **kw) -> int:
        self.slots.append(SlotInfo(node, item, dim, size, self._size, role, **kw))
        self._parent.append(len(self._parent))
        self._size += size
        return len(self.slots) - 1

    def _find(self, slot: int) -> int:
        while self._parent[slot] != slot:
            self._parent[slot] = self._parent[self._parent[slot]]
            slot = self._parent[slot]
        return slot

    def connected(self, a: int, b: int) -> bool:
        """Whether slots ``a`` and ``b`` are already coupled (slot-level)."""
        return self._find(a) == self._find(b)

    def is_frozen(self, slot: int) -> bool:
        """Whether anything coupled with ``slot`` so far is frozen (slot-level, approximate)."""
        return self._find(slot) in self._frozen_roots

    def factor(self, size: int, op: str, index: int = -1) -> int:
        """A virtual slot for factor ``index`` of a reshape ``op`` (or an op's own atom)."""
        node = self._nodes.get(op)
        module = node.meta.get(META_MODULE, "") if node is not None else ""
        slot = self.new_slot(op, -1, len(self.slots), size, "factor", module=module)
        self.factor_keys[slot] = (op, index)
        return slot

    def repeat(self, slot: int, op: str) -> None:
        """``slot`` repeats one value along itself (an expanded size-1 dim)."""
        self.couple(slot, self.factor(self.slots[slot].size, op), op, "repeat")
        self._repeat_roots.add(self._find(slot))

    def is_repeat(self, slot: int) -> bool:
        """Whether ``slot`` is coupled with an expanded, repeated dim (slot-level)."""
        return self._find(slot) in self._repeat_roots

    def freeze_indexed(self, slot: int, reason: str) -> None:
        """Freeze ``slot``, whose indices are read one by one (``select``, ``unbind``)."""
        self.freeze(slot, reason)
        self.indexed_slots.add(slot)

    def head_dim(self, slot: int) -> None:
        """``slot`` is the per-head feature dim of an attention (its ``D``)."""
        self.head_dim_slots.add(slot)

    def register(self, node: fx.Node) -> None:
        """Create the slots of every tensor ``node`` produces."""
        self._nodes[node.name] = node
        role, target = node.meta.get(META_ROLE, ("tensor", None))
        for item, value in enumerate(tensor_values(node.meta.get("val"))):
            if value is None:
                continue
            shape = tuple(int(s) for s in value.shape)
            ids = [
                self.new_slot(
                    node.name,
                    item,
                    d,
                    s,
                    role,
                    target=target,
                    module=node.meta.get(META_MODULE, ""),
                )
                for d, s in enumerate(shape)
            ]
            self._tensors[(node.name, item)] = TensorSlots((node.name, item), shape, ids)

    def tensor(self, node: fx.Node | Any, item: int = 0) -> TensorSlots | None:
        if not isinstance(node, fx.Node):
            return None
        return self._tensors.get((node.name, item))

    def outputs(self, node: fx.Node) -> list[TensorSlots]:
        found = []
        for item in range(len(tensor_values(node.meta.get("val")))):
            t = self._tensors.get((node.name, item))
            if t is not None:
                found.append(t)
        return found

    # -- facts -------------------------------------------------------------------------
    def couple(
        self,
        a: int,
        b: int,
        op: str,
        how: str = "identity",
        a_idx: np.ndarray | None = None,
        b_idx: np.ndarray | None = None,
    ) -> None:
        """Index ``a_idx[k]`` of slot ``a`` goes with index ``b_idx[k]`` of slot ``b``."""
        sa, sb = self.slots[a], self.slots[b]
        whole = a_idx is None and b_idx is None
        if whole and sa.size != sb.size:
            raise ValueError(f"identity coupling of sizes {sa.size} and {sb.size} at {op}")
        a_idx = np.arange(sa.size) if a_idx is None else a_idx
        b_idx = np.arange(sb.size) if b_idx is None else b_idx
        if len(a_idx) == 0 or a == b and how == "identity":
            return
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            self._parent[rb] = ra
            if rb in self._frozen_roots:
                self._frozen_roots.add(ra)
            if rb in self._repeat_roots:
                self._repeat_roots.add(ra)
        if whole:  # merged slot by slot: no index pairs to store (most couplings)
            self.same.append((a, b))
        else:
            self.pairs.append((a, b, np.asarray(a_idx, np.int64), np.asarray(b_idx, np.int64)))
        self.edges.append(Edge(a, b, op, how))

    def freeze(self, slot: int, reason: str) -> None:
        """Nothing coupled with ``slot`` may be dropped; the first reason is kept."""
        if self.slots[slot].size > 1:
            self.frozen.setdefault(slot, reason)
            self._frozen_roots.add(self._find(slot))

    def freeze_all(self, tensors: list[TensorSlots], reason: str) -> None:
        for t in tensors:
            for s in t.slots:
                self.freeze(s, reason)

    def balance(self, slot: int, sizes: int | tuple[int, ...], op: str) -> None:
        """``slot`` is read in ranges of ``sizes`` (or that many equal ranges) that must
        each keep the same fraction of their indices."""
        if isinstance(sizes, int):
            sizes = (self.slots[slot].size // sizes,) * sizes
        self.balances.append(Balance(slot, tuple(sizes), op))

    def follow(self, node: fx.Node, values: Any, slots: list[int]) -> None:
        """The constant ``values`` (an int or a list of ints) is the width of ``slots``,
        element by element; the rewrite updates the attribute of the op's module that
        holds it."""
        values = (values,) if isinstance(values, int) else values
        ints = tuple(int(v) for v in values)
        self.widths.append(Width(node.meta.get(META_MODULE, ""), ints, tuple(slots), node.name))

    def link(self, a: int, b: int, op: str, why: str) -> None:
        """``a`` and ``b`` keep the same fraction of indices, whichever they are."""
        self.links.append(Link(a, b, op, why))

    def inexact(self, slot: int, reason: str) -> None:
        """Dropping indices of ``slot`` changes the values computed from the kept ones."""
        self.inexact_reasons.setdefault(slot, reason)

    def broadcast(self, src: TensorSlots, dst: TensorSlots, op: str) -> None:
        """Couple ``src`` into ``dst`` aligned from the right, skipping broadcast dims."""
        for k in range(1, min(src.ndim, dst.ndim) + 1):
            if src.shape[-k] == dst.shape[-k] and src.shape[-k] > 1:
                self.couple(src.dim(-k), dst.dim(-k), op)
