"""Recover a slim model's accuracy by distillation from the model it was cut from.

The teacher (the original) runs in eval mode without gradients; the student (the slim
copy) learns to match its main output: the softened class distribution for logits
(KL divergence at ``temperature``), the values themselves for hidden states (mean squared
error). A task loss ``loss_fn(student, batch)`` can be mixed in with ``alpha``.

>>> import torch, slimgraph as sg
>>> _ = torch.manual_seed(0)
>>> teacher = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
>>> student = sg.slim(teacher, (torch.randn(1, 8),), ratio=0.75).model
>>> data = [torch.randn(16, 8) for _ in range(10)]
>>> report = sg.recover(student, teacher, data, epochs=3, lr=1e-2, progress=False)
>>> report.steps, report.last_loss < report.first_loss
(30, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from slimgraph._core.batches import Selector, call_on_batch
from slimgraph._core.inputs import preserve_modes
from slimgraph._core.progress import progress_bar
from slimgraph.errors import RecoverError
from slimgraph.tools.distributed import Distributed, Engine, engine_for, shard

__all__ = ["RecoverReport", "recover", "distill_loss"]

Distill = Literal["auto", "kl", "mse"]


@dataclass
class RecoverReport:
    """How the fine-tuning went: optimizer steps taken and the loss at each."""

    steps: int
    losses: list[float] = field(default_factory=list)
    distill: str = "kl"  # what the student was matched on: "kl" (logits) or "mse"
    engine: str = "one process"  # where the steps ran (losses are means over processes)
    checkpoints: list[int] = field(default_factory=list)  # steps the checkpoint hook saw

    @property
    def first_loss(self) -> float:
        return self.losses[0]

    @property
    def last_loss(self) -> float:
        return self.losses[-1]


def recover(
    student: nn.Module,
    teacher: nn.Module,
    data: Iterable[Any],
    *,
    steps: int | None = None,
    epochs: int = 1,
    lr: float = 1e-4,
    temperature: float = 2.0,
    alpha: float = 0.5,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    inputs: Selector | None = None,
    distill: Distill = "auto",
    progress: bool = True,
    distributed: Distributed = "auto",
    accelerator: Any = None,
    checkpoint: Callable[[nn.Module, int], Any] | None = None,
    checkpoint_every: int | None = None,
) -> RecoverReport:
    """Fine-tune ``student`` in place to match ``teacher`` on ``data``.

    ``data`` yields batches; ``inputs(batch)`` makes the model inputs of one (a tensor, a
    tuple of positional inputs or a dict of keyword inputs; default: the batch itself,
    so pass ``inputs=lambda b: b[0]`` for ``(x, y)`` pairs). Runs ``epochs`` passes, or
    exactly ``steps`` optimizer steps when given (passing over ``data`` as often as that
    takes). The loss is ``alpha * distill + (1 - alpha) * loss_fn(student, batch)`` with a
    task loss, else the distillation loss alone; ``distill`` picks it ("auto": KL on
    logits, MSE on a hidden state, see :func:`distill_loss`). ``optimizer`` defaults to
    Adam at ``lr`` over the student's trainable parameters. Both models' train/eval modes
    are restored afterwards. ``loss_fn`` runs the student itself: a second forward pass.

    Under ``accelerate launch`` or ``torchrun`` the same call trains on every process
    (:mod:`slimgraph.tools.distributed`): ``distributed="auto"`` runs DDP through
    ``accelerate`` (or the ``accelerator`` given), ``"fsdp"`` shards with torch FSDP2,
    ``"none"`` refuses to run alone in a launched process. Batch ``i`` of each pass goes to
    process ``i mod N``, so every process must be given the same data; the reported losses
    are means over the processes, and the student ends with the trained weights on every
    process. ``checkpoint(student, step)`` is called on the main process every
    ``checkpoint_every`` steps and after the last, with the student holding the weights of
    that step (gathered from the shards under FSDP): pass
    ``lambda m, step: sg.save(m, f"ckpt/step-{step}", max_shard_size="2GB")`` for sharded
    checkpoints that ``from_pretrained`` reloads.
    """
    if student is teacher:
        raise RecoverError("student and teacher are the same model; pass the original as teacher")
    if steps is not None and steps < 1:
        raise RecoverError(f"steps must be at least 1, not {steps}")
    if epochs < 1:
        raise RecoverError(f"epochs must be at least 1, not {epochs}")
    if not 0.0 <= alpha <= 1.0:
        raise RecoverError(f"alpha weighs the distillation loss and must be in [0, 1], not {alpha}")
    if isinstance(data, Iterator) and (steps is not None or epochs > 1):
        raise RecoverError(
            "data is a one-pass iterator, but more than one pass may be needed: "
            "pass a list of batches or a DataLoader"
        )
    if checkpoint_every is not None and (checkpoint is None or checkpoint_every < 1):
        raise RecoverError("checkpoint_every needs a checkpoint hook and must be at least 1")
    engine = engine_for(distributed, accelerator)
    total = _length(data, epochs, engine.world) if steps is None else steps
    if total is None and engine.world > 1:
        raise RecoverError(
            "data has no length, so the processes cannot agree on a number of steps: "
            "pass steps, or a list of batches or a DataLoader"
        )
    if engine.device is not None and _device(teacher) not in (None, engine.device):
        teacher.to(engine.device)
    report = RecoverReport(steps=0, engine=engine.name)
    with (
        preserve_modes(student),
        preserve_modes(teacher),
        progress_bar(total, "recovering", progress and engine.is_main) as update,
    ):
        student.train()
        teacher.eval()
        trained, optimizer = engine.prepare(
            student, optimizer, lambda params: torch.optim.Adam(params, lr=lr)
        )
        for batch in _batches(data, steps, epochs, engine):
            loss, report.distill = _loss(
                trained, teacher, batch, inputs, loss_fn, alpha, temperature, distill
            )
            value = engine.mean(loss)  # every process sees the same value, and stops together
            if not math.isfinite(value):
                raise RecoverError(f"the loss is {value} at step {report.steps + 1}; lower the lr")
            optimizer.zero_grad(set_to_none=True)
            engine.backward(loss)
            optimizer.step()
            report.steps += 1
            report.losses.append(value)
            update(description=f"recovering: loss {value:.4g}")
            if checkpoint_every and report.steps % checkpoint_every == 0:
                _checkpoint(engine, student, trained, checkpoint, report)
        if not report.checkpoints or report.checkpoints[-1] != report.steps:
            _checkpoint(engine, student, trained, checkpoint, report)
    return report


def _checkpoint(
    engine: Engine,
    student: nn.Module,
    trained: nn.Module,
    hook: Callable[[nn.Module, int], Any] | None,
    report: RecoverReport,
) -> None:
    """The trained weights into ``student`` on every process, then ``hook`` on the main."""
    engine.gather(student, trained)
    if hook is None:
        return
    if engine.is_main:
        with preserve_modes(student):
            student.eval()
            hook(student, report.steps)
    report.checkpoints.append(report.steps)
    engine.barrier()


def distill_loss(
    student_output: Any, teacher_output: Any, temperature: float = 2.0, distill: Distill = "auto"
) -> tuple[torch.Tensor, str]:
    """The distillation loss between two model outputs, and which one it is.

    The main output is compared: ``logits`` of a model output, else its
    ``last_hidden_state``, else the first tensor (of a tuple too). "auto" takes MSE on a
    ``last_hidden_state`` and KL on anything else (class scores). KL is the batch mean of
    ``KL(teacher || student)`` over softmax(·/T) of the last dim, times ``T²`` so that
    gradients keep their scale (Hinton et al., 2015); leading dims (tokens) count as batch.

    >>> s, t = torch.zeros(2, 3), torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    >>> loss, kind = distill_loss(s, t, temperature=1.0)  # row 2: KL(softmax(1, 0, 0) || 1/3)
    >>> kind, round(loss.item(), 4)
    ('kl', 0.0616)
    """
    s, s_key = _main_output(student_output)
    t, t_key = _main_output(teacher_output)
    if s_key != t_key:
        raise RecoverError(f"the student returns {s_key} but the teacher {t_key}")
    if s.shape != t.shape:
        hint = (
            "; the hidden size was cut: distill on logits (a model with a task head), or "
            "slim with prune_residual=False"
            if s_key == "last_hidden_state"
            else ""
        )
        raise RecoverError(
            f"student {s_key} has shape {tuple(s.shape)} but the teacher's is "
            f"{tuple(t.shape)}: distillation compares outputs of the same shape{hint}"
        )
    if not s.is_floating_point():
        raise RecoverError(f"{s_key} is a {s.dtype} tensor; distillation needs float outputs")
    kind = distill if distill != "auto" else ("mse" if s_key == "last_hidden_state" else "kl")
    t = t.detach().to(s.device)
    if kind == "mse":
        return F.mse_loss(s.float(), t.float()), kind
    if s.ndim < 1 or s.shape[-1] < 2:
        raise RecoverError(f"KL needs class scores in the last dim; {s_key} has {tuple(s.shape)}")
    log_s = F.log_softmax(s.float().flatten(0, -2) / temperature, dim=-1)
    log_t = F.log_softmax(t.float().flatten(0, -2) / temperature, dim=-1)
    kl = F.kl_div(log_s, log_t, log_target=True, reduction="batchmean")
    return kl * temperature**2, kind


def _main_output(out: Any) -> tuple[torch.Tensor, str]:
    if isinstance(out, torch.Tensor):
        return out, "output"
    if isinstance(out, Mapping):
        for key in ("logits", "last_hidden_state"):
            if isinstance(out.get(key), torch.Tensor):
                return out[key], key
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        for value in out:
            if isinstance(value, torch.Tensor):
                return value, "first output"
    raise RecoverError(f"the model returned no tensor to distill from ({type(out).__name__})")


def _loss(
    student: nn.Module,
    teacher: nn.Module,
    batch: Any,
    inputs: Selector | None,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None,
    alpha: float,
    temperature: float,
    distill: Distill,
) -> tuple[torch.Tensor, str]:
    given, selected = (inputs(batch), True) if inputs is not None else (batch, False)
    with torch.no_grad():
        teacher_out = call_on_batch(teacher, _to(given, _device(teacher)), selected=selected)
    student_out = call_on_batch(student, _to(given, _device(student)), selected=selected)
    loss, kind = distill_loss(student_out, teacher_out, temperature, distill)
    if loss_fn is None:
        return loss, kind
    task = loss_fn(student, batch)
    if not isinstance(task, torch.Tensor) or task.ndim != 0:
        raise RecoverError("loss_fn(student, batch) must return a scalar tensor")
    return alpha * loss + (1 - alpha) * task, kind


def _batches(data: Iterable[Any], steps: int | None, epochs: int, engine: Engine) -> Iterator[Any]:
    """This process's share of ``epochs`` passes over ``data``, or of as many as ``steps``
    batches take."""
    taken = 0
    passes = 0
    while steps is not None or passes < epochs:
        seen = 0
        for batch in shard(data, engine.rank, engine.world):
            yield batch
            seen += 1
            taken += 1
            if steps is not None and taken >= steps:
                return
        if not seen:
            raise RecoverError(
                "data gave no batches"
                + (f" on pass {passes + 1}" if passes else "")
                + (f" for each of {engine.world} processes" if engine.world > 1 else "")
            )
        passes += 1


def _length(data: Iterable[Any], epochs: int, world: int) -> int | None:
    try:
        return len(data) // world * epochs  # type: ignore[arg-type]
    except TypeError:
        return None


def _device(model: nn.Module) -> torch.device | None:
    first = next(model.parameters(), None)
    return first.device if first is not None else None


def _to(value: Any, device: torch.device | None) -> Any:
    """``value`` with every tensor in it (tuples, lists, dicts) on ``device``."""
    if device is None:
        return value
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, Mapping):
        return {k: _to(v, device) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return (
            [_to(v, device) for v in value]
            if isinstance(value, list)
            else tuple(_to(v, device) for v in value)
        )
    return value
