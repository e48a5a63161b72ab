"""Depth, width or both: perplexity against measured speed-up on a trained tiny causal LM.

Usage: python tests/benchmarks/lm_depth_width.py [--drops 2 4] [--train-steps 150]
       [--recover-steps 20] [--importance l2] [--prune-residual] [--rounds 5]
       [--runs 20] [--tries 4] [--cache PATH] [--json out.json]

The model is a tiny Llama (``transformers.LlamaConfig``: hidden 256, 8 layers, 8 heads /
4 key-value heads, MLP 688, vocabulary 256: bytes are the tokens), trained from a fixed
seed on CPU with AdamW for ``--train-steps`` steps of 16 random 128-byte windows of a
corpus that exists offline on every machine: the first 3 MB of the ``.py`` files at the
top of the Python standard library (``sysconfig.get_paths()['stdlib']``), sorted by name;
the last 10 % is held out for validation. The trained weights are cached
(``~/.cache/slimgraph/lm_depth_width-<hash of settings and corpus>.safetensors``), so
reruns skip training.

For each ``k`` of ``--drops`` three slim models at the same measured latency:

* depth: ``sg.drop_blocks(n=k)``, blocks ranked by loss influence (how much skipping each
  raises the language-model loss on 4 calibration batches of the training split);
* width: ``sg.slim(model, x, target_latency=f, latency_model=sg.profile_latency(model, x,
  runtime="torch", threads=1))``, where ``f`` is the depth model's measured latency over
  the original's (``--importance``; heads and MLP widths only unless
  ``--prune-residual``);
* mixed: drop ``k // 2`` blocks, then width to the same ``f`` overall (its own latency
  model, its target ``f`` over the shorter model's measured fraction);
* auto mix: ``sg.slim(..., target_latency=f, drop_blocks="auto", calibration=...,
  loss_fn=...)``, the latency planner choosing how many blocks go (the mix of least loss
  on the calibration batches), on the width profile's latency model.

Width and mixed slims are timed against the depth slim in the same rounds and planned
again with their target scaled by the miss (up to ``--tries`` plans) until they run as
fast as it or up to 3 % faster; the closest try not slower than it counts
(``matching.matched``): the comparison is at equal measured latency, not at equal
prediction.

Latency: ``sg.measure_latency`` (eager torch, 1 thread, batch 1, 128 tokens), all models
taking turns in ``--rounds`` rounds of ``--runs`` runs each, in one process; the table
gives the median of the round medians, and for width and mixed slims the latency
fraction they were planned for (target) and what their latency model predicted, against
the measured fraction (latency kept). Perplexity: exp of the mean next-byte loss on the
validation windows, right after slimming and after ``--recover-steps`` identical steps of
``sg.recover`` (distillation from the original, Adam at ``--recover-lr``, by default
sg.recover's own; the same training batches for every model). The load average is
printed at the start and the end: the machine is shared, and a change of load between
the two latency measurements (the depth models', which set the targets, and the final
one) shows as a gap between target and latency kept.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import sys
import sysconfig
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers as T
from safetensors.torch import load_file, save_file
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from matching import matched as closest  # noqa: E402

import slimgraph as sg  # noqa: E402

SEQ = 128  # tokens per window, for training, validation and latency
BATCH = 16
CORPUS_BYTES = 3_000_000
VALIDATION = 0.1  # fraction of the corpus held out
VALIDATION_WINDOWS = 64
CALIBRATION_BATCHES = 4
TABLE_OPTIONAL = ("target", "predicted", "ppl_recovered")  # blank where not given
ARCH = {
    "vocab_size": 256,
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "max_position_embeddings": SEQ,
    "tie_word_embeddings": False,
}


def corpus() -> torch.Tensor:
    """The first ``CORPUS_BYTES`` of the standard library's top-level ``.py`` files."""
    data = bytearray()
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        data += path.read_bytes()
        if len(data) >= CORPUS_BYTES:
            break
    return torch.tensor(list(data[:CORPUS_BYTES]), dtype=torch.long)


def windows(tokens: torch.Tensor, count: int, generator: torch.Generator | None) -> torch.Tensor:
    """``count`` windows of ``SEQ`` tokens: at random offsets, or evenly spaced."""
    last = len(tokens) - SEQ
    if generator is None:
        starts = torch.linspace(0, last, count).long()
    else:
        starts = torch.randint(0, last + 1, (count,), generator=generator)
    return torch.stack([tokens[s : s + SEQ] for s in starts.tolist()])


def batches(tokens: torch.Tensor, count: int, seed: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [{"input_ids": windows(tokens, BATCH, generator)} for _ in range(count)]


def lm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch, labels=batch["input_ids"]).loss


