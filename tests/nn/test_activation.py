"""nn.ReLU / LeakyReLU / Sigmoid / Tanh: PyTorch parity sweep, gradients, caching, errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from xcnn import backends, nn
from xcnn.testing import gradcheck

LAYERS = {
    "ReLU": lambda: nn.ReLU(),
    "LeakyReLU": lambda: nn.LeakyReLU(),
    "LeakyReLU(0.3)": lambda: nn.LeakyReLU(0.3),
    "Sigmoid": lambda: nn.Sigmoid(),
    "Tanh": lambda: nn.Tanh(),
}


def _host(backend, a):
    return np.asarray(backend.to_numpy(a))


def _random_layer(rng):
    kind = int(rng.integers(4))
    if kind == 0:
        return nn.ReLU(), torch.nn.ReLU()
    if kind == 1:
        slope = float(rng.choice([0.01, 0.0, 0.2, 1.5, -0.5, float(rng.random())]))
        return nn.LeakyReLU(slope), torch.nn.LeakyReLU(slope)
    if kind == 2:
        return nn.Sigmoid(), torch.nn.Sigmoid()
    return nn.Tanh(), torch.nn.Tanh()


@pytest.mark.torch
def test_matches_torch_on_random_configs(backend, rng):
    """50 seeded configs on NumPy (10 on array_api_strict): layer, shape, slope, scale."""
    for _ in range(50 if backend.name == "numpy" else 10):
        layer, twin = _random_layer(rng)
        shape = tuple(int(v) for v in rng.integers(1, 6, size=rng.integers(1, 5)))
        x_host = (rng.standard_normal(shape) * rng.choice([0.1, 1.0, 10.0])).astype(np.float32)
        x_host.flat[0] = 0.0
        gy_host = rng.standard_normal(shape).astype(np.float32)

        y = layer(backend.asarray(x_host))
        gx = layer.backward(backend.asarray(gy_host))
        tx = torch.from_numpy(x_host).requires_grad_()
        ty = twin(tx)
        ty.backward(torch.from_numpy(gy_host))
        np.testing.assert_allclose(_host(backend, y), ty.detach().numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(_host(backend, gx), tx.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("shape", [(1, 3), (2, 3, 4, 5)], ids=["batch1", "4d"])
def test_gradcheck(backend, rng, name, shape):
    host = rng.standard_normal(shape)
    host = np.sign(host) * (0.05 + np.abs(host))  # away from the kink at 0
    x = backend.asarray(host, dtype="float64")
    assert gradcheck(LAYERS[name]().double(), x, max_elements=None)


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_namespace_and_non_contiguous(backend, rng, name, dtype):
    host = rng.standard_normal((3, 4, 5)).astype(dtype)
    strided = np.repeat(host, 2, axis=2)[..., ::2]
    transposed_back = np.ascontiguousarray(host.transpose(2, 1, 0)).transpose(2, 1, 0)
    if backend.name == "numpy":
        assert not strided.flags.c_contiguous and not transposed_back.flags.c_contiguous
    gy = backend.asarray(rng.standard_normal((3, 4, 5)), dtype=dtype)
    results = []
    for h in (host, strided, transposed_back):
        layer = LAYERS[name]()
        y = layer(backend.asarray(h))
        gx = layer.backward(gy)
        for a in (y, gx):
            assert backends.dtype_name(a.dtype) == dtype
            assert backends.namespace_name(a) == backend.name
        results.append((_host(backend, y), _host(backend, gx)))
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_eval_caches_nothing_and_backward_needs_a_training_forward(backend, name):
    layer = LAYERS[name]()
    label = re.escape(layer._label())
    x = backend.asarray(np.ones((2, 3)), dtype="float32")
    with pytest.raises(RuntimeError, match=label + r": backward\(\) called without"):
        layer.backward(x)
    layer.eval()
    y = layer(x)
    assert layer._pending() == 0
    assert tuple(y.shape) == (2, 3)
    with pytest.raises(RuntimeError, match=label + r": backward\(\) called without"):
        layer.backward(x)
    layer.train()
    layer(x)
    layer.backward(x)
    assert layer._pending() == 0  # backward frees the cache
    with pytest.raises(RuntimeError, match=label):
        layer.backward(x)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_bad_inputs_raise_clear_errors(backend, name):
    layer = LAYERS[name]()
    label = re.escape(layer._label())
    with pytest.raises(TypeError, match=label + ": expected a floating-point input, got dtype int"):
        layer(backend.asarray(np.arange(3)))
    with pytest.raises(TypeError, match=label + ": expected an array, got list"):
        layer([1.0, 2.0])
    layer(backend.asarray(np.ones((2, 3)), dtype="float32"))
    with pytest.raises(
        ValueError, match=label + r": expected a gradient of the output's shape \(2, 3\)"
    ):
        layer.backward(backend.asarray(np.ones((3, 2)), dtype="float32"))


def test_labels_and_slope_validation():
    assert repr(nn.ReLU()) == "ReLU()"
    assert repr(nn.LeakyReLU()) == "LeakyReLU(negative_slope=0.01)"
    assert repr(nn.LeakyReLU(0.2)) == "LeakyReLU(negative_slope=0.2)"
    assert repr(nn.Sigmoid()) == "Sigmoid()" and repr(nn.Tanh()) == "Tanh()"
    assert list(nn.ReLU().parameters()) == []
    with pytest.raises(TypeError, match="LeakyReLU: negative_slope must be a real number"):
        nn.LeakyReLU("0.2")
