"""The notebooks run headless, top to bottom; their own asserts check what they show, and
the lines they print here are the ones a reader sees."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))

# Lines each notebook prints (stdout and cell results), word for word: counts and
# structure that follow from the seeds, never timings or scores that a BLAS may round.
PRINTED = {
    "dependency_graph": [
        "heads 4 -> 2, each still 48 wide",
        "group fc.weight:0: 0 channels, frozen, exact",
        "  frozen by output linear dim 1 (aten.linear.default in fc): "
        "model output: its shape is part of the model's contract",
        "group conv1.weight:0: 64 channels, prunable, exact",
        "  coupled through the residual add in layer1.0, layer1.1",
    ],
    "slim_a_cnn": [
        "params 11,181,642 -> 2,801,450 (25.1%)",
        "MACs   148,050,944 -> 39,422,464 (26.6%)",
    ],
    "transformer_heads": [
        "group model.layers.0.self_attn.q_proj.weight:0: 2 heads, prunable, exact",
        "KV groups:   heads 4 kv 1",
        "query heads: heads 4 kv 2",
        *(f"encoder.layer.{i}: 9 of 12 heads kept" for i in range(6)),
        "{'activations': '64 calibration batches (1765 samples at the first consumer)'}",
        "12 folds, e.g. encoder.layer.0.attention.output.dense.weight:1 -> "
        "encoder.layer.0.attention.output.dense.bias",
    ],
}


def test_the_three_notebooks_are_there() -> None:
    names = [p.name for p in NOTEBOOKS]
    assert names == ["dependency_graph.ipynb", "slim_a_cnn.ipynb", "transformer_heads.ipynb"]
    assert sorted(PRINTED) == [p.stem for p in NOTEBOOKS]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": path.parent}}
    )
    client.execute()  # raises CellExecutionError, with the failing cell, on any error
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    printed = [
        line
        for o in outputs
        for line in (
            o.get("text", "")
            if o.get("name") == "stdout"
            else o.get("data", {}).get("text/plain", "")
        ).splitlines()
    ]
    assert [line for line in PRINTED[path.stem] if line not in printed] == []
