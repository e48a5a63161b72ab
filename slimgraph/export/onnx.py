"""``sg.export_onnx``: an ONNX file that is simplified, checked and shown to match PyTorch.

The route: ``torch.onnx.export(dynamo=True)`` (the legacy TorchScript exporter only when
that one raises) -> onnxsim -> ``onnx.checker`` -> ONNX Runtime (CPU) against the PyTorch
model in eval mode, at the example batch size and, with a dynamic batch, at a second one.

>>> import pathlib, tempfile, torch, slimgraph as sg
>>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten())
>>> path = pathlib.Path(tempfile.mkdtemp()) / "net.onnx"
>>> report = sg.export_onnx(net, (torch.randn(1, 3, 8, 8),), path)
>>> report.exporter, report.batch_sizes, report.inputs[0].shape, report.outputs[0].name
('dynamo', (1, 3), ('batch', 3, 8, 8), 'output_0')
>>> report.max_rel_diff <= 1e-4
True
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import math
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import onnx_ir as ir
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn
from torch.utils import _pytree as pytree

from slimgraph.errors import ExportArgumentError, ExportError, ModelCallError, ParityError

__all__ = [
    "EXTERNAL_DATA_BYTES",
    "INT8_RTOL",
    "ExportArgumentError",
    "ExportError",
    "ExportReport",
    "ModelCallError",
    "ParityError",
    "QuantizedReport",
    "TensorInfo",
    "export_onnx",
]

EXTERNAL_DATA_BYTES = 2**31 - 2**24
"""Weights larger than this go to ``<file>.data`` beside the model: protobuf caps a
serialised message at 2 GiB, and the margin leaves room for the graph itself."""

INT8_RTOL = 0.1
"""Default tolerance of the int8 model: dynamic quantisation rounds every weight and
activation of the quantised ops, so only a coarse agreement with PyTorch is promised."""

QUANTIZE_CHOICES = ("int8",)
SECOND_BATCH = 3
BATCH = "batch"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # torch's export errors colour their text


class TensorInfo(BaseModel):
    """One graph input or output: ``shape`` holds ``"batch"`` where the dim is dynamic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    shape: tuple[int | str, ...]
    dtype: str


class QuantizedReport(BaseModel):
    """The int8 copy: where it is, its size on disk and how far it is from PyTorch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path
    file_size: int
    max_abs_diff: float | None
    max_rel_diff: float | None


class ExportReport(BaseModel):
    """What ``export_onnx`` wrote and what it checked.

    - ``exporter``: ``"dynamo"``, or ``"legacy"`` when the dynamo exporter raised
      ``fallback_reason`` (its error and, in brackets, the root cause).
    - ``opset``: the default-domain opset of the file.
    - ``nodes_before`` / ``nodes_after``: top-level graph nodes before and after onnxsim;
      ``nodes_after`` is ``None`` unless ``simplified``, and ``simplify_skipped_reason``
      then says why not.
    - ``file_size``: bytes on disk, the model file plus its external data file, if any
      (``external_data``; the file is then ``<path>.data`` beside the model).
    - ``max_abs_diff`` / ``max_rel_diff``: the largest differences between ONNX Runtime and
      PyTorch over every output at every size in ``batch_sizes``; the relative one is
      measured against the output's scale (its largest magnitude). ``None`` and ``()``
      when ``check=False``.
    - ``inputs`` / ``outputs``: the graph's tensors as (name, shape, dtype).
    - ``quantized``: the int8 copy, when ``quantize="int8"``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path
    exporter: Literal["dynamo", "legacy"]
    fallback_reason: str | None
    opset: int
    nodes_before: int
    nodes_after: int | None
    simplified: bool
    simplify_skipped_reason: str | None
    file_size: int
    external_data: bool
    max_abs_diff: float | None
    max_rel_diff: float | None
    batch_sizes: tuple[int, ...]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    quantized: QuantizedReport | None = None


# One parity case: ONNX Runtime feeds, the PyTorch outputs they must give, the batch size.
_Case = tuple[dict[str, np.ndarray], list[torch.Tensor], int]


