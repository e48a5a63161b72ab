"""A Hugging Face checkpoint folder read tensor by tensor, and a sharded one written.

A folder holds ``model.safetensors``, or shards named by ``model.safetensors.index.json``
(``{"weight_map": {tensor name: shard file}}``). Both are untrusted: the index may only
name plain files inside the folder, and every header is read (names, dtypes, shapes)
before any tensor is.

>>> import tempfile, pathlib, torch
>>> from safetensors.torch import save_file
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> save_file({"w": torch.ones(2, 3)}, folder / "model.safetensors")
>>> shards = Shards.open(folder)
>>> shards.shapes, shards.get("w").sum().item()
({'w': (2, 3)}, 6.0)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from slimgraph.errors import LoadError

__all__ = ["INDEX", "SINGLE", "Shards", "write_shard", "write_index"]

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


@dataclass(frozen=True)
class Shards(Mapping[str, torch.Tensor]):
    """The tensors of a checkpoint folder by name, each read from its shard when asked
    for (a :class:`~collections.abc.Mapping`, so that weight criteria read it as they
    read a model's parameters); ``shapes`` and ``files`` come from the headers alone."""

    directory: Path
    files: dict[str, list[str]]  # shard file -> its tensor names, in the file's order
    shapes: dict[str, tuple[int, ...]]
    where: dict[str, str]  # tensor name -> shard file

    @classmethod
    def open(cls, directory: str | os.PathLike) -> Shards:
        """Read the index (or the single file's header) and every shard's header; refuse
        an index that names files outside the folder, a missing shard, or a tensor the
        index places in a shard that does not hold it."""
        directory = Path(directory)
        index = directory / INDEX
        if index.is_file():
            weight_map = _weight_map(index)
        elif (directory / SINGLE).is_file():
            weight_map = None
        else:
            raise LoadError(
                f"{directory} holds neither {INDEX} nor {SINGLE}; a checkpoint folder needs "
                "safetensors weights (a pytorch_model.bin is a pickle, which is never read)"
            )
        names = sorted(set(weight_map.values())) if weight_map else [SINGLE]
        files: dict[str, list[str]] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        for name in names:
            headers = _header(directory / name)
            files[name] = list(headers)
            shapes |= headers
        where = {t: f for f, ts in files.items() for t in ts}
        if weight_map is not None:
            wrong = [t for t, f in weight_map.items() if where.get(t) != f]
            if wrong:
                raise LoadError(
                    f"{index} places {len(wrong)} tensors in shards that do not hold them "
                    f"(first: {wrong[0]!r} in {weight_map[wrong[0]]}); the index does not "
                    "match the shards"
                )
        return cls(directory, files, shapes, where)

    def __getitem__(self, name: str) -> torch.Tensor:
        shard = self.where[name]  # KeyError for a name the checkpoint does not hold
        with safe_open(str(self.directory / shard), framework="pt") as f:
            return f.get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.where)

    def __len__(self) -> int:
        return len(self.where)

    def stream(self, shard: str) -> Iterator[tuple[str, torch.Tensor]]:
        """The tensors of one shard, read one at a time, in the file's order."""
        with safe_open(str(self.directory / shard), framework="pt") as f:
            for name in self.files[shard]:
                yield name, f.get_tensor(name)


def _weight_map(index: Path) -> dict[str, str]:
    try:
        data = json.loads(index.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LoadError(f"{index} is not valid JSON ({_first_line(err)})") from err
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise LoadError(f'{index} has no "weight_map" object naming the shards')
    for tensor, shard in weight_map.items():
        # only plain file names in this folder: an index is untrusted input
        if not isinstance(shard, str) or Path(shard).name != shard or shard in ("", ".", ".."):
            raise LoadError(
                f"{index} names {shard!r} for {tensor!r}; a shard must be a file name "
                "inside the checkpoint folder"
            )
        if not shard.endswith(".safetensors"):
            raise LoadError(f"{index} names {shard!r}; only .safetensors shards are read")
    return weight_map


def _header(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, from one file's header; nothing else is read."""
    if not path.is_file():
        raise LoadError(f"{path} is missing; the checkpoint's index names it")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as err:
        raise LoadError(f"{path} cannot be read as safetensors ({_first_line(err)})") from err


def write_shard(path: Path, tensors: dict[str, torch.Tensor]) -> int:
    """Write one shard (``save_pretrained``'s metadata) and return its tensors' bytes."""
    save_file(tensors, str(path), metadata={"format": "pt"})
    return sum(t.numel() * t.element_size() for t in tensors.values())


def write_index(path: Path, weight_map: dict[str, str], total_size: int) -> None:
    """Write ``model.safetensors.index.json`` as ``save_pretrained`` does."""
    data = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    path.write_text(json.dumps(data, indent=2) + "\n")
