"""Which ops freeze groups for want of a rule: trace a zoo and list every such op.

Usage: python tests/benchmarks/op_audit.py [torchvision|timm|causal-lm|masked-lm|image-classification ...]

For each model, every group whose frozen reasons include "no rule for OP" (or a rule that
failed on a call) is counted under that op; the table lists op -> models. Every op listed
needs a rule in rules/ops.toml or a ``frozen`` entry there with the reason.
"""

from __future__ import annotations

import collections
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import slimgraph as sg  # noqa: E402

NO_RULE = re.compile(r"^(no rule for \S+|rule \S+ failed on \S+)")
Zoo = Iterator[tuple[str, Callable[[], tuple[torch.nn.Module, object]]]]


def torchvision_zoo() -> Zoo:
    import torchvision

    img = torch.randn(1, 3, 224, 224)
    for module, x in [
        (torchvision.models, img),
        (torchvision.models.segmentation, img),
        (torchvision.models.video, torch.randn(1, 3, 8, 112, 112)),
        (torchvision.models.optical_flow, (img, img)),
    ]:
        for name in torchvision.models.list_models(module=module):
            yield name, (lambda n=name, x=x: (torchvision.models.get_model(n).eval(), x))


def timm_zoo() -> Zoo:
    import timm

    names = ["deit_tiny_patch16_224", "swin_tiny_patch4_window7_224", "convnext_atto"]
    names += ["efficientformer_l1", "levit_128s", "mobilevit_xxs", "poolformer_s12"]
    names += ["regnety_002", "vit_small_patch14_dinov2", "coatnet_0_rw_224", "maxvit_nano_rw_256"]
    for name in names:
        size = 256 if "256" in name else 518 if "dinov2" in name else 224
        x = torch.randn(1, 3, size, size)
        yield name, (lambda n=name, x=x: (timm.create_model(n).eval(), x))


def hf_zoo(task: str) -> Callable[[], Zoo]:
    def zoo() -> Zoo:
        from tests import sweep

        for family in sweep.TASKS[task][0]:
            yield family, (lambda f=family: sweep.build(f, task))

    return zoo


ZOOS = {"torchvision": torchvision_zoo, "timm": timm_zoo}
ZOOS |= {task: hf_zoo(task) for task in ("causal-lm", "masked-lm", "image-classification")}


def audit(zoo: Zoo) -> dict[str, set[str]]:
    """Op (or failed rule) -> the models in which it froze a group."""
    found: dict[str, set[str]] = collections.defaultdict(set)
    for name, make in zoo:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model, x = make()
                graph = sg.trace(model, x)
        except Exception as e:  # noqa: BLE001 - listed, not fatal
            print(f"  {name}: not traced ({type(e).__name__})", file=sys.stderr)
            continue
        for group in graph.groups:
            for why in group.frozen.values():
                match = NO_RULE.match(why)
                if match:
                    found[match.group(1)].add(name)
        print(f"  {name}: traced", file=sys.stderr)
    return found


def main() -> None:
    zoos = sys.argv[1:] or list(ZOOS)
    found: dict[str, set[str]] = collections.defaultdict(set)
    for zoo in zoos:
        for op, models in audit(ZOOS[zoo]()).items():
            found[op] |= models
    print("| op | models where it froze a group |")
    print("|---|---|")
    for op, models in sorted(found.items(), key=lambda kv: -len(kv[1])):
        print(f"| `{op}` | {len(models)}: {', '.join(sorted(models)[:8])} |")


if __name__ == "__main__":
    main()
