"""timm's transformer families, and torchvision's ViT, Swin and MaxViT, slim with whole heads.

For one small model of each family (random weights; depth and image size cut down where the
model allows, to keep the file quick): ``sg.slim`` at ratio 0.5 leaves nothing skipped, keeps
the output shape and gives finite values; the parameter count equals the plan's prediction;
and every attention module loses whole heads: its query projection keeps ``ceil(H / 2)`` of
its ``H`` heads at their old size, and its head-count attribute says so. A lone head cannot
go, so it narrows instead (the head count stays 1). Where a family's heads cannot go, the
test asserts that they stay, and that the graph says why (``HEADS_STAY``).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import timm
import torch
import torchvision
from torch import nn

import slimgraph as sg
from tests.helpers import first_output

pytestmark = pytest.mark.zoo

# Attention class -> (its query projection's weight, the head-count attribute). The weight's
# rows are the heads of q (and of k and v where they are fused into it), head after head.
ATTENTION: dict[str, tuple[str, str]] = {
    "timm.layers.attention.Attention": ("qkv.weight", "num_heads"),
    "timm.models.beit.Attention": ("qkv.weight", "num_heads"),
    "timm.models.cait.ClassAttn": ("q.weight", "num_heads"),
    "timm.models.cait.TalkingHeadAttn": ("qkv.weight", "num_heads"),
    "timm.models.davit.ChannelAttention": ("qkv.weight", "num_heads"),
    "timm.models.davit.WindowAttention": ("qkv.weight", "num_heads"),
    "timm.models.coat.FactorAttnConvRelPosEnc": ("qkv.weight", "num_heads"),
    "timm.models.convit.GPSA": ("qk.weight", "num_heads"),
    "timm.models.convit.MHSA": ("qkv.weight", "num_heads"),
    "timm.models.crossvit.CrossAttention": ("wq.weight", "num_heads"),
    "timm.models.efficientformer.Attention": ("qkv.weight", "num_heads"),
    "timm.models.eva.EvaAttention": ("qkv.weight", "num_heads"),
    "timm.models.levit.Attention": ("qkv.linear.weight", "num_heads"),
    "timm.models.levit.AttentionDownsample": ("kv.linear.weight", "num_heads"),
    "timm.models.maxxvit.Attention2d": ("qkv.weight", "num_heads"),
    "timm.models.maxxvit.AttentionCl": ("qkv.weight", "num_heads"),
    "timm.models.mvitv2.MultiScaleAttention": ("qkv.weight", "num_heads"),
    "timm.models.nest.Attention": ("qkv.weight", "num_heads"),
    "timm.models.pvt_v2.Attention": ("q.weight", "num_heads"),
    "timm.models.swin_transformer.WindowAttention": ("qkv.weight", "num_heads"),
    "timm.models.tiny_vit.Attention": ("qkv.weight", "num_heads"),
    "timm.models.twins.GlobalSubSampleAttn": ("q.weight", "num_heads"),
    "timm.models.twins.LocallyGroupedAttn": ("qkv.weight", "num_heads"),
    "timm.models.volo.Attention": ("qkv.weight", "num_heads"),
    "timm.models.volo.ClassAttention": ("q.weight", "num_heads"),
    "timm.models.volo.OutlookAttention": ("attn.weight", "num_heads"),
    "timm.models.xcit.XCA": ("qkv.weight", "num_heads"),
    # relative-position biases: one row (or output) per head
    "timm.layers.pos_embed_rel.RelPosBiasTf": ("relative_position_bias_table", "num_heads"),
    "timm.layers.pos_embed_rel.RelPosMlp": ("mlp.fc2.weight", "num_heads"),
    "torch.nn.modules.activation.MultiheadAttention": ("in_proj_weight", "num_heads"),
    "torchvision.models.maxvit.RelativePositionalMultiHeadAttention": ("to_qkv.weight", "n_heads"),
    "torchvision.models.swin_transformer.ShiftedWindowAttention": ("qkv.weight", "num_heads"),
}


@dataclass(frozen=True)
class Family:
    build: Callable[[], nn.Module]
    size: int | tuple[int, int] = 224
    # attention class -> (a module of that class, text its `graph.explain` must contain):
    # heads that stay, and the reason the graph gives
    heads_stay: dict[str, tuple[str, str]] = field(default_factory=dict)
    # attention classes whose heads stay while each narrows (their per-head channels carry
    # the units), with the reason
    narrow: dict[str, str] = field(default_factory=dict)


def timm_model(name: str, **kwargs) -> Callable[[], nn.Module]:
    return lambda: timm.create_model(name, pretrained=False, **kwargs)


def mvitv2() -> nn.Module:
    from timm.models.mvitv2 import MultiScaleVit, MultiScaleVitCfg

    return MultiScaleVit(MultiScaleVitCfg(depths=(1, 1, 2, 1)), img_size=(112, 112))


def volo() -> nn.Module:
    from timm.models.volo import VOLO

    # volo_d1's widths, one block per stage: an outlook stage, then self-attention (with
    # three heads, so that its link to the input width matters) and class attention
    return VOLO(
        layers=[1, 1, 1, 1], img_size=112, embed_dims=[192, 384, 384, 384], num_heads=[6, 3, 3, 3]
    )


def maxvit_tf() -> nn.Module:
    import dataclasses

    from timm.models.maxxvit import MaxxVit, model_cfgs

    # maxvit_tiny_tf_224 (RelPosBiasTf) with one block per stage
    return MaxxVit(dataclasses.replace(model_cfgs["maxvit_tiny_tf"], depths=(1, 1, 1, 1)))


def torchvision_model(name: str) -> Callable[[], nn.Module]:
    return lambda: torchvision.models.get_model(name)


FAMILIES: dict[str, Family] = {
    "vit": Family(timm_model("vit_tiny_patch16_224", depth=2, img_size=112), 112),
    "deit": Family(timm_model("deit_tiny_distilled_patch16_224", depth=2, img_size=112), 112),
    "deit3": Family(timm_model("deit3_small_patch16_224", depth=2, img_size=112), 112),
    # three heads where a module reshapes with C // num_heads: keeping 2 of 3 heads is not
    # the residual's 1/2, so only the link to the input width keeps head_dim whole
    "cait": Family(timm_model("cait_xxs24_224", depth=2, num_heads=3, img_size=112), 112),
    "eva02": Family(  # rotary embedding interleaves pairs with aten.stack
        timm_model("eva02_tiny_patch14_224", depth=2, img_size=112, num_classes=1000), 112
    ),
    "swin": Family(timm_model("swin_tiny_patch4_window7_224", depths=(2, 2, 2, 2))),
    "levit": Family(timm_model("levit_128s", img_size=112), 112),
    "mixer": Family(timm_model("mixer_s16_224", img_size=112), 112),
    "pit": Family(timm_model("pit_ti_224", depth=(1, 1, 1), img_size=112), 112),
    "beit": Family(
        timm_model("beit_base_patch16_224", depth=2, embed_dim=192, num_heads=3, img_size=112),
        112,
    ),
    "xcit": Family(
        timm_model("xcit_nano_12_p16_224", depth=2, img_size=112),
        112,
        # cross-covariance attention attends over each head's channels: no head dim is
        # found, so the channels carry the units and the heads stay (class attention's go)
        narrow={"timm.models.xcit.XCA": "attention over channels"},
    ),
    "pvt_v2": Family(timm_model("pvt_v2_b0", depths=(1, 1, 1, 1))),
    "convit": Family(
        timm_model("convit_tiny", depth=2, local_up_to_layer=1, img_size=112),
        112,
        # GPSA mixes softmax(q k^T) with positional scores before `@ v`, so its v head dim is
        # not recognised and v's per-head channels carry the units; its heads factor freezes,
        # and the residual and the plain MHSA blocks' heads (all linked to it) stay with it
        heads_stay={
            "timm.models.convit.GPSA": ("blocks.0.attn.qk", "reshape factor 4 of a 192-wide dim"),
            "timm.models.convit.MHSA": ("blocks.0.attn.qk", "reshape factor 4 of a 192-wide dim"),
        },
    ),
    "crossvit": Family(timm_model("crossvit_tiny_240", depth=((1, 1, 0),)), 240),
    "twins_svt": Family(timm_model("twins_svt_small", depths=(2, 2, 2, 2))),
    "twins_pcpvt": Family(timm_model("twins_pcpvt_small", depths=(1, 1, 1, 1))),  # 1, 2, 5, 8 heads
    "mvitv2": Family(mvitv2, 112),
    "efficientformer": Family(timm_model("efficientformer_l1")),
    "poolformer": Family(timm_model("poolformer_s12"), 128),
    "coat": Family(
        timm_model("coat_lite_tiny", img_size=112),
        112,
        # the convolutional position encoding splits the heads by window size into fixed
        # parts (2, 3 and 3 heads), so heads cannot go
        heads_stay={
            "timm.models.coat.FactorAttnConvRelPosEnc": (
                "serial_blocks1.0.factoratt_crpe.qkv",
                "aten.split_with_sizes.default into unequal parts",
            )
        },
    ),
    "nest": Family(timm_model("nest_tiny", img_size=112), 112),
    "volo": Family(
        volo,
        112,
        # outlook attention unfolds v with aten.im2col and folds the output with col2im,
        # which have no rules: its heads and its stage's residual stay
        heads_stay={
            "timm.models.volo.OutlookAttention": ("network.0.0.attn.v", "no rule for aten.im2col")
        },
    ),
    "davit": Family(
        timm_model("davit_tiny", depths=(1, 1, 1, 1), num_heads=(2, 4, 8, 16)),
        narrow={
            # channel attention attends over each head's channels: no head dim is found, so
            # the channels (wider than the heads factor) carry the units
            "timm.models.davit.ChannelAttention": "attention over channels",
        },
    ),
    "tiny_vit": Family(timm_model("tiny_vit_5m_224")),
    "maxvit": Family(maxvit_tf),
    "maxvit_rmlp": Family(timm_model("maxvit_rmlp_pico_rw_256"), 256),
    "coatnet": Family(timm_model("coatnet_nano_rw_224")),
    "tv_vit_b_16": Family(torchvision_model("vit_b_16")),
    "tv_swin_t": Family(torchvision_model("swin_t")),
    "tv_maxvit_t": Family(torchvision_model("maxvit_t")),
}


def class_name(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def attention(model: nn.Module) -> dict[str, tuple[str, int, int]]:
    """Attention module name -> (class, heads, query projection rows)."""
    params = dict(model.named_parameters())
    found = {}
    for name, module in model.named_modules():
        spec = ATTENTION.get(class_name(module))
        if spec is not None:
            weight, heads = spec
            found[name] = (
                class_name(module),
                getattr(module, heads),
                params[f"{name}.{weight}"].shape[0],
            )
    return found


def held(graph: sg.DependencyGraph, param: str) -> bool:
    """Whether the group of ``param`` dim 0 cannot lose units: it is frozen, or it is linked
    (inner width to input width) with a group that is."""
    gid = next(g.id for g in graph.groups if (param, 0) in g.params)
    linked = next((c for c in graph.linked_groups() if gid in c), {gid})
    return any(not graph.group(g).prunable for g in linked)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_slims_whole_heads(family: str) -> None:
    spec = FAMILIES[family]
    torch.manual_seed(0)
    model = spec.build().eval()
    size = spec.size if isinstance(spec.size, tuple) else (spec.size, spec.size)
    x = torch.randn(1, 3, *size)
    before = attention(model)
    # slim before any eval forward: LeViT and EfficientFormer cache their attention biases
    # in eval mode, and torch.export would then lift the cache as a constant of fixed width
    result = sg.slim(model, (x,), ratio=0.5)
    assert not result.plan.skipped
    slim = result.model
    assert type(slim) is type(model)
    with torch.no_grad():
        expected, got = first_output(model(x)), first_output(slim(x))
    assert got.shape == expected.shape
    assert torch.isfinite(got).all()
    assert sg.count_params(slim) == result.plan.params_after < result.plan.params_before

    after = attention(slim)
    assert after.keys() == before.keys()
    assert before or family in ("mixer", "poolformer")  # MLP-only families have no heads
    for cls, (module, why) in spec.heads_stay.items():
        assert why in result.graph.explain(module), (cls, result.graph.explain(module))
    for name, (cls, heads, rows) in before.items():
        _, new_heads, new_rows = after[name]
        if cls in spec.heads_stay:
            assert held(result.graph, f"{name}.{ATTENTION[cls][0]}"), name
            assert (new_heads, new_rows) == (heads, rows), name
        elif cls in spec.narrow:
            # fused qkv: 3 * heads * per-head channels, one unit per channel offset
            gid = next(g.id for g in result.graph.groups if (f"{name}.qkv.weight", 0) in g.params)
            assert result.graph.group(gid).size * 3 * heads == rows, name
            assert (new_heads, new_rows) == (heads, rows // 2), name
        elif heads == 1:  # a lone head cannot go: it narrows (a bias table's row stays)
            assert (new_heads, new_rows) == (1, rows if rows == 1 else rows // 2), name
        else:  # whole heads go, each keeps its size, and the attribute follows
            assert new_heads == heads - heads // 2, name
            assert new_rows == rows // heads * new_heads, name
    del model, slim, result
    gc.collect()
