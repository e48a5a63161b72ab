"""``sg.export_onnx`` on small models: report fields, parity, external data, int8, errors."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import slimgraph as sg
from slimgraph.export import exporters, save
from slimgraph.export.onnx import (
    INT8_RTOL,
    ExportArgumentError,
    ExportError,
    ModelCallError,
    ParityError,
    TensorInfo,
)
from tests.helpers import Terminal


class SmallNet(nn.Module):
    def __init__(self, width: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h = self.pool(torch.relu(self.bn(self.conv(image))))
        return self.fc(h.flatten(1))


class Tagger(nn.Module):
    """Keyword inputs of two dtypes, a dict of two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.embed(ids) * mask.unsqueeze(-1)
        return {"logits": self.head(h), "pooled": h.mean(1)}


class Wide(nn.Module):
    """Enough weight bytes for external data and int8 to matter."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)
        self.fc1 = nn.Linear(32, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x)).mean((2, 3))
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(h)))))


def _net() -> SmallNet:
    torch.manual_seed(0)
    net = SmallNet()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    return net


def _image(batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def _ort(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_report_fields(tmp_path: Path) -> None:
    net = _net()
    path = tmp_path / "net.onnx"
    report = sg.export_onnx(net, (_image(),), path)
    assert report.path == path
    assert report.exporter == "dynamo"
    assert report.fallback_reason is None
    assert report.inputs == (TensorInfo(name="image", shape=("batch", 3, 16, 16), dtype="float32"),)
    assert report.outputs == (TensorInfo(name="output_0", shape=("batch", 10), dtype="float32"),)
    assert report.batch_sizes == (1, 3)
    assert report.simplified
    assert report.simplify_skipped_reason is None
    assert report.nodes_after is not None
    assert report.nodes_after <= report.nodes_before
    assert len(onnx.load(path).graph.node) == report.nodes_after
    assert report.opset == next(o.version for o in onnx.load(path).opset_import if o.domain == "")
    assert not report.external_data
    assert report.file_size == path.stat().st_size
    assert 0 <= report.max_rel_diff <= 1e-4
    assert report.max_abs_diff is not None
    assert report.quantized is None
    with pytest.raises(ValueError):  # frozen
        report.exporter = "legacy"  # type: ignore[misc]


def test_matches_torch_at_any_batch(tmp_path: Path) -> None:
    net = _net()
    path = tmp_path / "net.onnx"
    sg.export_onnx(net, (_image(),), path)
    x = _image(5)
    with torch.no_grad():
        expected = net.eval()(x)
    (got,) = _ort(path, {"image": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-4, atol=1e-5)


def test_train_mode_is_restored(tmp_path: Path) -> None:
    net = _net().train()
    net.fc.eval()
    sg.export_onnx(net, (_image(),), tmp_path / "net.onnx")
    assert net.training and net.bn.training
    assert not net.fc.training


def test_keyword_inputs_become_named_inputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Tagger()
    # not forward's order: the ONNX inputs still follow the names, not the positions
    inputs = {"mask": torch.ones(2, 5), "ids": torch.randint(0, 10, (2, 5))}
    path = tmp_path / "tagger.onnx"
    report = sg.export_onnx(model, inputs, path)
    assert report.inputs == (
        TensorInfo(name="ids", shape=("batch", 5), dtype="int64"),
        TensorInfo(name="mask", shape=("batch", 5), dtype="float32"),
    )
    assert report.outputs == (
        TensorInfo(name="output_0", shape=("batch", 5, 3), dtype="float32"),
        TensorInfo(name="output_1", shape=("batch", 4), dtype="float32"),
    )
    assert report.batch_sizes == (2, 3)
    assert report.nodes_after is not None
    assert report.nodes_after <= report.nodes_before
    ids, mask = torch.randint(0, 10, (4, 5)), (torch.rand(4, 5) > 0.3).float()
    with torch.no_grad():
        expected = model(ids=ids, mask=mask)
    logits, pooled = _ort(path, {"mask": mask.numpy(), "ids": ids.numpy()})
    torch.testing.assert_close(torch.from_numpy(logits), expected["logits"])
    torch.testing.assert_close(torch.from_numpy(pooled), expected["pooled"])


def test_static_batch(tmp_path: Path) -> None:
    report = sg.export_onnx(_net(), (_image(2),), tmp_path / "net.onnx", dynamic_batch=False)
    assert report.inputs[0].shape == (2, 3, 16, 16)
    assert report.outputs[0].shape == (2, 10)
    assert report.batch_sizes == (2,)


def test_no_simplify_no_check(tmp_path: Path) -> None:
    report = sg.export_onnx(
        _net(), (_image(),), tmp_path / "net.onnx", simplify=False, check=False, quantize="int8"
    )
    assert not report.simplified
    assert report.nodes_after is None
    assert report.simplify_skipped_reason is not None
    assert "simplify=False" in report.simplify_skipped_reason
    assert report.max_abs_diff is None and report.max_rel_diff is None
    assert report.batch_sizes == ()
    assert report.quantized is not None and report.quantized.path.exists()
    assert report.quantized.max_rel_diff is None


def test_opset(tmp_path: Path) -> None:
    report = sg.export_onnx(_net(), (_image(),), tmp_path / "net.onnx", opset=18)
    assert report.opset == 18


def test_onnxsim_failure_keeps_exported_graph(tmp_path: Path, monkeypatch) -> None:
    import onnxsim

    def broken(*args, **kwargs):
        raise RuntimeError("simulated onnxsim crash")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    report = sg.export_onnx(_net(), (_image(),), tmp_path / "net.onnx")
    assert not report.simplified
    assert report.nodes_after is None
    assert report.simplify_skipped_reason is not None
    assert "simulated onnxsim crash" in report.simplify_skipped_reason
    assert report.max_rel_diff is not None and report.max_rel_diff <= 1e-4


class ConvNeXtBlock(nn.Module):
    """Channels-last LayerNorm between permutes: torch.export pins a batch of 1 to 1 here."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.dw = nn.Conv2d(8, 8, 7, padding=3, groups=8)
        self.norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        h = self.fc(self.norm(self.dw(x).permute(0, 2, 3, 1)))
        return x + h.permute(0, 3, 1, 2)


