"""xcnn.ops.linear / linear_backward: PyTorch parity, gradients, dtypes, errors."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from xcnn import backends
from xcnn.ops import linear, linear_backward
from xcnn.testing import gradcheck


def _torch(backend, a):
    return torch.from_numpy(np.array(backend.to_numpy(a)))


def _host(backend, a):
    return np.asarray(backend.to_numpy(a))


def _arrays(backend, rng, lead, n_in, n_out, dtype="float32", bias=True):
    x = backend.asarray(rng.standard_normal((*lead, n_in)), dtype=dtype)
    w = backend.asarray(rng.standard_normal((n_out, n_in)) / np.sqrt(n_in), dtype=dtype)
    b = backend.asarray(rng.standard_normal(n_out), dtype=dtype) if bias else None
    return x, w, b


@pytest.mark.torch
def test_matches_torch_functional_linear(backend, rng):
    """Forward and all three gradients equal torch.nn.functional.linear's (float32)."""
    for _ in range(20 if backend.name == "numpy" else 5):
        lead = tuple(int(v) for v in rng.integers(1, 6, size=rng.integers(1, 3)))
        n_in, n_out = (int(v) for v in rng.integers(1, 24, size=2))
        has_bias = bool(rng.integers(2))
        x, w, b = _arrays(backend, rng, lead, n_in, n_out, bias=has_bias)
        gy = backend.asarray(rng.standard_normal((*lead, n_out)), dtype="float32")

        y = linear(x, w, b)
        gx, gw, gb = linear_backward(gy, x, w, bias=has_bias)

        tx = _torch(backend, x).requires_grad_()
        tw = _torch(backend, w).requires_grad_()
        tb = _torch(backend, b).requires_grad_() if has_bias else None
        ty = torch.nn.functional.linear(tx, tw, tb)
        ty.backward(_torch(backend, gy))
        tol = dict(rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(_host(backend, y), ty.detach().numpy(), **tol)
        np.testing.assert_allclose(_host(backend, gx), tx.grad.numpy(), **tol)
        np.testing.assert_allclose(_host(backend, gw), tw.grad.numpy(), **tol)
        if has_bias:
            np.testing.assert_allclose(_host(backend, gb), tb.grad.numpy(), **tol)
        else:
            assert gb is None


@pytest.mark.parametrize(
    "lead, n_in, n_out, bias",
    [
        ((4,), 5, 3, True),
        ((1,), 7, 1, True),
        ((3,), 4, 6, False),
        ((2, 3), 5, 4, True),
        ((), 3, 2, True),
    ],
    ids=["basic", "batch1-out1", "no-bias", "3d-input", "1d-input"],
)
def test_gradcheck(backend, rng, lead, n_in, n_out, bias):
    x, w, b = _arrays(backend, rng, lead, n_in, n_out, dtype="float64", bias=bias)
    args = [x, w, b] if bias else [x, w]

    def backward(gy):
        gx, gw, gb = linear_backward(gy, args[0], args[1], bias=bias)
        return (gx, gw, gb) if bias else (gx, gw)

    # gradcheck perturbs the list it is given; forward must read the current values.
    def forward(*arrays):
        args[:] = arrays
        return linear(*arrays)

    assert gradcheck(forward, args, backward, max_elements=None)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_and_namespace(backend, rng, dtype):
    x, w, b = _arrays(backend, rng, (3,), 4, 2, dtype=dtype)
    y = linear(x, w, b)
    gx, gw, gb = linear_backward(y, x, w)
    for a in (y, gx, gw, gb):
        assert backends.dtype_name(a.dtype) == dtype
        assert backends.namespace_name(a) == backend.name
    expected = _host(backend, x).astype(np.float64) @ _host(backend, w).T + _host(backend, b)
    np.testing.assert_allclose(
        _host(backend, y), expected, rtol=1e-5 if dtype == "float32" else 1e-12
    )


def test_non_contiguous_inputs_give_identical_results(backend, rng):
    x_host = rng.standard_normal((5, 6)).astype(np.float32)
    w_host = rng.standard_normal((3, 6)).astype(np.float32)
    # A column-sliced input and a transposed-back (Fortran-order) weight.
    wide = np.repeat(x_host, 2, axis=1)[:, ::2]
    w_fortran = np.asfortranarray(w_host)
    if backend.name == "numpy":
        assert not wide.flags.c_contiguous and not w_fortran.flags.c_contiguous
    x, w = backend.asarray(x_host), backend.asarray(w_host)
    xs, ws = backend.asarray(wide), backend.asarray(w_fortran)
    gy = backend.asarray(rng.standard_normal((5, 3)), dtype="float32")
    np.testing.assert_allclose(
        _host(backend, linear(xs, ws)), _host(backend, linear(x, w)), rtol=1e-6
    )
    for a, b in zip(linear_backward(gy, xs, ws), linear_backward(gy, x, w), strict=True):
        np.testing.assert_allclose(_host(backend, a), _host(backend, b), rtol=1e-6, atol=1e-7)


def test_errors_name_the_op_and_shapes(backend, rng):
    x, w, b = _arrays(backend, rng, (2,), 4, 3)
    with pytest.raises(
        ValueError, match=r"linear: expected a 2-D weight of shape \(out, in\), got shape \(3,\)"
    ):
        linear(x, b, None)
    with pytest.raises(
        ValueError, match=r"linear: expected input of shape \(N, 4\).*got shape \(2, 5\)"
    ):
        linear(backend.asarray(np.zeros((2, 5)), dtype="float32"), w, b)
    with pytest.raises(
        ValueError, match=r"linear: expected input of shape \(N, 4\).*got shape \(\)"
    ):
        linear(backend.xp.asarray(1.0, dtype=backend.xp.float32), w, b)
    with pytest.raises(ValueError, match=r"expected a bias of shape \(3,\), got shape \(4,\)"):
        linear(x, w, backend.asarray(np.zeros(4), dtype="float32"))
    with pytest.raises(
        TypeError, match="input dtype float64 differs from the weight dtype float32"
    ):
        linear(backend.asarray(np.zeros((2, 4)), dtype="float64"), w, b)
    with pytest.raises(TypeError, match="floating-point weight"):
        linear(
            backend.asarray(np.zeros((2, 4), dtype=np.int64)),
            backend.asarray(np.zeros((3, 4), dtype=np.int64)),
        )
    with pytest.raises(
        ValueError, match=r"linear_backward: expected gy of shape \(2, 3\).*got shape \(2, 4\)"
    ):
        linear_backward(x, x, w)


def test_input_on_another_backend_is_refused(rng):
    with backends.use("array_api_strict") as strict:
        w = strict.asarray(rng.standard_normal((3, 4)), dtype="float32")
        x = np.zeros((2, 4), dtype=np.float32)
        with pytest.raises(
            TypeError,
            match="linear: input is a numpy array but the weight lives on array_api_strict",
        ):
            linear(x, w)


@pytest.mark.parametrize("leading", [(6,), (2, 3), ()], ids=["2d", "3d", "1d"])
def test_fast_path_equals_standard_twin(backend, rng, leading):
    from xcnn.ops import standard_only

    x = backend.asarray(rng.standard_normal((*leading, 7)), dtype="float32")
    w = backend.asarray(rng.standard_normal((5, 7)), dtype="float32")
    b = backend.asarray(rng.standard_normal(5), dtype="float32")
    gy = backend.asarray(rng.standard_normal((*leading, 5)), dtype="float32")
    fast = (linear(x, w, b), *linear_backward(gy, x, w))
    with standard_only():
        twin = (linear(x, w, b), *linear_backward(gy, x, w))
    for ours, reference in zip(fast, twin, strict=True):
        assert tuple(ours.shape) == tuple(reference.shape) and ours.dtype == reference.dtype
        np.testing.assert_allclose(_host(backend, ours), _host(backend, reference), rtol=1e-6)


@pytest.mark.parametrize("leading", [(6,), (2, 3), ()], ids=["2d", "3d", "1d"])
def test_fused_relu_equals_linear_then_relu(backend, rng, leading):
    """relu=True / relu_output= give exactly relu(linear) and its gradients, from the
    fast path and its twin, with outputs that are negative, zero and NaN."""
    from xcnn.ops import relu, relu_backward, standard_only

    x = rng.standard_normal((*leading, 7))
    x[..., 0] = np.nan if leading == (6,) else x[..., 0]  # NaN rows stay NaN
    x = backend.asarray(x, dtype="float32")
    w_host = rng.standard_normal((5, 7))
    w_host[0] = 0.0  # with its zero bias, output 0 is exactly 0: it passes no gradient
    w = backend.asarray(w_host, dtype="float32")
    b = backend.asarray(np.array([0.0, -50.0, 50.0, 0.5, -0.5]), dtype="float32")
    gy = backend.asarray(rng.standard_normal((*leading, 5)), dtype="float32")
    plain = linear(x, w, b)
    expected = (relu(plain), *linear_backward(relu_backward(gy, plain), x, w))
    expected = [_host(backend, a) for a in expected]
    for twin in (False, True):
        with standard_only() if twin else contextlib.nullcontext():
            y = linear(x, w, b, relu=True)
            got = (y, *linear_backward(gy, x, w, relu_output=y))
        for ours, reference in zip(got, expected, strict=True):
            np.testing.assert_array_equal(_host(backend, ours), reference)


def test_relu_output_of_the_wrong_shape_raises(backend, rng):
    x, w, b = _arrays(backend, rng, (4,), 3, 2)
    y = linear(x, w, b, relu=True)
    with pytest.raises(ValueError, match=r"relu_output of shape \(4, 2\).*got shape \(3, 2\)"):
        linear_backward(y, x, w, relu_output=y[:3, ...])
