"""Every Tensor operator and method against finite differences (float64, through the graph).

Each case is a function of Tensors checked with ``xcnn.testing.gradcheck``; the same
function then runs at float32 to show that the output and every gradient keep the
inputs' dtype and namespace (Python numbers must not promote float32).
"""

from __future__ import annotations

import numpy as np
import pytest

import xcnn
from xcnn import backends
from xcnn.testing import GradcheckError, gradcheck

ANY = (-2.0, 2.0)
POSITIVE = (0.5, 2.0)


def _uses_three_times(h):
    return h * h - h / 2.0 + h.sum()


# (id, function of Tensors, [(shape, (low, high)), ...] one per input)
CASES = [
    # arithmetic, with every broadcasting pattern
    *[
        (
            f"{name}-{'x'.join(map(str, sa)) or 'scalar'}-{'x'.join(map(str, sb)) or 'scalar'}",
            fn,
            [(sa, ANY), (sb, POSITIVE if name == "div" else ANY)],
        )
        for name, fn in [
            ("add", lambda a, b: a + b),
            ("sub", lambda a, b: a - b),
            ("mul", lambda a, b: a * b),
            ("div", lambda a, b: a / b),
        ]
        for sa, sb in [
            ((2, 3), (2, 3)),
            ((2, 3), (3,)),  # trailing match
            ((3,), (2, 3)),  # the left operand broadcast
            ((2, 3), ()),  # scalar-shaped
            ((), (2, 3)),
            ((4, 2, 3), (2, 1)),  # a leading dimension and a size-1 one
            ((2, 1), (1, 3)),  # both broadcast
            ((1, 2, 3), (4, 1, 3)),
        ]
    ],
    ("add-number", lambda a: a + 1.5, [((2, 3), ANY)]),
    ("radd-number", lambda a: 2 + a, [((2, 3), ANY)]),
    ("rsub-number", lambda a: 1.0 - a, [((2, 3), ANY)]),
    ("rmul-number", lambda a: 0.5 * a, [((2, 3), ANY)]),
    ("rdiv-number", lambda a: 3.0 / a, [((2, 3), POSITIVE)]),
    ("div-number", lambda a: a / 4, [((2, 3), ANY)]),
    ("neg", lambda a: -a, [((2, 3), ANY)]),
    ("pos", lambda a: +a * 1.0, [((2, 3), ANY)]),
    ("pow-2", lambda a: a**2, [((2, 3), ANY)]),
    ("pow-3", lambda a: a**3, [((2, 3), ANY)]),
    ("pow-0", lambda a: a**0 + a, [((2, 3), ANY)]),
    ("pow-half", lambda a: a**0.5, [((2, 3), POSITIVE)]),
    ("pow-negative", lambda a: a**-1.5, [((2, 3), POSITIVE)]),
    ("rpow", lambda a: 2.0**a, [((2, 3), ANY)]),
    ("pow-tensor", lambda a, b: a**b, [((2, 3), POSITIVE), ((2, 3), ANY)]),
    ("pow-tensor-broadcast", lambda a, b: a**b, [((2, 3), POSITIVE), ((3,), ANY)]),
    ("pow-tensor-broadcast-base", lambda a, b: a**b, [((3,), POSITIVE), ((4, 1, 3), ANY)]),
    ("abs", lambda a: a.abs(), [((2, 3), ANY)]),
    ("abs-builtin", lambda a: abs(a), [((2, 3), ANY)]),
    ("exp", lambda a: a.exp(), [((2, 3), ANY)]),
    ("log", lambda a: a.log(), [((2, 3), POSITIVE)]),
    ("sqrt", lambda a: a.sqrt(), [((2, 3), POSITIVE)]),
    ("clamp-min", lambda a: a.clamp(min=-0.5), [((4, 5), ANY)]),
    ("clamp-max", lambda a: a.clamp(max=0.5), [((4, 5), ANY)]),
    ("clamp-both", lambda a: a.clamp(-0.5, 0.7), [((4, 5), ANY)]),
    # reductions
    ("sum", lambda a: a.sum(), [((2, 3, 4), ANY)]),
    ("sum-dim", lambda a: a.sum(dim=1), [((2, 3, 4), ANY)]),
    ("sum-dims", lambda a: a.sum(dim=(0, 2)), [((2, 3, 4), ANY)]),
    ("sum-keepdim", lambda a: a.sum(dim=-1, keepdim=True), [((2, 3, 4), ANY)]),
    ("sum-0d", lambda a: a.sum(), [((), ANY)]),
    ("mean", lambda a: a.mean(), [((2, 3, 4), ANY)]),
    ("mean-dim", lambda a: a.mean(dim=0), [((2, 3, 4), ANY)]),
    ("mean-keepdim", lambda a: a.mean(dim=(1, 2), keepdim=True), [((2, 3, 4), ANY)]),
    ("max", lambda a: a.max(), [((2, 3, 4), ANY)]),
    ("max-dim", lambda a: a.max(dim=1).values, [((2, 3, 4), ANY)]),
    ("max-dim-keepdim", lambda a: a.max(dim=-1, keepdim=True).values, [((2, 3, 4), ANY)]),
    ("max-dim-tuple", lambda a: a.max(0)[0], [((5,), ANY)]),
    # shapes
    ("reshape", lambda a: a.reshape(3, 2), [((2, 3), ANY)]),
    ("reshape-tuple", lambda a: a.reshape((6,)), [((2, 3), ANY)]),
    ("reshape-minus-one", lambda a: a.reshape(-1, 2), [((2, 3, 2), ANY)]),
    ("view", lambda a: a.view(2, 6), [((3, 4), ANY)]),
    ("flatten", lambda a: a.flatten(), [((2, 3, 4), ANY)]),
    ("flatten-start", lambda a: a.flatten(1), [((2, 3, 4), ANY)]),
    ("flatten-function", lambda a: xcnn.flatten(a, 0, 1), [((2, 3, 4), ANY)]),
    ("flatten-0d", lambda a: xcnn.flatten(a), [((), ANY)]),
    ("transpose", lambda a: a.transpose(0, 1), [((2, 3), ANY)]),
    ("transpose-negative", lambda a: a.transpose(-1, 0), [((2, 3, 4), ANY)]),
    ("permute", lambda a: a.permute(2, 0, 1), [((2, 3, 4), ANY)]),
    ("permute-tuple", lambda a: a.permute((1, 2, 0)), [((2, 3, 4), ANY)]),
    ("T", lambda a: a.T, [((2, 3), ANY)]),
    # indexing
    ("getitem-int", lambda a: a[1], [((3, 4), ANY)]),
    ("getitem-negative-int", lambda a: a[-1], [((3, 4), ANY)]),
    ("getitem-ints", lambda a: a[0, 2], [((3, 4), ANY)]),
    ("getitem-slice", lambda a: a[1:3], [((3, 4), ANY)]),
    ("getitem-step", lambda a: a[::2, 1:], [((3, 4), ANY)]),
    ("getitem-reverse", lambda a: a[::-1], [((3, 4), ANY)]),
    ("getitem-ellipsis", lambda a: a[..., 1], [((2, 3, 4), ANY)]),
    ("getitem-none", lambda a: a[None], [((3, 4), ANY)]),
    ("getitem-none-middle", lambda a: a[:, None, 1], [((3, 4), ANY)]),
    ("getitem-ellipsis-none", lambda a: a[..., None], [((3, 4), ANY)]),
    ("getitem-fan-out", lambda a: a[0] * a[1] + a[0], [((2, 3), ANY)]),
    # joining
    ("cat", lambda a, b, c: xcnn.cat([a, b, c]), [((1, 3), ANY), ((2, 3), ANY), ((3, 3), ANY)]),
    ("cat-dim1", lambda a, b: xcnn.cat([a, b], dim=1), [((2, 3), ANY), ((2, 1), ANY)]),
    ("cat-dim-neg", lambda a, b: xcnn.cat((a, b), dim=-1), [((2, 2, 3), ANY), ((2, 2, 2), ANY)]),
    ("cat-same", lambda a: xcnn.cat([a, a * 2.0, a]), [((2, 3), ANY)]),
    ("stack", lambda a, b: xcnn.stack([a, b]), [((2, 3), ANY), ((2, 3), ANY)]),
    ("stack-last", lambda a, b: xcnn.stack([a, b, a], dim=-1), [((2, 3), ANY), ((2, 3), ANY)]),
    # matmul
    ("matmul", lambda a, b: a @ b, [((2, 3), ANY), ((3, 4), ANY)]),
    ("matmul-vector-vector", lambda a, b: a @ b, [((3,), ANY), ((3,), ANY)]),
    ("matmul-vector-matrix", lambda a, b: a @ b, [((3,), ANY), ((3, 4), ANY)]),
    ("matmul-matrix-vector", lambda a, b: a @ b, [((2, 3), ANY), ((3,), ANY)]),
    ("matmul-batched", lambda a, b: a @ b, [((5, 2, 3), ANY), ((5, 3, 4), ANY)]),
    ("matmul-batch-broadcast", lambda a, b: a @ b, [((5, 2, 3), ANY), ((3, 4), ANY)]),
    ("matmul-batch-both", lambda a, b: a @ b, [((2, 1, 2, 3), ANY), ((4, 3, 2), ANY)]),
    ("matmul-vector-batched", lambda a, b: a @ b, [((3,), ANY), ((4, 3, 2), ANY)]),
    ("matmul-batched-vector", lambda a, b: a @ b, [((4, 2, 3), ANY), ((3,), ANY)]),
    ("matmul-self", lambda a: a @ a.T, [((2, 3), ANY)]),
    # fan-out: one tensor used three times, directly and through an intermediate
    ("fan-out", lambda a: a * a + a.exp(), [((2, 3), ANY)]),
    ("fan-out-intermediate", lambda a: _uses_three_times(a * 1.5), [((3,), ANY)]),
    ("fan-out-two", lambda a, b: a * b + b * a.exp() - (a - b) ** 2, [((2, 3), ANY), ((3,), ANY)]),
]


