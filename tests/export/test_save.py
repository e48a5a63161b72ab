"""Writing the ONNX file: an interrupted save keeps the previous file, a link is refused
before the export runs."""

from __future__ import annotations

from pathlib import Path

import onnx
import onnx_ir as ir
import pytest
import torch

import slimgraph as sg
from slimgraph.errors import ExportArgumentError
from slimgraph.export import save as save_module


def _tiny_ir() -> ir.Model:
    node = onnx.helper.make_node("Relu", ["x"], ["y"])
    graph = onnx.helper.make_graph(
        [node],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    return ir.from_proto(onnx.helper.make_model(graph))


def test_an_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous")

    def half_written(proto, target):
        Path(target).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(save_module.onnx, "save_model", half_written)
    with pytest.raises(KeyboardInterrupt):
        save_module.save(_tiny_ir(), path, simplify=False, feeds={})
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_a_save_replaces_the_previous_file_and_its_stale_data_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous")
    (tmp_path / "model.onnx.data").write_bytes(b"weights of an earlier, larger export")
    save_module.save(_tiny_ir(), path, simplify=False, feeds={})
    assert onnx.load(path).graph.node[0].op_type == "Relu"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_a_linked_path_is_refused_before_the_export(tmp_path):
    elsewhere = tmp_path / "elsewhere.onnx"
    elsewhere.write_bytes(b"keep me")
    (tmp_path / "net.onnx").symlink_to(elsewhere)
    with pytest.raises(ExportArgumentError, match="is a symbolic link"):
        sg.export_onnx(torch.nn.ReLU(), (torch.randn(1, 2),), tmp_path / "net.onnx")
    assert elsewhere.read_bytes() == b"keep me"
