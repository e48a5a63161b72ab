"""MACs counted on models whose forward hands a parameter's view to a submodule."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from slimgraph.resolve.cost import count_macs, module_macs


class _DepthwiseKernel(torch.nn.Module):
    """A kernel wrapped as a module that takes its weight as an argument (a hub kernel)."""

    def forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, weight.unsqueeze(1), groups=weight.shape[0])


class _PassesAView(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(4, 4, 3, groups=4, bias=False)
        self.kernel = _DepthwiseKernel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # under no_grad this view requires grad yet has no grad_fn
        return self.kernel(x, self.conv.weight.squeeze(1))


def test_a_parameter_view_given_to_a_submodule_is_counted() -> None:
    model, x = _PassesAView(), torch.randn(2, 4, 10)
    # (2 x 4 x 8 outputs) x 3 taps each
    assert module_macs(model, (x,)) == {"": 192, "kernel": 192}
    assert count_macs(model, (x,)) == 192
    assert all(p.requires_grad for p in model.parameters())


def test_frozen_parameters_stay_frozen() -> None:
    model = _PassesAView()
    model.conv.weight.requires_grad_(False)
    module_macs(model, (torch.randn(2, 4, 10),))
    assert not model.conv.weight.requires_grad
