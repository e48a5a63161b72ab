"""sg.recover on two CPU processes (gloo) under torchrun: DDP through accelerate and torch
FSDP2 train the same tiny Llama student as one process does on the union of the two
processes' batches, end with the same weights on both processes, keep the student's
class and shapes, and checkpoint as sharded folders that ``from_pretrained`` reloads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

import slimgraph as sg
from tests.hf_models import build
from tests.tools.recover_worker import digest

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("recover_worker.py")
PROCESSES = 2


def launch(out: Path, mode: str) -> list[dict]:
    """Run the worker on two processes; each one's result."""
    # a process that aborts prints where each of its threads was (faulthandler)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONFAULTHANDLER": "1",
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={PROCESSES}", str(WORKER), str(out), mode]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-10000:]
    return [json.loads((out / f"rank-{r}.json").read_text()) for r in range(PROCESSES)]


def one_process_on_the_union() -> tuple[torch.nn.Module, sg.RecoverReport]:
    """What the two processes do together, in one: each step's two batches as one."""
    teacher, inputs = build("llama")
    student = sg.slim(teacher, inputs, ratio=0.5).model
    torch.manual_seed(1)
    vocab = teacher.config.vocab_size
    data = [torch.randint(0, vocab, (4, 16)) for _ in range(8)]
    union = [{"input_ids": torch.cat(data[i : i + 2])} for i in range(0, 8, 2)]
    report = sg.recover(student, teacher, union, epochs=2, lr=3e-3, progress=False)
    return student, report


@pytest.fixture(scope="module")
def single() -> tuple[torch.nn.Module, sg.RecoverReport]:
    return one_process_on_the_union()


@pytest.mark.parametrize(("mode", "engine"), [("ddp", "DDP"), ("fsdp", "FSDP2")])
def test_two_processes_train_as_one_does_on_both_shares(mode, engine, single, tmp_path):
    first, second = launch(tmp_path, mode)
    assert first == second  # same losses (means over processes) and the same weights
    assert first["engine"].startswith(f"{engine} over 2 processes")
    assert (first["steps"], first["checkpoints"]) == (8, [2, 4, 6, 8])  # 8 batches / 2, x2
    student, report = single
    assert first["class"] == type(student).__name__ == "LlamaForCausalLM"
    assert first["shapes"] == {k: list(v.shape) for k, v in student.state_dict().items()}
    assert first["losses"] == pytest.approx(report.losses, rel=1e-4)
    assert sum(first["losses"][-2:]) < 0.8 * sum(first["losses"][:2])

    saved = tmp_path / "step-8"
    index = json.loads((saved / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # sharded
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(saved)
    assert digest(reloaded) == first["digest"]
    for name, value in reloaded.state_dict().items():
        assert torch.allclose(value, student.state_dict()[name], rtol=0, atol=5e-6), name
