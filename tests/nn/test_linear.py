"""nn.Linear: PyTorch parity on a seeded sweep, gradients, init, dtypes, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xcnn import backends, nn
from xcnn.testing import gradcheck


def _host(backend, a):
    return np.asarray(backend.to_numpy(a))


def _torch_twin(layer):
    twin = torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    return twin


@pytest.mark.torch
def test_matches_torch_linear_on_random_configs(backend, rng):
    """50 seeded configs on NumPy (10 on array_api_strict): output, input and parameter grads."""
    for _ in range(50 if backend.name == "numpy" else 10):
        n_in, n_out = (int(v) for v in rng.integers(1, 40, size=2))
        has_bias = bool(rng.random() < 0.75)
        lead = (int(rng.integers(1, 9)),)
        if rng.random() < 0.25:
            lead = (*lead, int(rng.integers(1, 4)))  # extra leading dimension
        layer = nn.Linear(n_in, n_out, bias=has_bias, rng=int(rng.integers(1000)))
        twin = _torch_twin(layer)
        x_host = rng.standard_normal((*lead, n_in)).astype(np.float32)
        gy_host = rng.standard_normal((*lead, n_out)).astype(np.float32)

        y = layer(backend.asarray(x_host))
        gx = layer.backward(backend.asarray(gy_host))
        tx = torch.from_numpy(x_host).requires_grad_()
        ty = twin(tx)
        ty.backward(torch.from_numpy(gy_host))

        tol = dict(rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(_host(backend, y), ty.detach().numpy(), **tol)
        np.testing.assert_allclose(_host(backend, gx), tx.grad.numpy(), **tol)
        np.testing.assert_allclose(
            _host(backend, layer.weight.grad), twin.weight.grad.numpy(), **tol
        )
        if has_bias:
            np.testing.assert_allclose(
                _host(backend, layer.bias.grad), twin.bias.grad.numpy(), **tol
            )


@pytest.mark.parametrize(
    "shape, n_out, bias",
    [((4, 5), 3, True), ((1, 7), 2, True), ((3, 1), 5, False), ((2, 3, 4), 3, True)],
    ids=["basic", "batch1", "in1-no-bias", "3d-input"],
)
def test_gradcheck(backend, rng, shape, n_out, bias):
    layer = nn.Linear(shape[-1], n_out, bias=bias, rng=0).double()
    x = backend.asarray(rng.standard_normal(shape), dtype="float64")
    assert gradcheck(layer, x, max_elements=None)


def test_default_init_is_pytorch_uniform_and_seeded(backend):
    layer = nn.Linear(64, 32, rng=5)
    bound = 1.0 / math.sqrt(64)
    w, b = _host(backend, layer.weight.data), _host(backend, layer.bias.data)
    assert w.shape == (32, 64) and b.shape == (32,)
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    # U(-b, b) fills its range: the extremes come close to the bound.
    assert np.abs(w).max() > 0.95 * bound
    assert abs(float(w.std()) - bound / math.sqrt(3)) < 0.1 * bound
    with backends.use("numpy"):
        reference = nn.Linear(64, 32, rng=5)
    for key, value in reference.state_dict().items():
        np.testing.assert_array_equal(layer.state_dict()[key], value)
    assert not np.array_equal(nn.Linear(64, 32, rng=6).state_dict()["weight"], w)


def test_label_and_parameters(backend):
    layer = nn.Linear(400, 120)
    assert repr(layer) == "Linear(400->120)"
    assert repr(nn.Linear(3, 2, bias=False)) == "Linear(3->2, bias=False)"
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    assert [name for name, _ in nn.Linear(3, 2, bias=False).named_parameters()] == ["weight"]
    assert backends.namespace_name(layer.weight.data) == backend.name


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_output_dtype_and_namespace(backend, rng, dtype):
    layer = nn.Linear(6, 4, dtype=dtype, rng=1)
    x = backend.asarray(rng.standard_normal((3, 6)), dtype=dtype)
    y = layer(x)
    gx = layer.backward(y)
    for a in (y, gx, layer.weight.grad, layer.bias.grad):
        assert backends.dtype_name(a.dtype) == dtype
        assert backends.namespace_name(a) == backend.name
    expected = _host(backend, x) @ _host(backend, layer.weight.data).T + _host(
        backend, layer.bias.data
    )
    np.testing.assert_allclose(_host(backend, y), expected, rtol=1e-6)


def test_non_contiguous_input_gives_identical_results(backend, rng):
    layer = nn.Linear(5, 3, rng=2)
    x_host = rng.standard_normal((4, 5)).astype(np.float32)
    strided = np.repeat(x_host, 2, axis=0)[::2]
    transposed_back = np.ascontiguousarray(x_host.T).T
    if backend.name == "numpy":
        assert not strided.flags.c_contiguous and not transposed_back.flags.c_contiguous
    gy = backend.asarray(rng.standard_normal((4, 3)), dtype="float32")
    results = []
    for host in (x_host, strided, transposed_back):
        layer.zero_grad()
        y = layer(backend.asarray(host))
        gx = layer.backward(gy)
        results.append([_host(backend, a) for a in (y, gx, layer.weight.grad, layer.bias.grad)])
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_gradients_accumulate(backend, rng):
    layer = nn.Linear(3, 2, rng=3)
    x = backend.asarray(rng.standard_normal((4, 3)), dtype="float32")
    gy = backend.asarray(rng.standard_normal((4, 2)), dtype="float32")
    layer(x)
    layer.backward(gy)
    once = _host(backend, layer.weight.grad).copy()
    layer(x)
    layer.backward(gy)
    np.testing.assert_allclose(_host(backend, layer.weight.grad), 2 * once, rtol=1e-6)


def test_eval_forward_caches_nothing(backend, rng):
    layer = nn.Linear(3, 2, rng=0).eval()
    x = backend.asarray(rng.standard_normal((4, 3)), dtype="float32")
    layer(x)
    assert layer._pending() == 0
    with pytest.raises(RuntimeError, match=r"Linear\(3->2\): backward\(\) called without"):
        layer.backward(backend.asarray(np.zeros((4, 2)), dtype="float32"))


def test_backward_before_forward(backend):
    with pytest.raises(RuntimeError, match=r"Linear\(3->2\): backward\(\) called without"):
        nn.Linear(3, 2).backward(backend.asarray(np.zeros((4, 2)), dtype="float32"))


def test_bad_inputs_raise_clear_errors(backend):
    layer = nn.Linear(400, 120)
    with pytest.raises(
        ValueError,
        match=r"Linear\(400->120\): expected input of shape \(N, 400\).*got shape \(8, 256\)",
    ):
        layer(backend.asarray(np.zeros((8, 256)), dtype="float32"))
    with pytest.raises(ValueError, match=r"Linear\(400->120\): .*got shape \(\)"):
        layer(backend.xp.asarray(1.0, dtype=backend.xp.float32))
    with pytest.raises(TypeError, match=r"Linear\(400->120\): input dtype float64 differs"):
        layer(backend.asarray(np.zeros((2, 400)), dtype="float64"))
    layer(backend.asarray(np.zeros((2, 400)), dtype="float32"))
    with pytest.raises(
        ValueError,
        match=r"Linear\(400->120\): expected a gradient .* \(2, 120\), got shape \(2, 3\)",
    ):
        layer.backward(backend.asarray(np.zeros((2, 3)), dtype="float32"))


def test_constructor_rejects_bad_sizes(backend):
    for args in ((0, 3), (3, -1), (2.5, 3), (True, 3)):
        with pytest.raises(ValueError, match=r"Linear: .* must be a positive int"):
            nn.Linear(*args)
    with pytest.raises(ValueError, match="float32 or float64"):
        nn.Linear(3, 2, dtype="int32")


def test_input_from_another_backend_is_refused(rng):
    with backends.use("array_api_strict"):
        layer = nn.Linear(4, 2, rng=0)
    with pytest.raises(
        TypeError, match=r"Linear\(4->2\): input is a numpy array but the parameters live on"
    ):
        layer(np.zeros((3, 4), dtype=np.float32))
