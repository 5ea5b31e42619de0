"""gradcheck accepts correct gradients and pinpoints wrong ones."""

from __future__ import annotations

import numpy as np
import pytest

import xcnn
from xcnn.autograd import Function
from xcnn.nn import Module, init
from xcnn.testing import GradcheckError, gradcheck


class Affine(Module):
    """y = x * w + b, elementwise over the last axis; ``wrong`` corrupts dL/dw."""

    def __init__(self, n: int, wrong: bool = False):
        super().__init__()
        self.weight = init.empty_parameter((n,), dtype="float64")
        self.bias = init.empty_parameter((n,), dtype="float64")
        init.uniform_(self.weight, -1.0, 1.0, rng=0)
        init.uniform_(self.bias, -1.0, 1.0, rng=1)
        self.wrong = wrong
        self._cache = None

    def forward(self, x):
        self._cache = x
        return x * self.weight.data + self.bias.data

    def backward(self, gy):
        x = self._require_cache()
        gw = (gy * x) if not self.wrong else (gy * x * 1.01)
        self.weight.accumulate(sum_rows(gw))
        self.bias.accumulate(sum_rows(gy))
        return gy * self.weight.data


def sum_rows(a):
    from array_api_compat import array_namespace

    return array_namespace(a).sum(a, axis=0)


def test_correct_module_passes(backend, rng):
    x = backend.asarray(rng.standard_normal((4, 5)), dtype="float64")
    assert gradcheck(Affine(5), x, max_elements=None) is True


def test_wrong_parameter_gradient_is_named(backend, rng):
    x = backend.asarray(rng.standard_normal((4, 5)), dtype="float64")
    with pytest.raises(GradcheckError, match="parameter 'weight'"):
        gradcheck(Affine(5, wrong=True), x)


def test_plain_function_pair(backend, rng):
    xp = backend.xp
    a = backend.asarray(rng.standard_normal((3, 2)), dtype="float64")
    b = backend.asarray(rng.standard_normal((3, 2)), dtype="float64")
    cache = {}

    def forward(a, b):
        cache["ab"] = (a, b)
        return a * b + xp.sin(a)

    def backward(g):
        a, b = cache["ab"]
        return g * b + g * xp.cos(a), g * a

    assert gradcheck(forward, [a, b], backward)

    def wrong_backward(g):
        a, b = cache["ab"]
        return g * b, g * a  # forgets d sin(a)/da

    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(forward, [a, b], wrong_backward)


def test_float32_is_refused(backend):
    x = backend.asarray(np.ones((2, 5)), dtype="float32")
    with pytest.raises(TypeError, match="float64"):
        gradcheck(Affine(5), x)


def test_function_of_tensors_is_checked_through_the_graph(backend, rng):
    a = backend.asarray(rng.standard_normal((3, 2)), dtype="float64")
    b = backend.asarray(rng.standard_normal((2,)), dtype="float64")
    assert gradcheck(lambda a, b: (a * b).exp() - a / (b * b + 1.0), [a, b], max_elements=None)
    assert gradcheck(lambda a: a.sum(dim=0), xcnn.Tensor(a))  # a Tensor input, no list


class Square(Function):
    """x**2, with a ``wrong`` factor to corrupt the gradient."""

    @staticmethod
    def forward(ctx, x, wrong=1.0):
        ctx.save_for_backward(x)
        ctx.wrong = wrong
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2.0 * ctx.wrong * x * grad


def test_function_apply_is_checked_through_the_graph(backend, rng):
    x = backend.asarray(rng.standard_normal((4,)), dtype="float64")
    assert gradcheck(Square.apply, [x])
    with pytest.raises(GradcheckError, match=r"input 0, element \(\d,\): backward gives"):
        gradcheck(lambda x: Square.apply(x, wrong=1.01), [x])


def test_graph_check_finds_the_wrong_input(backend, rng):
    x = backend.asarray(rng.standard_normal((2, 3)), dtype="float64")
    y = backend.asarray(rng.standard_normal((2, 3)), dtype="float64")
    with pytest.raises(GradcheckError, match="input 1"):
        gradcheck(lambda x, y: x * 2.0 + Square.apply(y, wrong=0.5), [x, y])


def test_graph_check_counts_a_missing_gradient_as_zeros(backend, rng):
    x = backend.asarray(rng.standard_normal((3,)), dtype="float64")
    y = backend.asarray(rng.standard_normal((3,)), dtype="float64")
    assert gradcheck(lambda x, y: x * 2.0, [x, y])  # y does not reach the output

    class Forgets(Function):
        @staticmethod
        def forward(ctx, x, y):
            return x * y

        @staticmethod
        def backward(ctx, grad):
            return None, None

    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(Forgets.apply, [x, y])


def test_graph_check_needs_a_tensor_result(backend, rng):
    x = backend.asarray(rng.standard_normal((3,)), dtype="float64")
    with pytest.raises(TypeError, match="return a Tensor"):
        gradcheck(lambda x: x.data * 2.0, [x])


def test_graph_check_refuses_float32(backend):
    x = backend.asarray(np.ones(3), dtype="float32")
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda x: x * 2.0, [x])


def test_gradient_on_another_backend_is_reported():
    import array_api_strict as xs

    x = xs.asarray(np.linspace(0.1, 1.0, 4))

    def forward(x):
        return x * x

    def backward(g):  # a NumPy gradient for an array_api_strict input
        return np.asarray(2.0 * x * g)

    with pytest.raises(GradcheckError, match="the gradient is a numpy array"):
        gradcheck(forward, [x], backward)
