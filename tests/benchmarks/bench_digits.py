"""Accuracy after slimming a trained network, slimgraph beside Torch-Pruning, on digits.

Usage: python tests/benchmarks/bench_digits.py [--ratio 0.5] [--epochs 3] [--json out.json]

A torchvision ``resnet18(num_classes=10)`` with a CIFAR-style stem (3x3 stride-1 conv1,
no max pool) is trained on scikit-learn's 8x8 digits, upsampled to 32x32 (bilinear), grey
repeated to 3 channels, normalised; a fixed stratified 80/20 split and seeds throughout.
The baseline (Adam, cosine schedule, 5 epochs) is cached (safetensors, in the user's cache
directory, never a shared /tmp path) so a rerun skips it.

Then, for the l2 and taylor criteria, both tools slim the same trained model to channel
ratio 0.5 in local scope, the classifier left whole (Torch-Pruning: MetaPruner with
GroupMagnitudeImportance(p=2) or GroupTaylorImportance, ``ignored_layers=[fc]``; taylor
gradients from the same training batches, one epoch of them, for both: Torch-Pruning reads
their summed ``.grad``, slimgraph gets them as ``calibration`` with a ``loss_fn`` and sums
per-batch estimates), and go through the same procedure:
test accuracy right after slimming, after ``sg.recalibrate_bn`` on the same 10 training
batches, after the first fine-tuning epoch and after all of them (Adam, the same cosine
learning-rate schedule and batch order for everyone). Last, ``sg.prune_iteratively`` in 5 steps with the same
fine-tuning budget split across the steps (BatchNorm re-estimated before each share).
Prints a markdown table; ``--json`` writes the rows.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import slimgraph as sg  # noqa: E402
from tests.peer import meta_pruner  # noqa: E402

SEED = 0
BATCH = 64
LR = 1e-3
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "slimgraph-bench-digits"

Data = tuple[torch.Tensor, torch.Tensor]


def load_data() -> tuple[Data, Data]:
    """Digits upsampled to 32x32, normalised with the training split's mean and std."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    y = torch.tensor(digits.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        np.arange(len(y)), test_size=0.2, stratify=digits.target, random_state=SEED
    )
    train_idx, test_idx = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    mean, std = x[train_idx].mean(), x[train_idx].std()
    x = ((x - mean) / std).expand(-1, 3, -1, -1).contiguous()
    return (x[train_idx], y[train_idx]), (x[test_idx], y[test_idx])


