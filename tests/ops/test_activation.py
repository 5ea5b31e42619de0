"""xcnn.ops activations: PyTorch parity, kinks, stability, gradients, dtypes, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from xcnn import backends
from xcnn import ops as F
from xcnn.testing import gradcheck

# name -> (forward, backward taking (gy, x, y), torch function)
OPS = {
    "relu": (F.relu, lambda gy, x, y: F.relu_backward(gy, x), torch.relu),
    "leaky_relu": (
        lambda x: F.leaky_relu(x, 0.2),
        lambda gy, x, y: F.leaky_relu_backward(gy, x, 0.2),
        lambda t: torch.nn.functional.leaky_relu(t, 0.2),
    ),
    "sigmoid": (F.sigmoid, lambda gy, x, y: F.sigmoid_backward(gy, y), torch.sigmoid),
    "tanh": (F.tanh, lambda gy, x, y: F.tanh_backward(gy, y), torch.tanh),
}


def _host(backend, a):
    return np.asarray(backend.to_numpy(a))


def _torch_pair(fn, x_host, gy_host):
    t = torch.from_numpy(x_host).requires_grad_()
    out = fn(t)
    out.backward(torch.from_numpy(gy_host))
    return out.detach().numpy(), t.grad.numpy()


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(OPS))
def test_matches_torch(backend, rng, name):
    forward, backward, torch_fn = OPS[name]
    for shape in [(7,), (3, 5), (2, 3, 4, 5)]:
        x_host = (rng.standard_normal(shape) * 4).astype(np.float32)
        x_host.flat[0] = 0.0  # the kink: PyTorch's one-sided convention must agree
        gy_host = rng.standard_normal(shape).astype(np.float32)
        x = backend.asarray(x_host)
        y = forward(x)
        gx = backward(backend.asarray(gy_host), x, y)
        ty, tgx = _torch_pair(torch_fn, x_host, gy_host)
        np.testing.assert_allclose(_host(backend, y), ty, rtol=1e-6, atol=1e-7)
        # y = tanh(x) may differ from PyTorch's by one ulp near |y| = 1, where
        # 1 - y^2 is itself ~1e-7: hence an absolute tolerance on the gradient.
        np.testing.assert_allclose(_host(backend, gx), tgx, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(OPS))
def test_gradcheck(backend, rng, name):
    forward, backward, _ = OPS[name]
    # Keep inputs away from the relu kink, where finite differences straddle two slopes.
    host = rng.standard_normal((3, 4, 5))
    host = np.sign(host) * (0.05 + np.abs(host))
    x = backend.asarray(host, dtype="float64")
    cache = {}

    def fn(x):
        cache["xy"] = (x, forward(x))
        return cache["xy"][1]

    def bwd(gy):
        x, y = cache["xy"]
        return backward(gy, x, y)

    assert gradcheck(fn, [x], bwd, max_elements=None)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_is_stable_at_extremes(backend, dtype):
    host = np.array([-1e4, -800.0, -100.0, -30.0, 0.0, 30.0, 100.0, 800.0, 1e4])
    x = backend.asarray(host, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow in exp would warn on NumPy
        y = F.sigmoid(x)
        gx = F.sigmoid_backward(backend.xp.ones_like(y), y)
    # The float64 reference, rounded: PyTorch's float32 sigmoid flushes e^-100 to 0.
    expected = torch.sigmoid(torch.from_numpy(host)).numpy().astype(dtype)
    np.testing.assert_allclose(_host(backend, y), expected, rtol=1e-6, atol=0)
    assert np.all(np.isfinite(_host(backend, gx)))
    assert _host(backend, y)[0] == 0.0 and _host(backend, y)[-1] == 1.0


def test_tanh_is_stable_at_extremes(backend):
    x = backend.asarray(np.array([-1e4, 0.0, 1e4]), dtype="float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = F.tanh(x)
    np.testing.assert_array_equal(_host(backend, y), np.array([-1.0, 0.0, 1.0], np.float32))


def test_relu_propagates_nan_and_zeroes_the_kink_gradient(backend):
    x = backend.asarray(np.array([np.nan, -1.0, 0.0, 2.0]), dtype="float32")
    y = _host(backend, F.relu(x))
    assert np.isnan(y[0]) and list(y[1:]) == [0.0, 0.0, 2.0]
    gx = F.relu_backward(backend.xp.ones_like(x), x)
    assert list(_host(backend, gx)[1:]) == [0.0, 0.0, 1.0]
    gl = F.leaky_relu_backward(backend.xp.ones_like(x), x, 0.3)
    np.testing.assert_allclose(_host(backend, gl)[1:], [0.3, 0.3, 1.0], rtol=1e-6)


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_namespace_and_non_contiguous(backend, rng, name, dtype):
    forward, backward, _ = OPS[name]
    host = rng.standard_normal((4, 6)).astype(dtype)
    strided = np.repeat(host, 2, axis=1)[:, ::2]
    transposed_back = np.ascontiguousarray(host.T).T
    if backend.name == "numpy":
        assert not strided.flags.c_contiguous and not transposed_back.flags.c_contiguous
    gy_host = rng.standard_normal((4, 6)).astype(dtype)
    results = []
    for h in (host, strided, transposed_back):
        x = backend.asarray(h)
        y = forward(x)
        gx = backward(backend.asarray(gy_host), x, y)
        for a in (y, gx):
            assert backends.dtype_name(a.dtype) == dtype
            assert backends.namespace_name(a) == backend.name
        results.append((_host(backend, y), _host(backend, gx)))
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            np.testing.assert_array_equal(a, b)


def test_errors_name_the_op(backend):
    ints = backend.asarray(np.arange(4))
    for fn, name in [(F.relu, "relu"), (F.sigmoid, "sigmoid"), (F.tanh, "tanh")]:
        with pytest.raises(
            TypeError, match=f"{name}: expected a floating-point array, got dtype int"
        ):
            fn(ints)
    with pytest.raises(TypeError, match="leaky_relu: expected a floating-point array"):
        F.leaky_relu(ints)
    with pytest.raises(TypeError, match="relu: expected an array, got list"):
        F.relu([1.0, -1.0])
    x = backend.asarray(np.zeros((2, 3)), dtype="float32")
    with pytest.raises(TypeError, match="leaky_relu: negative_slope must be a real number"):
        F.leaky_relu(x, "0.1")
    bad_gy = backend.asarray(np.zeros((3, 2)), dtype="float32")
    for fn, name, what in [
        (F.relu_backward, "relu_backward", "input"),
        (F.leaky_relu_backward, "leaky_relu_backward", "input"),
        (F.sigmoid_backward, "sigmoid_backward", "output"),
        (F.tanh_backward, "tanh_backward", "output"),
    ]:
        with pytest.raises(
            ValueError,
            match=rf"{name}: expected gy of shape \(2, 3\) \(the {what}'s\), got shape \(3, 2\)",
        ):
            fn(bad_gy, x)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_relu_fast_path_equals_standard_twin_bit_for_bit(backend, rng, dtype):
    """Incl. NaN, infinities, signed zeros and a non-contiguous input (the twin's case)."""
    from xcnn.ops._dispatch import fast_path

    if fast_path(backend.xp) is None:
        pytest.skip("array_api_strict has no fast path: the standard code is the only one")
    values = rng.standard_normal((4, 3, 5, 6))
    values.flat[:6] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30]
    x = backend.asarray(values, dtype=dtype)
    gy = backend.asarray(rng.standard_normal(values.shape), dtype=dtype)
    gy[0, 0, 0, :2] = backend.asarray([np.inf, np.nan], dtype=dtype)
    for xs, gys in ((x, gy), (x[:, :, ::2], gy[:, :, ::2])):
        with np.errstate(invalid="ignore"):  # inf * 0 is NaN on both paths
            fast = (F.relu(xs), F.relu_backward(gys, xs))
            with F.standard_only():
                twin = (F.relu(xs), F.relu_backward(gys, xs))
        for ours, reference in zip(fast, twin, strict=True):
            assert ours.dtype == reference.dtype
            np.testing.assert_array_equal(backend.to_numpy(ours), backend.to_numpy(reference))
