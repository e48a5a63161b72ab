"""Atomic writes, refused links and output directories (slimgraph._core.files)."""

from __future__ import annotations

import pytest

from slimgraph._core.files import (
    atomic_write,
    check_output_dir,
    prepare_output_dir,
    staged_files,
    write_text_atomic,
)
from slimgraph.errors import OutputError, UsageError


def test_an_interrupted_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text("previous")

    def writer(tmp):
        tmp.write_text("half of the new")
        raise KeyboardInterrupt  # interrupted midway

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, writer)
    assert path.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def test_a_write_replaces_the_file_in_one_step(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text("previous")
    write_text_atomic(path, "new")
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def test_a_written_file_gets_ordinary_permissions(tmp_path):
    reference = tmp_path / "reference"
    reference.write_text("")
    path = write_text_atomic(tmp_path / "plan.json", "{}")
    assert path.stat().st_mode == reference.stat().st_mode  # not mkstemp's 0600


def test_a_link_is_refused_and_its_target_untouched(tmp_path):
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("keep me")
    link = tmp_path / "out" / "plan.json"
    link.parent.mkdir()
    link.symlink_to(elsewhere)
    with pytest.raises(OutputError, match="is a symbolic link"):
        write_text_atomic(link, "{}")
    assert elsewhere.read_text() == "keep me"
    assert link.is_symlink()


def test_a_linked_output_directory_is_refused(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "out").symlink_to(tmp_path / "real")
    with pytest.raises(OutputError, match="is a symbolic link"):
        prepare_output_dir(tmp_path / "out", overwrite=True)


def test_a_directory_with_files_is_refused_unless_overwrite(tmp_path):
    (tmp_path / "model.onnx").write_text("stale")
    with pytest.raises(OutputError, match=r"is not empty \(model.onnx\); pass overwrite=True"):
        check_output_dir(tmp_path)
    assert isinstance(OutputError("x"), UsageError)  # the command line's exit 2


def test_overwrite_removes_only_what_slimgraph_wrote(tmp_path):
    for name in ("plan.json", "model.onnx", "model.onnx.data", "config.json", "notes.txt"):
        (tmp_path / name).write_text("stale")
    prepare_output_dir(tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_overwrite_refuses_a_link_among_its_own_files(tmp_path):
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text("keep me")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "plan.json").symlink_to(elsewhere)
    with pytest.raises(OutputError, match="plan.json is a symbolic link"):
        prepare_output_dir(tmp_path / "out", overwrite=True)
    assert elsewhere.read_text() == "keep me"


def test_staged_files_move_nothing_on_an_error(tmp_path):
    (tmp_path / "model.onnx").write_text("previous")
    with pytest.raises(RuntimeError), staged_files(tmp_path) as stage:
        (stage / "model.onnx").write_text("new")
        (stage / "model.onnx.data").write_text("new")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert (tmp_path / "model.onnx").read_text() == "previous"
