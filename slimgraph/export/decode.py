"""Exporting a causal LM's decoder step with its key/value cache as graph inputs and
outputs, and the two-step decode its parity is checked on.

The step is traced at sizes chosen apart (batch, new tokens and past length all
different), so that ``torch.export`` keeps each one its own dynamic dim; ONNX Runtime
then runs it on a prompt with an empty past (past length 0) and on one new token fed the
prompt's presents, at the example batch and, with a dynamic batch, at a second one.

>>> [n for n in _trace_sizes(2, dynamic=True)]
[2, 3, 4]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import onnx_ir as ir
import torch
from torch import nn

from slimgraph.errors import ExportArgumentError, ExportError
from slimgraph.export._quiet import captured, reason
from slimgraph.export.arguments import checked_inputs, input_names
from slimgraph.export.past import DecoderStep, past_names, present_names
from slimgraph.export.reference import SECOND_BATCH, Call, Case, feeds, rebatch, run_torch

__all__ = ["Decode", "decode_cases", "export_step"]

_TAKEN = ("input_ids", "attention_mask", "position_ids")


@dataclass(frozen=True)
class Decode:
    """The step module, the call the exporter traces, and the parity cases."""

    step: DecoderStep
    call: Call
    cases: list[Case]
    past_lengths: tuple[int, ...]


def decode_cases(model: nn.Module, example_inputs: Any, dynamic_batch: bool, check: bool) -> Decode:
    """The decoder step of ``model`` and its two-step decode on the example prompt.

    ``example_inputs`` holds ``input_ids`` (``batch, sequence``) and optionally
    ``attention_mask``; ``position_ids`` are made from the mask as ``generate`` does.
    With ``dynamic_batch`` and ``check`` the decode is also run at a second batch size.
    """
    step = DecoderStep(model)
    args, kwargs = checked_inputs(model, example_inputs)
    given = dict(zip(input_names(model, args, kwargs), [*args, *kwargs.values()]))
    extra = sorted(set(given) - set(_TAKEN))
    if "input_ids" not in given or extra:
        raise ExportArgumentError(
            "with_past=True takes example inputs input_ids (batch, sequence) and optionally "
            f"attention_mask, got {sorted(given)}; pass those two only"
        )
    ids = given["input_ids"]
    if ids.ndim != 2 or ids.shape[1] < 1 or ids.is_floating_point():
        raise ExportArgumentError(
            f"input_ids must be integer token ids of shape (batch, sequence), got "
            f"{ids.dtype} {tuple(ids.shape)}"
        )
    mask = given.get("attention_mask", torch.ones_like(ids))
    batch = int(ids.shape[0])
    cases = _two_steps(step, ids, mask)
    if dynamic_batch and check:
        size = SECOND_BATCH if batch != SECOND_BATCH else SECOND_BATCH - 1
        more = [rebatch(t, batch, size, seed=0) for t in (ids, mask)]
        cases += _two_steps(step, *more)
    past = (0, int(ids.shape[1]))
    return Decode(step, _trace_call(step, ids, dynamic_batch), cases, past)


def _feeds_of(
    step: DecoderStep, ids: torch.Tensor, mask: torch.Tensor, past: list[torch.Tensor]
) -> list[torch.Tensor]:
    inputs = [ids, mask]
    if step.takes_positions:
        # generate's positions: count the attended tokens, so left padding starts at 0
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        inputs.append(positions[:, -ids.shape[1] :])
    return [*inputs, *past]


def _empty_past(step: DecoderStep, ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Zero-length past tensors of every layer's own (possibly pruned) shape."""
    # one step at a single token gives each layer's key/value heads and head dim as the
    # model really has them, whatever its config says
    probe = run_torch(step, _feeds_of(step, ids[:1, :1], mask[:1, :1], []), {})
    return [t.new_zeros((ids.shape[0], t.shape[1], 0, t.shape[3])) for t in probe[1:]]


def _two_steps(step: DecoderStep, ids: torch.Tensor, mask: torch.Tensor) -> list[Case]:
    """The prompt with an empty past, then one new token with the prompt's presents."""
    with torch.no_grad():
        first = _feeds_of(step, ids, mask, _empty_past(step, ids, mask))
        out1 = run_torch(step, first, {})
        token = out1[0][:, -1:].argmax(-1).to(ids.dtype)  # greedy: the token generate picks
        more = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        second = _feeds_of(step, token, more, out1[1:])
        out2 = run_torch(step, second, {})
    names = _names(step, len(out1) - 1)
    batch = int(ids.shape[0])
    return [(feeds(names, first), out1, batch), (feeds(names, second), out2, batch)]


def _names(step: DecoderStep, flat: int) -> list[str]:
    return [*step.input_names, *past_names(flat // 2)]


def _trace_sizes(batch: int, dynamic: bool) -> tuple[int, int, int]:
    """Batch, new tokens and past length to trace at: all different and none 0 or 1,
    which ``torch.export`` would fix as constants or merge into one dim."""
    batch = 2 if dynamic and batch == 1 else batch
    rest = [n for n in range(3, 7) if not (dynamic and n == batch)]
    return batch, rest[0], rest[1]


def _trace_call(step: DecoderStep, ids: torch.Tensor, dynamic: bool) -> Call:
    """The prompt's tokens cycled to the trace sizes, the first ``past`` of them run
    to make a real cache."""
    batch, new, past = _trace_sizes(int(ids.shape[0]), dynamic)
    rows = torch.arange(batch) % ids.shape[0]
    cols = torch.arange(past + new) % ids.shape[1]
    tokens = ids[rows][:, cols]
    with torch.no_grad():
        empty = _empty_past(step, tokens, torch.ones_like(tokens))
        prefix = tokens[:, :past]
        cache = run_torch(step, _feeds_of(step, prefix, torch.ones_like(prefix), empty), {})[1:]
    traced = _feeds_of(step, tokens[:, past:], torch.ones_like(tokens), cache)
    names = _names(step, len(cache))
    outputs = ["logits", *present_names(len(cache) // 2)]
    return Call(tuple(traced), {}, names, outputs, [dynamic] * len(names), [dynamic] * len(outputs))


def export_step(step: DecoderStep, call: Call, opset: int | None) -> ir.Model:
    """The step through the dynamo exporter, with dynamic batch (when the call has one),
    sequence, past and total lengths."""
    dims = torch.export.Dim
    batch = {0: dims("batch")} if any(call.dynamic) else {}
    sequence, past = dims("sequence"), dims("past_sequence")
    total = dims("total_sequence")  # the mask covers the past and the new tokens
    front = [{**batch, 1: sequence}, {**batch, 1: total}]
    if step.takes_positions:
        front.append({**batch, 1: sequence})
    cache = tuple({**batch, 2: past} for _ in call.args[len(front) :])
    try:
        with captured():
            program = torch.onnx.export(
                step,
                call.args,
                dynamo=True,
                input_names=call.names,
                output_names=call.output_names,
                opset_version=opset,
                dynamic_shapes=((*front, *cache),),
                verbose=False,
            )
    except Exception as exc:
        raise ExportError(
            f"the dynamo exporter could not export the decoder step with its key/value cache: "
            f"{reason(exc)}. Export without with_past, or try another opset"
        ) from exc
    if program is None:  # only with dynamo=False, but the stub allows it
        raise ExportError("torch.onnx.export returned no program")
    return program.model
