"""nn.Dropout: statistics, owned generator and its state, eval identity, gradient, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from xcnn import backends, nn
from xcnn.backends import Generator
from xcnn.backends import _random as random_module
from xcnn.nn import Module
from xcnn.ops import dropout
from xcnn.testing import gradcheck


def _host(backend, a):
    return np.asarray(backend.to_numpy(a))


@pytest.mark.parametrize("p", [0.2, 0.5, 0.7])
def test_statistics(backend, p):
    n = 40_000
    layer = nn.Dropout(p, rng=0)
    x = backend.asarray(np.full((200, 200), 2.0), dtype="float32")
    y = _host(backend, layer(x))
    assert abs(float(np.mean(y == 0.0)) - p) < 5 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(y[y != 0.0], np.float32(2.0) * np.float32(1 / (1 - p)), rtol=1e-6)
    assert abs(float(y.mean()) - 2.0) < 5 * 2.0 * np.sqrt(p / (1 - p) / n)
    # The gradient goes through exactly the kept elements, with the same scale.
    gx = _host(backend, layer.backward(backend.xp.ones_like(x)))
    np.testing.assert_array_equal(gx * np.float32(2.0), y)


@pytest.mark.torch
def test_same_statistics_as_torch_dropout(backend):
    """Masks differ from PyTorch's (different streams) but the law is the same."""
    p, shape = 0.3, (100, 100)
    y = _host(backend, nn.Dropout(p, rng=1)(backend.asarray(np.ones(shape), dtype="float32")))
    ty = torch.nn.Dropout(p)(torch.ones(shape)).numpy()
    assert set(np.unique(y)) == set(np.unique(ty))
    assert abs(float(np.mean(y == 0)) - float(np.mean(ty == 0))) < 10 * np.sqrt(
        p * (1 - p) / y.size
    )


def test_seed_reproducibility_and_fresh_masks_per_call(backend, rng):
    x = backend.asarray(rng.standard_normal((8, 9)), dtype="float32")
    a, b = nn.Dropout(0.5, rng=42), nn.Dropout(0.5, rng=42)
    ya1, yb1 = _host(backend, a(x)), _host(backend, b(x))
    np.testing.assert_array_equal(ya1, yb1)
    ya2 = _host(backend, a(x))
    assert not np.array_equal(ya1, ya2)  # the stream advances between batches
    assert not np.array_equal(ya1, _host(backend, nn.Dropout(0.5, rng=43)(x)))
    # The layer's mask is what the functional op gives for the same stream.
    expected, _ = dropout(x, 0.5, Generator(42))
    np.testing.assert_array_equal(ya1, _host(backend, expected))


def test_generator_state_round_trip_for_checkpoints(backend, rng):
    layer = nn.Dropout(0.5, rng=3)
    x = backend.asarray(rng.standard_normal((5, 6)), dtype="float32")
    layer(x)
    state = json.loads(json.dumps(layer.generator.state_dict()))  # serialisable
    expected = _host(backend, layer(x))
    resumed = nn.Dropout(0.5, rng=999)
    resumed.generator.load_state_dict(state)
    np.testing.assert_array_equal(_host(backend, resumed(x)), expected)


def test_rng_argument_forms(backend, rng, monkeypatch):
    x = backend.asarray(np.ones((20, 20)), dtype="float32")
    shared = Generator(9)
    layer = nn.Dropout(0.5, rng=shared)
    assert layer.generator is shared
    from_numpy = nn.Dropout(0.5, rng=np.random.default_rng(9))
    from_int = nn.Dropout(0.5, rng=9)
    np.testing.assert_array_equal(_host(backend, from_numpy(x)), _host(backend, from_int(x)))
    # rng=None seeds from xcnn's default generator: manual_seed makes it reproducible.
    monkeypatch.setattr(random_module, "_default", random_module._default)
    backends.manual_seed(5)
    first = _host(backend, nn.Dropout(0.5)(x))
    backends.manual_seed(5)
    np.testing.assert_array_equal(_host(backend, nn.Dropout(0.5)(x)), first)
    for bad in ("seed", 1.5, True):
        with pytest.raises(TypeError, match=r"Dropout\(p=0\.5\): rng must be None, an int seed"):
            nn.Dropout(0.5, rng=bad)


class _FixedMaskDropout(Module):
    """Restores the generator's state before each forward, so every call draws one mask."""

    def __init__(self, p):
        super().__init__()
        self.inner = nn.Dropout(p, rng=11)
        self.state = self.inner.generator.state_dict()

    def forward(self, x):
        self.inner.generator.load_state_dict(self.state)
        return self.inner(x)

    def backward(self, grad_output):
        return self.inner.backward(grad_output)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.6])
def test_gradcheck_with_the_mask_held_fixed(backend, rng, p):
    x = backend.asarray(rng.standard_normal((3, 2, 4)), dtype="float64")
    assert gradcheck(_FixedMaskDropout(p), x, max_elements=None)


def test_eval_and_p_zero_are_the_identity(backend, rng):
    x = backend.asarray(rng.standard_normal((4, 5)), dtype="float32")
    layer = nn.Dropout(0.5, rng=0).eval()
    state = layer.generator.state_dict()
    assert layer(x) is x
    assert layer._pending() == 0
    assert layer.generator.state_dict() == state  # eval draws nothing
    with pytest.raises(RuntimeError, match=r"Dropout\(p=0\.5\): backward\(\) called without"):
        layer.backward(x)
    zero = nn.Dropout(0.0)
    assert zero(x) is x
    # training-mode backward works with p = 0: the gradient passes unchanged
    np.testing.assert_array_equal(_host(backend, zero.backward(x)), _host(backend, x))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_namespace_and_non_contiguous(backend, rng, dtype):
    host = rng.standard_normal((4, 6)).astype(dtype)
    strided = np.repeat(host, 2, axis=1)[:, ::2]
    if backend.name == "numpy":
        assert not strided.flags.c_contiguous
    outs = []
    for h in (host, strided):
        layer = nn.Dropout(0.4, rng=2)
        y = layer(backend.asarray(h))
        gx = layer.backward(y)
        for a in (y, gx):
            assert backends.dtype_name(a.dtype) == dtype
            assert backends.namespace_name(a) == backend.name
        outs.append((_host(backend, y), _host(backend, gx)))
    for a, b in zip(outs[0], outs[1], strict=True):
        np.testing.assert_array_equal(a, b)


def test_errors(backend):
    for p in (1.0, -0.2, 2, "0.5", True):
        with pytest.raises(ValueError, match=r"Dropout: expected a drop probability p in \[0, 1\)"):
            nn.Dropout(p)
    layer = nn.Dropout(0.5)
    assert repr(layer) == "Dropout(p=0.5)"
    with pytest.raises(RuntimeError, match=r"Dropout\(p=0\.5\): backward\(\) called without"):
        layer.backward(backend.asarray(np.ones(3), dtype="float32"))
    with pytest.raises(TypeError, match=r"Dropout\(p=0\.5\): expected a floating-point input"):
        layer(backend.asarray(np.arange(3)))
    layer(backend.asarray(np.ones((2, 3)), dtype="float32"))
    with pytest.raises(ValueError, match=r"Dropout\(p=0\.5\): expected a gradient .* \(2, 3\)"):
        layer.backward(backend.asarray(np.ones((3, 2)), dtype="float32"))
