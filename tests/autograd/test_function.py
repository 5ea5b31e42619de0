"""Function and its Context: users' own ops, what backward may return, in-place checks."""

from __future__ import annotations

from typing import ClassVar

import array_api_strict
import numpy as np
import pytest

import xcnn
from xcnn import backends
from xcnn.autograd import Function
from xcnn.testing import gradcheck


class ScaledPower(Function):
    """``y = scale * x**power * w`` (w broadcast over x's rows); a user's op."""

    calls: ClassVar[list] = []

    @staticmethod
    def forward(ctx, x, w, *, power=2, scale=1.0):
        ctx.save_for_backward(x, w)
        ctx.power, ctx.scale = power, scale
        return scale * x**power * w

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        ScaledPower.calls.append(ctx.needs_input_grad)
        xp = backends.array_namespace(grad)
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = grad * ctx.scale * ctx.power * x ** (ctx.power - 1) * w
        if ctx.needs_input_grad[1]:
            gw = xp.sum(grad * ctx.scale * x**ctx.power, axis=0)
        return gx, gw


def test_user_function_passes_gradcheck(xp, make):
    x, w = make((4, 3)), make((3,))
    assert gradcheck(
        lambda x, w: ScaledPower.apply(x, w, power=3, scale=0.5),
        [x.data, w.data],
        max_elements=None,
    )


def test_needs_input_grad_follows_requires_grad(xp, make):
    x, w = make((4, 3)), make((3,), requires_grad=False)
    ScaledPower.calls.clear()
    ScaledPower.apply(x, w, power=2).sum().backward()
    assert ScaledPower.calls == [(True, False)]
    assert w.grad is None and x.grad is not None


def test_arrays_and_numbers_pass_through_apply(xp, make):
    """Non-Tensor positional arguments reach forward as they are and need no gradient."""
    x = make((2, 3))
    raw_w = xp.asarray(np.array([1.0, 2.0, 3.0]))
    y = ScaledPower.apply(x, raw_w, power=1)
    y.sum().backward()
    np.testing.assert_allclose(backends.to_host(x.grad), np.tile([1.0, 2.0, 3.0], (2, 1)))


def test_no_input_requiring_grad_records_nothing(xp, make):
    x, w = make((2, 3), requires_grad=False), make((3,), requires_grad=False)
    y = ScaledPower.apply(x, w)
    assert y.grad_fn is None and not y.requires_grad


