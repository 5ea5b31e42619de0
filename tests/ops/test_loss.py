"""xcnn.ops losses: PyTorch parity, stability at +-1e4, gradients, dtypes, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xcnn import backends
from xcnn import ops as F
from xcnn.testing import gradcheck


def _host(backend, a):
    return np.asarray(backend.to_numpy(a))


def _torch_cross_entropy(logits_host, targets_host):
    t = torch.from_numpy(logits_host).requires_grad_()
    loss = torch.nn.functional.cross_entropy(t, torch.from_numpy(targets_host))
    loss.backward()
    return float(loss.detach()), t.grad.numpy()


def _targets(backend, rng, n, c, dtype="int64"):
    host = rng.integers(0, c, size=n)
    return backend.asarray(host, dtype=dtype), host.astype(np.int64)


@pytest.mark.torch
def test_softmax_cross_entropy_matches_torch(backend, rng):
    for _ in range(20 if backend.name == "numpy" else 5):
        n, c = int(rng.integers(1, 12)), int(rng.integers(1, 15))
        logits_host = (rng.standard_normal((n, c)) * rng.choice([0.1, 1, 30])).astype(np.float32)
        targets, targets_host = _targets(backend, rng, n, c)
        loss, cache = F.softmax_cross_entropy(backend.asarray(logits_host), targets)
        grad = F.softmax_cross_entropy_backward(cache)
        t_loss, t_grad = _torch_cross_entropy(logits_host, targets_host)
        np.testing.assert_allclose(float(_host(backend, loss)), t_loss, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(_host(backend, grad), t_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_is_finite_and_correct_at_1e4(backend, dtype):
    logits_host = np.array(
        [[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [-1e4, -1e4, -1e4], [1e4, -1e4, -1e4]]
    )
    targets_host = np.array([1, 2, 0, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow / invalid-value warnings
        loss, cache = F.softmax_cross_entropy(
            backend.asarray(logits_host, dtype=dtype), backend.asarray(targets_host)
        )
        grad = _host(backend, F.softmax_cross_entropy_backward(cache))
    loss = float(_host(backend, loss))
    # Exact: row 0 -> 2e4, row 1 -> log 2, row 2 -> log 3, row 3 -> 0.
    expected = (2e4 + np.log(2) + np.log(3) + 0.0) / 4
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    t_loss, t_grad = _torch_cross_entropy(logits_host, targets_host)
    np.testing.assert_allclose(loss, t_loss, rtol=1e-6)
    np.testing.assert_allclose(grad, t_grad, rtol=1e-6, atol=1e-7)


@pytest.mark.torch
def test_softmax_and_log_softmax_match_torch(backend, rng):
    host = np.concatenate([rng.standard_normal((3, 5)) * 5, [[1e4, -1e4, 0, 0, 1e4]]]).astype(
        np.float32
    )
    for axis in (-1, 0):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            s = _host(backend, F.softmax(backend.asarray(host), axis=axis))
            ls = _host(backend, F.log_softmax(backend.asarray(host), axis=axis))
        t = torch.from_numpy(host)
        np.testing.assert_allclose(s, torch.softmax(t, dim=axis).numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(ls, torch.log_softmax(t, dim=axis).numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(s.sum(axis=axis), 1.0, rtol=1e-6)


@pytest.mark.parametrize("n, c", [(4, 5), (1, 3), (3, 1)], ids=["basic", "batch1", "one-class"])
def test_gradcheck_softmax_cross_entropy(backend, rng, n, c):
    logits = backend.asarray(rng.standard_normal((n, c)) * 3, dtype="float64")
    targets, _ = _targets(backend, rng, n, c)
    caches = []

    def forward(logits):
        loss, cache = F.softmax_cross_entropy(logits, targets)
        caches.append(cache)
        return loss

    def backward(g):
        return F.softmax_cross_entropy_backward(caches[-1], backend.xp.reshape(g, ()))

    assert gradcheck(forward, [logits], backward, max_elements=None)


@pytest.mark.parametrize("shape", [(4, 3), (5,), (2, 3, 4)])
def test_gradcheck_mse(backend, rng, shape):
    x = backend.asarray(rng.standard_normal(shape), dtype="float64")
    y = backend.asarray(rng.standard_normal(shape), dtype="float64")
    caches = []

    def forward(x):
        loss, cache = F.mse_loss(x, y)
        caches.append(cache)
        return loss

    def backward(g):
        return F.mse_loss_backward(caches[-1], backend.xp.reshape(g, ()))

    assert gradcheck(forward, [x], backward, max_elements=None)


@pytest.mark.torch
def test_mse_matches_torch(backend, rng):
    for _ in range(10 if backend.name == "numpy" else 3):
        shape = tuple(int(v) for v in rng.integers(1, 5, size=rng.integers(1, 4)))
        x_host = rng.standard_normal(shape).astype(np.float32)
        y_host = rng.standard_normal(shape).astype(np.float32)
        loss, cache = F.mse_loss(backend.asarray(x_host), backend.asarray(y_host))
        grad = F.mse_loss_backward(cache)
        t = torch.from_numpy(x_host).requires_grad_()
        t_loss = torch.nn.functional.mse_loss(t, torch.from_numpy(y_host))
        t_loss.backward()
        np.testing.assert_allclose(float(_host(backend, loss)), float(t_loss.detach()), rtol=1e-5)
        np.testing.assert_allclose(_host(backend, grad), t.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_grad_scale_as_number_or_0d_array(backend, rng):
    logits = backend.asarray(rng.standard_normal((3, 4)), dtype="float32")
    targets, _ = _targets(backend, rng, 3, 4)
    _, cache = F.softmax_cross_entropy(logits, targets)
    base = _host(backend, F.softmax_cross_entropy_backward(cache))
    scaled = F.softmax_cross_entropy_backward(cache, 2.5)
    as_array = F.softmax_cross_entropy_backward(
        cache, backend.xp.asarray(2.5, dtype=backend.xp.float64)
    )
    for g in (scaled, as_array):
        assert backends.dtype_name(g.dtype) == "float32"  # a float64 scale does not promote
        np.testing.assert_allclose(_host(backend, g), 2.5 * base, rtol=1e-6)
    _, mse_cache = F.mse_loss(logits, logits * 0.5)
    np.testing.assert_allclose(
        _host(backend, F.mse_loss_backward(mse_cache, 3)),
        3 * _host(backend, F.mse_loss_backward(mse_cache)),
        rtol=1e-6,
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_and_namespace(backend, rng, dtype):
    logits = backend.asarray(rng.standard_normal((3, 4)), dtype=dtype)
    targets, _ = _targets(backend, rng, 3, 4)
    loss, cache = F.softmax_cross_entropy(logits, targets)
    mse, mse_cache = F.mse_loss(
        logits, backend.asarray(rng.standard_normal((3, 4)), dtype="float64")
    )
    outs = [loss, F.softmax_cross_entropy_backward(cache), mse, F.mse_loss_backward(mse_cache)]
    outs += [F.softmax(logits), F.log_softmax(logits)]
    for a in outs:
        assert backends.dtype_name(a.dtype) == dtype
        assert backends.namespace_name(a) == backend.name
    assert loss.ndim == 0 and mse.ndim == 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_losses_are_0d_arrays_not_scalars(backend, rng, dtype):
    # API.md: a loss is a 0-d array on the backend. NumPy reductions give np.float32
    # scalars, which are not arrays (no in-place ops, no .device on older NumPy).
    logits = backend.asarray(rng.standard_normal((3, 4)), dtype=dtype)
    targets, _ = _targets(backend, rng, 3, 4)
    loss, _ = F.softmax_cross_entropy(logits, targets)
    mse, _ = F.mse_loss(logits, backend.asarray(rng.standard_normal((3, 4)), dtype=dtype))
    for value in (loss, mse):
        assert tuple(value.shape) == ()
        assert not isinstance(value, np.generic)
        assert type(value) is type(logits)
        assert backends.namespace_name(value) == backend.name
        assert backends.dtype_name(value.dtype) == dtype


@pytest.mark.parametrize("target_dtype", ["int32", "uint8", "int16"])
def test_any_integer_target_dtype_gives_the_same_loss(backend, rng, target_dtype):
    logits = backend.asarray(rng.standard_normal((5, 4)), dtype="float32")
    targets, host = _targets(backend, rng, 5, 4)
    reference, _ = F.softmax_cross_entropy(logits, targets)
    other, _ = F.softmax_cross_entropy(logits, backend.asarray(host, dtype=target_dtype))
    assert float(_host(backend, other)) == float(_host(backend, reference))


def test_uint8_targets_with_more_classes_than_uint8_holds(backend, rng):
    logits = backend.asarray(rng.standard_normal((3, 300)), dtype="float32")
    targets = backend.asarray(np.array([0, 255, 17]), dtype="uint8")
    loss, _ = F.softmax_cross_entropy(logits, targets)
    expected = -np.mean(
        torch.log_softmax(torch.from_numpy(_host(backend, logits)), 1).numpy()[
            [0, 1, 2], [0, 255, 17]
        ]
    )
    np.testing.assert_allclose(float(_host(backend, loss)), expected, rtol=1e-6)


def test_non_contiguous_logits_give_identical_results(backend, rng):
    host = rng.standard_normal((4, 6)).astype(np.float32)
    transposed_back = np.ascontiguousarray(host.T).T
    if backend.name == "numpy":
        assert not transposed_back.flags.c_contiguous
    targets, _ = _targets(backend, rng, 4, 6)
    results = []
    for h in (host, transposed_back):
        loss, cache = F.softmax_cross_entropy(backend.asarray(h), targets)
        results.append(
            (_host(backend, loss), _host(backend, F.softmax_cross_entropy_backward(cache)))
        )
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


def test_cross_entropy_errors(backend, rng):
    logits = backend.asarray(rng.standard_normal((3, 4)), dtype="float32")
    targets, _ = _targets(backend, rng, 3, 4)
    name = "softmax_cross_entropy"
    cases = [
        (
            logits[0, ...],
            targets,
            ValueError,
            r"expected logits of shape \(N, C\), got shape \(4,\)",
        ),
        (
            backend.xp.reshape(logits, (3, 2, 2)),
            targets,
            ValueError,
            r"expected logits of shape \(N, C\), got shape \(3, 2, 2\)",
        ),
        (
            logits,
            backend.xp.reshape(targets, (3, 1)),
            ValueError,
            r"expected targets of shape \(N,\)",
        ),
        (logits, targets[:2], ValueError, r"logits have batch size 3 but targets have 2"),
        (
            logits,
            backend.asarray(np.array([0.0, 1.0, 2.0])),
            TypeError,
            "expected integer class-index targets",
        ),
        (
            logits,
            backend.asarray(np.array([0, 4, 1])),
            ValueError,
            r"expected targets in \[0, 4\) for 4 classes, got values in \[0, 4\]",
        ),
        (
            logits,
            backend.asarray(np.array([0, -1, 1])),
            ValueError,
            r"expected targets in \[0, 4\).*\[-1, 1\]",
        ),
        (
            backend.asarray(np.zeros((3, 4), dtype=np.int64)),
            targets,
            TypeError,
            "expected floating-point logits",
        ),
        (logits, [0, 1, 2], TypeError, "expected targets to be an integer array, got list"),
        (
            backend.asarray(np.zeros((3, 0)), dtype="float32"),
            targets,
            ValueError,
            r"expected at least one class, got logits of shape \(3, 0\)",
        ),
    ]
    for lg, tg, error, message in cases:
        with pytest.raises(error, match=f"{name}: {message}"):
            F.softmax_cross_entropy(lg, tg)
    _, cache = F.softmax_cross_entropy(logits, targets)
    with pytest.raises(
        ValueError, match=r"softmax_cross_entropy_backward: grad must have the loss's shape \(\)"
    ):
        F.softmax_cross_entropy_backward(cache, logits)
    with pytest.raises(
        TypeError, match="softmax_cross_entropy_backward: grad must be a real number"
    ):
        F.softmax_cross_entropy_backward(cache, "1")


def test_targets_on_another_backend_are_refused(rng):
    with backends.use("array_api_strict") as strict:
        logits = strict.asarray(rng.standard_normal((3, 4)), dtype="float32")
        with pytest.raises(
            TypeError, match="targets is a numpy array but logits lives on array_api_strict"
        ):
            F.softmax_cross_entropy(logits, np.array([0, 1, 2]))
        with pytest.raises(
            TypeError, match="target is a numpy array but input lives on array_api_strict"
        ):
            F.mse_loss(logits, np.zeros((3, 4), dtype=np.float32))


def test_mse_errors(backend):
    x = backend.asarray(np.zeros((2, 3)), dtype="float32")
    with pytest.raises(
        ValueError,
        match=r"mse_loss: expected target of the input's shape \(2, 3\), got shape \(3, 2\)",
    ):
        F.mse_loss(x, backend.asarray(np.zeros((3, 2)), dtype="float32"))
    with pytest.raises(
        TypeError, match="mse_loss: expected floating-point target, got dtype int64"
    ):
        F.mse_loss(x, backend.asarray(np.zeros((2, 3), dtype=np.int64)))


@st.composite
def _cross_entropy_options(draw):
    n, c = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    return {
        "n": n,
        "c": c,
        "soft": draw(st.booleans()),
        "weighted": draw(st.booleans()),
        "ignore_index": draw(st.sampled_from([-100, 0, c - 1])),
        "reduction": draw(st.sampled_from(["mean", "sum", "none"])),
        "label_smoothing": draw(st.sampled_from([0.0, 0.2, 1.0])),
        "seed": draw(st.integers(0, 2**16)),
    }


@pytest.mark.torch
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=_cross_entropy_options())
def test_softmax_cross_entropy_options_match_torch(backend, case):
    rng = np.random.default_rng(case["seed"])
    n, c = case["n"], case["c"]
    logits = rng.standard_normal((n, c)) * 3
    if case["soft"]:
        target = rng.dirichlet(np.ones(c), size=n)
        case["ignore_index"] = -100  # torch refuses any other with probabilities
    else:
        target = rng.integers(0, c, size=n)
        target[rng.random(n) < 0.3] = case["ignore_index"]
    weight = rng.uniform(0.1, 2.0, size=c) if case["weighted"] else None
    kwargs = {k: case[k] for k in ("ignore_index", "reduction", "label_smoothing")}

    tx = torch.tensor(logits, requires_grad=True)
    t_weight = None if weight is None else torch.from_numpy(weight)
    t_loss = torch.nn.functional.cross_entropy(
        tx, torch.from_numpy(target), weight=t_weight, **kwargs
    )
    upstream = rng.standard_normal(tuple(t_loss.shape))
    t_loss.backward(torch.from_numpy(upstream))

    x_weight = None if weight is None else backend.asarray(weight)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # every target ignored: 0/0, NaN as in torch
        loss, cache = F.softmax_cross_entropy(
            backend.asarray(logits), backend.asarray(target), weight=x_weight, **kwargs
        )
        grad = F.softmax_cross_entropy_backward(cache, backend.asarray(upstream))
    np.testing.assert_allclose(_host(backend, loss), t_loss.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(_host(backend, grad), tx.grad.numpy(), rtol=1e-9, atol=1e-12)
