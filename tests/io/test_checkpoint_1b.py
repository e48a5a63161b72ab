"""A Llama-shaped checkpoint of about 1B parameters (bf16, four shards, random weights)
slimmed without loading it: planned and applied in a fresh process whose peak resident
memory, above what it held once the meta skeleton was built, stays under twice the
largest shard; the output equals the in-memory ``sg.apply`` bit for bit and reloads with
plain ``from_pretrained``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers
from safetensors.torch import load_file

import slimgraph as sg

pytestmark = pytest.mark.slow

CONFIG = {
    "vocab_size": 32000,
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 18,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "tie_word_embeddings": False,
}

# run in a fresh interpreter, whose peak is its own memory's high-water mark (VmHWM):
# getrusage's ru_maxrss would start at this process's size when it forked
STREAM = textwrap.dedent(
    """
    import json, sys
    import slimgraph as sg

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key))

    src, dst = sys.argv[1], sys.argv[2]
    sg.io.checkpoint.skeleton(src)
    base = status("VmRSS")
    plan = sg.plan_checkpoint(src, ratio=0.5)
    sg.apply_checkpoint(src, plan, dst, progress=False)
    (__import__("pathlib").Path(dst) / "plan.json").write_text(plan.model_dump_json())
    peak = status("VmHWM")
    print(json.dumps({"base": base, "peak": peak}))
    """
)


def test_a_1b_checkpoint_streams_in_bounded_memory(tmp_path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**CONFIG))
    finally:
        torch.set_default_dtype(torch.float32)
    params = sg.count_params(model)
    assert 0.9e9 < params < 1.1e9
    model.save_pretrained(src, max_shard_size="600MB")
    del model
    shards = sorted(src.glob("model-*.safetensors"))
    assert len(shards) == 4
    largest = max(p.stat().st_size for p in shards)

    done = subprocess.run(
        [sys.executable, "-c", STREAM, str(src), str(dst)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    memory = json.loads(done.stdout.splitlines()[-1])
    grew = memory["peak"] - memory["base"]
    print(
        f"streaming apply: peak grew {grew / 2**20:.0f} MiB, largest shard {largest / 2**20:.0f} MiB"
    )
    assert grew < 2 * largest, (
        f"peak grew {grew / 2**20:.0f} MiB, largest shard {largest / 2**20:.0f} MiB"
    )

    plan = sg.PruningPlan.model_validate_json((dst / "plan.json").read_text())
    assert plan.params_before == params
    loaded = transformers.LlamaForCausalLM.from_pretrained(src).eval()
    slim = sg.apply(loaded, plan)
    del loaded
    expected = slim.state_dict()
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    for shard in sorted(set(index["weight_map"].values())):
        for name, t in load_file(dst / shard).items():
            assert torch.equal(t, expected[name]), name
    back = transformers.LlamaForCausalLM.from_pretrained(dst).eval()
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(back(ids).logits, slim(ids).logits)
