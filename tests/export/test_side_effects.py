"""An export leaves the caller's process as it found it: seeded code draws the same numbers
after ``sg.export_onnx`` as before."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_SCRIPT = """
import random, sys
import numpy as np, torch
import slimgraph as sg

random.seed(0)
np.random.seed(0)
net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
sg.export_onnx(net, torch.ones(1, 4), sys.argv[1])
print(random.random() == random.Random(0).random())
print(np.random.random() == np.random.RandomState(0).random_sample())
"""


def test_export_keeps_global_random_state(tmp_path: Path) -> None:
    # a fresh process: the first ``import onnxsim`` is what draws from ``random``
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path / "net.onnx")],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert out.stdout.split() == ["True", "True"]
