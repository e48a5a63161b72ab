"""module_copy against copy.deepcopy: the same tree, attributes, tensors and aliases."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

from slimgraph._core.modulecopy import module_copy


def same_tree(a: nn.Module, b: nn.Module) -> None:
    """Same structure, attribute names and types, equal tensors that are not shared."""
    for (name, x), (other, y) in zip(a.named_modules(), b.named_modules(), strict=True):
        assert name == other and type(x) is type(y) and x is not y
        assert vars(x).keys() == vars(y).keys(), name
        for key, value in vars(x).items():
            assert type(value) is type(vars(y)[key]), (name, key)
    for (name, t), (other, u) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert name == other and t is not u and torch.equal(t, u)


def classifier() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v3_small(num_classes=10).eval()


@pytest.mark.parametrize(
    ("build", "shape"),
    [
        (classifier, (2, 3, 16, 16)),
        (lambda: nn.TransformerEncoderLayer(16, 4, 32, batch_first=True).eval(), (1, 5, 16)),
        (lambda: nn.LSTM(4, 8, num_layers=2), (5, 1, 4)),
        (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()), (1, 3, 8, 8)),
    ],
    ids=["mobilenet_v3", "transformer_layer", "lstm", "conv_bn"],
)
def test_the_copy_is_deepcopys(build, shape: tuple[int, ...]) -> None:
    model = build()
    fast, slow = module_copy(model), copy.deepcopy(model)
    same_tree(model, fast)
    same_tree(slow, fast)
    x = torch.randn(shape)
    with torch.no_grad():
        assert torch.equal(
            torch.nn.utils.parameters_to_vector(fast.parameters()),
            torch.nn.utils.parameters_to_vector(model.parameters()),
        )
        out, ref = fast(x), slow(x)
    if isinstance(out, tuple):  # the LSTM's (output, state)
        out, ref = out[0], ref[0]
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_memo_entries_are_used_as_given_and_aliases_stay_aliases() -> None:
    net = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    object.__setattr__(net, "first", net[0])  # a module held outside _modules
    net[1].cache = net[1].other = {}  # one (empty) dict under two names
    replacement = nn.Parameter(torch.zeros(3, 2))
    twin = module_copy(net, {id(net[0].weight): replacement})
    assert twin[0].weight is replacement
    assert twin.first is twin[0]
    assert twin[1].cache is twin[1].other and twin[1].cache is not net[1].cache


def test_a_class_that_copies_itself_is_copied_its_way() -> None:
    class Counted(nn.Linear):
        copies = 0

        def __deepcopy__(self, memo):
            type(self).copies += 1
            new = Counted(2, 2)
            memo[id(self)] = new
            return new

    net = nn.Sequential(Counted(2, 2), nn.ReLU())
    twin = module_copy(net)
    assert Counted.copies == 1 and isinstance(twin[0], Counted) and twin[0] is not net[0]


def test_hooks_are_copied_and_fire_on_the_copy() -> None:
    calls = []
    net = nn.Sequential(nn.Linear(2, 2))
    net[0].register_forward_hook(lambda module, args, out: calls.append(module))
    twin = module_copy(net)
    twin(torch.randn(1, 2))
    assert calls == [twin[0]]