def export_onnx(
    model: nn.Module,
    example_inputs: tuple[Any, ...] | dict[str, Any] | torch.Tensor,
    path: str | os.PathLike[str],
    *,
    simplify: bool = True,
    dynamic_batch: bool = True,
    opset: int | None = None,
    check: bool = True,
    quantize: str | None = None,
    rtol: float = 1e-4,
    int8_rtol: float = INT8_RTOL,
) -> ExportReport:
    """Export ``model`` to ONNX at ``path``, simplify it, check it and compare it to PyTorch.

    ``example_inputs`` is a tuple of positional tensors or a dict of keyword tensors; the
    ONNX inputs are named after ``forward``'s parameters (or the dict's keys) and the
    outputs ``output_0``, ``output_1``, ... in the order PyTorch flattens them. With
    ``dynamic_batch`` dim 0 of every input (and so of every output) is the symbol
    ``"batch"``. ``check`` runs ONNX Runtime on the CPU against the model in eval mode and
    raises :class:`ParityError` when an output differs by more than ``rtol`` of its
    largest magnitude. ``quantize="int8"`` also writes ``<stem>.int8.onnx`` by dynamic
    quantisation (int8 weights), held to ``int8_rtol`` (default :data:`INT8_RTOL`).
    Weights above :data:`EXTERNAL_DATA_BYTES` are saved to ``<file>.data`` and the graph
    is then not simplified. The model's train/eval flags are restored afterwards.
    """
    path = _check_path(path)
    _check_options(quantize, opset, rtol, int8_rtol)
    _check_weights(model)
    args, kwargs = _split_inputs(model, example_inputs)
    names = _input_names(model, args, kwargs)
    inputs = [*args, *kwargs.values()]
    batch = _batch_size(inputs)
    if dynamic_batch and batch is None:
        raise ExportArgumentError(
            "dynamic_batch=True needs an input with a batch dim (dim 0), but every example "
            "input is a scalar; pass dynamic_batch=False"
        )
    with _eval_mode(model):
        expected = _run_torch(model, args, kwargs)
        call = _Call(
            args,
            kwargs,
            names,
            [f"output_{i}" for i in range(len(expected))],
            [dynamic_batch and _has_batch(t, batch) for t in inputs],
            [dynamic_batch and _has_batch(t, batch) for t in expected],
        )
        # PyTorch's side of the parity check first: a model that cannot take a second
        # batch size should fail before the expensive export, not after it
        cases = _cases(model, call, expected, batch, dynamic_batch and check)
        exporter, fallback_reason, onnx_model = _export(model, call, batch, opset)
    nodes_before = len(onnx_model.graph)
    external = _initializer_bytes(onnx_model) > EXTERNAL_DATA_BYTES
    nodes_after, skipped = _save(onnx_model, path, external, simplify, cases[0][0])
    del onnx_model
    _check_onnx(path)
    saved = onnx.load(path, load_external_data=False)
    if not check:
        cases = []
    max_abs = max_rel = None
    if cases:
        max_abs, max_rel = _parity(path, cases, call.output_names, rtol, "the ONNX model")
    quantized = None
    if quantize is not None:
        quantized = _quantize(path, external, cases, call.output_names, int8_rtol)
    return ExportReport(
        path=path,
        exporter=exporter,
        fallback_reason=fallback_reason,
        opset=_opset(saved),
        nodes_before=nodes_before,
        nodes_after=nodes_after,
        simplified=nodes_after is not None,
        simplify_skipped_reason=skipped,
        file_size=_file_size(path, external),
        external_data=external,
        max_abs_diff=max_abs,
        max_rel_diff=max_rel,
        batch_sizes=tuple(c[2] for c in cases),
        inputs=tuple(_describe(v) for v in saved.graph.input),
        outputs=tuple(_describe(v) for v in saved.graph.output),
        quantized=quantized,
    )


# --- arguments -------------------------------------------------------------------------


def _check_path(path: Any) -> Path:
    try:
        path = Path(path)
    except TypeError:
        raise ExportArgumentError(
            f"path must be a file path such as 'model.onnx', not {type(path).__name__}"
        ) from None
    if path.is_dir():
        raise ExportArgumentError(
            f"{path} is a directory; give a file name inside it, such as {path / 'model.onnx'}"
        )
    parent = path.parent
    if not parent.is_dir():
        raise ExportArgumentError(
            f"cannot write {path}: the directory {parent} does not exist; create it first "
            "or choose another path"
        )
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ExportArgumentError(
            f"cannot write {path}: permission denied; choose a writable directory"
        )
    return path


