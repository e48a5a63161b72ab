"""A module without a rule keeps its int width attributes in step with its parameters."""

from __future__ import annotations

import torch
from torch import nn

import slimgraph as sg


class Mixer(nn.Module):
    """Flattens tokens with a stored width, as MoE blocks do (``view(-1, hidden_dim)``)."""

    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__()
        self.hidden_dim, self.inner, self.tokens = hidden, inner, 5
        self.up, self.down = nn.Linear(hidden, inner), nn.Linear(inner, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.view(-1, self.hidden_dim)
        return x + self.down(torch.relu(self.up(flat))).view(x.shape)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.mixer, self.head = nn.Linear(6, 8), Mixer(8, 16), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mixer(self.embed(x)))


def test_stored_width_follows_its_parameters() -> None:
    torch.manual_seed(0)
    model, x = Net().eval(), torch.randn(2, 5, 6)
    result = sg.slim(model, x, ratio=0.5)
    assert not result.plan.skipped  # the hidden width used to fail the dry run and skip
    mixer = result.model.mixer
    assert (
        (mixer.hidden_dim, mixer.inner) == (4, 8) == (mixer.up.in_features, mixer.up.out_features)
    )
    assert mixer.tokens == 5  # not a width of its parameters: left alone
    assert result.model(x).shape == (2, 5, 3)
