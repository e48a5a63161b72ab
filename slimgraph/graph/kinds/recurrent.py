"""Recurrent layers: ``aten.lstm``, ``aten.gru`` and ``aten.rnn_*`` over a flat weight list.

torch.export keeps ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` as one op that takes the
parameters of every layer and direction in a list: ``w_ih, w_hh[, b_ih, b_hh][, w_hr]``
each. A hidden unit ``j`` of one layer and direction is row ``j`` of every gate block
(``g * H + j`` for the 4 LSTM, 3 GRU or 1 RNN gates), column ``j`` of its own ``w_hh``
(of ``w_hr`` under ``proj_size``, whose rows are then the output units) and channel ``j``
of the layer's output, which the next layer's ``w_ih`` reads forward units first, then
backward units.

Each layer and direction has its own units; links keep their counts equal, as the module
has one ``hidden_size`` (and one ``proj_size``). Initial states passed by the caller and
final states the model reads couple their last dim with the units of every layer and
direction at once (unit ``j`` of state ``k`` is index ``j`` of one tensor dim); the zeros
the module makes when no state is passed follow any width.
"""

from __future__ import annotations

import numpy as np
from torch import fx

from slimgraph.graph.builder import Builder, OpContext, TensorSlots
from slimgraph.graph.kinds import kind


@kind(
    "recurrent",
    input=0,
    hx=1,
    params=2,
    has_biases=3,
    num_layers=4,
    bidirectional=7,
    batch_first=8,
)
def recurrent(ctx: OpContext) -> None:
    """out[t, :, d*W + j] = h_t[j] of direction d; h_t = cell(w_ih x_t + w_hh h_{t-1})."""
    b = ctx.builder
    x, out = ctx.tensor("input"), ctx.out
    params = [b.tensor(n) for n in ctx.arg("params")]
    layers, dirs = int(ctx.arg("num_layers")), 2 if ctx.arg("bidirectional") else 1
    per = len(params) // (layers * dirs)
    biased = bool(ctx.arg("has_biases"))
    projected = per - 2 - 2 * biased == 1
    batched = x.ndim == 3
    for d in range(x.ndim - 1):  # time and batch pass through, in either order
        if x.shape[d] > 1:
            b.couple(x.dim(d), out.dim(d), ctx.name)
    cells: list[int] = []  # per layer and direction: the hidden (cell) units
    widths: list[int] = []  # the output units: the cells, or the projection's rows
    reads: list[tuple[int, int]] = [(x.dim(-1), 0)]  # what the next layer's w_ih reads
    for layer in range(layers):
        made: list[int] = []
        for i in range(layer * dirs, (layer + 1) * dirs):
            group = params[i * per : (i + 1) * per]
            w_ih, w_hh = group[0], group[1]
            hidden = group[-1].shape[1] if projected else w_hh.shape[1]
            cell = b.factor(hidden, ctx.name)
            gate = np.arange(w_hh.shape[0]) % hidden  # row g*H + j is unit j of gate g
            for t in group[: 2 + 2 * biased]:
                b.couple(t.dim(0), cell, ctx.name, "gate", b_idx=gate)
            width = cell
            if projected:
                w_hr = group[-1]
                b.couple(w_hr.dim(1), cell, ctx.name)
                width = b.factor(w_hr.shape[0], ctx.name)
                b.couple(w_hr.dim(0), width, ctx.name)
            b.couple(w_hh.dim(1), width, ctx.name)  # the recurrence reads its own output
            _read(b, w_ih.dim(1), reads, ctx.name)
            cells.append(cell)
            widths.append(width)
            made.append(width)
        reads = [(w, k * b.slots[w].size) for k, w in enumerate(made)]
    _read(b, out.dim(-1), reads, ctx.name)
    _link_all(b, [p.dim(0) for p in params[::per]], ctx, "hidden_size")
    if projected:
        _link_all(b, [p.dim(0) for p in params[per - 1 :: per]], ctx, "proj_size")
    hx = ctx.arg("hx")
    states = hx if isinstance(hx, (list, tuple)) else [hx]
    batch = x.dim(0 if ctx.arg("batch_first") else 1) if batched else None
    for k, (node, units) in enumerate(zip(states, (widths, cells))):
        _state(b, b.tensor(node), units, batch, ctx.name, constant=_filled(b, node))
        if len(ctx.outs) > k + 1:
            used = _used(ctx.node, k + 1)
            _state(b, ctx.outs[k + 1], units, batch, ctx.name, constant=not used)


def _read(b: Builder, slot: int, parts: list[tuple[int, int]], op: str) -> None:
    """``slot`` holds ``parts`` side by side: (unit slot, offset of its first index).
    Both directions have one width, so the parts lose equally many indices."""
    for unit, start in parts:
        size = b.slots[unit].size
        b.couple(slot, unit, op, a_idx=np.arange(start, start + size), b_idx=np.arange(size))
    if len(parts) > 1:
        b.balance(slot, len(parts), op)


def _link_all(b: Builder, slots: list[int], ctx: OpContext, attribute: str) -> None:
    for slot in slots[1:]:
        b.link(slots[0], slot, ctx.name, f"every layer and direction has one {attribute}")


def _state(
    b: Builder,
    t: TensorSlots | None,
    units: list[int],
    batch: int | None,
    op: str,
    constant: bool,
) -> None:
    """A state (layers * directions, [batch,] width): its width is every layer's units at
    once, unless it is a constant fill (the module's own zeros) or never read."""
    if t is None:
        return
    b.freeze(t.dim(0), "one recurrent state per layer and direction")
    if batch is not None and t.ndim == 3 and t.shape[1] > 1:
        b.couple(t.dim(1), batch, op)
    if not constant:
        for unit in units:
            b.couple(t.dim(-1), unit, op)


def _filled(b: Builder, node: object) -> bool:
    """Whether ``node`` is a tensor of one repeated value (its width follows anything)."""
    t = b.tensor(node)
    return t is not None and any(
        e.how == "filled" and t.dim(-1) in (e.a, e.b) for e in b.edges if e.op == t.key[0]
    )


def _used(node: fx.Node, item: int) -> bool:
    """Whether output ``item`` of ``node`` is read by anything."""
    return any(
        user.args[1:2] == (item,) and len(user.users) > 0
        for user in node.users
        if "getitem" in str(user.target)
    )
