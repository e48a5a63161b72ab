"""Helpers shared by the test modules (imported as ``tests.helpers``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
import torchvision

TRANSFORMERS = ("vit_", "swin_", "maxvit_")


def torchvision_names() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def is_transformer(name: str) -> bool:
    return name.startswith(TRANSFORMERS)


def build_torchvision(name: str, seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor]:
    """A randomly initialised classifier and an input of its native size.

    Batch 2: the models are traced in train mode (auxiliary heads included), where
    BatchNorm needs more than one value per channel on 1x1 feature maps (inception_v3).
    """
    torch.manual_seed(seed)
    model = torchvision.models.get_model(name)
    size = 299 if name == "inception_v3" else 224
    return model, torch.randn(2, 3, size, size)


def first_output(out) -> torch.Tensor:
    """The logits of a classifier output (plain tensor or torchvision's namedtuples)."""
    return out if isinstance(out, torch.Tensor) else out[0]


# -- the slimgraph executable ----------------------------------------------------------


def slimgraph_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m``."""
    script = Path(sys.executable).with_name("slimgraph")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    found = shutil.which("slimgraph", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "slimgraph.cli"]


def slimgraph_env() -> dict[str, str]:
    """Wide, plain tables regardless of the terminal pytest runs in; one torch thread."""
    return {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}


def start_slimgraph(args: list[str], cwd: Path) -> subprocess.Popen:
    """Start ``slimgraph ARGS`` in ``cwd``; :func:`finish` waits for it."""
    return subprocess.Popen(
        slimgraph_command() + list(args),
        cwd=cwd,
        env=slimgraph_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_slimgraph(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``slimgraph ARGS`` in ``cwd`` to the end."""
    return finish(start_slimgraph(list(args), cwd), timeout)


def tiny_llama(**extra) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A random 4-layer Llama (hidden 32, 4 query and 2 key/value heads) in eval mode, and
    2 x 8 token ids; ``extra`` are further config fields."""
    import transformers as T

    torch.manual_seed(0)
    config = T.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        **extra,
    )
    return T.LlamaForCausalLM(config).eval(), {"input_ids": torch.randint(0, 64, (2, 8))}


class Terminal:
    """A stderr that says it is a terminal, and keeps what is written to it."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True
