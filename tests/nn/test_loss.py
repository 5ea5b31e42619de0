"""nn.CrossEntropyLoss / nn.MSELoss: PyTorch parity sweep, gradients, caching, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from xcnn import backends, nn
from xcnn.testing import gradcheck


def _host(backend, a):
    return np.asarray(backend.to_numpy(a))


def _cross_entropy_case(backend, rng):
    n, c = int(rng.integers(1, 17)), int(rng.integers(1, 21))
    scale = float(rng.choice([0.01, 1.0, 10.0, 1e3]))
    logits = (rng.standard_normal((n, c)) * scale).astype(np.float32)
    targets = rng.integers(0, c, size=n)
    target_dtype = str(rng.choice(["int64", "int32"]))
    crit, twin = nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    return (
        crit,
        twin,
        logits,
        backend.asarray(targets, dtype=target_dtype),
        torch.from_numpy(targets),
    )


def _mse_case(backend, rng):
    shape = tuple(int(v) for v in rng.integers(1, 6, size=rng.integers(1, 5)))
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.standard_normal(shape).astype(np.float32)
    return nn.MSELoss(), torch.nn.MSELoss(), x, backend.asarray(y), torch.from_numpy(y)


@pytest.mark.torch
def test_matches_torch_on_random_configs(backend, rng):
    """50 seeded configs on NumPy (10 on array_api_strict): class counts, batch sizes, scales."""
    for _ in range(50 if backend.name == "numpy" else 10):
        make = _cross_entropy_case if rng.random() < 0.7 else _mse_case
        crit, twin, x_host, target, t_target = make(backend, rng)
        loss = crit(backend.asarray(x_host), target)
        grad = crit.backward()
        tx = torch.from_numpy(x_host).requires_grad_()
        t_loss = twin(tx, t_target)
        t_loss.backward()
        assert loss.ndim == 0 and backends.namespace_name(loss) == backend.name
        np.testing.assert_allclose(
            float(_host(backend, loss)), float(t_loss.detach()), rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(_host(backend, grad), tx.grad.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["cross_entropy", "mse"])
def test_gradcheck_through_the_module(backend, rng, kind):
    if kind == "cross_entropy":
        crit = nn.CrossEntropyLoss()
        x = backend.asarray(rng.standard_normal((5, 4)) * 2, dtype="float64")
        target = backend.asarray(rng.integers(0, 4, size=5))
    else:
        crit = nn.MSELoss()
        x = backend.asarray(rng.standard_normal((3, 4)), dtype="float64")
        target = backend.asarray(rng.standard_normal((3, 4)), dtype="float64")

    def backward(g):
        return crit.backward(backend.xp.reshape(g, ()))

    assert gradcheck(lambda logits: crit(logits, target), [x], backward, max_elements=None)


def test_cross_entropy_at_1e4_is_finite(backend):
    logits = backend.asarray(np.array([[1e4, -1e4], [-1e4, 1e4]]), dtype="float32")
    crit = nn.CrossEntropyLoss()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = float(_host(backend, crit(logits, backend.asarray(np.array([1, 1])))))
        grad = _host(backend, crit.backward())
    assert loss == pytest.approx(1e4)  # (2e4 + 0) / 2
    np.testing.assert_allclose(grad, [[0.5, -0.5], [0.0, 0.0]], atol=1e-7)


def test_backward_scale_and_single_use_cache(backend, rng):
    crit = nn.CrossEntropyLoss()
    logits = backend.asarray(rng.standard_normal((3, 5)), dtype="float32")
    targets = backend.asarray(np.array([0, 4, 2]))
    crit(logits, targets)
    once = _host(backend, crit.backward())
    crit(logits, targets)
    np.testing.assert_allclose(_host(backend, crit.backward(2.0)), 2 * once, rtol=1e-6)
    with pytest.raises(RuntimeError, match=r"CrossEntropyLoss: backward\(\) called before forward"):
        crit.backward()


@pytest.mark.parametrize("cls", [nn.CrossEntropyLoss, nn.MSELoss])
def test_losses_cache_in_eval_mode_too(backend, cls):
    crit = cls().eval()
    x = backend.asarray(np.zeros((2, 3)), dtype="float32")
    target = backend.asarray(np.array([0, 2])) if cls is nn.CrossEntropyLoss else x
    crit(x, target)
    crit.eval()  # e.g. model.eval() between forward and backward keeps the cache
    assert tuple(crit.backward().shape) == (2, 3)


@pytest.mark.parametrize("cls", [nn.CrossEntropyLoss, nn.MSELoss])
def test_backward_before_forward(backend, cls):
    with pytest.raises(RuntimeError, match=cls.__name__ + r": backward\(\) called before forward"):
        cls().backward()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_and_namespace(backend, rng, dtype):
    x = backend.asarray(rng.standard_normal((4, 3)), dtype=dtype)
    ce, mse = nn.CrossEntropyLoss(), nn.MSELoss()
    outs = [ce(x, backend.asarray(np.array([0, 1, 2, 0]))), ce.backward()]
    outs += [mse(x, backend.asarray(np.zeros((4, 3)), dtype="float64")), mse.backward()]
    for a in outs:
        assert backends.dtype_name(a.dtype) == dtype
        assert backends.namespace_name(a) == backend.name


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_losses_return_0d_arrays_on_the_backend(backend, rng, dtype):
    x = backend.asarray(rng.standard_normal((4, 3)), dtype=dtype)
    targets = backend.asarray(np.array([0, 1, 2, 0]))
    zeros = backend.asarray(np.zeros((4, 3)), dtype=dtype)
    for loss in (nn.CrossEntropyLoss()(x, targets), nn.MSELoss()(x, zeros)):
        assert tuple(loss.shape) == ()
        assert not isinstance(loss, np.generic)  # NumPy reductions give scalars
        assert type(loss) is type(x)
        assert backends.namespace_name(loss) == backend.name
        assert backends.dtype_name(loss.dtype) == dtype


def test_non_contiguous_inputs_give_identical_results(backend, rng):
    host = rng.standard_normal((4, 6)).astype(np.float32)
    strided = np.repeat(host, 2, axis=1)[:, ::2]
    if backend.name == "numpy":
        assert not strided.flags.c_contiguous
    targets = backend.asarray(np.array([5, 0, 3, 1]))
    outs = []
    for h in (host, strided):
        crit = nn.CrossEntropyLoss()
        outs.append(
            (_host(backend, crit(backend.asarray(h), targets)), _host(backend, crit.backward()))
        )
    for a, b in zip(*outs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_cross_entropy_errors_name_the_loss(backend, rng):
    crit = nn.CrossEntropyLoss()
    logits = backend.asarray(rng.standard_normal((3, 4)), dtype="float32")
    good = backend.asarray(np.array([0, 1, 3]))
    with pytest.raises(
        ValueError,
        match=r"CrossEntropyLoss: expected logits of shape \(N, C\), got shape \(3, 2, 2\)",
    ):
        crit(backend.xp.reshape(logits, (3, 2, 2)), good)
    with pytest.raises(
        ValueError, match=r"CrossEntropyLoss: expected targets of shape \(N,\).*got shape \(3, 1\)"
    ):
        crit(logits, backend.xp.reshape(good, (3, 1)))
    with pytest.raises(
        ValueError, match="CrossEntropyLoss: logits have batch size 3 but targets have 2"
    ):
        crit(logits, good[:2])
    with pytest.raises(TypeError, match="CrossEntropyLoss: expected integer class-index targets"):
        crit(logits, backend.asarray(np.array([0.0, 1.0, 3.0]), dtype="float32"))
    with pytest.raises(
        ValueError,
        match=r"CrossEntropyLoss: expected targets in \[0, 4\) for 4 classes, "
        r"got values in \[0, 7\]",
    ):
        crit(logits, backend.asarray(np.array([0, 7, 1])))
    with pytest.raises(ValueError, match=r"CrossEntropyLoss: expected targets in \[0, 4\)"):
        crit(logits, backend.asarray(np.array([0, -2, 1])))
    assert crit._pending() == 0  # failed calls leave nothing behind


def test_mse_errors_name_the_loss(backend):
    crit = nn.MSELoss()
    x = backend.asarray(np.zeros((2, 3)), dtype="float32")
    with pytest.raises(
        ValueError,
        match=r"MSELoss: expected target of the input's shape \(2, 3\), got shape \(6,\)",
    ):
        crit(x, backend.asarray(np.zeros(6), dtype="float32"))
    with pytest.raises(TypeError, match="MSELoss: expected floating-point target"):
        crit(x, backend.asarray(np.zeros((2, 3), dtype=np.int64)))


def test_targets_on_another_backend_are_refused(rng):
    with backends.use("array_api_strict") as strict:
        logits = strict.asarray(rng.standard_normal((3, 4)), dtype="float32")
        with pytest.raises(TypeError, match="CrossEntropyLoss: targets is a numpy array"):
            nn.CrossEntropyLoss()(logits, np.array([0, 1, 2]))


def test_repr():
    assert repr(nn.CrossEntropyLoss()) == "CrossEntropyLoss()"
    assert repr(nn.MSELoss()) == "MSELoss()"
    assert list(nn.CrossEntropyLoss().parameters()) == []
