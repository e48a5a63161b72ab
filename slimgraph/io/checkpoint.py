"""Plan and apply on a Hugging Face checkpoint folder that need not fit in memory.

The model is built on the meta device from ``config.json`` (shapes without memory) and
traced there; weight criteria read the checkpoint tensor by tensor
(:meth:`~slimgraph.DependencyGraph.with_weights`); the plan is dry-run on the meta model,
which also solves the slim config; then each shard is read once, tensor by tensor,
sliced, and written as a shard of the output, so memory stays near one shard. The output
is a folder plain ``from_pretrained`` loads: sharded safetensors with their index, the
slim ``config.json``, the plan, and the source's other files (tokenizer, generation
config). It is checked to load back (on the meta device) before any file is moved into
place.

>>> import tempfile
>>> plan_checkpoint(tempfile.mkdtemp())
Traceback (most recent call last):
...
slimgraph.errors.LoadError: ... has no config.json ...
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimgraph._core.files import prepare_output_dir, staged_files, write_text_atomic
from slimgraph._core.inputs import synthesize
from slimgraph._core.memory import release_freed
from slimgraph._core.progress import progress_bar
from slimgraph.criteria.config import PruneConfig
from slimgraph.errors import LoadError, PlanError
from slimgraph.graph.depgraph import DependencyGraph
from slimgraph.graph.trace import trace
from slimgraph.io.hf import architecture, on_meta
from slimgraph.io.hf_save import PLAN_FILE, build_config, import_transformers, read_config
from slimgraph.io.shards import INDEX, Shards, write_index, write_shard
from slimgraph.resolve.plan import PruningPlan
from slimgraph.resolve.slicing import slice_tensor
from slimgraph.rewrite.apply import apply, dry_run
from slimgraph.rewrite.fallback import plan_that_applies
from slimgraph.rewrite.hf_config import EXACT

__all__ = ["apply_checkpoint", "is_sharded", "plan_checkpoint", "skeleton"]

# criteria that read weights alone: the others run the model on data
_STREAMABLE = ("l1", "l2", "random", "bn_scale")
# files of a checkpoint folder that are not copied: weights (written anew), code (never
# run, so never passed on), and what slimgraph writes itself
_NOT_COPIED = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".py", ".index.json")


class _Checkpoint:
    """A checkpoint folder's shards, and its model built on the meta device."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise LoadError(f"{self.directory} is not a directory; pass a checkpoint folder")
        self.data = read_config(self.directory)
        self.arch = architecture(import_transformers(), self.directory, self.data)
        # eval, as from_pretrained returns it: the mode a deployed model runs in
        self.model = on_meta(self.arch, build_config(self.arch, self.directory, self.data)).eval()
        self.shards = Shards.open(self.directory)
        self.stored = _stored_names(self.model, self.shards)

    def trace(self, plan: PruningPlan | None = None, seq_len: int = 16) -> DependencyGraph:
        """The meta model traced on the plan's input shapes, or on token ids."""
        if plan is not None:
            inputs: Any = synthesize(plan.inputs, device="meta")
            return trace(self.model, inputs, head_dims=plan.head_dims, query_heads=plan.query_heads)
        ids = torch.zeros(1, seq_len, dtype=torch.long, device="meta")
        return trace(self.model, (ids,))


def skeleton(directory: str | os.PathLike) -> nn.Module:
    """The model of the checkpoint folder ``directory`` on the meta device (shapes, no
    memory), in eval mode, after checking that its shards hold exactly its tensors."""
    return _Checkpoint(directory).model