def trained(train: torch.Tensor, args) -> nn.Module:
    """The tiny Llama after ``--train-steps`` AdamW steps, from the cache when it has it."""
    settings = {"arch": ARCH, "steps": args.train_steps, "batch": BATCH, "seq": SEQ, "lr": 1e-3}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update(train.numpy().tobytes())
    path = Path(args.cache).expanduser() / f"lm_depth_width-{digest.hexdigest()[:16]}.safetensors"
    torch.manual_seed(0)
    model = T.LlamaForCausalLM(T.LlamaConfig(**ARCH))
    if path.is_file():
        model.load_state_dict(load_file(path))
        return model.eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-3, total_steps=args.train_steps)
    model.train()
    started = time.perf_counter()
    for step, batch in enumerate(batches(train, args.train_steps, seed=1)):
        loss = lm_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 25 == 0 or step == args.train_steps - 1:
            print(
                f"  train step {step}: loss {loss.item():.3f} ({time.perf_counter() - started:.0f} s)"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), path)
    return model.eval()


def perplexity(model: nn.Module, validation: torch.Tensor) -> float:
    with torch.no_grad():
        losses = [lm_loss(model, {"input_ids": w}) for w in validation.split(BATCH)]
    return math.exp(float(torch.stack(losses).mean()))


def interleaved_ms(models: dict[str, nn.Module], x: dict, args) -> dict[str, float]:
    """Median of ``--rounds`` medians per model, the models taking turns in every round."""
    seen: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(args.rounds):
        for k, model in models.items():
            seen[k].append(sg.measure_latency(model, x, threads=1, runs=args.runs).median_ms)
    return {k: statistics.median(v) for k, v in seen.items()}


@dataclass
class Slim:
    """A slim model, and for a width slim the latency fraction it was planned for and the
    fraction its latency model predicted (both of the original's)."""

    model: nn.Module
    target: float | None = None
    predicted: float | None = None


def profiled(model: nn.Module, x: dict, args) -> sg.LatencyModel:
    """``model``'s latency model on eager torch, 1 thread, for the width it plans."""
    return sg.profile_latency(
        model,
        x,
        runtime="torch",
        threads=1,
        cache=args.latency_cache,
        progress=False,
        config=sg.PruneConfig(prune_residual=args.prune_residual),
    )


def widthwise(
    model: nn.Module,
    profile: sg.LatencyModel,
    x: dict,
    calibration: list,
    args,
    options: dict | None = None,
):
    """A function of ``fraction``: ``model`` slimmed in width to that fraction of its
    latency, as ``profile`` predicts (``options``: more of ``sg.slim``'s)."""
    data = {"calibration": calibration, "loss_fn": lm_loss} if args.importance == "taylor" else {}

    def slim(fraction: float) -> Slim:
        result = sg.slim(
            model,
            x,
            importance=args.importance,
            prune_residual=args.prune_residual,
            target_latency=fraction,
            latency_model=profile,
            **(data | (options or {})),
        )
        predicted = result.plan.predicted_latency_ms
        return Slim(result.model, fraction, predicted / profile.predict({}) if predicted else None)

    return slim


def matched(make, reference: nn.Module, target: float, x: dict, args) -> Slim:
    """``make(target)``, planned again with its target scaled by the miss and kept between
    the targets already found too fast and too slow (up to ``--tries`` plans), until it
    runs as fast as ``reference`` or up to 3 % faster, timed in the same rounds (so that
    the machine's drift cancels); the closest try not slower counts (``matching.matched``)."""

    def miss(slim: Slim) -> float:
        ms = interleaved_ms({"reference": reference, "slim": slim.model}, x, args)
        return ms["slim"] / ms["reference"]

    return closest(make, miss, target, args.tries)[1]


