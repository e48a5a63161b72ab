"""Writing the exported graph: simplified by onnxsim when it fits in memory, its weights in
``<file>.data`` beside it when they would not fit a protobuf, then checked by
``onnx.checker``.

>>> data_name(Path("net.onnx"))
'net.onnx.data'
"""

from __future__ import annotations

import contextlib
import inspect
import io
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnx
import onnx_ir as ir

from slimgraph._core.files import atomic_write, staged_files
from slimgraph.errors import ExportError
from slimgraph.export._quiet import one_line, silent_fds

__all__ = ["EXTERNAL_DATA_BYTES", "Saved", "check_onnx", "data_name", "file_size", "save"]

EXTERNAL_DATA_BYTES = 2**31 - 2**24
"""Weights larger than this go to ``<file>.data`` beside the model: protobuf caps a
serialised message at 2 GiB, and the margin leaves room for the graph itself."""


class Saved(NamedTuple):
    """How the graph was written: with external data, simplified to ``nodes_after`` nodes
    (``None`` when not, and ``skipped_reason`` says why)."""

    external: bool
    nodes_after: int | None
    skipped_reason: str | None


def save(model: ir.Model, path: Path, simplify: bool, feeds: dict[str, np.ndarray]) -> Saved:
    """Write ``model`` (simplified unless it is too large); node count after, or why not.

    The file (and its external data) is written under a temporary name and renamed into
    place: an interrupted save leaves the previous file whole."""
    if _initializer_bytes(model) > EXTERNAL_DATA_BYTES:
        with staged_files(path.parent) as stage:  # the model and its data file together
            ir.save(model, stage / path.name, external_data=data_name(path))
        return Saved(
            True,
            None,
            f"the weights exceed {EXTERNAL_DATA_BYTES} bytes and are saved as external data, "
            "which onnxsim cannot simplify reliably in memory",
        )
    proto = ir.serde.serialize_model(model)
    nodes_after: int | None = None
    skipped: str | None = "simplify=False was passed"
    if simplify:
        proto, nodes_after, skipped = _simplify(proto, feeds)
    atomic_write(path, lambda tmp: onnx.save_model(proto, tmp))
    # an earlier export's external data beside it would be taken for this model's
    (path.parent / data_name(path)).unlink(missing_ok=True)
    return Saved(False, nodes_after, skipped)


def _initializer_bytes(model: ir.Model) -> int:
    values = model.graph.initializers.values()
    return sum(v.const_value.nbytes for v in values if v.const_value is not None)


def _simplify(
    proto: onnx.ModelProto, feeds: dict[str, np.ndarray]
) -> tuple[onnx.ModelProto, int | None, str | None]:
    """onnxsim with its own check on the example inputs; the exported graph if it fails."""
    import onnxsim  # slow to import: only a simplified export needs it

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
        with silent_fds(), contextlib.redirect_stdout(io.StringIO()):
            simplified, ok = onnxsim.simplify(proto, **options)
    except Exception as exc:
        return (
            proto,
            None,
            f"onnxsim failed ({type(exc).__name__}: {one_line(exc)}); kept the exported graph",
        )
    if not ok:
        return (
            proto,
            None,
            "onnxsim's check found the simplified graph differs; kept the exported graph",
        )
    return simplified, len(simplified.graph.node), None


def check_onnx(path: Path) -> None:
    """``onnx.checker`` on the file at ``path``, its refusal as an :class:`ExportError`."""
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise ExportError(f"onnx.checker rejects {path}: {one_line(exc)}") from exc


def data_name(path: Path) -> str:
    """The name of the external data file beside the model at ``path``."""
    return f"{path.name}.data"


def file_size(path: Path, external: bool) -> int:
    """Bytes on disk: the model file, plus its external data file when ``external``."""
    data = path.parent / data_name(path)
    return path.stat().st_size + (data.stat().st_size if external and data.exists() else 0)
