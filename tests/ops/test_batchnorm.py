"""Batch-norm ops: PyTorch oracle, gradient checks, running statistics, dtypes, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xcnn import backends
from xcnn.ops import (
    batch_norm_backward,
    batch_norm_eval,
    batch_norm_eval_backward,
    batch_norm_train,
    batch_norm_update_running,
    standard_only,
)
from xcnn.ops._dispatch import fast_path
from xcnn.testing import gradcheck

SHAPES = [
    pytest.param((6, 3), id="N,C"),
    pytest.param((4, 3, 5), id="N,C,L"),
    pytest.param((3, 2, 4, 5), id="N,C,H,W"),
    pytest.param((1, 2, 3, 3), id="batch1-4d"),
]


def arrays(backend, rng, shape, dtype="float32"):
    c = shape[1]
    x = rng.standard_normal(shape) * 2.0 + 0.5
    gamma = rng.standard_normal(c)
    beta = rng.standard_normal(c)
    return tuple(backend.asarray(a, dtype=dtype) for a in (x, gamma, beta))


@pytest.mark.torch
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("shape", SHAPES)
def test_train_matches_torch(backend, rng, shape, affine):
    x, gamma, beta = arrays(backend, rng, shape)
    if not affine:
        gamma = beta = None
    host_gy = rng.standard_normal(shape).astype(np.float32)
    tx = torch.from_numpy(backend.to_numpy(x)).requires_grad_()
    tg = torch.from_numpy(backend.to_numpy(gamma)).requires_grad_() if affine else None
    tb = torch.from_numpy(backend.to_numpy(beta)).requires_grad_() if affine else None
    t_mean = torch.zeros(shape[1])
    t_var = torch.ones(shape[1])
    ty = torch.nn.functional.batch_norm(tx, t_mean, t_var, tg, tb, True, 0.3, 1e-5)
    ty.backward(torch.from_numpy(host_gy))

    y, cache = batch_norm_train(x, gamma, beta, 1e-5)
    gx, ggamma, gbeta = batch_norm_backward(backend.asarray(host_gy), cache, gamma)
    np.testing.assert_allclose(backend.to_numpy(y), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(backend.to_numpy(gx), tx.grad.numpy(), rtol=1e-5, atol=1e-5)
    if affine:
        np.testing.assert_allclose(backend.to_numpy(ggamma), tg.grad.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(backend.to_numpy(gbeta), tb.grad.numpy(), rtol=1e-5, atol=1e-5)
    zeros = backend.xp.zeros((shape[1],), dtype=x.dtype)
    ones = backend.xp.ones((shape[1],), dtype=x.dtype)
    mean, var = batch_norm_update_running(zeros, ones, cache, 0.3)
    np.testing.assert_allclose(backend.to_numpy(mean), t_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(backend.to_numpy(var), t_var.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.torch
@pytest.mark.parametrize("shape", SHAPES)
def test_eval_matches_torch(backend, rng, shape):
    x, gamma, beta = arrays(backend, rng, shape)
    c = shape[1]
    running_mean = backend.asarray(rng.standard_normal(c), dtype="float32")
    running_var = backend.asarray(rng.uniform(0.5, 2.0, c), dtype="float32")
    host_gy = rng.standard_normal(shape).astype(np.float32)
    t = {
        name: torch.from_numpy(backend.to_numpy(a)).requires_grad_()
        for name, a in (("x", x), ("gamma", gamma), ("beta", beta))
    }
    ty = torch.nn.functional.batch_norm(
        t["x"],
        torch.from_numpy(backend.to_numpy(running_mean)),
        torch.from_numpy(backend.to_numpy(running_var)),
        t["gamma"],
        t["beta"],
        False,
        0.1,
        1e-3,
    )
    ty.backward(torch.from_numpy(host_gy))
    y = batch_norm_eval(x, running_mean, running_var, gamma, beta, 1e-3)
    grads = batch_norm_eval_backward(
        backend.asarray(host_gy), x, running_mean, running_var, gamma, 1e-3
    )
    np.testing.assert_allclose(backend.to_numpy(y), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    for name, g in zip(("x", "gamma", "beta"), grads, strict=True):
        np.testing.assert_allclose(
            backend.to_numpy(g), t[name].grad.numpy(), rtol=1e-5, atol=1e-5, err_msg=name
        )


@pytest.mark.parametrize("shape", SHAPES)
def test_train_gradcheck(backend, rng, shape):
    x, gamma, beta = arrays(backend, rng, shape, dtype="float64")
    cache = {}

    def forward(x, gamma, beta):
        cache["gamma"] = gamma
        y, cache["c"] = batch_norm_train(x, gamma, beta, 1e-5)
        return y

    def backward(gy):
        return batch_norm_backward(gy, cache["c"], cache["gamma"])

    assert gradcheck(forward, [x, gamma, beta], backward, max_elements=40)


def test_train_gradcheck_without_affine(backend, rng):
    x, _, _ = arrays(backend, rng, (5, 3, 2), dtype="float64")
    cache = {}

    def forward(x):
        y, cache["c"] = batch_norm_train(x)
        return y

    assert gradcheck(forward, x, lambda gy: batch_norm_backward(gy, cache["c"])[0])


@pytest.mark.parametrize("shape", SHAPES)
def test_eval_gradcheck(backend, rng, shape):
    x, gamma, beta = arrays(backend, rng, shape, dtype="float64")
    mean = backend.asarray(rng.standard_normal(shape[1]), dtype="float64")
    var = backend.asarray(rng.uniform(0.5, 2.0, shape[1]), dtype="float64")
    kept = {}

    def forward(x, gamma, beta):
        kept["x"], kept["gamma"] = x, gamma
        return batch_norm_eval(x, mean, var, gamma, beta, 1e-5)

    def backward(gy):
        return batch_norm_eval_backward(gy, kept["x"], mean, var, kept["gamma"], 1e-5)

    assert gradcheck(forward, [x, gamma, beta], backward, max_elements=40)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_and_namespace_are_kept(backend, rng, dtype):
    x, gamma, beta = arrays(backend, rng, (4, 3, 2, 2), dtype=dtype)
    y, cache = batch_norm_train(x, gamma, beta)
    outs = [y, *cache, *batch_norm_backward(backend.xp.ones_like(y), cache, gamma)]
    outs.append(batch_norm_eval(x, cache.mean, cache.var, gamma, beta))
    outs += batch_norm_eval_backward(y, x, cache.mean, cache.var, gamma)
    outs += batch_norm_update_running(cache.mean, cache.var, cache, 0.1)
    for out in outs:
        assert out.dtype == x.dtype
        assert backends.namespace_name(out) == backend.name
    assert tuple(cache.mean.shape) == tuple(cache.var.shape) == (3,)


def test_statistics_are_per_channel(backend, rng):
    x, _, _ = arrays(backend, rng, (8, 3, 4, 4), dtype="float64")
    y, cache = batch_norm_train(x)
    host = backend.to_numpy(x)
    np.testing.assert_allclose(backend.to_numpy(cache.mean), host.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(backend.to_numpy(cache.var), host.var(axis=(0, 2, 3)))
    out = backend.to_numpy(y)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0.0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=(0, 2, 3)), 1.0, rtol=1e-4)


def test_non_contiguous_input_gives_identical_results(rng):
    host = (rng.standard_normal((4, 3, 5, 6)) * 3).astype(np.float32)
    transposed = np.ascontiguousarray(host.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    gy = rng.standard_normal(host.shape).astype(np.float32)
    y, cache = batch_norm_train(host)
    y2, cache2 = batch_norm_train(transposed)
    np.testing.assert_allclose(y, y2, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        batch_norm_backward(gy, cache)[0], batch_norm_backward(gy, cache2)[0], rtol=1e-5, atol=1e-6
    )
    gamma = np.linspace(0.5, 1.5, 3, dtype=np.float32)
    mean, var = cache.mean, cache.var
    np.testing.assert_array_equal(
        batch_norm_eval(host, mean, var, gamma), batch_norm_eval(transposed, mean, var, gamma)
    )


@pytest.mark.parametrize("shape", [(1, 4), (1, 4, 1), (1, 4, 1, 1)])
def test_one_value_per_channel_cannot_train(backend, shape):
    x = backend.xp.ones(shape, dtype=backend.xp.float32)
    with pytest.raises(ValueError, match="expected more than 1 value per channel when training"):
        batch_norm_train(x)
    ones = backend.xp.ones((4,), dtype=x.dtype)
    assert tuple(batch_norm_eval(x, ones, ones).shape) == shape  # eval is fine


def test_bad_arguments_raise(backend, rng):
    xp = backend.xp
    x, gamma, beta = arrays(backend, rng, (4, 3, 2, 2))
    with pytest.raises(ValueError, match=r"batch_norm_train: gamma must have shape \(3,\)"):
        batch_norm_train(x, gamma[:2], beta)
    with pytest.raises(TypeError, match="batch_norm_train: beta is float64 but the input is"):
        batch_norm_train(x, gamma, xp.astype(beta, xp.float64))
    with pytest.raises(ValueError, match=r"expected an input of shape \(N, C, ...\)"):
        batch_norm_train(xp.ones((5,), dtype=xp.float32))
    with pytest.raises(TypeError, match="expected a floating-point input"):
        batch_norm_train(xp.ones((5, 3), dtype=xp.int64))
    _, cache = batch_norm_train(x, gamma, beta)
    with pytest.raises(ValueError, match="batch_norm_backward: grad_output has shape"):
        batch_norm_backward(x[:2, ...], cache, gamma)
    with pytest.raises(ValueError, match="batch_norm_eval: running_var must have shape"):
        batch_norm_eval(x, cache.mean, cache.var[:1], gamma, beta)
    with pytest.raises(ValueError, match="batch_norm_eval_backward: grad_output has shape"):
        batch_norm_eval_backward(x[:2, ...], x, cache.mean, cache.var, gamma)


def test_output_never_aliases_the_cache(backend, rng):
    x, _, _ = arrays(backend, rng, (4, 3))
    y, cache = batch_norm_train(x)
    before = backend.to_numpy(cache.x_hat).copy()
    y *= 2.0
    np.testing.assert_array_equal(backend.to_numpy(cache.x_hat), before)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("shape", [*SHAPES, pytest.param((9, 3, 6, 5), id="pieces")])
def test_numpy_fast_path_equals_standard_twin(backend, rng, monkeypatch, shape, affine, threads):
    """The NumPy training path (pieces, threads, vecdot sums) equals the standard twin.

    Pieces of two images and a low thread grain make the 9-image batch take several
    pieces per thread, the last one partial.
    """
    if fast_path(backend.xp) != "numpy":
        pytest.skip("the batch-norm fast path is NumPy's")
    import xcnn
    from xcnn.ops import _threads
    from xcnn.ops._numpy import batchnorm as _bn_numpy

    x, gamma, beta = arrays(backend, rng, shape, "float64")
    if not affine:
        gamma = beta = None
    gy = rng.standard_normal(shape)
    monkeypatch.setattr(_bn_numpy, "_PIECE_BYTES", 2 * 8 * int(np.prod(shape[1:])))
    monkeypatch.setattr(_threads, "GRAIN", 1)
    before = xcnn.get_num_threads()
    xcnn.set_num_threads(threads)
    try:
        y, cache = batch_norm_train(x, gamma, beta)
        grads = batch_norm_backward(gy, cache, gamma)
    finally:
        xcnn.set_num_threads(before)
    with standard_only():
        y_twin, cache_twin = batch_norm_train(x, gamma, beta)
        grads_twin = batch_norm_backward(gy, cache_twin, gamma)
    for ours, twin in zip((y, *cache, *grads), (y_twin, *cache_twin, *grads_twin), strict=True):
        assert ours.dtype == twin.dtype and ours.shape == twin.shape
        np.testing.assert_allclose(ours, twin, rtol=1e-12, atol=1e-12)
