"""gradcheck accepts correct gradients and pinpoints wrong ones."""

from __future__ import annotations

import numpy as np
import pytest

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