def is_sharded(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a sharded checkpoint (an index of safetensors shards)."""
    return (Path(directory) / INDEX).is_file()


def _stored_names(model: nn.Module, shards: Shards) -> dict[str, str]:
    """Model tensor name -> the checkpoint name that stores it (a tied tensor is stored
    under one of its names). Refuses a checkpoint whose names or shapes differ from the
    model's: nothing could say which slice belongs where."""
    names: dict[int, list[str]] = {}
    for named in (model.named_parameters(remove_duplicate=False), model.named_buffers()):
        for name, t in named:
            names.setdefault(id(t), []).append(name)
    persistent = set(model.state_dict(keep_vars=True))
    stored: dict[str, str] = {}
    missing = []
    for tied in names.values():
        found = [n for n in tied if n in shards.shapes]
        if not found:
            missing += [n for n in tied if n in persistent][:1]
            continue
        stored |= dict.fromkeys(tied, found[0])
    shapes = dict(model.state_dict(keep_vars=True))
    wrong = [
        f"{n} {list(shards.shapes[s])} stored, {list(shapes[n].shape)} in the model"
        for n, s in stored.items()
        if n in shapes and n == s and shards.shapes[s] != tuple(shapes[n].shape)
    ]
    unexpected = sorted(set(shards.shapes) - set(stored.values()))
    if missing or unexpected or wrong:
        raise LoadError(
            f"{shards.directory}: the checkpoint's tensors are not the model's "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shapes {wrong[:3]}); "
            "streaming reads checkpoints stored under the model's own state_dict names. "
            "Load the model and use sg.slim / sg.apply instead"
        )
    return stored


def plan_checkpoint(
    directory: str | os.PathLike,
    config: PruneConfig | None = None,
    *,
    seq_len: int = 16,
    **fields: Any,
) -> PruningPlan:
    """Plan the cuts of the checkpoint in ``directory`` without loading it: the model is
    traced on the meta device on ``(1, seq_len)`` token ids, and the weight criteria
    (``l1``, ``l2``, ``bn_scale``, ``random``) read one tensor at a time from the shards.
    ``fields`` are :class:`~slimgraph.PruneConfig` fields, as for :func:`slimgraph.plan`.
    Groups whose cut fails the meta dry run are skipped, as :func:`slimgraph.slim` does.
    Apply the plan with :func:`apply_checkpoint`.
    """
    config = PruneConfig(**{**(config.model_dump() if config else {}), **fields})
    if config.importance not in _STREAMABLE:
        raise PlanError(
            f"importance={config.importance!r} runs the model on data; planning from a "
            f"checkpoint reads weights only: use one of {', '.join(_STREAMABLE)}, or load "
            "the model and use sg.slim"
        )
    checkpoint = _Checkpoint(directory)
    graph = checkpoint.trace(seq_len=seq_len)
    weights = _Stored(checkpoint.shards, checkpoint.stored)
    return plan_that_applies(checkpoint.model, graph.with_weights(weights), config)


class _Stored(Mapping[str, torch.Tensor]):
    """Model tensor name -> its values, read from the checkpoint on each lookup and never
    kept (the criteria keep only per-index sums)."""

    def __init__(self, shards: Shards, stored: dict[str, str]) -> None:
        self.shards, self.stored = shards, stored

    def __getitem__(self, name: str) -> torch.Tensor:
        release_freed()  # what the criterion freed of the last tensor, before the next
        return self.shards[self.stored[name]]

    def __iter__(self) -> Iterator[str]:
        return iter(self.stored)

    def __len__(self) -> int:
        return len(self.stored)