def test_batch_of_one_stays_dynamic(tmp_path: Path) -> None:
    torch.manual_seed(0)
    report = sg.export_onnx(ConvNeXtBlock(), (_image(),), tmp_path / "block.onnx")
    assert report.exporter == "dynamo", report.fallback_reason
    assert report.inputs[0].shape == ("batch", 3, 16, 16)
    assert report.outputs[0].shape == ("batch", 8, 4, 4)
    assert report.batch_sizes == (1, 3)
    assert report.max_rel_diff is not None and report.max_rel_diff <= 1e-4


class Branchy(nn.Module):
    """Control flow on a value: torch.export refuses it, the legacy tracer records one branch."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.abs().sum() >= 0:
            return self.fc(x)
        return x


def test_legacy_fallback_is_recorded(tmp_path: Path) -> None:
    torch.manual_seed(0)
    report = sg.export_onnx(Branchy(), (torch.randn(2, 4),), tmp_path / "branchy.onnx")
    assert report.exporter == "legacy"
    assert report.fallback_reason is not None
    assert "data-dependent" in report.fallback_reason
    assert "\x1b[" not in report.fallback_reason
    assert report.inputs == (TensorInfo(name="x", shape=("batch", 4), dtype="float32"),)
    assert report.outputs == (TensorInfo(name="output_0", shape=("batch", 4), dtype="float32"),)
    assert report.batch_sizes == (2, 3)
    assert report.max_rel_diff is not None and report.max_rel_diff <= 1e-4


def test_both_exporters_failing_names_both(tmp_path: Path, monkeypatch) -> None:
    def dynamo(*args, **kwargs):
        raise RuntimeError("dynamo says no")

    def legacy(*args, **kwargs):
        raise RuntimeError("legacy says no")

    monkeypatch.setattr(exporters, "_export_dynamo", dynamo)
    monkeypatch.setattr(exporters, "_export_legacy", legacy)
    with pytest.raises(ExportError, match="dynamo says no.*legacy says no"):
        sg.export_onnx(_net(), (_image(),), tmp_path / "net.onnx")


def test_external_data(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(save, "EXTERNAL_DATA_BYTES", 1024)
    torch.manual_seed(0)
    model = Wide()
    path = tmp_path / "wide.onnx"
    data = tmp_path / "wide.onnx.data"
    report = sg.export_onnx(model, (torch.randn(1, 3, 8, 8),), path)
    assert report.external_data
    assert data.exists()
    assert report.file_size == path.stat().st_size + data.stat().st_size
    assert data.stat().st_size > path.stat().st_size
    assert not report.simplified
    assert report.nodes_after is None
    assert report.simplify_skipped_reason is not None
    assert "external data" in report.simplify_skipped_reason
    assert report.max_rel_diff is not None and report.max_rel_diff <= 1e-4
    assert report.batch_sizes == (1, 3)
    proto = onnx.load(path, load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    # a fresh session resolves the data file beside the model
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        expected = model.eval()(x)
    (got,) = _ort(path, {"x": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-4, atol=1e-5)
    # exporting again replaces the data file instead of appending to it
    size = data.stat().st_size
    sg.export_onnx(model, (torch.randn(1, 3, 8, 8),), path, check=False)
    assert data.stat().st_size == size


def test_int8(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Wide()
    path = tmp_path / "wide.onnx"
    report = sg.export_onnx(model, (torch.randn(1, 3, 8, 8),), path, quantize="int8")
    q = report.quantized
    assert q is not None
    assert q.path == tmp_path / "wide.int8.onnx"
    assert q.file_size == q.path.stat().st_size
    assert q.file_size < 0.5 * report.file_size
    assert q.max_rel_diff is not None and q.max_rel_diff <= INT8_RTOL
    assert q.max_abs_diff is not None and q.max_abs_diff > 0  # it did round something
    ops = {n.op_type for n in onnx.load(q.path).graph.node}
    assert ops & {"MatMulInteger", "ConvInteger", "DynamicQuantizeLinear"}
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = model.eval()(x)
    (got,) = _ort(q.path, {"x": x.numpy()})
    scale = expected.abs().max()
    assert (torch.from_numpy(got) - expected).abs().max() <= INT8_RTOL * scale


def test_int8_with_external_data(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(save, "EXTERNAL_DATA_BYTES", 1024)
    torch.manual_seed(0)
    report = sg.export_onnx(
        Wide(), (torch.randn(1, 3, 8, 8),), tmp_path / "wide.onnx", quantize="int8"
    )
    q = report.quantized
    assert report.external_data and q is not None
    assert (tmp_path / "wide.int8.onnx.data").exists()
    assert q.max_rel_diff is not None and q.max_rel_diff <= INT8_RTOL


# --- errors ---------------------------------------------------------------------------


class Noisy(nn.Module):
    """Random noise in forward: PyTorch and ONNX Runtime cannot agree."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.randn_like(x)


