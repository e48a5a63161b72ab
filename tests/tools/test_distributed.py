"""distributed: a process group that sg.recover starts is destroyed at exit (gloo left up
until the interpreter is torn down can abort the process); one the caller started stays up
for the caller to destroy."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# the first atexit hook registered runs last: it sees what slimgraph's hook left
SCRIPT = """
import atexit, sys
import torch.distributed as dist
from slimgraph.tools.distributed import engine_for
atexit.register(lambda: print("up at exit:", dist.is_initialized()))
if sys.argv[1] == "caller":
    dist.init_process_group("gloo")
engine = engine_for("fsdp", None)
print(engine.name)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(("who", "up"), [("slimgraph", False), ("caller", True)])
def test_a_group_slimgraph_started_is_destroyed_at_exit(who: str, up: bool) -> None:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, who],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["FSDP2 over 1 process", f"up at exit: {up}"]