def _check_options(quantize: Any, opset: Any, rtol: Any, int8_rtol: Any) -> None:
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise ExportArgumentError(
            f"unknown quantize={quantize!r}; use one of {', '.join(map(repr, QUANTIZE_CHOICES))} "
            "or None"
        )
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or opset < 7):
        raise ExportArgumentError(f"opset must be an ONNX opset number such as 18, not {opset!r}")
    for name, value in (("rtol", rtol), ("int8_rtol", int8_rtol)):
        if not isinstance(value, int | float) or not value > 0:
            raise ExportArgumentError(f"{name} must be a positive number, not {value!r}")


def _check_weights(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise ExportArgumentError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    meta = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if meta:
        raise ExportArgumentError(
            f"{meta[0]} (and {len(meta) - 1} more) is on the meta device and has no values to "
            "export; load real weights first (e.g. sg.load_weights)"
        )


def _split_inputs(
    model: nn.Module, example_inputs: Any
) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
    """Positional or keyword tensors; keywords reordered to ``forward``'s signature.

    Both exporters must agree on the input order: the legacy one follows the signature,
    the dynamo one the dict, so the dict is put in signature order first.
    """
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if isinstance(example_inputs, Mapping):
        items = list(example_inputs.items())
        where = [f"example_inputs[{k!r}]" for k, _ in items]
    elif isinstance(example_inputs, tuple | list):
        items = list(enumerate(example_inputs))
        where = [f"example_inputs[{i}]" for i, _ in items]
    else:
        raise ExportArgumentError(
            "example_inputs must be a tuple of positional tensors or a dict of keyword "
            f"tensors, not {type(example_inputs).__name__}"
        )
    if not items:
        raise ExportArgumentError("example_inputs is empty; give the tensors forward takes")
    for (key, value), at in zip(items, where):
        if isinstance(example_inputs, Mapping) and not isinstance(key, str):
            raise ExportArgumentError(f"keyword input names must be strings, not {key!r}")
        if not isinstance(value, torch.Tensor):
            raise ExportArgumentError(
                f"{at} is a {type(value).__name__}; export_onnx takes tensors only (fix "
                "other arguments with functools.partial or a wrapper module)"
            )
    if not isinstance(example_inputs, Mapping):
        return tuple(example_inputs), {}
    order = [p for p in _parameters(model) if p in example_inputs]
    order += [k for k in example_inputs if k not in order]
    return (), {k: example_inputs[k] for k in order}


def _parameters(model: nn.Module) -> list[str]:
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in params if p.kind in kinds or p.kind is inspect.Parameter.KEYWORD_ONLY]


def _input_names(model: nn.Module, args: tuple, kwargs: dict[str, Any]) -> list[str]:
    if kwargs:
        return list(kwargs)
    named = _parameters(model)[: len(args)]
    return named + [f"input_{i}" for i in range(len(named), len(args))]


def _batch_size(inputs: Sequence[torch.Tensor]) -> int | None:
    return next((int(t.shape[0]) for t in inputs if t.ndim >= 1), None)


def _has_batch(t: torch.Tensor, batch: int | None) -> bool:
    return batch is not None and t.ndim >= 1 and t.shape[0] == batch


# --- PyTorch side ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    """What the exporters call the model with, and what the ONNX graph calls things."""

    args: tuple[torch.Tensor, ...]
    kwargs: dict[str, torch.Tensor]
    names: list[str]
    output_names: list[str]
    dynamic: list[bool]  # per input: dim 0 is the batch
    out_dynamic: list[bool]  # per output

    @property
    def inputs(self) -> list[torch.Tensor]:
        return [*self.args, *self.kwargs.values()]

    def rebatched(self, batch: int | None, size: int) -> _Call:
        more = [_rebatch(t, batch, size, seed=i) for i, t in enumerate(self.inputs)]
        n = len(self.args)
        return replace(self, args=tuple(more[:n]), kwargs=dict(zip(self.kwargs, more[n:])))


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