def test_parity_error(tmp_path: Path) -> None:
    with pytest.raises(ParityError, match=r"output_0 at batch 1.*rtol"):
        sg.export_onnx(Noisy(), (torch.randn(1, 4),), tmp_path / "noisy.onnx")


def test_int8_parity_error(tmp_path: Path) -> None:
    torch.manual_seed(0)
    with pytest.raises(ParityError, match=r"the int8 model .*wide\.int8\.onnx.* rtol 1e-09"):
        sg.export_onnx(
            Wide(),
            (torch.randn(1, 3, 8, 8),),
            tmp_path / "wide.onnx",
            quantize="int8",
            int8_rtol=1e-9,
        )


def test_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "net.onnx"
    with pytest.raises(ExportArgumentError, match="does not exist; create it"):
        sg.export_onnx(_net(), (_image(),), path)
    assert not path.parent.exists()


def test_path_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ExportArgumentError, match="is a directory; give a file name"):
        sg.export_onnx(_net(), (_image(),), tmp_path)


def test_read_only_directory(tmp_path: Path, monkeypatch) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.geteuid() == 0:  # root writes anywhere: deny it the way the OS would deny others
        real_access = os.access
        monkeypatch.setattr(
            os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode)
        )
    try:
        with pytest.raises(ExportArgumentError, match="permission denied; choose a writable"):
            sg.export_onnx(_net(), (_image(),), locked / "net.onnx")
    finally:
        locked.chmod(0o700)


def test_unknown_quantize(tmp_path: Path) -> None:
    with pytest.raises(ExportArgumentError, match=r"unknown quantize='int4'; use one of 'int8'"):
        sg.export_onnx(_net(), (_image(),), tmp_path / "net.onnx", quantize="int4")
    assert not (tmp_path / "net.onnx").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"opset": "18"}, "opset must be an ONNX opset number"),
        ({"rtol": 0}, "rtol must be a positive number"),
    ],
)
def test_bad_options(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ExportArgumentError, match=message):
        sg.export_onnx(_net(), (_image(),), tmp_path / "net.onnx", **kwargs)