class BadShape(Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2.0

    @staticmethod
    def backward(ctx, grad):
        return grad[0, ...]  # drops the first axis


class BadDtype(Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2.0

    @staticmethod
    def backward(ctx, grad):
        xp = backends.array_namespace(grad)
        return xp.astype(grad, xp.float64)


class TooMany(Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2.0

    @staticmethod
    def backward(ctx, grad):
        return grad, grad


class TooFew(Function):
    @staticmethod
    def forward(ctx, x, y):
        return x * y

    @staticmethod
    def backward(ctx, grad):
        return grad


@pytest.mark.parametrize(
    ("function", "message"),
    [
        (
            BadShape,
            r"BadShape.backward returned a gradient of shape \(3,\) for input 0, "
            r"whose shape is \(2, 3\)",
        ),
        (BadDtype, "BadDtype.backward returned a float64 gradient for input 0, which is float32"),
        (TooMany, "TooMany.backward returned 2 gradients, but forward took 1 inputs"),
    ],
)
def test_wrong_backward_is_a_clear_error(xp, make, function, message):
    x = make((2, 3), dtype="float32")
    with pytest.raises(RuntimeError, match=message):
        function.apply(x).sum().backward()


def test_missing_gradient_for_an_input_that_needs_one(xp, make):
    x, y = make((2,)), make((2,))
    with pytest.raises(RuntimeError, match=r"TooFew.backward returned 1 gradients, but forward"):
        TooFew.apply(x, y).sum().backward()
    # Leaving out trailing inputs that need no gradient is fine.
    x = make((2,))
    TooFew.apply(x, make((2,), requires_grad=False)).sum().backward()
    assert x.grad is not None


class Split(Function):
    """Two differentiable outputs: the first and the second half of the last axis."""

    @staticmethod
    def forward(ctx, x):
        half = x.shape[-1] // 2
        ctx.half = half
        return x[..., :half], x[..., half:]

    @staticmethod
    def backward(ctx, grad_first, grad_second):
        xp = backends.array_namespace(grad_first)
        return xp.concat([grad_first, grad_second], axis=-1)


def test_multi_output_function(xp, make):
    x = make((3, 4))

    def fn(x):
        first, second = Split.apply(x)
        return first * second.exp() + first

    assert gradcheck(fn, [x.data], max_elements=None)


def test_an_unused_output_gets_a_zero_gradient(xp, make):
    x = make((2, 4))
    first, second = Split.apply(x)
    assert first.grad_fn is second.grad_fn
    (first * 3.0).sum().backward()
    assert backends.to_host(x.grad).tolist() == [[3.0, 3.0, 0.0, 0.0]] * 2


class ArgSort2(Function):
    """(values, order) of two columns; the order is marked non-differentiable."""

    @staticmethod
    def forward(ctx, x):
        xp = backends.array_namespace(x)
        order = xp.argsort(x, axis=-1)
        ctx.save_for_backward(order)
        values = xp.take_along_axis(x, order, axis=-1)
        ctx.mark_non_differentiable(order)
        return values, order

    @staticmethod
    def backward(ctx, grad, grad_order):
        (order,) = ctx.saved_tensors
        xp = backends.array_namespace(grad)
        back = xp.argsort(order, axis=-1)
        return xp.take_along_axis(grad, back, axis=-1)


def test_mark_non_differentiable(xp, make):
    x = make((3, 5))
    values, order = ArgSort2.apply(x)
    assert values.requires_grad and not order.requires_grad and order.grad_fn is None
    assert gradcheck(lambda x: ArgSort2.apply(x)[0], [x.data])


def test_node_repr_and_name(xp, make):
    y = make((2,)) * make((2,))
    assert repr(y.grad_fn) == "<MulBackward>"
    assert "grad_fn=<MulBackward>" in repr(y)


# -- in-place writes: the version counter ------------------------------------------


@pytest.mark.parametrize(
    "write",
    [
        lambda a: a.__iadd__(1.0),
        lambda a: a.__setitem__(0, 5.0),
        lambda a: a.mul_(2.0),
        lambda a: a.zero_(),
    ],
    ids=["+=", "setitem", "mul_", "zero_"],
)
def test_in_place_write_to_a_saved_input_is_caught(xp, make, write):
    a, b = make((3,), requires_grad=False), make((3,))
    y = a * b  # Mul saves a for b's gradient
    write(a)
    with pytest.raises(RuntimeError, match="Mul: saved array 0 was modified in place"):
        y.sum().backward()


def test_in_place_write_to_a_saved_leaf_under_no_grad_is_caught(xp, make):
    """An optimizer step between forward and backward would make the gradient wrong."""
    w = make((3,))
    y = (w * w).sum()
    with xcnn.no_grad():
        w -= 0.1
    with pytest.raises(RuntimeError, match="modified in place"):
        y.backward()


def test_in_place_write_to_a_saved_output_is_caught(xp, make):
    x = make((3,))
    h = x.exp()  # Exp saves its output
    y = h.sum()
    with xcnn.no_grad():
        h += 1.0
    with pytest.raises(RuntimeError, match="Exp: saved array 0 was modified in place"):
        y.backward()


def test_in_place_write_to_an_unsaved_input_is_fine(xp, make):
    a, b = make((3,), requires_grad=False), make((3,))
    y = a + b  # Add saves nothing
    a += 1.0
    y.sum().backward()
    assert backends.to_host(b.grad).tolist() == [1.0, 1.0, 1.0]


def test_in_place_changes_values_and_version(xp, make):
    a = make((3,), requires_grad=False)
    before = backends.to_host(a.data).copy()
    a += 1.0
    a[1] = 5.0
    expected = before + 1.0
    expected[1] = 5.0
    np.testing.assert_allclose(backends.to_host(a.data), expected)
    assert a._version == 2


class OtherBackend(Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2.0

    @staticmethod
    def backward(ctx, grad):
        return np.ones(tuple(grad.shape), dtype=np.float32)


def test_backward_returning_another_backend_is_a_clear_error():
    x = xcnn.Tensor(array_api_strict.ones(3, dtype=array_api_strict.float32), requires_grad=True)
    message = r"OtherBackend.backward returned a numpy array for input 0, which is a array_api"
    with pytest.raises(RuntimeError, match=message):
        OtherBackend.apply(x).sum().backward()
