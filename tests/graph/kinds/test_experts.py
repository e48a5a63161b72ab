"""Kinds ``grouped_mm`` and ``topk``: stacked expert weights run by a grouped GEMM, and a
top-k router (mixture-of-experts layers)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

import slimgraph as sg
from tests.oracles import assert_slims, frozen_line, prunable


class ExpertBank(nn.Module):
    """Rows 0-1 go to expert 0, rows 2-3 to expert 1: proj -> up -> relu -> down -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 16)
        self.up = nn.Parameter(torch.randn(2, 16, 32) / 4)  # (experts, in, out)
        self.down = nn.Parameter(torch.randn(2, 32, 16) / 6)
        self.head = nn.Linear(16, 4)
        self.register_buffer("offs", torch.tensor([2, 4], dtype=torch.int32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.grouped_mm(self.proj(x), self.up, offs=self.offs).relu()
        return self.head(F.grouped_mm(h, self.down, offs=self.offs))


X = torch.randn(4, 8, dtype=torch.bfloat16)


def test_grouped_mm_couples_expert_widths_and_freezes_the_experts() -> None:
    model = ExpertBank().to(torch.bfloat16).eval()
    graph = sg.trace(model, (X,))
    assert prunable(graph) == {"proj.weight:0": 16, "up:2": 32, "down:2": 16}  # 32: expert width
    assert "experts are addressed by routing indices" in frozen_line(graph, "up:0")
    # MACs: proj 4*8*16, up 4*16*32 (each row meets one expert), down 4*32*16, head 4*16*4
    assert sg.count_macs(model, (X,)) == 512 + 2048 + 2048 + 256
    result = assert_slims(model, X)
    assert result.model.up.shape[0] == 2  # every expert stays, each narrower
    assert result.model.up.shape[2] == result.model.down.shape[1] < 32


class Router(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 16)
        self.gate = nn.Linear(16, 6, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        weights, _ = torch.topk(self.gate(h).softmax(-1), 2, dim=-1)
        return h * weights.sum(-1, keepdim=True)


def test_topk_freezes_its_dim_and_passes_the_others() -> None:
    graph = sg.trace(Router().eval(), (torch.randn(4, 8),))
    assert "top-k picks a fixed number" in frozen_line(graph, "gate.weight:0")
    assert prunable(graph) == {}  # the hidden width reaches the output


class RoutedExperts(nn.Module):
    """A top-2 router over 4 stacked experts, dispatched as transformers does: the picked
    ids sorted, counted per expert (histc), summed into offsets for grouped GEMMs."""

    def __init__(self, leak_ids: bool = False) -> None:
        super().__init__()
        self.leak_ids = leak_ids
        self.gate = nn.Linear(16, 4, bias=False)
        self.up = nn.Parameter(torch.randn(4, 16, 32) / 4)
        self.down = nn.Parameter(torch.randn(4, 32, 16) / 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, ids = self.gate(x).softmax(-1).topk(2, dim=-1)
        ids_sorted, perm = ids.reshape(-1).sort()
        n = self.up.shape[0]  # the expert count, read from the weights as it shrinks
        counts = torch.histc(ids_sorted.float(), bins=n, min=0, max=n - 1)
        offs = torch.cumsum(counts, dim=0, dtype=torch.int32)
        h = F.grouped_mm(x[perm // 2], self.up, offs=offs).relu()
        out = F.grouped_mm(h, self.down, offs=offs) * weights.reshape(-1)[perm, None]
        return out + ids_sorted[:, None] if self.leak_ids else out  # ids used as values


X16 = torch.randn(4, 16, dtype=torch.bfloat16)


def test_a_routed_expert_is_a_unit_with_its_router_row() -> None:
    model = RoutedExperts().to(torch.bfloat16).eval()
    graph = sg.trace(model, (X16,))
    assert prunable(graph)["gate.weight:0"] == 4
    assert {p for p, _ in graph.group("gate.weight:0").params} == {"gate.weight", "up", "down"}
    result = assert_slims(model, X16)
    assert result.model.gate.weight.shape[0] == result.model.up.shape[0] == 2


def test_router_ids_read_as_values_freeze_the_experts() -> None:
    graph = sg.trace(RoutedExperts(leak_ids=True).to(torch.bfloat16).eval(), (X16,))
    assert "top-k picks a fixed number" in frozen_line(graph, "gate.weight:0")
    assert "experts are addressed by routing indices" in frozen_line(graph, "up:0")


class TokensPerPick(nn.Module):
    """Each token once per pick (transformers' batched expert kernels): rows repeat."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.b = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x).repeat_interleave(2, dim=0)).view(4, 2, 4).sum(1)


def test_repeat_interleave_passes_features_and_freezes_the_repeated_dim() -> None:
    graph = sg.trace(TokensPerPick().eval(), (torch.randn(4, 8),))
    assert prunable(graph) == {"a.weight:0": 16}
    assert_slims(TokensPerPick().eval(), torch.randn(4, 8))