def _run_torch(model: nn.Module, args: Sequence[Any], kwargs: dict[str, Any]) -> list[torch.Tensor]:
    try:
        with torch.no_grad():
            out = model(*args, **kwargs)
    except Exception as exc:
        call = "model(**example_inputs)" if kwargs else "model(*example_inputs)"
        raise ModelCallError(
            f"{call} raised {type(exc).__name__}: {_one_line(exc)}; pass example inputs "
            "that the model's forward accepts (a tuple for positional, a dict for keyword "
            "arguments)"
        ) from exc
    # both exporters drop None outputs, so only the tensors are numbered
    leaves = [(k, leaf) for k, leaf in pytree.tree_leaves_with_path(out) if leaf is not None]
    for key, leaf in leaves:
        if not isinstance(leaf, torch.Tensor):
            raise ModelCallError(
                f"the model returns a {type(leaf).__name__} at output{pytree.keystr(key)}; "
                "ONNX outputs must be tensors, so wrap the model to return only its tensors"
            )
    if not leaves:
        raise ModelCallError(
            f"the model returns no tensors (got {type(out).__name__}); ONNX needs at least "
            "one tensor output, so wrap the model to return the tensors you need"
        )
    return [leaf for _, leaf in leaves]


def _cases(
    model: nn.Module, call: _Call, expected: list[torch.Tensor], batch: int | None, second: bool
) -> list[_Case]:
    """The example inputs and, if ``second``, inputs of a second batch size."""
    cases = [(_feeds(call.names, call.inputs), expected, batch or 1)]
    if not second:
        return cases
    size = SECOND_BATCH if batch != SECOND_BATCH else SECOND_BATCH - 1
    more = call.rebatched(batch, size)
    try:
        outputs = _run_torch(model, more.args, more.kwargs)
    except ModelCallError as exc:
        raise ModelCallError(
            f"the model runs at batch {batch} but not at batch {size} ({exc}); it fixes its "
            "batch size, so export with dynamic_batch=False"
        ) from exc.__cause__
    return [*cases, (_feeds(call.names, more.inputs), outputs, size)]


