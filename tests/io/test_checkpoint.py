"""Planning and applying on a sharded checkpoint folder without loading it
(``sg.plan_checkpoint``, ``sg.apply_checkpoint``, ``slimgraph slim hf:SHARDED``): the plan
equals the in-memory plan, every written tensor equals the in-memory ``sg.apply``'s bit
for bit, the folder reloads with plain ``from_pretrained``, and a bad folder or plan is
refused before anything is written."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import slimgraph as sg
from slimgraph.errors import LoadError, OutputError, PlanError
from tests.helpers import run_slimgraph

INDEX = "model.safetensors.index.json"
IDS = torch.tensor([[3, 14, 15, 92, 65, 35, 89, 79]])


def llama(tied: bool) -> transformers.LlamaForCausalLM:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=tied,
    )
    return transformers.LlamaForCausalLM(config).to(torch.bfloat16).eval()


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def sharded(request, tmp_path_factory):
    """A bf16 Llama saved as four shards, and its parameter count."""
    model = llama(request.param)
    folder = tmp_path_factory.mktemp("src")
    model.save_pretrained(folder, max_shard_size="60KB")
    (folder / "tokenizer_config.json").write_text("{}")
    assert len(list(folder.glob("model-*-of-00004.safetensors"))) == 4
    return folder, sg.count_params(model)


def in_memory(src, plan):
    """The plan made on the loaded model, and ``plan`` applied to it."""
    model = transformers.LlamaForCausalLM.from_pretrained(src).eval()
    graph = sg.trace(model, (torch.zeros(1, 16, dtype=torch.long),))
    return sg.plan(graph, plan.config), sg.apply(model, plan, graph=graph)


def test_streamed_checkpoint_equals_in_memory_apply(sharded, tmp_path) -> None:
    src, params = sharded
    plan = sg.plan_checkpoint(src, ratio=0.5)
    assert plan.params_before == params
    same_plan, slim = in_memory(src, plan)
    assert [c.drop for c in same_plan.cuts] == [c.drop for c in plan.cuts]
    assert len([c for c in plan.cuts if c.drop]) == 5  # hidden, 2 attention, 2 MLP

    out = sg.apply_checkpoint(src, plan, tmp_path / "out", progress=False)
    index = json.loads((out / INDEX).read_text())
    assert set(index["weight_map"].values()) == {p.name for p in src.glob("model-*.safetensors")}
    written = {}
    for shard in set(index["weight_map"].values()):
        written |= load_file(out / shard)
    expected = slim.state_dict()
    assert index["metadata"]["total_size"] == sum(t.numel() * 2 for t in written.values())
    assert all(torch.equal(t, expected[name]) for name, t in written.items())
    assert sum(t.numel() for t in written.values()) == plan.params_after
    assert (out / "tokenizer_config.json").read_text() == "{}"
    assert sg.PruningPlan.model_validate_json((out / "slimgraph_plan.json").read_text()) == plan

    back = transformers.LlamaForCausalLM.from_pretrained(out).eval()
    assert back.dtype == torch.bfloat16 and back.config.hidden_size == 32
    with torch.no_grad():
        assert torch.equal(back(IDS).logits, slim(IDS).logits)


def test_cli_streams_a_sharded_folder(sharded, tmp_path) -> None:
    src, _ = sharded
    done = run_slimgraph("slim", f"hf:{src}", "--out", "out", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    plan = sg.PruningPlan.model_validate_json((tmp_path / "out" / "plan.json").read_text())
    assert report["params"] == {
        "before": plan.params_before,
        "after": plan.params_after,
        "ratio": round(plan.params_after / plan.params_before, 4),
    }
    back = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "out").eval()
    _, slim = in_memory(src, plan)
    refused = run_slimgraph("slim", f"hf:{src}", "--out", "o2", "--onnx", "s.onnx", cwd=tmp_path)
    assert refused.returncode != 0 and "export the slim folder afterwards" in refused.stderr
    assert not (tmp_path / "o2").exists()
    with torch.no_grad():
        assert torch.equal(back(IDS).logits, slim(IDS).logits)


def copy_of(sharded, tmp_path):
    folder = tmp_path / "src"
    shutil.copytree(sharded[0], folder)
    return folder


def test_an_index_naming_a_file_outside_the_folder_is_refused(sharded, tmp_path) -> None:
    src = copy_of(sharded, tmp_path)
    data = json.loads((src / INDEX).read_text())
    first = next(iter(data["weight_map"]))
    data["weight_map"][first] = "../elsewhere.safetensors"
    (src / INDEX).write_text(json.dumps(data))
    with pytest.raises(LoadError, match="must be a file name inside the checkpoint folder"):
        sg.plan_checkpoint(src, ratio=0.5)


def test_tensors_that_are_not_the_models_are_refused(sharded, tmp_path) -> None:
    src = copy_of(sharded, tmp_path)
    plan = sg.plan_checkpoint(sharded[0], ratio=0.5)
    shard = src / "model-00004-of-00004.safetensors"
    tensors = load_file(shard) | {"extra.weight": torch.zeros(2)}
    save_file(tensors, shard, metadata={"format": "pt"})
    with pytest.raises(LoadError, match=r"not the model's \(missing \[\], unexpected \['extra"):
        sg.apply_checkpoint(src, plan, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_plans_that_need_data_or_an_inexact_config_are_refused(sharded, tmp_path) -> None:
    src = sharded[0]
    with pytest.raises(PlanError, match="runs the model on data"):
        sg.plan_checkpoint(src, ratio=0.5, importance="activation")
    uneven = sg.plan_checkpoint(src, ratio=0.5, scope="global", prune_residual=False)
    widths = {c.group: c.size - len(c.drop) for c in uneven.cuts if "mlp" in c.group}
    assert len(set(widths.values())) == 2  # the two MLPs keep different widths
    with pytest.raises(
        PlanError, match="config cannot describe the slim widths, so from_pretrained"
    ):
        sg.apply_checkpoint(src, uneven, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_output_link_is_refused(sharded, tmp_path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "out").symlink_to(tmp_path / "real")
    plan = sg.plan_checkpoint(sharded[0], ratio=0.5)
    with pytest.raises(OutputError, match="symbolic link"):
        sg.apply_checkpoint(sharded[0], plan, tmp_path / "out")
    assert list((tmp_path / "real").iterdir()) == []
