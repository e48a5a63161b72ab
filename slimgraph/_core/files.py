"""Writing output files safely: every file is written to a temporary name in its own
directory and renamed into place, so an interrupted write leaves the previous file whole;
a symbolic link is never written through; an output directory that holds files is used
only when the caller says it may be overwritten, and then no stale output of slimgraph
survives beside the new one.

>>> import pathlib, tempfile
>>> out = pathlib.Path(tempfile.mkdtemp()) / "slim"
>>> write_text_atomic(prepare_output_dir(out) / "plan.json", "{}").read_text()
'{}'
>>> prepare_output_dir(out)
Traceback (most recent call last):
...
slimgraph.errors.OutputError: ... is not empty (plan.json); pass overwrite=True (--overwrite) to replace what slimgraph wrote there, or choose an empty directory
>>> sorted(p.name for p in prepare_output_dir(out, overwrite=True).iterdir())
[]
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from slimgraph.errors import OutputError

__all__ = [
    "OWN_FILES",
    "atomic_write",
    "check_output_dir",
    "check_output_file",
    "prepare_output_dir",
    "staged_files",
    "write_text_atomic",
]

OWN_FILES = (
    "plan.json",
    "slimgraph_plan.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "*.onnx",
    "*.onnx.data",
)
"""Names (globs) of the files slimgraph writes into an output directory: with
``overwrite=True`` these are removed first, so none from an earlier run is left beside
the new output. Other files are left alone."""

_HINT = "pass overwrite=True (--overwrite) to replace what slimgraph wrote there"


def _refuse_link(path: Path, what: str) -> None:
    if path.is_symlink():
        raise OutputError(
            f"{path} is a symbolic link (to {os.readlink(path)}); slimgraph does not write "
            f"through links: remove the link or choose another {what}"
        )


def check_output_file(path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Refuse ``path`` as an output file when it is a symbolic link, a directory, or (unless
    ``overwrite``) an existing file; change nothing.

    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> (folder / "real.json").write_text("{}")
    2
    >>> (folder / "plan.json").symlink_to(folder / "real.json")
    >>> check_output_file(folder / "plan.json")
    Traceback (most recent call last):
    ...
    slimgraph.errors.OutputError: .../plan.json is a symbolic link (to .../real.json); slimgraph does not write through links: remove the link or choose another path
    """
    path = Path(path)
    _refuse_link(path, "path")
    if path.is_dir():
        raise OutputError(f"{path} is a directory; give a file path inside it")
    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists; {_HINT}, or choose another path")
    return path


def check_output_dir(directory: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse ``directory`` as an output directory when it is a symbolic link, a file, or
    holds files and ``overwrite`` is false, or when a file slimgraph would replace in it is
    a link; change nothing."""
    directory = Path(directory)
    _refuse_link(directory, "directory")
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"{directory} is a file, not a directory; choose another path")
    if not directory.is_dir():
        return directory
    entries = sorted(p.name for p in directory.iterdir())
    if entries and not overwrite:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise OutputError(
            f"{directory} is not empty ({shown}); {_HINT}, or choose an empty directory"
        )
    for path in _own_files(directory):
        _refuse_link(path, "directory")
    return directory


def prepare_output_dir(directory: str | os.PathLike, overwrite: bool = False) -> Path:
    """Make ``directory`` ready for slimgraph's output after :func:`check_output_dir`:
    created if missing; with ``overwrite``, the files slimgraph writes (:data:`OWN_FILES`)
    removed, so that none of an earlier run is mistaken for part of this one."""
    directory = check_output_dir(directory, overwrite)
    for path in _own_files(directory):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _own_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return [
        p
        for p in directory.iterdir()
        if any(fnmatch.fnmatchcase(p.name, pattern) for pattern in OWN_FILES)
    ]


def _temporary(directory: Path, name: str) -> Path:
    """A new empty file in ``directory``, hidden, created with the permissions an ordinary
    file gets (``os.open`` applies the umask, unlike ``mkstemp``'s 0600)."""
    while True:
        tmp = directory / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], object]) -> Path:
    """Call ``writer(tmp)`` to write a temporary file beside ``path``, then rename it to
    ``path`` in one step. If ``writer`` raises, ``path`` keeps its previous content and
    the temporary file is removed. A symbolic link at ``path`` is refused.

    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> atomic_write(path, lambda tmp: tmp.write_text("hello")).read_text()
    'hello'
    """
    path = check_output_file(path)
    tmp = _temporary(path.parent, path.name)
    try:
        writer(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` with :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@contextlib.contextmanager
def staged_files(directory: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder inside ``directory`` for writers that make several files (a
    model and its external data, ``save_pretrained``). On a clean exit each file in it is
    renamed into ``directory`` (a link there is refused first); on an error nothing is
    moved. The folder is removed either way.

    >>> import pathlib, tempfile
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> with staged_files(out) as stage:
    ...     _ = (stage / "a.bin").write_bytes(b"1")
    >>> sorted(p.name for p in out.iterdir())
    ['a.bin']
    """
    directory = Path(directory)
    stage = _temporary(directory, "staged")
    stage.unlink()
    stage.mkdir()
    try:
        yield stage
        files = sorted(stage.iterdir())
        for path in files:
            check_output_file(directory / path.name)
        # data files before the model files that name them: a reader never sees a model
        # whose data file is missing
        for path in sorted(files, key=lambda p: p.suffix in (".onnx", ".json")):
            os.replace(path, directory / path.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