def _feeds(names: list[str], inputs: Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
    return {name: _to_numpy(t, name) for name, t in zip(names, inputs)}


def _rebatch(t: torch.Tensor, batch: int | None, size: int, seed: int) -> torch.Tensor:
    """``t`` with ``size`` rows: random floats at the example's scale, cycled rows otherwise.

    Integer and bool inputs (token ids, masks) only make sense with values the model
    accepts, so their example rows are repeated.
    """
    if not _has_batch(t, batch):
        return t
    if t.is_floating_point():
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn((size, *t.shape[1:]), generator=gen, dtype=torch.float32)
        ref = t.detach().float().cpu()
        std = ref.std() if ref.numel() > 1 else ref.new_ones(())
        return (noise * std + ref.mean()).to(device=t.device, dtype=t.dtype)
    rows = torch.arange(size, device=t.device) % t.shape[0]
    return t[rows]


def _to_numpy(t: torch.Tensor, name: str) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        raise ExportArgumentError(
            f"input {name!r} is bfloat16, which ONNX Runtime's parity check cannot feed from "
            "numpy; export a float32 or float16 copy of the model and inputs"
        )
    return t.detach().cpu().numpy()


# --- exporting -------------------------------------------------------------------------


def _export(
    model: nn.Module, call: _Call, batch: int | None, opset: int | None
) -> tuple[Literal["dynamo", "legacy"], str | None, ir.Model]:
    """The dynamo exporter, or the legacy one when the dynamo one raises (and why)."""
    # torch.export specialises a dim whose example size is 1 to the constant 1 as soon as
    # any op asks (convnext does), so the dynamo exporter sees a batch of 2
    traced = call.rebatched(batch, 2) if batch == 1 and any(call.dynamic) else call
    try:
        return "dynamo", None, _export_dynamo(model, traced, opset)
    except Exception as exc:
        reason = _reason(exc)
    try:
        onnx_model = _export_legacy(model, call, opset)
    except Exception as exc:
        raise ExportError(
            f"neither ONNX exporter could export the model. dynamo: {reason}. legacy: "
            f"{_reason(exc)}. Try another opset, dynamic_batch=False, or rewrite the "
            "failing op"
        ) from exc
    return "legacy", reason, onnx_model


def _export_dynamo(model: nn.Module, call: _Call, opset: int | None) -> ir.Model:
    batch = torch.export.Dim(BATCH)
    specs = [{0: batch} if dyn else None for dyn in call.dynamic]
    shapes = dict(zip(call.names, specs)) if call.kwargs else tuple(specs)
    with _captured():
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
    return program.model


def _export_legacy(model: nn.Module, call: _Call, opset: int | None) -> ir.Model:
    names = [*call.names, *call.output_names]
    axes = {n: {0: BATCH} for n, dyn in zip(names, [*call.dynamic, *call.out_dynamic]) if dyn}
    with tempfile.TemporaryDirectory() as tmp, _captured():
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


def _save(
    model: ir.Model, path: Path, external: bool, simplify: bool, feeds: dict[str, np.ndarray]
) -> tuple[int | None, str | None]:
    """Write ``model`` (simplified unless it is too large); node count after, or why not."""
    if external:
        ir.save(model, path, external_data=_data_name(path))
        return None, (
            f"the weights exceed {EXTERNAL_DATA_BYTES} bytes and are saved as external data, "
            "which onnxsim cannot simplify reliably in memory"
        )
    proto = ir.serde.serialize_model(model)
    nodes_after, skipped = None, "simplify=False was passed"
    if simplify:
        proto, nodes_after, skipped = _simplify(proto, feeds)
    onnx.save_model(proto, path)
    return nodes_after, skipped


def _initializer_bytes(model: ir.Model) -> int:
    values = model.graph.initializers.values()
    return sum(v.const_value.nbytes for v in values if v.const_value is not None)


def _simplify(
    proto: onnx.ModelProto, feeds: dict[str, np.ndarray]
) -> tuple[onnx.ModelProto, int | None, str | None]:
    """onnxsim with its own check on the example inputs; the exported graph if it fails."""
    import onnxsim

    names = {v.name for v in proto.graph.input}
    options: dict[str, Any] = {
        "check_n": 1,
        "input_data": {k: v for k, v in feeds.items() if k in names},
        # trades a batched MatMul + Add for Reshape + Gemm + Reshape: more nodes, no
        # faster on ONNX Runtime, which runs batched MatMul natively
        "skipped_optimizers": ["fuse_matmul_add_bias_into_gemm_batched"],
    }
    if "certify" in inspect.signature(onnxsim.simplify).parameters:
        options["certify"] = False  # a Z3 proof is not what this check is for
    try:
        with _silent_fds(), contextlib.redirect_stdout(io.StringIO()):
            simplified, ok = onnxsim.simplify(proto, **options)
    except Exception as exc:
        return (
            proto,
            None,
            f"onnxsim failed ({type(exc).__name__}: {_one_line(exc)}); kept the exported graph",
        )
    if not ok:
        return (
            proto,
            None,
            "onnxsim's check found the simplified graph differs; kept the exported graph",
        )
    return simplified, len(simplified.graph.node), None


def _check_onnx(path: Path) -> None:
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise ExportError(f"onnx.checker rejects {path}: {_one_line(exc)}") from exc


# --- checking --------------------------------------------------------------------------


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"ONNX Runtime cannot load {path}: {_one_line(exc)}") from exc


def _parity(
    path: Path, cases: list[_Case], output_names: list[str], rtol: float, what: str
) -> tuple[float, float]:
    """Run ``path`` on every case; the largest absolute and scale-relative differences."""
    session = _session(path)
    wanted = [v.name for v in session.get_inputs()]
    unknown = [n for n in wanted if n not in cases[0][0]]
    if unknown:
        raise ExportError(f"{path} wants inputs {unknown} that the example inputs do not name")
    produced = [v.name for v in session.get_outputs()]
    if produced != output_names:
        raise ExportError(f"{path} has outputs {produced}, expected {output_names}")
    max_abs = max_rel = 0.0
    for feeds, expected, size in cases:
        try:
            got = session.run(output_names, {n: feeds[n] for n in wanted})
        except Exception as exc:
            raise ParityError(
                f"ONNX Runtime failed to run {what} at batch {size}: {_one_line(exc)}. If the "
                "model fixes its batch size, export with dynamic_batch=False"
            ) from exc
        for name, onnx_out, torch_out in zip(output_names, got, expected):
            abs_diff, rel_diff = _difference(np.asarray(onnx_out), torch_out, name, size)
            if rel_diff > rtol:
                raise ParityError(
                    f"{what} ({path}) disagrees with PyTorch on {name} at batch {size}: max "
                    f"abs diff {abs_diff:.3g}, max rel diff {rel_diff:.3g} > rtol {rtol:g}. "
                    "Try another opset or simplify=False, or raise rtol if the difference "
                    "is acceptable"
                )
            max_abs, max_rel = max(max_abs, abs_diff), max(max_rel, rel_diff)
    return max_abs, max_rel