def build() -> nn.Module:
    torch.manual_seed(SEED)
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def batches(data: Data, epochs: float, seed: int) -> list[Data]:
    """``epochs`` worth of shuffled training batches, one fixed order per seed."""
    x, y = data
    g = torch.Generator().manual_seed(seed)
    per_epoch = -(-len(y) // BATCH)
    order = torch.cat([torch.randperm(len(y), generator=g) for _ in range(int(np.ceil(epochs)))])
    found = []
    for e in range(int(np.ceil(epochs))):
        chunk = order[e * len(y) : (e + 1) * len(y)]
        found += [
            (x[chunk[i : i + BATCH]], y[chunk[i : i + BATCH]]) for i in range(0, len(y), BATCH)
        ]
    return found[: round(epochs * per_epoch)]


def cosine(n: int, lr: float = LR) -> list[float]:
    """Per-batch learning rates falling from ``lr`` to near 0 over ``n`` batches."""
    return [lr * 0.5 * (1 + np.cos(np.pi * i / n)) for i in range(n)]


def train(
    model: nn.Module,
    stream: list[Data],
    lrs: list[float],
    opt: torch.optim.Optimizer | None = None,
) -> torch.optim.Optimizer:
    """One Adam step per batch of ``stream`` at the matching rate of ``lrs``; returns the
    optimizer (to continue with); the model is left in eval mode."""
    opt = opt or torch.optim.Adam(model.parameters(), lr=lrs[0])
    model.train()
    for (x, y), lr in zip(stream, lrs, strict=True):
        for group in opt.param_groups:
            group["lr"] = lr
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return opt


@torch.no_grad()
def accuracy(model: nn.Module, data: Data) -> float:
    model.eval()
    x, y = data
    hits = sum(
        (model(x[i : i + 256]).argmax(1) == y[i : i + 256]).sum().item()
        for i in range(0, len(y), 256)
    )
    return hits / len(y)


def baseline(train_data: Data, epochs: int) -> nn.Module:
    key = f"{epochs}-{SEED}-{BATCH}-{LR}-cosine-{torch.__version__}"
    key = hashlib.sha256(key.encode()).hexdigest()[:12]
    path = CACHE / f"resnet18-digits-{key}.safetensors"
    model = build()
    if path.exists():
        model.load_state_dict(safetensors.torch.load_file(path))
        return model.eval()
    stream = batches(train_data, epochs, seed=SEED + 1)
    train(model, stream, cosine(len(stream)))
    CACHE.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(model.state_dict(), path)
    return model.eval()


def loss_fn(model: nn.Module, batch: Data) -> torch.Tensor:
    """Cross-entropy in eval mode: the taylor gradients, the same for both tools."""
    model.eval()
    return F.cross_entropy(model(batch[0]), batch[1])


def slim_slimgraph(
    model: nn.Module, x: torch.Tensor, criterion: str, ratio: float, calibration: list[Data]
) -> nn.Module:
    """taylor: ``sg.slim`` runs the calibration batches (per-batch estimates)."""
    data = {"calibration": calibration, "loss_fn": loss_fn} if criterion == "taylor" else {}
    return sg.slim(model, (x,), ratio=ratio, importance=criterion, **data).model


def slim_torch_pruning(
    model: nn.Module, x: torch.Tensor, criterion: str, ratio: float, calibration: list[Data]
) -> nn.Module:
    """Torch-Pruning slims ``model`` in place; taylor reads the summed ``.grad``."""
    if criterion == "taylor":
        model.zero_grad(set_to_none=True)
        for batch in calibration:
            loss_fn(model, batch).backward()

    meta_pruner(model, x, ratio, importance=criterion).step()  # the classifier is model.fc
    return model


TOOLS: dict[str, Callable[[nn.Module, torch.Tensor, str, float, list[Data]], nn.Module]] = {
    "slimgraph": slim_slimgraph,
    "torch-pruning": slim_torch_pruning,
}


def one_shot(tool: str, criterion: str, base: nn.Module, data: tuple[Data, Data], args) -> dict:
    train_data, test_data = data
    x = train_data[0][:1]
    model = copy.deepcopy(base).eval()
    slim = TOOLS[tool](model, x, criterion, args.ratio, args.calibration)
    slim.zero_grad(set_to_none=True)
    row = {"criterion": criterion, "tool": tool, **size(slim, x), "kept": kept(base, slim)}
    row["after"] = accuracy(slim, test_data)
    sg.recalibrate_bn(slim, [b[0] for b in args.recal])
    row["bn_recal"] = accuracy(slim, test_data)
    stream = batches(train_data, args.epochs, seed=SEED + 2)
    lrs = cosine(len(stream))
    per_epoch = len(stream) // args.epochs
    opt = train(slim, stream[:per_epoch], lrs[:per_epoch])
    row["epoch_1"] = accuracy(slim, test_data)
    train(slim, stream[per_epoch:], lrs[per_epoch:], opt)
    row["final"] = accuracy(slim, test_data)
    return row


def iterative(criterion: str, base: nn.Module, data: tuple[Data, Data], args) -> dict:
    """5 steps; the one-shot fine-tuning batches, in the same order, shared out over them."""
    train_data, test_data = data
    x = train_data[0][:1]
    stream = batches(train_data, args.epochs, seed=SEED + 2)
    lrs = cosine(len(stream))
    shares = np.array_split(np.arange(len(stream)), args.steps)
    accuracies: list[float] = []

    def finetune(model: nn.Module, step: int) -> None:
        sg.recalibrate_bn(model, [b[0] for b in args.recal])
        share = shares[step - 1]
        train(model, [stream[i] for i in share], [lrs[i] for i in share])
        model.zero_grad(set_to_none=True)
        accuracies.append(accuracy(model, test_data))

    result = sg.prune_iteratively(
        copy.deepcopy(base).eval(),
        (x,),
        ratio=args.ratio,
        steps=args.steps,
        importance=criterion,
        finetune=finetune,
        calibration=args.calibration if criterion == "taylor" else None,
        loss_fn=loss_fn if criterion == "taylor" else None,
        progress=False,
    )
    return {
        "criterion": criterion,
        "tool": f"slimgraph iterative ({args.steps} steps)",
        **size(result.model, x),
        "final": accuracies[-1],
        "steps": accuracies,
    }


def kept(base: nn.Module, slim: nn.Module) -> dict[str, list[int]]:
    """Per BatchNorm, the channels of ``base`` that ``slim`` kept (found by their running
    means, before any re-estimation): which channels each tool chose."""
    norms = dict(base.named_modules())
    return {
        name: torch.isin(norms[name].running_mean, m.running_mean).nonzero().flatten().tolist()
        for name, m in slim.named_modules()
        if isinstance(m, nn.BatchNorm2d)
    }


def agreement(a: dict[str, list[int]], b: dict[str, list[int]]) -> float:
    """Fraction of kept channels both choices share, over all BatchNorms."""
    common = sum(len(set(a[n]) & set(b[n])) for n in a)
    return common / sum(len(a[n]) for n in a)


def size(model: nn.Module, x: torch.Tensor) -> dict:
    return {"params": sg.count_params(model), "macs": sg.count_macs(model, (x,))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs")
    parser.add_argument("--baseline-epochs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="iterative steps")
    parser.add_argument("--criteria", nargs="+", default=["l2", "taylor"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--grad-batches", type=int, default=0, help="taylor gradient batches (0: one epoch)"
    )
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    data = load_data()
    base = baseline(data[0], args.baseline_epochs)
    before = accuracy(base, data[1])
    x = data[0][0][:1]
    base_size = size(base, x)
    recal_and_grads = batches(data[0], 1, seed=SEED + 3)
    args.recal = recal_and_grads[:10]  # BatchNorm re-estimation, both tools
    args.calibration = recal_and_grads[: args.grad_batches or None]  # taylor, both tools
    seconds = {"baseline": time.perf_counter() - start}
    rows = []
    for criterion in args.criteria:
        for tool in TOOLS:
            t = time.perf_counter()
            rows.append(one_shot(tool, criterion, base, data, args))
            seconds[f"{criterion} {tool}"] = time.perf_counter() - t
        t = time.perf_counter()
        rows.append(iterative(criterion, base, data, args))
        seconds[f"{criterion} iterative"] = time.perf_counter() - t
    n_train, n_test = len(data[0][1]), len(data[1][1])
    print(
        f"digits 32x32, resnet18 (3x3 stem), train {n_train} / test {n_test}; baseline "
        f"{args.baseline_epochs} epochs: test accuracy {before:.3f}, "
        f"{base_size['params'] / 1e6:.2f} M params, {base_size['macs'] / 1e6:.0f} M MACs\n"
        f"channel ratio {args.ratio}, local; fine-tuning {args.epochs} epochs Adam, lr {LR} cosine to 0; "
        f"BN re-estimated on {len(args.recal)} batches; taylor from {len(args.calibration)} "
        f"batches of {BATCH}\n"
    )
    print("| criterion | tool | params (M) | MACs (M) | after slim | BN recal | 1 epoch | "
          f"{args.epochs} epochs |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|")

    def cell(row: dict, key: str) -> str:
        return f"{row[key]:.3f}" if key in row else "–"

    for r in rows:
        print(
            f"| {r['criterion']} | {r['tool']} | {r['params'] / 1e6:.2f} | {r['macs'] / 1e6:.0f} "
            f"| {cell(r, 'after')} | {cell(r, 'bn_recal')} | {cell(r, 'epoch_1')} "
            f"| {cell(r, 'final')} |"
        )
    for criterion in args.criteria:
        ours, theirs = (
            r["kept"] for r in rows if r["criterion"] == criterion and r["tool"] in TOOLS
        )
        print(
            f"\n{criterion}: {agreement(ours, theirs):.1%} of the kept channels are the same "
            "for both tools"
        )
    for r in rows:
        if "steps" in r:
            print(
                f"\n{r['criterion']} iterative, test accuracy after each step's fine-tuning: "
                + ", ".join(f"{a:.3f}" for a in r["steps"])
            )
    total = time.perf_counter() - start
    print(
        "\nseconds: "
        + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items())
        + f"; total {total:.0f}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"baseline": before, "base": base_size, "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
