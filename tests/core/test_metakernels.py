"""The shape-only kernels against the registered meta kernels: the same outputs (shape,
dtype, strides), and the same refusals of widths that do not agree."""

from __future__ import annotations

import pytest
import torch

from slimgraph._core.metakernels import KERNELS, KernelCache, ShapeKernels, shape_only

aten = torch.ops.aten
ACTIVATIONS = {
    "relu": (),
    "hardtanh": (-1.0, 1.0),
    "silu": (),
    "gelu": (),
    "sigmoid": (),
    "tanh": (),
    "hardswish": (),
    "hardsigmoid": (),
    "leaky_relu": (0.01,),
    "elu": (1.0, 1, 1),
    "mish": (),
}


def meta(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


def cases(dtype: torch.dtype, channels_last: bool) -> list[tuple[object, tuple, dict]]:
    """(op, args, kwargs) for every entry of the table; channels are 6, in groups of 3."""
    x = meta(2, 6, 5, 5, dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    w, stat = meta(6, dtype=dtype), meta(6)
    y, w6 = meta(2, 7, 6, dtype=dtype), meta(6, dtype=dtype)
    found = [
        (aten.batch_norm.default, (x, w, w, stat, stat, False, 0.1, 1e-5, False), {}),
        (aten.batch_norm.default, (x, None, None, stat, stat, True, 0.1, 1e-5, False), {}),
        (aten.instance_norm.default, (x, w, w, stat, stat, True, 0.1, 1e-5, False), {}),
        (aten.layer_norm.default, (y, [6], w6, w6, 1e-5, False), {}),
        (aten.group_norm.default, (x, 3, w, w, 1e-5, False), {}),
        (aten.dropout.default, (x, 0.1, False), {}),
        (aten.native_batch_norm.default, (x, w, w, stat, stat, False, 0.1, 1e-5), {}),
        (aten._native_batch_norm_legit.default, (x, w, w, stat, stat, True, 0.1, 1e-5), {}),
        (aten._native_batch_norm_legit_no_training.default, (x, w, w, stat, stat, 0.1, 1e-5), {}),
        (aten._native_batch_norm_legit.no_stats, (x, w, w, True, 0.1, 1e-5), {}),
        (aten.native_layer_norm.default, (y, [6], w6, w6, 1e-5), {}),
        (aten.native_layer_norm.default, (y, [7, 6], None, None, 1e-5), {}),
        (aten.native_group_norm.default, (x, w, w, 2, 6, 25, 3, 1e-5), {}),
        (aten.native_dropout.default, (x, 0.1, True), {}),
        (aten.gelu.default, (x,), {"approximate": "tanh"}),
    ]
    for op, extra in ACTIVATIONS.items():
        found.append((getattr(aten, op).default, (x, *extra), {}))
        found.append((getattr(aten, f"{op}_").default, (x, *extra), {}))
    return found


def facts(out: object) -> list[tuple]:
    items = out if isinstance(out, tuple) else (out,)
    return [(tuple(t.shape), t.dtype, t.stride()) for t in items]


def test_every_entry_is_checked_here() -> None:
    checked = {op for op, _, _ in cases(torch.float32, False)} | {op for op, _ in binary_cases()}
    assert checked | {aten.adaptive_avg_pool2d.default} == set(KERNELS)


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_outputs_match_the_meta_kernels(dtype: torch.dtype, channels_last: bool) -> None:
    for op, args, kwargs in cases(dtype, channels_last):
        got = shape_only(op, args, kwargs)
        assert got is not None, op
        assert facts(got) == facts(op(*args, **kwargs)), op
        if op._schema.name.endswith("_"):  # in place: the input itself
            assert got is args[0]


def shrunk(args: tuple, position: int) -> tuple:
    changed = list(args)
    changed[position] = meta(5, dtype=args[position].dtype)
    return tuple(changed)


WIDTHS = [  # (op, the positions of tensors that must be as wide as the channels)
    (aten.batch_norm.default, (1, 2, 3, 4)),
    (aten.instance_norm.default, (1, 2)),
    (aten.layer_norm.default, (2, 3)),
    (aten.group_norm.default, (2, 3)),
    (aten.native_batch_norm.default, (1, 2, 3, 4)),
    (aten._native_batch_norm_legit.default, (1, 2, 3, 4)),
    (aten._native_batch_norm_legit_no_training.default, (1, 2, 3, 4)),
    (aten._native_batch_norm_legit.no_stats, (1, 2)),
    (aten.native_layer_norm.default, (2, 3)),
    (aten.native_group_norm.default, (1, 2)),
]


@pytest.mark.parametrize(("op", "positions"), WIDTHS, ids=lambda v: getattr(v, "__name__", ""))
def test_a_width_that_does_not_agree_is_refused_as_by_the_meta_kernel(op, positions) -> None:
    args = next(a for o, a, _ in cases(torch.float32, False) if o is op and a[1] is not None)
    for position in positions:
        wrong = shrunk(args, position)
        with pytest.raises(RuntimeError):
            op(*wrong)
        with pytest.raises(RuntimeError, match="5"):
            shape_only(op, wrong)


def test_norms_refuse_shapes_and_groups_that_do_not_agree() -> None:
    x, w, y = meta(2, 6, 5, 5), meta(6), meta(2, 7, 6)
    refused = [
        (aten.layer_norm.default, (y, [5], None, None, 1e-5, False), "normalized_shape=\\[5\\]"),
        (aten.native_layer_norm.default, (y, [7, 5], None, None, 1e-5), "normalized_shape"),
        (aten.group_norm.default, (x, 4, w, w, 1e-5, False), "divisible by num_groups"),
        (aten.native_group_norm.default, (x, w, w, 2, 6, 24, 3, 1e-5), "2 x 6 x 24"),
    ]
    for op, args, message in refused:
        with pytest.raises(RuntimeError):
            op(*args)
        with pytest.raises(RuntimeError, match=message):
            shape_only(op, args)


def test_real_integer_and_unlisted_inputs_run_their_kernels() -> None:
    assert shape_only(aten.relu.default, (torch.ones(3),)) is None  # values: the real kernel
    assert shape_only(aten.relu.default, (meta(3, dtype=torch.int64),)) is None
    assert shape_only(aten.conv2d.default, (meta(1, 3, 8, 8), meta(4, 3, 3, 3))) is None
    assert shape_only(aten.relu.default, ()) is None


def test_a_meta_forward_under_the_mode_gives_the_plain_forward_shapes() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(inplace=True),
        torch.nn.GroupNorm(2, 8),
        torch.nn.Flatten(),
        torch.nn.LayerNorm(8 * 6 * 6),
        torch.nn.GELU(),
        torch.nn.Linear(8 * 6 * 6, 4),
    ).to("meta")
    x = meta(2, 3, 8, 8)
    with torch.no_grad():
        plain = net(x)
        with ShapeKernels():
            light = net(x)
    assert facts(light) == facts(plain) == [((2, 4), torch.float32, (4, 1))]
    net[1].running_mean = meta(7)  # a statistic that no longer fits the channels
    with torch.no_grad(), ShapeKernels(), pytest.raises(RuntimeError, match="running_mean"):
        net(x)


class Counted:
    """An op that counts how often its kernel runs."""

    def __init__(self, op) -> None:
        self.op, self._schema, self.runs = op, op._schema, 0

    def __call__(self, *args, **kwargs):
        self.runs += 1
        return self.op(*args, **kwargs)


def test_the_cache_runs_a_kernel_once_per_signature() -> None:
    cache, conv = KernelCache(), Counted(aten.conv2d.default)
    x, w = meta(2, 3, 8, 8), meta(4, 3, 3, 3)
    first = cache(conv, (x, w, None, [1, 1], [1, 1]), {})
    again = cache(conv, (meta(2, 3, 8, 8), meta(4, 3, 3, 3), None, [1, 1], [1, 1]), {})
    assert conv.runs == 1
    assert facts(again) == facts(first) == [((2, 4, 8, 8), torch.float32, (256, 64, 8, 1))]
    assert again is not first and not torch._C._is_alias_of(again, first)
    # another stride, padding or dtype is another signature, run and remembered
    cache(conv, (x.to(memory_format=torch.channels_last), w, None, [1, 1], [1, 1]), {})
    cache(conv, (x, w, None, [1, 1], [0, 0]), {})
    cache(conv, (x.double(), w.double(), None, [1, 1], [1, 1]), {})
    assert conv.runs == 4 and len(cache.seen) == 4


def test_scalars_of_other_types_are_other_signatures() -> None:
    cache, ints = KernelCache(), meta(3, dtype=torch.int64)
    assert cache(aten.add.Tensor, (ints, 1), {}).dtype == torch.int64
    assert cache(aten.add.Tensor, (ints, 1.0), {}).dtype == torch.float32
    assert cache(aten.add.Tensor, (ints, True), {}).dtype == torch.int64
    assert len(cache.seen) == 3


def test_views_in_place_ops_and_real_tensors_run_every_time() -> None:
    cache, x = KernelCache(), meta(4, 6)
    for op, args in [
        (aten.t.default, (x,)),  # a view of its input
        (aten.add_.Tensor, (x, x)),  # in place: the input itself
        (aten.split.Tensor, (x, 2)),  # views
    ]:
        counted = Counted(op)
        outs = [cache(counted, args, {}) for _ in range(2)]
        assert counted.runs == 2, op
        assert all(
            torch._C._is_alias_of(o if isinstance(o, torch.Tensor) else o[0], x) for o in outs
        )
    counted = Counted(aten.mul.Tensor)
    cache(counted, (torch.ones(3), torch.ones(3)), {})
    cache(counted, (torch.ones(3), torch.ones(3)), {})
    assert counted.runs == 2  # real values are not keyed by their shapes
    assert set(cache.seen.values()) == {None}  # the views and in-place ops: never remembered


def test_a_kernel_that_refuses_is_not_remembered() -> None:
    cache, conv = KernelCache(), Counted(aten.conv2d.default)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            cache(conv, (meta(2, 5, 8, 8), meta(4, 3, 3, 3)), {})
    assert conv.runs == 2 and not cache.seen


def binary_cases() -> list[tuple[object, tuple]]:
    """Broadcasts, scalars, mixed dtypes and layouts of add, sub and mul (and in place)."""
    x, cl = meta(2, 6, 5, 5), meta(2, 6, 5, 5).to(memory_format=torch.channels_last)
    others = [
        meta(2, 6, 5, 5),
        meta(1, 6, 1, 1),
        meta(5),
        meta(6, 1, 1, dtype=torch.float64),
        meta(2, 6, 5, 5, dtype=torch.bfloat16),
        meta(dtype=torch.float64),  # 0-dim: it does not promote a float32 tensor
        meta(2, 1, 5, 5, dtype=torch.int64),
        cl,
        2,
        2.5,
    ]
    found: list[tuple[object, tuple]] = []
    for op in ("add", "sub", "mul"):
        for other in others:
            found += [
                (getattr(aten, op).Tensor, (x, other)),
                (getattr(aten, op).Tensor, (cl, other)),
            ]
            found.append((getattr(aten, f"{op}_").Tensor, (meta(2, 6, 5, 5), other)))
        found.append((getattr(aten, op).Tensor, (meta(6, 1), meta(1, 6))))  # both broadcast
        found.append((getattr(aten, op).Tensor, (meta(2, 1, 3), meta(2, 4, 3))))
        found.append((getattr(aten, op).Tensor, (meta(1, 6, 1, 1), x)))
        # contiguous, but a size-1 dim strided otherwise (a transposed view): the kernel's
        # output keeps that stride
        odd = meta(2, 8, 1, 16).transpose(1, 2)
        found.append((getattr(aten, op).Tensor, (odd, odd)))
    return found


@pytest.mark.parametrize(("op", "args"), binary_cases(), ids=lambda v: getattr(v, "__name__", ""))
def test_binary_ops_match_the_meta_kernels_or_step_aside(op, args) -> None:
    got = shape_only(op, args)
    expected = op(*(a.clone() if isinstance(a, torch.Tensor) else a for a in args))
    if got is None:  # a layout or a mixture the registered kernel decides
        assert not (_dense(args[0]) and _dense(args[1]))
        return
    assert facts(got) == facts(expected)
    if op._schema.name.endswith("_"):
        assert got is args[0]


def _dense(value) -> bool:
    return not isinstance(value, torch.Tensor) or value.stride() == meta(*value.shape).stride()


def test_binary_ops_that_the_kernel_refuses_are_left_to_it() -> None:
    x = meta(2, 6, 5, 5)
    for op, args in [
        (aten.add.Tensor, (x, meta(4))),  # does not broadcast
        (aten.add_.Tensor, (meta(1, 6, 1, 1), x)),  # in place, but the result is wider
    ]:
        assert shape_only(op, args) is None
        with pytest.raises(RuntimeError):
            op(*args)
    # a result that is not floating (complex) is the kernel's to type
    assert shape_only(aten.mul_.Tensor, (x, meta(2, 6, 5, 5, dtype=torch.complex64))) is None


@pytest.mark.parametrize("size", [(1, 1), (3, 2), (7, 7)])
@pytest.mark.parametrize("shape", [(2, 6, 5, 5), (6, 5, 5)])
def test_adaptive_average_pooling_matches_the_meta_kernel(shape, size) -> None:
    x = meta(*shape)
    op = aten.adaptive_avg_pool2d.default
    assert facts(shape_only(op, (x, list(size)))) == facts(op(x, list(size)))
    if x.dim() == 4:
        assert shape_only(op, (x.to(memory_format=torch.channels_last), list(size))) is None