def _difference(
    got: np.ndarray, expected: torch.Tensor, name: str, size: int
) -> tuple[float, float]:
    """Max absolute difference, and that over the output's largest magnitude."""
    want = expected.detach().cpu().to(torch.float64).numpy()
    if got.shape != want.shape:
        raise ParityError(
            f"{name} at batch {size} has shape {got.shape} in ONNX Runtime but "
            f"{tuple(want.shape)} in PyTorch"
        )
    if not want.size:
        return 0.0, 0.0
    have = got.astype(np.float64)
    same = (have == want) | (np.isnan(have) & np.isnan(want))
    diff = np.where(same, 0.0, np.abs(have - want))
    abs_diff = float(diff.max())
    if math.isnan(abs_diff):
        return math.inf, math.inf
    finite = np.abs(want[np.isfinite(want)])
    scale = float(finite.max()) if finite.size else 0.0
    return abs_diff, abs_diff / scale if scale > 0 else abs_diff


def _quantize(
    path: Path, external: bool, cases: list[_Case], output_names: list[str], rtol: float
) -> QuantizedReport:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = path.with_name(f"{path.stem}.int8.onnx")
    if external:
        # onnx appends to an existing data file instead of replacing it
        (target.parent / _data_name(target)).unlink(missing_ok=True)
    try:
        with _quiet_root_logger():
            quantize_dynamic(
                path, target, weight_type=QuantType.QInt8, use_external_data_format=external
            )
    except Exception as exc:
        raise ExportError(
            f"int8 quantization of {path} failed ({type(exc).__name__}: {_one_line(exc)}); "
            f"the float model at {path} is valid, export it without quantize"
        ) from exc
    max_abs = max_rel = None
    if cases:
        max_abs, max_rel = _parity(target, cases, output_names, rtol, "the int8 model")
    return QuantizedReport(
        path=target,
        file_size=_file_size(target, external),
        max_abs_diff=max_abs,
        max_rel_diff=max_rel,
    )


@contextlib.contextmanager
def _silent_fds() -> Iterator[None]:
    """Send the process's stdout and stderr to /dev/null: onnxsim's C++ core prints a line
    for every node its constant folding cannot run, which says nothing to act on."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in (1, 2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(null)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization advises pre-processing through the root logger; hush it."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


# --- describing ------------------------------------------------------------------------


def _describe(value: onnx.ValueInfoProto) -> TensorInfo:
    tensor = value.type.tensor_type
    shape = tuple(
        d.dim_param if d.HasField("dim_param") else d.dim_value if d.HasField("dim_value") else "?"
        for d in tensor.shape.dim
    )
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
    return TensorInfo(name=value.name, shape=shape, dtype=str(np.dtype(dtype)))


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _data_name(path: Path) -> str:
    return f"{path.name}.data"


def _file_size(path: Path, external: bool) -> int:
    data = path.parent / _data_name(path)
    return path.stat().st_size + (data.stat().st_size if external and data.exists() else 0)


def _one_line(exc: BaseException, limit: int = 300) -> str:
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reason(exc: BaseException) -> str:
    """``Type: first line``, and the same of the root cause the exporters wrap it around."""
    root = exc
    while root.__cause__ is not None and root.__cause__ is not root:
        root = root.__cause__
    text = f"{type(exc).__name__}: {_one_line(exc)}"
    return text if root is exc else f"{text} (caused by {type(root).__name__}: {_one_line(root)})"


@contextlib.contextmanager
def _captured() -> Iterator[None]:
    """Keep an exporter's warnings and dumps off the console; failures come back as errors."""
    sink = io.StringIO()
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        warnings.simplefilter("ignore")
        yield
