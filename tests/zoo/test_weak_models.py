"""Models that ratio 0.5 used to prune weakly, because a rule was missing (issue 12): the
meta dry run skipped their groups as "hard-coded widths" or an op froze them. Tiny
Hugging Face models come from tests/sweep.py; torchvision's RAFT is built whole."""

from __future__ import annotations

import pytest
import torch
import torchvision

import slimgraph as sg
from tests import sweep

pytestmark = [pytest.mark.zoo, pytest.mark.filterwarnings("ignore")]


def _slim(model: torch.nn.Module, inputs: object) -> tuple[float, dict[str, str]]:
    r = sg.slim(model, inputs, ratio=0.5)
    return sg.count_macs(r.model, inputs) / sg.count_macs(model, inputs), r.plan.skipped


# model type, task -> MACs kept at ratio 0.5 (before the rules: segformer 0.77, git 0.78,
# fuyu 0.41, with their attention / sequence-reduction groups skipped by the dry run)
HF = {
    ("segformer", "image-classification"): 0.45,
    ("git", "causal-lm"): 0.35,
    ("fuyu", "causal-lm"): 0.35,
    ("stablelm", "causal-lm"): 0.35,  # before 0.37
}


@pytest.mark.parametrize(("model_type", "task"), list(HF))
def test_tiny_hf_model_slims_without_skipping_its_attention(model_type: str, task: str) -> None:
    out = sweep.run(model_type, task)  # slim, save, reload
    assert out.stage == "done", out.error
    assert out.max_diff is not None and out.max_diff <= 1e-5, out.reload
    assert out.macs_kept is not None and out.macs_kept <= HF[model_type, task], out.warnings
    # SegFormer's classifier reshapes with config.hidden_sizes[-1], which only a config
    # update can follow: the last stage's width is the one group left skipped
    skips = [w for w in out.warnings if "hard-codes" in w]
    assert all("stages.3.patch_embeddings.proj.weight:0;" in w for w in skips), skips


class Flow(torch.nn.Module):
    """torchvision's RAFT (small) with two refinement steps, to keep the trace short."""

    def __init__(self) -> None:
        super().__init__()
        self.raft = torchvision.models.optical_flow.raft_small().eval()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.raft(a, b, num_flow_updates=2)[-1]


def test_raft_slims_with_its_correlation_width_kept() -> None:
    # The correlation lookup (grid_sampler) passes channels through; the feature width
    # stays, as the correlation is divided by its square root (before, the value check
    # failed: the slim model rescaled every correlation)
    torch.manual_seed(0)
    model, x = Flow().eval(), (torch.randn(1, 3, 128, 128), torch.randn(1, 3, 128, 128))
    r = sg.slim(model, x, ratio=0.5)
    kept = sg.count_macs(r.model, x) / sg.count_macs(model, x)
    assert kept <= 0.65 and not r.plan.skipped, (kept, r.plan.skipped)
    assert "divided by sqrt" in r.graph.explain("raft.feature_encoder.conv.weight:0")


def _tiny_mvit() -> torch.nn.Module:
    """torchvision's MViT-v2 code at a tiny size: a lone-head block, then two-head blocks
    with pooled queries or keys/values and relative positions."""
    from torchvision.models.video.mvit import MSBlockConfig, MViT

    k, s1, s2 = [3, 3, 3], [1, 1, 1], [1, 2, 2]
    blocks = [
        MSBlockConfig(1, 16, 16, k, k, s1, s2),
        MSBlockConfig(2, 16, 32, k, k, s2, s1),
        MSBlockConfig(2, 32, 32, k, k, s1, s1),
    ]
    return MViT(
        (32, 32), 4, blocks, residual_pool=True, residual_with_cls_embed=False,
        rel_pos_embed=True, proj_after_attn=True, num_classes=10,
    ).eval()  # fmt: skip


def test_mvit_pooling_attention_narrows_its_heads() -> None:
    # the pool convs over head_dim are shared by the heads, so each head narrows; before,
    # num_heads / head_dim kept their values and the dry run skipped every attention
    torch.manual_seed(0)
    model, x = _tiny_mvit(), (torch.randn(1, 3, 4, 32, 32),)
    kept, skipped = _slim(model, x)
    assert kept <= 0.45 and not skipped, (kept, skipped)