def apply_checkpoint(
    src: str | os.PathLike,
    plan: PruningPlan,
    dst: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write the slim checkpoint of ``plan`` applied to the one in ``src`` into ``dst``,
    reading each tensor of ``src`` once and holding about one shard in memory.

    Everything is checked before any tensor is read: the plan against the meta model
    (its fingerprint and a meta dry run), that the slim config describes the slim
    shapes (so plain ``from_pretrained`` reloads the output), and that the plan needs no
    data (bias compensation does). ``dst`` gets the shards of ``src`` under the same
    names, sliced, their index, ``config.json``, ``slimgraph_plan.json`` and the other
    files of ``src`` (not code); each file is written under a temporary name and renamed
    into place once the whole output has been checked to load back.
    """
    if not isinstance(plan, PruningPlan):
        raise PlanError(f"apply_checkpoint() takes a PruningPlan, not {type(plan).__name__}")
    if plan.compensation:
        raise PlanError(
            "the plan folds dropped units into the next layer's bias (bias_compensation), "
            "which needs the model's activations; streaming applies plans without it"
        )
    if plan.blocks:
        raise PlanError(
            f"the plan drops whole blocks ({', '.join(plan.blocks[:3])}), which streaming "
            "does not do yet: load the model and use sg.apply, then sg.save"
        )
    checkpoint = _Checkpoint(src)
    graph = checkpoint.trace(plan)
    slices = dry_run(checkpoint.model, plan, graph)
    with warnings.catch_warnings():  # an inexact config is refused below, with the fix
        warnings.simplefilter("ignore")
        slim = apply(checkpoint.model, plan, graph=graph)  # meta: shapes, attributes, config
    if not getattr(slim.config, EXACT, True):
        raise PlanError(
            f"{type(slim).__name__}'s config cannot describe the slim widths, so "
            "from_pretrained could not reload a streamed checkpoint: layers slimmed to "
            "different widths (scope='global'), or a width the config's own checks refuse "
            "(a hidden size the head count does not divide: plan with round_to, e.g. the "
            "head count). Or load the model and use sg.slim + sg.save, which reloads with "
            "sg.load"
        )
    dst = prepare_output_dir(dst, overwrite)
    shards, stored = checkpoint.shards, checkpoint.stored
    cut = {stored[n]: kept for n, kept in slices.items() if n in stored and kept}
    with staged_files(dst) as stage:
        weight_map: dict[str, str] = {}
        total = 0
        with progress_bar(len(shards.files), "writing shards", progress) as update:
            for shard in shards.files:
                out = {}
                for name, t in shards.stream(shard):
                    out[name] = slice_tensor(t, cut[name], meta=False) if name in cut else t
                    del t
                    release_freed()
                total += write_shard(stage / shard, out)
                weight_map |= dict.fromkeys(out, shard)
                del out
                release_freed()
                update(description=f"writing {shard}")
        if (checkpoint.directory / INDEX).is_file():
            write_index(stage / INDEX, weight_map, total)
        _write_config(slim, checkpoint.data, stage)
        _copy_others(checkpoint.directory, stage)
        _check_reloads(stage, checkpoint.arch)
    write_text_atomic(dst / PLAN_FILE, plan.model_dump_json(indent=2))
    return dst


def _write_config(slim: Any, source: dict[str, Any], stage: Path) -> None:
    """The slim config, naming the class and keeping the checkpoint's dtype (the meta
    model was built in the default dtype; the stored tensors keep theirs)."""
    slim.config.architectures = [type(slim).__name__]
    dtype = source.get("dtype", source.get("torch_dtype"))
    if dtype is not None:
        slim.config.dtype = dtype
    slim.config.save_pretrained(stage)


def _copy_others(src: Path, stage: Path) -> None:
    """The source's other top-level files (tokenizer, generation config), read through
    links (a hub cache links its files), written as new files."""
    for path in sorted(src.iterdir()):
        if path.name in ("config.json", PLAN_FILE) or path.name.endswith(_NOT_COPIED):
            continue
        if path.is_file() and not path.name.startswith("."):
            shutil.copyfile(path, stage / path.name)


def _check_reloads(stage: Path, arch: Any) -> None:
    """The written config builds (on the meta device) a model whose tensors are exactly
    the written ones: else nothing is moved into place."""
    try:
        written = _Checkpoint(stage)
    except LoadError as err:
        raise LoadError(
            f"the slim checkpoint would not load back ({err}); nothing was written. "
            "Please report it with the model's family"
        ) from err
    if written.arch is not arch:
        raise LoadError(f"the slim config names {written.arch.__name__}, not {arch.__name__}")
