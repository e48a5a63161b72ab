"""Where :func:`slimgraph.recover` runs its steps: one process, data-parallel (DDP) through
Hugging Face ``accelerate``, or sharded with torch FSDP2 (``fully_shard``).

The same call runs in one process and under ``accelerate launch`` / ``torchrun`` with N
processes: ``distributed="auto"`` takes DDP when the launcher has set ``WORLD_SIZE`` above 1
(or a process group is up), else trains in place. The engines are existing ones, never a
loop of slimgraph's own across processes:

* ``"ddp"``: :class:`accelerate.Accelerator` prepares the student and its optimizer
  (gloo on CPUs, NCCL on GPUs); the student trains in place, in sync on every process.
* ``"fsdp"``: a copy of the student is sharded with ``torch.distributed.fsdp.fully_shard``
  (each member of an ``nn.ModuleList``, then the whole), its optimizer is built on the
  shards, and the full weights are gathered back into the caller's student at checkpoints
  and at the end, so the student keeps its class and shapes.

Batches are split between processes by position: batch ``i`` of a pass goes to process
``i mod N``, and each pass keeps a multiple of N batches so that every process runs the
same number of steps (a process that ran one more would wait for the others forever).
Every process must therefore see the same data in the same order (seed any shuffling).

A process group that slimgraph starts (FSDP2's, or the one a default ``Accelerator``
starts) is destroyed when the process exits: gloo left up until the interpreter is torn
down can abort the process (``terminate called without an active exception``). A group
the caller started stays the caller's to destroy.

>>> engine = engine_for("none", None)
>>> engine.world, engine.is_main, engine.name
(1, True, 'one process')
>>> list(shard([1, 2, 3, 4, 5], rank=1, world=2))  # 5 batches: 2 each, the last dropped
[2, 4]
"""

from __future__ import annotations

import atexit
import copy
import functools
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn

from slimgraph.errors import RecoverError

__all__ = ["Distributed", "Engine", "engine_for", "shard"]

Distributed = Literal["auto", "none", "ddp", "fsdp"]
MakeOptimizer = Callable[[list[nn.Parameter]], torch.optim.Optimizer]


