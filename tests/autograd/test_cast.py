"""``Tensor.float()`` and ``.double()``: recorded casts; the gradient keeps the input's dtype."""

from __future__ import annotations

import numpy as np
import pytest

import xcnn.nn.functional as F
from xcnn import no_grad
from xcnn.autograd import Tensor


def test_double_then_float_round_trip_carries_the_gradient(rng):
    host = rng.standard_normal((3, 4)).astype(np.float32)
    x = Tensor(host.copy(), requires_grad=True)
    y = x.double()
    assert y.dtype == np.float64 and y.grad_fn is not None
    (y * y).sum().float().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad, 2 * host, rtol=1e-6)
    assert x.float() is x  # already float32: no new node


def test_casts_let_mixed_dtypes_meet(rng):
    a = Tensor(rng.standard_normal(3).astype(np.float32), requires_grad=True)
    b = Tensor(rng.standard_normal(3), requires_grad=True)
    with pytest.raises(TypeError, match=r"^Mul: floating-point inputs of different dtypes"):
        a * b
    (a.double() * b).sum().backward()
    np.testing.assert_allclose(a.grad, b.data.astype(np.float32), rtol=1e-6)
    assert b.grad.dtype == np.float64


def test_dropout_with_p_zero_keeps_the_in_place_check():
    """p = 0 returns the input Tensor itself, so a write through the result is seen by
    the version counter of the array relu saved (a new Tensor would have hidden it)."""
    x = Tensor(np.array([-1.0, 2.0]), requires_grad=True)
    h = x * 1.0
    r = F.relu(h)
    y = F.dropout(h, 0.0)
    assert y is h
    with no_grad():
        y += 5.0
    with pytest.raises(RuntimeError, match="modified in place"):
        r.sum().backward()
