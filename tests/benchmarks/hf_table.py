"""The README's table of Hugging Face families slimmed at ratio 0.5 (tiny random configs).

Usage: python tests/benchmarks/hf_table.py

For each family of ``tests/hf_models.py`` and both ``prune_residual`` settings: query
heads and key/value heads before -> after (layer 0), hidden size, MLP width, MACs kept, and
how the slim model reloads (``from_pretrained`` when its config describes it exactly,
else ``sg.load``).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import slimgraph as sg  # noqa: E402
from slimgraph.rewrite.hf_config import update_configs  # noqa: E402
from tests.hf_models import FAMILIES, build  # noqa: E402

HEADS = ("num_attention_heads", "n_head", "n_heads", "num_heads")
KV = ("num_key_value_heads",)
HIDDEN = ("hidden_size", "n_embd", "dim", "d_model")
MLP = ("intermediate_size", "n_inner", "hidden_dim", "ffn_dim", "d_ff")


def field(config, names: tuple[str, ...]) -> object:
    return next((getattr(config, n) for n in names if getattr(config, n, None) is not None), "-")


def main() -> None:
    print("| family | residual | heads (q/kv) | hidden | MLP | MACs kept | reloads with |")
    print("|---|---|---|---|---|---:|---|")
    for family in sorted(FAMILIES):
        for residual in (True, False):
            model, x = build(family)
            before = {k: field(model.config, v) for k, v in (("h", HEADS), ("kv", KV))}
            before |= {"hid": field(model.config, HIDDEN), "mlp": field(model.config, MLP)}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                slim = sg.slim(model, x, ratio=0.5, prune_residual=residual).model
                exact = update_configs(slim, model).exact
            c = slim.config
            kv = f"/{before['kv']}→{field(c, KV)}" if before["kv"] != "-" else ""
            macs = sg.count_macs(slim, x) / sg.count_macs(model, x)
            print(
                f"| {family} | {'pruned' if residual else 'kept'} "
                f"| {before['h']}→{field(c, HEADS)}{kv} | {before['hid']}→{field(c, HIDDEN)} "
                f"| {before['mlp']}→{field(c, MLP)} | {macs:.3f} "
                f"| {'from_pretrained' if exact else 'sg.load'} |"
            )


if __name__ == "__main__":
    main()