class Engine:
    """One process: the student trains in place."""

    name = "one process"
    rank = 0
    world = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device | None:
        return None  # wherever the student is

    def prepare(
        self, student: nn.Module, optimizer: torch.optim.Optimizer | None, make: MakeOptimizer
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        """The module to run and the optimizer to step."""
        return student, optimizer or make(_trainable(student))

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def mean(self, loss: torch.Tensor) -> float:
        """The loss averaged over the processes (each saw other batches)."""
        return loss.item()

    def gather(self, student: nn.Module, trained: nn.Module) -> None:
        """Put the trained weights into ``student`` on every process (all must call it)."""

    def barrier(self) -> None:
        """Wait for every process."""


class Accelerated(Engine):
    """DDP through an :class:`accelerate.Accelerator`."""

    def __init__(self, accelerator: Any) -> None:
        kind = str(accelerator.distributed_type).rsplit(".", 1)[-1]
        if kind not in {"NO", "MULTI_CPU", "MULTI_GPU", "MULTI_XPU", "MULTI_NPU", "MULTI_MLU"}:
            raise RecoverError(
                f"the accelerator is set up for {kind}; sg.recover runs data-parallel (DDP) "
                "through accelerate, and shards with distributed='fsdp' (torch FSDP2) itself"
            )
        if accelerator.num_processes < _launched_world():
            raise RecoverError(
                f"the launcher started {_launched_world()} processes but accelerate joined "
                f"{accelerator.num_processes} ({kind}): each would train alone. accelerate "
                "cannot run FSDP on CPUs; use distributed='fsdp' (torch FSDP2) there"
            )
        self.accelerator = accelerator
        self.rank = accelerator.process_index
        self.world = accelerator.num_processes
        self.name = f"DDP over {_processes(self.world)} (accelerate)"

    @property
    def device(self) -> torch.device | None:
        return self.accelerator.device

    def prepare(
        self, student: nn.Module, optimizer: torch.optim.Optimizer | None, make: MakeOptimizer
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        optimizer = optimizer or make(_trainable(student))
        return self.accelerator.prepare(student, optimizer)

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def mean(self, loss: torch.Tensor) -> float:
        return self.accelerator.reduce(loss.detach(), reduction="mean").item()

    def gather(self, student: nn.Module, trained: nn.Module) -> None:
        # DDP trains the student itself; unwrapping removes a mixed-precision forward patch
        self.accelerator.unwrap_model(trained, keep_fp32_wrapper=False)

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()


class Sharded(Engine):
    """torch FSDP2: a sharded copy trains; its full weights come back at checkpoints."""

    def __init__(self) -> None:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available()
        self._device = torch.device("cuda", local) if cuda else torch.device("cpu")
        if not dist.is_initialized():
            if "MASTER_ADDR" not in os.environ:
                raise RecoverError(
                    "distributed='fsdp' needs processes started by torchrun or accelerate "
                    "launch (MASTER_ADDR, RANK and WORLD_SIZE are not set)"
                )
            if cuda:
                torch.cuda.set_device(self._device)
            dist.init_process_group("nccl" if cuda else "gloo")
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()
        self.name = f"FSDP2 over {_processes(self.world)}"

    @property
    def device(self) -> torch.device | None:
        return self._device

    def prepare(
        self, student: nn.Module, optimizer: torch.optim.Optimizer | None, make: MakeOptimizer
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        if optimizer is not None:
            raise RecoverError(
                "distributed='fsdp' builds the optimizer on the sharded parameters; pass "
                "lr (Adam) instead of an optimizer made on the student's own parameters"
            )
        from torch.distributed.fsdp import fully_shard  # torch >= 2.6

        trained = copy.deepcopy(student).to(self._device)
        for module in trained.modules():
            if isinstance(module, nn.ModuleList):
                for block in module:
                    if any(p.requires_grad for p in block.parameters()):
                        fully_shard(block)
        fully_shard(trained)
        return trained, make(_trainable(trained))

    def mean(self, loss: torch.Tensor) -> float:
        total = loss.detach().clone()
        dist.all_reduce(total)
        return total.item() / self.world

    def gather(self, student: nn.Module, trained: nn.Module) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )

        full = get_model_state_dict(trained, options=StateDictOptions(full_state_dict=True))
        student.load_state_dict(full)

    def barrier(self) -> None:
        dist.barrier()


def engine_for(distributed: Distributed, accelerator: Any) -> Engine:
    """The engine ``distributed`` names (``accelerator``: one the caller made, for DDP)."""
    started = not _group_up()
    engine = _engine_for(distributed, accelerator)
    if started and _group_up():
        _destroy_at_exit()
    return engine


def _engine_for(distributed: Distributed, accelerator: Any) -> Engine:
    if distributed not in ("auto", "none", "ddp", "fsdp"):
        raise RecoverError(
            f"distributed must be 'auto', 'none', 'ddp' or 'fsdp', not {distributed!r}"
        )
    if distributed == "fsdp":
        if accelerator is not None:
            raise RecoverError("distributed='fsdp' runs torch FSDP2 itself: pass no accelerator")
        return Sharded()
    launched = _launched_world() > 1 or _group_up()
    if distributed == "none" or (distributed == "auto" and accelerator is None and not launched):
        if distributed == "none" and launched:
            raise RecoverError(
                f"distributed='none' in one of {_launched_world()} launched processes: each "
                "would train alone; use 'ddp' or 'fsdp'"
            )
        return Engine()
    if accelerator is None:
        try:
            from accelerate import Accelerator
        except ImportError as err:
            raise RecoverError(
                "data-parallel recovery runs through Hugging Face accelerate: pip install "
                "accelerate (or pass distributed='fsdp' for torch FSDP2)"
            ) from err
        # without cpu=True, accelerate on a machine without GPUs starts no process group
        accelerator = Accelerator(cpu=not torch.cuda.is_available())
    return Accelerated(accelerator)


def shard(batches: Iterable[Any], rank: int, world: int) -> Iterator[Any]:
    """This process's batches of one pass over ``batches``: every ``world``-th from
    ``rank``, up to the last whole round (so that every process gets as many)."""
    if world == 1:
        yield from batches
        return
    held: list[Any] = []
    for batch in batches:
        held.append(batch)
        if len(held) == world:
            yield held[rank]
            held.clear()


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise RecoverError("the student has no trainable parameters")
    return params


def _group_up() -> bool:
    return dist.is_available() and dist.is_initialized()


@functools.cache
def _destroy_at_exit() -> None:
    """Destroy the default process group at exit, while the interpreter is still whole."""
    atexit.register(_destroy)


def _destroy() -> None:
    if _group_up():
        dist.destroy_process_group()


def _processes(n: int) -> str:
    return f"{n} process" + ("es" if n != 1 else "")


def _launched_world() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1
