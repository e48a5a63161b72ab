"""Every torchvision classifier of at most 30 M parameters exports to checked ONNX.

For each model, both the original and its ``sg.slim(..., ratio=0.5)`` copy go through
``sg.export_onnx`` with a dynamic batch: ONNX Runtime must match PyTorch (eval mode) to a
relative 1e-4 of the logits' scale at batch 1 and at batch 3, through the dynamo exporter.
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import slimgraph as sg

pytestmark = pytest.mark.zoo

MAX_PARAMS = 30_000_000
RTOL = 1e-4

# Models that cannot be exported at all, with the reason. None at present.
EXCLUDED: dict[str, str] = {}

# Random inits whose signal fades to nothing: the logits are the classifier's bias, the
# same for every input, and parity would hold whatever the features did. Their convs are
# re-initialised (Kaiming normal, which keeps the variance through ReLUs) for the check.
FADING_INIT: dict[str, str] = {
    "googlenet": "trunc_normal(std=0.01) convs underflow the features to zero",
    **{
        f"shufflenet_v2_x{w}": "the default convs shrink the signal to 5e-5 of the logits"
        for w in ("0_5", "1_0", "1_5", "2_0")
    },
}

# Models allowed to need the legacy TorchScript exporter, with the reason. None at
# present: convnext and swin used to, until the dynamo exporter traced at batch 2.
NEEDS_LEGACY: dict[str, str] = {}


def small_classifiers() -> list[str]:
    """Classifiers by the parameter count torchvision records (no download needed)."""
    names = sorted(torchvision.models.list_models(module=torchvision.models))
    weights = torchvision.models.get_model_weights
    return [n for n in names if weights(n).DEFAULT.meta["num_params"] <= MAX_PARAMS]


def test_zoo_is_what_it_says() -> None:
    names = small_classifiers()
    assert {"resnet50", "inception_v3", "swin_t", "convnext_tiny"} <= set(names)
    assert not {"maxvit_t", "resnet101", "vit_b_16"} & set(names)
    for table in (EXCLUDED, FADING_INIT, NEEDS_LEGACY):
        assert set(table) <= set(names)
        assert all(reason.strip() for reason in table.values())


def test_zoo_cut_is_by_the_real_parameter_count() -> None:
    """The zoo is cut by the counts torchvision records; the two models either side of
    the cut have those counts when built, and every zoo model is a case of test_export."""
    names = small_classifiers()
    recorded = torchvision.models.get_model_weights
    counts = {
        n: recorded(n).DEFAULT.meta["num_params"]
        for n in torchvision.models.list_models(module=torchvision.models)
    }
    largest_in = max(names, key=counts.__getitem__)
    smallest_out = min(set(counts) - set(names), key=counts.__getitem__)
    assert counts[largest_in] <= MAX_PARAMS < counts[smallest_out]
    for name in (largest_in, smallest_out):
        model = torchvision.models.get_model(name)
        assert sum(p.numel() for p in model.parameters()) == counts[name], name
    cases = [m for m in test_export.pytestmark if m.args[0] == "name"]
    assert [list(m.args[1]) for m in cases] == [names]


@pytest.mark.parametrize("variant", ["original", "slim"])
@pytest.mark.parametrize("name", small_classifiers())
def test_export(name: str, variant: str, tmp_path: Path) -> None:
    if name in EXCLUDED:
        pytest.skip(EXCLUDED[name])
    torch.manual_seed(0)
    model = torchvision.models.get_model(name).eval()
    if name in FADING_INIT:
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    size = 299 if name == "inception_v3" else 224
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():  # the logits depend on the input, so parity means something
        pair = model(torch.randn(2, 3, size, size))
    assert (pair[0] - pair[1]).abs().max() > 1e-3 * pair.abs().max()
    if variant == "slim":
        slim = sg.slim(model, (x,), ratio=0.5).model.eval()
        assert sg.count_params(slim) < sg.count_params(model)
        model = slim
    report = sg.export_onnx(model, (x,), tmp_path / f"{name}.onnx", rtol=RTOL)
    if name not in NEEDS_LEGACY:
        assert report.exporter == "dynamo", report.fallback_reason
    assert report.batch_sizes == (1, 3)
    assert report.max_rel_diff is not None and report.max_rel_diff <= RTOL
    assert report.inputs[0].shape == ("batch", 3, size, size)
    assert [o.shape for o in report.outputs] == [("batch", 1000)]
    assert report.nodes_after is None or report.nodes_after <= report.nodes_before
    del model, report
    gc.collect()