def test_non_tensor_inputs(tmp_path: Path) -> None:
    with pytest.raises(ExportArgumentError, match=r"example_inputs\[1\] is a int; .*tensors only"):
        sg.export_onnx(_net(), (_image(), 3), tmp_path / "net.onnx")
    with pytest.raises(ExportArgumentError, match="tuple of positional tensors or a dict"):
        sg.export_onnx(_net(), "image", tmp_path / "net.onnx")


def test_inputs_that_do_not_fit(tmp_path: Path) -> None:
    net = _net().train()
    with pytest.raises(ModelCallError, match=r"model\(\*example_inputs\) raised RuntimeError"):
        sg.export_onnx(net, (torch.randn(1, 4, 16, 16),), tmp_path / "net.onnx")
    with pytest.raises(ModelCallError, match=r"model\(\*\*example_inputs\) raised TypeError"):
        sg.export_onnx(net, {"img": _image()}, tmp_path / "net.onnx")
    assert net.training  # restored on the way out
    assert not (tmp_path / "net.onnx").exists()


class Says(nn.Module):
    def __init__(self, value: object) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> object:
        return self.value


def test_string_output(tmp_path: Path) -> None:
    with pytest.raises(
        ModelCallError, match="returns a str at output; ONNX outputs must be tensors"
    ):
        sg.export_onnx(Says("done"), (torch.randn(1, 4),), tmp_path / "says.onnx")


def test_none_output(tmp_path: Path) -> None:
    with pytest.raises(ModelCallError, match="returns no tensors"):
        sg.export_onnx(Says(None), (torch.randn(1, 4),), tmp_path / "says.onnx")


def test_mixed_output(tmp_path: Path) -> None:
    with pytest.raises(ModelCallError, match=r"returns a int at output\[1\]"):
        sg.export_onnx(Says((torch.ones(1), 3)), (torch.randn(1, 4),), tmp_path / "says.onnx")


class FixedBatch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.offset = nn.Parameter(torch.randn(2, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.offset  # broadcasts only at batch 2


def test_fixed_batch_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "fixed.onnx"
    with pytest.raises(ModelCallError, match="not at batch 3.*dynamic_batch=False"):
        sg.export_onnx(FixedBatch(), (torch.randn(2, 4),), path)
    report = sg.export_onnx(FixedBatch(), (torch.randn(2, 4),), path, dynamic_batch=False)
    assert report.batch_sizes == (2,)
    assert report.inputs[0].shape == (2, 4)


def test_meta_weights(tmp_path: Path) -> None:
    with torch.device("meta"):
        net = SmallNet()
    with pytest.raises(ExportArgumentError, match="meta device.*load real weights"):
        sg.export_onnx(net, (_image(),), tmp_path / "net.onnx")


def test_none_among_outputs_is_dropped(tmp_path: Path) -> None:
    report = sg.export_onnx(
        Says((torch.ones(2), None)),
        (torch.randn(1, 4),),
        tmp_path / "says.onnx",
        dynamic_batch=False,
    )
    assert [o.name for o in report.outputs] == ["output_0"]


@pytest.mark.parametrize("progress", [True, False])
def test_each_stage_is_timed_and_shown_on_a_terminal(tmp_path, monkeypatch, progress) -> None:
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    monkeypatch.delenv("TERM", raising=False)
    torch.manual_seed(0)
    x = (torch.randn(2, 3, 8, 8),)
    report = sg.export_onnx(SmallNet().eval(), x, tmp_path / "m.onnx", progress=progress)
    assert list(report.stage_seconds) == ["export", "save", "check"]
    assert all(s > 0 for s in report.stage_seconds.values())
    plain = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", terminal.text)
    ticks = re.findall(r"✓ (.+?) \([0-9.]+ s\)", plain)
    expected = ["exporting with torch.onnx", "simplifying with onnxsim", "checking in ONNX Runtime"]
    assert ticks == (expected if progress else [])
    unchecked = sg.export_onnx(
        SmallNet().eval(), x, tmp_path / "n.onnx", check=False, simplify=False, progress=False
    )
    assert list(unchecked.stage_seconds) == ["export", "save"]
