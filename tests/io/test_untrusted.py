"""Files from elsewhere never run code: a ``.pt2`` whose members would be unpickled is
refused before torch reads it, and a legitimately exported program still loads."""

import contextlib
import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from slimgraph.errors import ModelSpecError
from slimgraph.io.programs import load_program, stored_inputs
from slimgraph.io.specs import build


class WritesMarker:
    """Unpickling this writes ``path``: what an attacker's payload would do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (exec, (f"open({str(self.path)!r}, 'w').write('ran')",))


def _program(path: Path) -> Path:
    torch.export.save(torch.export.export(torch.nn.Linear(4, 2), (torch.randn(1, 4),)), path)
    return path


def _rewrite(source: Path, target: Path, change) -> Path:
    """Copy the archive ``source`` to ``target``, ``change(name, data)`` giving each
    member's new bytes (None drops it) and perhaps extra members."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for name in zin.namelist():
            for new_name, data in change(name, zin.read(name)):
                zout.writestr(new_name, data)
    return target


def _pickled(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _evil_sample_inputs(name: str, data: bytes, marker: Path):
    if name.endswith("data/sample_inputs/model.pt"):
        return [(name, _pickled(((WritesMarker(marker),), {})))]
    return [(name, data)]


def _evil_weight(name: str, data: bytes, marker: Path):
    if name.endswith("data/weights/model_weights_config.json"):
        config = json.loads(data)
        config["config"]["weight"]["use_pickle"] = True
        return [(name, json.dumps(config).encode())]
    if name.endswith("data/weights/weight_0"):
        return [(name, _pickled(WritesMarker(marker)))]
    return [(name, data)]


def _evil_constant(name: str, data: bytes, marker: Path):
    if name.endswith("data/constants/model_constants_config.json"):
        entry = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True}
        config = {"config": {"evil": {**entry, "tensor_meta": None}}}
        root = name.split("/")[0]
        member = (f"{root}/data/constants/opaque_obj_0", pickle.dumps(WritesMarker(marker)))
        return [(name, json.dumps(config).encode()), member]
    return [(name, data)]


EVIL = {
    "sample inputs need weights_only=False": (_evil_sample_inputs, "data/sample_inputs/model.pt"),
    "a weight marked use_pickle": (_evil_weight, "data/weights/weight_0"),
    "an opaque object constant": (_evil_constant, "data/constants/opaque_obj_0"),
}


@pytest.mark.parametrize("case", EVIL)
def test_pickled_pt2_member_is_refused_without_running_it(tmp_path, case):
    change, member = EVIL[case]
    marker = tmp_path / "marker"
    evil = _rewrite(
        _program(tmp_path / "net.pt2"),
        tmp_path / "evil.pt2",
        lambda name, data: change(name, data, marker),
    )
    with pytest.raises(ModelSpecError, match=member):
        build(str(evil))
    assert not marker.exists()


@pytest.mark.parametrize("case", EVIL)
def test_crafted_archive_would_run_code_in_torch(tmp_path, case):
    """The guard above is needed: torch.export.load itself runs each payload."""
    change, _ = EVIL[case]
    marker = tmp_path / "marker"
    evil = _rewrite(
        _program(tmp_path / "net.pt2"),
        tmp_path / "evil.pt2",
        lambda name, data: change(name, data, marker),
    )
    with contextlib.suppress(Exception):  # the payload returns no tensor: torch fails later
        torch.export.load(evil)
    assert marker.read_text() == "ran"


def test_exported_program_still_loads(tmp_path):
    program = load_program(str(_program(tmp_path / "net.pt2")))
    inputs = stored_inputs(program, "net.pt2")
    assert isinstance(inputs, tuple) and inputs[0].shape == (1, 4)


def test_inspect_refuses_evil_pt2(tmp_path, capsys):
    """``slimgraph inspect evil.pt2`` exits 2 with the member named, and runs nothing."""
    from slimgraph.cli import main

    marker = tmp_path / "marker"
    evil = _rewrite(
        _program(tmp_path / "net.pt2"),
        tmp_path / "evil.pt2",
        lambda name, data: _evil_sample_inputs(name, data, marker),
    )
    assert main(["inspect", str(evil)]) == 2
    assert "data/sample_inputs/model.pt" in capsys.readouterr().err
    assert not marker.exists()


def test_a_member_outside_the_root_folder_is_refused(tmp_path):
    """torch.export.load falls back to the pre-2.8 layout, top-level pickles, when the
    archive does not load: such members are refused up front."""
    marker = tmp_path / "marker"

    def legacy(name, data):
        extra = [("serialized_state_dict.pt", _pickled(WritesMarker(marker)))]
        return [(name, data), *(extra if name.endswith("archive_format") else [])]

    evil = _rewrite(_program(tmp_path / "net.pt2"), tmp_path / "evil.pt2", legacy)
    with pytest.raises(ModelSpecError, match="serialized_state_dict.pt"):
        load_program(str(evil))
    assert not marker.exists()
