"""The two ways from a module to an ONNX graph: torch's dynamo exporter, and the legacy
TorchScript one when the dynamo one raises (with the reason kept for the report)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

import onnx
import onnx_ir as ir
import torch
from torch import nn

from slimgraph.errors import ExportError
from slimgraph.export._quiet import captured, reason
from slimgraph.export.reference import Call
from slimgraph.graph.trace import without_stack_traces

__all__ = ["BATCH", "run_exporters"]

BATCH = "batch"


def run_exporters(
    model: nn.Module, call: Call, batch: int | None, opset: int | None
) -> tuple[Literal["dynamo", "legacy"], str | None, ir.Model]:
    """The dynamo exporter, or the legacy one when the dynamo one raises (and why).

    >>> net = torch.nn.Linear(4, 2).eval()
    >>> call = Call((torch.randn(1, 4),), {}, ["x"], ["output_0"], [False], [False])
    >>> exporter, why, graph = run_exporters(net, call, 1, None)
    >>> exporter, why, [v.name for v in graph.graph.outputs]
    ('dynamo', None, ['output_0'])
    """
    # torch.export specialises a dim whose example size is 1 to the constant 1 as soon as
    # any op asks (convnext does), so the dynamo exporter sees a batch of 2
    traced = call.rebatched(batch, 2) if batch == 1 and any(call.dynamic) else call
    try:
        return "dynamo", None, _export_dynamo(model, traced, opset)
    except Exception as exc:
        dynamo_failure = reason(exc)
    try:
        onnx_model = _export_legacy(model, call, opset)
    except Exception as exc:
        raise ExportError(
            f"neither ONNX exporter could export the model. dynamo: {dynamo_failure}. legacy: "
            f"{reason(exc)}. Try another opset, dynamic_batch=False, or rewrite the "
            "failing op"
        ) from exc
    return "legacy", dynamo_failure, onnx_model


def _export_dynamo(model: nn.Module, call: Call, opset: int | None) -> ir.Model:
    batch = torch.export.Dim(BATCH)
    specs = [{0: batch} if dyn else None for dyn in call.dynamic]
    shapes = dict(zip(call.names, specs)) if call.kwargs else tuple(specs)
    # no Python stack per node: symbolising it is 5-10 % of an export (MViT-v2-S: 4 s of
    # 80), for metadata that the simplified file does not need
    with captured(), without_stack_traces():
        program = torch.onnx.export(
            model,
            call.args,
            kwargs=call.kwargs or None,
            dynamo=True,
            input_names=call.names,
            output_names=call.output_names,
            opset_version=opset,
            dynamic_shapes=shapes if any(call.dynamic) else None,
            verbose=False,
        )
    if program is None:  # only with dynamo=False, but the stub allows it
        raise ExportError("torch.onnx.export returned no program")
    return program.model


def _export_legacy(model: nn.Module, call: Call, opset: int | None) -> ir.Model:
    names = [*call.names, *call.output_names]
    axes = {n: {0: BATCH} for n, dyn in zip(names, [*call.dynamic, *call.out_dynamic]) if dyn}
    with tempfile.TemporaryDirectory() as tmp, captured():
        file = Path(tmp) / "model.onnx"
        torch.onnx.export(
            model,
            call.args,
            str(file),
            kwargs=call.kwargs or None,
            dynamo=False,
            input_names=call.names,
            output_names=call.output_names,
            opset_version=opset,
            dynamic_axes=axes or None,
        )
        return ir.from_proto(onnx.load(str(file)))