def slim_models(model: nn.Module, x: dict, calibration: list, args) -> dict[str, Slim]:
    """Depth, width and mixed slims for every ``k`` of ``--drops``, same measured latency."""
    deepest = sg.drop_blocks(
        model, x, n=max(args.drops), calibration=calibration, loss_fn=lm_loss, progress=False
    )
    order = sorted(deepest.influence, key=deepest.influence.get)  # least influence first
    print("  loss influence:", {k: round(v, 4) for k, v in deepest.influence.items()})
    shorter = {
        k: sg.drop_blocks(model, x, blocks=order[:k], progress=False).model
        for k in sorted({*args.drops, *(k // 2 for k in args.drops if k > 1)})
    }
    ms = interleaved_ms(
        {"original": model, **{f"depth {k}": m for k, m in shorter.items()}}, x, args
    )
    fraction = {k: ms[f"depth {k}"] / ms["original"] for k in shorter}
    profile = profiled(model, x, args)
    wide = widthwise(model, profile, x, calibration, args)
    # the latency planner chooses the mix: the one of least loss on the calibration batches
    chosen = {"drop_blocks": "auto", "calibration": calibration, "loss_fn": lm_loss}
    auto = widthwise(model, profile, x, calibration, args, chosen)
    slims: dict[str, Slim] = {}
    for k in args.drops:
        slims[f"depth -{k}"] = Slim(shorter[k])
        slims[f"width @ depth -{k}"] = matched(wide, shorter[k], fraction[k], x, args)
        slims[f"auto mix @ depth -{k}"] = matched(auto, shorter[k], fraction[k], x, args)
        if k > 1:
            half = k // 2  # the shorter model's share of the target is planned in width
            start = fraction[k] / fraction[half]
            mixed = matched(
                widthwise(shorter[half], profiled(shorter[half], x, args), x, calibration, args),
                shorter[k],
                start,
                x,
                args,
            )
            scale = fraction[half]
            slims[f"mixed -{half} + width"] = Slim(
                mixed.model,
                (mixed.target or start) * scale,
                mixed.predicted * scale if mixed.predicted else None,
            )
    return slims


def rows_for(model: nn.Module, train: torch.Tensor, validation: torch.Tensor, args) -> list[dict]:
    x = {"input_ids": validation[:1]}
    calibration = batches(train, CALIBRATION_BATCHES, seed=2)
    recovery = batches(train, args.recover_steps, seed=3)
    slims = slim_models(model, x, calibration, args)
    ms = interleaved_ms({"original": model, **{k: v.model for k, v in slims.items()}}, x, args)
    base = {"params": sg.count_params(model), "macs": sg.count_macs(model, x), "ms": ms}
    rows = [row("original", Slim(model), x, base, validation)]
    for name, slim in slims.items():
        rows.append(row(name, slim, x, base, validation))
        steps, lr = args.recover_steps, args.recover_lr
        sg.recover(slim.model, model, recovery, steps=steps, lr=lr, progress=False)
        rows[-1]["ppl_recovered"] = perplexity(slim.model.eval(), validation)
    return rows


def row(name: str, slim: Slim, x: dict, base: dict, validation: torch.Tensor) -> dict[str, Any]:
    ms = base["ms"]
    return {
        "model": name,
        "layers": len(slim.model.model.layers),
        "params_kept": sg.count_params(slim.model) / base["params"],
        "macs_kept": sg.count_macs(slim.model, x) / base["macs"],
        "ms": ms[name],
        "speedup": ms["original"] / ms[name],
        "latency_kept": ms[name] / ms["original"],
        "target": slim.target,
        "predicted": slim.predicted,
        "ppl": perplexity(slim.model, validation),
        "ppl_recovered": None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drops", nargs="+", type=int, default=[2, 4])
    parser.add_argument("--train-steps", type=int, default=150)
    parser.add_argument("--recover-steps", type=int, default=20)
    parser.add_argument("--recover-lr", type=float, default=1e-4)
    parser.add_argument("--importance", default="l2")
    parser.add_argument("--prune-residual", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tries", type=int, default=4, help="width plans per latency target")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--cache", default="~/.cache/slimgraph")
    parser.add_argument("--latency-cache", default=None)
    parser.add_argument("--json")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    load = os.getloadavg()
    started = time.perf_counter()
    tokens = corpus()
    cut = int(len(tokens) * (1 - VALIDATION))
    train, validation = tokens[:cut], windows(tokens[cut:], VALIDATION_WINDOWS, None)
    model = trained(train, args)
    rows = rows_for(model, train, validation, args)
    end = os.getloadavg()
    print(
        f"\ntiny Llama ({ARCH['num_hidden_layers']} layers, hidden {ARCH['hidden_size']}), "
        f"{args.train_steps} training steps; eager torch, 1 thread, batch 1 x {SEQ} tokens; "
        f"median of {args.rounds} interleaved medians of {args.runs} runs; width: "
        f"importance {args.importance}, prune_residual={args.prune_residual}; recovery: "
        f"{args.recover_steps} distillation steps at lr {args.recover_lr}; "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    print(
        f"load average (1/5/15 min): {'/'.join(f'{v:.1f}' for v in load)} at start, "
        f"{'/'.join(f'{v:.1f}' for v in end)} at end\n"
    )
    print(
        "| model | layers | params kept | MACs kept | latency (ms) | speed-up | latency kept "
        "| target | predicted | ppl | ppl after recovery |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        cells = [f"{r[k]:.3f}" if r[k] is not None else "" for k in TABLE_OPTIONAL]
        print(
            f"| {r['model']} | {r['layers']} | {r['params_kept']:.3f} | {r['macs_kept']:.3f} "
            f"| {r['ms']:.1f} | {r['speedup']:.2f} | {r['latency_kept']:.3f} "
            f"| {cells[0]} | {cells[1]} | {r['ppl']:.3f} | {cells[2]} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
