"""nn.Flatten: PyTorch parity sweep, gradient, caching, dtypes, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xcnn import backends, nn
from xcnn.testing import gradcheck


def _host(backend, a):
    return np.asarray(backend.to_numpy(a))


@pytest.mark.torch
def test_matches_torch_on_random_configs(backend, rng):
    """50 seeded configs on NumPy (10 on array_api_strict): ranks 2-5 and dimension ranges."""
    for _ in range(50 if backend.name == "numpy" else 10):
        ndim = int(rng.integers(2, 6))
        shape = tuple(int(v) for v in rng.integers(1, 5, size=ndim))
        if rng.random() < 0.5:
            start, end = 1, -1
        else:
            start, end = sorted(int(v) for v in rng.integers(0, ndim, size=2))
            start -= ndim * int(rng.integers(2))  # sometimes counted from the end
            end -= ndim * int(rng.integers(2))
        layer, twin = nn.Flatten(start, end), torch.nn.Flatten(start, end)
        x_host = rng.standard_normal(shape).astype(np.float32)
        tx = torch.from_numpy(x_host).requires_grad_()
        ty = twin(tx)
        gy_host = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
        ty.backward(torch.from_numpy(gy_host))

        y = layer(backend.asarray(x_host))
        gx = layer.backward(backend.asarray(gy_host))
        np.testing.assert_array_equal(_host(backend, y), ty.detach().numpy())
        np.testing.assert_array_equal(_host(backend, gx), tx.grad.numpy())


@pytest.mark.parametrize("shape", [(1, 3, 2, 2), (2, 5), (3, 1, 4)], ids=["batch1", "2d", "3d"])
def test_gradcheck(backend, rng, shape):
    x = backend.asarray(rng.standard_normal(shape), dtype="float64")
    assert gradcheck(nn.Flatten(), x, max_elements=None)


def test_lenet_shape_and_label(backend):
    layer = nn.Flatten()
    assert repr(layer) == "Flatten()"
    assert repr(nn.Flatten(0, 2)) == "Flatten(start_dim=0, end_dim=2)"
    y = layer(backend.asarray(np.zeros((8, 16, 5, 5)), dtype="float32"))
    assert tuple(y.shape) == (8, 400)
    assert tuple(layer.backward(y).shape) == (8, 16, 5, 5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_namespace_and_non_contiguous(backend, rng, dtype):
    host = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    strided = np.repeat(host, 2, axis=3)[..., ::2]
    transposed_back = np.ascontiguousarray(host.transpose(3, 2, 1, 0)).transpose(3, 2, 1, 0)
    if backend.name == "numpy":
        assert not strided.flags.c_contiguous and not transposed_back.flags.c_contiguous
    gy = backend.asarray(rng.standard_normal((2, 60)), dtype=dtype)
    outs = []
    for h in (host, strided, transposed_back):
        layer = nn.Flatten()
        y = layer(backend.asarray(h))
        gx = layer.backward(gy)
        for a in (y, gx):
            assert backends.dtype_name(a.dtype) == dtype
            assert backends.namespace_name(a) == backend.name
        outs.append((_host(backend, y), _host(backend, gx)))
    np.testing.assert_array_equal(outs[0][0], host.reshape(2, 60))
    for other in outs[1:]:
        for a, b in zip(outs[0], other, strict=True):
            np.testing.assert_array_equal(a, b)


def test_eval_caches_nothing_and_backward_needs_forward(backend):
    layer = nn.Flatten()
    x = backend.asarray(np.ones((2, 3, 4)), dtype="float32")
    gy = backend.asarray(np.ones((2, 12)), dtype="float32")
    with pytest.raises(RuntimeError, match=r"Flatten\(\): backward\(\) called without"):
        layer.backward(gy)
    layer.eval()
    assert tuple(layer(x).shape) == (2, 12)
    assert layer._pending() == 0
    with pytest.raises(RuntimeError, match=r"Flatten\(\): backward\(\) called without"):
        layer.backward(gy)


def test_errors(backend):
    layer = nn.Flatten()
    with pytest.raises(
        ValueError,
        match=r"Flatten\(\): expected an input with at least 2 dimensions, got shape \(5,\)",
    ):
        layer(backend.asarray(np.ones(5), dtype="float32"))
    with pytest.raises(ValueError, match=r"at least 4 dimensions, got shape \(2, 3, 4\)"):
        nn.Flatten(3)(backend.asarray(np.ones((2, 3, 4)), dtype="float32"))
    with pytest.raises(ValueError, match="start_dim 2 comes after end_dim 1"):
        nn.Flatten(2, 1)(backend.asarray(np.ones((2, 3, 4)), dtype="float32"))
    with pytest.raises(TypeError, match=r"Flatten\(\): expected an array, got list"):
        layer([[1.0]])
    with pytest.raises(TypeError, match="Flatten: start_dim must be an int"):
        nn.Flatten(1.0)
    layer(backend.asarray(np.ones((2, 3, 4)), dtype="float32"))
    with pytest.raises(
        ValueError, match=r"Flatten\(\): expected a gradient of the output's shape \(2, 12\)"
    ):
        layer.backward(backend.asarray(np.ones((2, 3, 4)), dtype="float32"))
