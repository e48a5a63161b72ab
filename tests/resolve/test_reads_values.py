"""Which failures of a meta forward mean "the model reads values" (retry on real weights)."""

from __future__ import annotations

import pytest
import torch

from slimgraph.resolve.cost import reads_values


@pytest.mark.parametrize(
    "read",
    [
        lambda t: t[0].item(),
        lambda t: t.tolist(),  # JetMoE's router: expert sizes as Python ints
        lambda t: bool(t.sum() > 0),
    ],
    ids=["item", "tolist", "bool"],
)
def test_value_reads_on_meta_tensors_are_recognised(read) -> None:
    with pytest.raises(Exception) as err:
        read(torch.ones(2, device="meta"))
    assert reads_values(err.value), str(err.value)


def test_a_shape_error_is_not_a_value_read() -> None:
    with pytest.raises(RuntimeError) as err:
        torch.ones(2, 3, device="meta") @ torch.ones(2, 3, device="meta")
    assert not reads_values(err.value)
