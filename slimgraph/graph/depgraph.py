"""The dependency graph: which indices of which tensors must be dropped together.

Nodes of :attr:`DependencyGraph.nx` are *slots* (one dim of one tensor, or a reshape
factor); edges are couplings made by the op rules. Element-level coupling is resolved into
*units* (sets of indices, one channel or one group of channels, that are dropped
together); a *group* is a connected set of slots with the units that live in it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import torch

from slimgraph._core.components import IndexLabels, in_order
from slimgraph._core.inputs import InputSpec
from slimgraph.errors import PlanError
from slimgraph.graph import viz
from slimgraph.graph.builder import Balance, Builder, SlotInfo
from slimgraph.graph.views import GraphViews

__all__ = ["DependencyGraph", "Group", "fingerprint"]


@dataclass
class Group:
    """Coupled slots and the units that can be dropped from them."""

    id: str
    slots: list[int]
    units: np.ndarray  # element label of each prunable unit, in a stable order
    frozen: dict[str, str] = field(default_factory=dict)  # where -> why, for frozen units
    inexact: dict[str, str] = field(default_factory=dict)  # where -> why
    params: list[tuple[str, int]] = field(default_factory=list)  # (parameter, dim)
    balances: list[Balance] = field(default_factory=list)  # proportional parts of splits
    residual: bool = False  # two streams are summed in it (a residual add)

    @property
    def size(self) -> int:
        """Number of prunable units."""
        return len(self.units)

    @property
    def prunable(self) -> bool:
        return self.size > 1

    @property
    def exact(self) -> bool:
        """Dropping units keeps every kept value (dead-channel oracle applies)."""
        return not self.inexact

    @property
    def modules(self) -> list[str]:
        seen: dict[str, None] = {}
        for target, _ in self.params:
            seen.setdefault(target.rpartition(".")[0], None)
        return list(seen)


class DependencyGraph(GraphViews, viz.Drawable):
    """Slots, coupling and groups of one traced model.

    Build it with :func:`slimgraph.trace`; read :attr:`groups`, ask :meth:`explain`. It
    never changes once built: calibration attaches to a new view of it
    (:meth:`calibrated`), and :meth:`for_model` binds its structure to another model.

    >>> import torch, slimgraph as sg
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1))
    >>> graph = sg.trace(net, (torch.randn(1, 3, 8, 8),))
    >>> [(g.id, g.size) for g in graph.prunable_groups()]
    [('0.weight:0', 8)]
    """

    def __init__(
        self,
        builder: Builder,
        model: torch.nn.Module,
        inputs: list[InputSpec],
        fingerprint: str,
        node_ops: dict[str, str],
        output_shapes: list[tuple[int, ...]],
        modes: dict[str, bool] | None = None,
    ) -> None:
        self.model = model
        self.inputs = inputs
        self.fingerprint = fingerprint
        self.slots: list[SlotInfo] = builder.slots
        self.node_ops = node_ops
        self.output_shapes = output_shapes
        self.modes = dict(modes or {})  # module name -> training flag when traced
        self.head_dims = builder.head_dims  # head-dim units instead of whole heads
        self.query_heads = builder.query_heads  # GQA: query heads inside each KV group
        sizes, offsets = [s.size for s in self.slots], [s.offset for s in self.slots]
        self.labels = IndexLabels(sizes, offsets, builder.same, builder.pairs)
        self.num_elements = builder.num_elements  # labels are elements below this
        self.nx = self._slot_graph(builder)
        self._freeze_uncoupled_params(builder)
        self.frozen_slots = dict(builder.frozen)
        self.inexact_slots = dict(builder.inexact_reasons)
        self.residual_slots = builder.residual
        self.head_slots = builder.head_slots
        self.head_dim_slots = builder.head_dim_slots
        self.balances = builder.balances
        self.links = builder.links
        self.widths = builder.widths  # constants in the code that follow slot widths
        self.frozen_labels = self._frozen_labels()
        self.groups: list[Group] = self._groups()
        self._by_id = {g.id: g for g in self.groups}
        self._resolve_balances()
        # (group id, slot) -> unit_index; shared by the graph's views, whose groups these are
        self._unit_indices: dict[tuple[str, int], np.ndarray] = {}
        self._seal()  # from here on, views instead of changes (slimgraph.graph.views)

    # -- construction ----------------------------------------------------------------
    def _slot_graph(self, builder: Builder) -> nx.Graph:
        g = nx.Graph()
        for i, s in enumerate(self.slots):
            g.add_node(i, node=s.node, dim=s.dim, size=s.size, role=s.role, target=s.target)
        for e in builder.edges:
            g.add_edge(e.a, e.b, op=e.op, how=e.how)
        return g

    def _freeze_uncoupled_params(self, builder: Builder) -> None:
        # a tied tensor (input and output embeddings) is used under one of its names
        names: dict[int, list[str]] = {}
        for name, t in self.model.named_parameters(remove_duplicate=False):
            names.setdefault(id(t), []).append(name)
        alias = {n: ns for ns in names.values() if len(ns) > 1 for n in ns}
        for i, s in enumerate(self.slots):
            if s.role in ("param", "buffer") and self.nx.degree(i) == 0:
                others = [n for n in alias.get(s.target, []) if n != s.target]
                why = (
                    f"the same tensor as {others[0]}, which is sliced under that name"
                    if others
                    else "not coupled to any channel by the rules"
                )
                builder.freeze(i, why)

    def slot_labels(self, slot: int) -> np.ndarray:
        return self.labels.of(slot)

    def _frozen_labels(self) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
        """The labels frozen slots reach (sorted), and for each the index into a list of
        (where, why) of the first frozen slot that reaches it."""
        reasons = [(self.describe_slot(s), why) for s, why in self.frozen_slots.items()]
        if not reasons:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), reasons
        labels = [self.slot_labels(s) for s in self.frozen_slots]
        which = np.repeat(np.arange(len(labels)), [len(x) for x in labels])
        keys, first = np.unique(np.concatenate(labels), return_index=True)
        return keys, which[first], reasons

    def _groups(self) -> list[Group]:
        keys, source, reasons = self.frozen_labels
        groups = []
        for comp in nx.connected_components(self.nx):
            slots = sorted(comp)
            params = [i for i in slots if self.slots[i].role == "param"]
            if not params:
                continue
            labels = np.concatenate([self.slot_labels(i) for i in params])
            pos = np.searchsorted(keys, labels).clip(max=max(len(keys) - 1, 0))
            hit = keys[pos] == labels if len(keys) else np.zeros(len(labels), bool)
            frozen: dict[str, str] = {}
            for r in in_order(source[pos[hit]]).tolist():  # first reached first
                frozen.setdefault(*reasons[r])
            units = in_order(labels[~hit])  # in order of first appearance
            # named after its first producer (a weight's output dim), else its first parameter
            producers = [
                i
                for i in params
                if self.slots[i].dim == 0 and self.slots[i].target.endswith("weight")
            ]
            anchor = self.slots[(producers or params)[0]]
            inexact = {
                self.describe_slot(i): self.inexact_slots[i]
                for i in slots
                if i in self.inexact_slots
            }
            groups.append(
                Group(
                    residual=any(i in self.residual_slots for i in slots),
                    id=f"{anchor.target}:{anchor.dim}",
                    slots=slots,
                    units=units,
                    frozen=frozen,
                    inexact=inexact,
                    params=[(self.slots[i].target, self.slots[i].dim) for i in params],
                )
            )
        groups.sort(key=lambda g: g.slots[0])
        return groups

    # -- queries -----------------------------------------------------------------------
    def _resolve_balances(self) -> None:
        """Equal parts of a split must lose equally many indices.

        A unit's *imbalance* is how many more indices it holds in part k than in part 0.
        Units balanced on their own can go alone; a unit with imbalance v can go together
        with one of imbalance -v (q/k head-dim units beside v units after a qkv chunk). A
        split with an imbalance that nothing cancels (ShuffleNet's chunk after channel
        shuffles) is reported in :attr:`unbalanced` and relaxed by the tracer.
        """
        slot_group = {s: g for g in self.groups for s in g.slots}
        ops: dict[str, list[str]] = {}  # group id -> the op of each imbalance column
        for balance in self.balances:
            group = slot_group.get(balance.slot)
            if group is not None and balance not in group.balances:
                group.balances.append(balance)
                ops.setdefault(group.id, []).extend([balance.op] * (balance.parts - 1))
        self.unbalanced: set[str] = set()
        for group in self.groups:
            if not group.balances:
                continue
            vectors = {tuple(v) for v in self.imbalance(group, group.balances).tolist() if any(v)}
            for v in vectors:
                if tuple(-x for x in v) not in vectors:
                    self.unbalanced.update(op for op, x in zip(ops[group.id], v) if x)

    def imbalance(self, group: Group, balances: list[Balance]) -> np.ndarray:
        """Per unit of ``group``, for every split: indices held in part k against part 0,
        weighed by the parts' sizes (``n_k * size_0 - n_0 * size_k``; zero when the unit
        takes from every part in proportion)."""
        columns = []
        for bal in balances:
            idx = self.unit_index(group, bal.slot)
            ends = np.cumsum(bal.sizes)[:-1]
            counts = [np.bincount(p[p >= 0], minlength=group.size) for p in np.split(idx, ends)]
            s0 = bal.sizes[0]
            columns += [c * s0 - counts[0] * s for c, s in zip(counts[1:], bal.sizes[1:])]
        return np.stack(columns, axis=1) if columns else np.zeros((group.size, 0), np.int64)

    def unit_index(self, group: Group, slot: int) -> np.ndarray:
        """For each index of ``slot``: the position of its unit in ``group``, or -1
        (read-only: the criteria, the planner and the rewrite ask for the same ones)."""
        cache = getattr(self, "_unit_indices", None)  # None while the groups are built
        if cache is None or self._by_id.get(group.id) is not group:
            return self._unit_index(group, slot)
        found = cache.get((group.id, slot))
        if found is None:
            found = cache[group.id, slot] = self._unit_index(group, slot)
            found.setflags(write=False)
        return found

    def _unit_index(self, group: Group, slot: int) -> np.ndarray:
        labels = self.slot_labels(slot)
        if group.size == 0:
            return np.full(len(labels), -1)
        order = np.argsort(group.units)
        sorted_units = group.units[order]
        pos = np.searchsorted(sorted_units, labels).clip(max=len(sorted_units) - 1)
        return np.where(sorted_units[pos] == labels, order[pos], -1)

    def unit_map(self, group_id: str) -> dict[str, list[int]]:
        """``"param:dim"`` -> the unit of each index of that dim (-1: frozen or not a unit).

        This is the group's index map in plain lists, for tests and reviews.

        >>> import torch, slimgraph as sg
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
        >>> sg.trace(net, (torch.randn(1, 2),)).unit_map("0.weight:0")
        {'0.weight:0': [0, 1, 2], '0.bias:0': [0, 1, 2], '1.weight:1': [0, 1, 2]}
        """
        group = self.group(group_id)
        return {
            f"{self.slots[s].target}:{self.slots[s].dim}": self.unit_index(group, s).tolist()
            for s in group.slots
            if self.slots[s].role in ("param", "buffer")
        }

    def unit_counts(self, group: Group, slot: int) -> np.ndarray:
        """How many indices of ``slot`` each unit of ``group`` covers."""
        idx = self.unit_index(group, slot)
        return np.bincount(idx[idx >= 0], minlength=group.size)

    def group(self, group_id: str) -> Group:
        try:
            return self._by_id[group_id]
        except KeyError:
            raise PlanError(
                f"no group {group_id!r} in this graph; groups are named '<parameter>:<dim>', "
                f"e.g. {self.groups[0].id!r}"
                if self.groups
                else f"no group {group_id!r}"
            ) from None

    def prunable_groups(self) -> list[Group]:
        return [g for g in self.groups if g.prunable]

    def describe_slot(self, slot: int) -> str:
        s = self.slots[slot]
        if s.role in ("param", "buffer"):
            return f"{s.target} dim {s.dim}"
        if s.role == "factor":
            return f"a reshape factor at {self._where(s.node, s.module)}"
        what = {"input": "model input", "constant": "tensor constant"}.get(s.role, "output")
        return f"{what} {s.node} dim {s.dim} ({self._where(s.node, s.module)})"

    def _where(self, node: str, module: str) -> str:
        op = self.node_ops.get(node, node)
        return f"{op} in {module}" if module else op

    def linked_groups(self) -> list[set[str]]:
        """Sets of group ids tied by links (each set keeps one fraction in its linked dims)."""
        slot_group = {s: g.id for g in self.groups for s in g.slots}
        g = nx.Graph()
        for link in self.links:
            a, b = slot_group.get(link.a), slot_group.get(link.b)
            if a and b:
                g.add_edge(a, b)
        return [set(c) for c in nx.connected_components(g)]

    def named_parameters(self) -> dict[str, torch.nn.Parameter]:
        """The traced model's parameters by name (shared ones under every name)."""
        return dict(self.model.named_parameters(remove_duplicate=False))

    def param_slots(self) -> dict[str, list[int]]:
        """Parameter and buffer name -> its slots, one per dim."""
        found: dict[str, list[int]] = {}
        for i, s in enumerate(self.slots):
            if s.role in ("param", "buffer") and s.item == 0:
                found.setdefault(s.target, []).append(i)
        return found

    def widest_slot(self, group: Group) -> int:
        """The group's parameter slot whose indices its units cover most (the first on ties)."""
        params = [s for s in group.slots if self.slots[s].role == "param"]
        covered = [int(self.unit_counts(group, s).sum()) for s in params]
        return params[covered.index(max(covered))]

    def channel_counts(self, group: Group) -> np.ndarray:
        """Per unit of ``group``: the *channels* it weighs, the indices it covers in the
        :meth:`widest_slot` (at least one). Ratios, ``round_to`` and ``min_keep`` count
        these. Where no parameter dim is wider than the number of units, each unit is one.

        >>> import torch, slimgraph as sg
        >>> conv = torch.nn.Conv2d
        >>> net = torch.nn.Sequential(conv(4, 8, 1), conv(8, 8, 1, groups=2), conv(8, 2, 1))
        >>> graph = sg.trace(net, (torch.randn(1, 4, 2, 2),))
        >>> graph.channel_counts(graph.group("0.weight:0")).tolist()  # an offset in 2 groups
        [2, 2, 2, 2]
        """
        counts = self.unit_counts(group, self.widest_slot(group))
        if counts.sum() <= group.size:
            return np.ones(group.size, dtype=np.int64)
        return np.maximum(counts, 1)

    def select(self, what: str) -> list[Group]:
        """The groups ``what`` names: a group id, a member ``"param:dim"`` (the group that dim
        belongs to) or a module name (every group with a parameter of it).

        >>> import torch, slimgraph as sg
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
        >>> graph = sg.trace(net, (torch.randn(1, 4),))
        >>> [g.id for g in graph.select("2.weight:1")], [g.id for g in graph.select("2")]
        (['0.weight:0'], ['0.weight:0', '2.weight:0'])
        """
        if what in self._by_id:
            return [self._by_id[what]]
        param, _, dim = what.rpartition(":")
        found = [g for g in self.groups if dim.isdigit() and (param, int(dim)) in g.params]
        if not found:
            found = [g for g in self.groups if what in g.modules]
        if not found:
            raise PlanError(
                f"{what!r} is neither a group id, a member 'param:dim' nor a module with parameters"
            )
        return found

    def explain(self, what: str) -> str:
        """Say in words how the groups ``what`` names (see :meth:`select`) are coupled.

        >>> import torch, slimgraph as sg
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
        >>> print(sg.trace(net, (torch.randn(1, 4),)).explain("0.weight:0"))
        group 0.weight:0: 6 channels, prunable, exact
          layers: 0, 2
          members: 0.weight dim 0, 0.bias dim 0, 2.weight dim 1
        """
        return "\n".join(viz.explain_group(self, g) for g in self.select(what))

    def __repr__(self) -> str:
        n = len(self.prunable_groups())
        return f"DependencyGraph({len(self.groups)} groups, {n} prunable, fingerprint {self.fingerprint})"


def fingerprint(lines: list[str]) -> str:
    """A short stable hash of the graph's ops and shapes."""
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