def _inputs(xp, rng, specs, dtype):
    return [
        xp.asarray(rng.uniform(low, high, size=shape).astype(dtype)) for shape, (low, high) in specs
    ]


@pytest.mark.parametrize(("fn", "specs"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_gradcheck(xp, rng, fn, specs):
    assert gradcheck(fn, _inputs(xp, rng, specs, "float64"), max_elements=None)


@pytest.mark.parametrize(("fn", "specs"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_float32_stays_float32(xp, rng, fn, specs):
    leaves = [xcnn.Tensor(a, requires_grad=True) for a in _inputs(xp, rng, specs, "float32")]
    out = fn(*leaves)
    assert out.dtype == xp.float32
    assert type(out.data) is type(leaves[0].data)
    out.backward(xp.ones(out.shape, dtype=xp.float32))
    for t in leaves:
        assert type(t.grad) is type(t.data)
        assert t.grad.dtype == xp.float32
        assert tuple(t.grad.shape) == t.shape


def test_gradcheck_catches_a_wrong_backward(xp, rng):
    """The check this file relies on fails for a gradient off by a factor."""

    class Cube(xcnn.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a)
            return a * a * a

        @staticmethod
        def backward(ctx, grad):
            (a,) = ctx.saved_tensors
            return 2.0 * a * a * grad  # should be 3 a^2

    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(Cube.apply, _inputs(xp, rng, [((4,), POSITIVE)], "float64"))


@pytest.mark.parametrize(
    "scale",
    [2.0, 2, np.float64(3.0), np.float32(3.0), np.int64(2)],
    ids=["float", "int", "np.float64", "np.float32", "np.int64"],
)
def test_numbers_keep_the_tensor_dtype(xp, make, scale):
    t = make((3,), dtype="float32")
    for out in (t * scale, scale * t, t / scale, scale / t, t + scale, scale - t, t**scale):
        assert out.dtype == xp.float32
    (t / scale).sum().backward()
    assert t.grad.dtype == xp.float32


def test_values(xp, make):
    """Forward values of a few operators against NumPy on the same numbers."""
    a, b = make((2, 3), low=0.5), make((3,), low=0.5)
    na, nb = backends.to_host(a.data), backends.to_host(b.data)
    pairs = [
        (a + b, na + nb),
        (a / b, na / nb),
        (a**b, na**nb),
        (2.0**a, 2.0**na),
        (a @ b, na @ nb),
        (a.max(dim=1).values, na.max(axis=1)),
        (a.mean(dim=0, keepdim=True), na.mean(axis=0, keepdims=True)),
        (a[:, None, 1], na[:, None, 1]),
        (xcnn.cat([a, a], dim=1), np.concatenate([na, na], axis=1)),
        (xcnn.stack([b, b], dim=1), np.stack([nb, nb], axis=1)),
        (a.clamp(0.6, 1.2), np.clip(na, 0.6, 1.2)),
    ]
    for out, expected in pairs:
        np.testing.assert_allclose(backends.to_host(out.data), expected, rtol=1e-12)


def test_max_with_dim_returns_indices_without_grad(xp):
    a = xcnn.Tensor(xp.asarray([[1.0, 5.0, 2.0], [7.0, 0.0, 7.0]]), requires_grad=True)
    values, indices = a.max(dim=1)
    assert values.requires_grad and values.grad_fn is not None
    assert not indices.requires_grad and indices.grad_fn is None
    assert backends.to_host(indices.data).tolist() == [1, 0]
    values.sum().backward()
    # The first maximum takes the gradient, as PyTorch's max(dim).
    assert backends.to_host(a.grad).tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]


def test_max_without_dim_splits_ties(xp):
    a = xcnn.Tensor(xp.asarray([3.0, 1.0, 3.0]), requires_grad=True)
    a.max().backward()
    assert backends.to_host(a.grad).tolist() == [0.5, 0.0, 0.5]


def test_abs_and_clamp_at_their_kinks(xp):
    a = xcnn.Tensor(xp.asarray([0.0, -1.0, 1.0, 2.0]), requires_grad=True)
    (a.abs() + a.clamp(-1.0, 1.0)).sum().backward()
    # |a|' is sign(a) (0 at 0); clamp passes the gradient on its closed interval.
    assert backends.to_host(a.grad).tolist() == [1.0, 0.0, 2.0, 1.0]
