"""nn.CrossEntropyLoss / nn.MSELoss: PyTorch parity sweep, gradients, caching, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import xcnn
import xcnn.nn.functional as F
from xcnn import backends, nn
from xcnn.testing import gradcheck, to_torch


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


# -- PyTorch's options: weight, ignore_index, label_smoothing, reduction, soft targets -------


def _options_case(backend, rng, soft):
    """A random cross-entropy configuration in float64: xcnn's arrays and torch's tensors."""
    n, c = int(rng.integers(1, 7)), int(rng.integers(1, 6))
    logits = rng.standard_normal((n, c)) * float(rng.choice([0.1, 1.0, 5.0]))
    kwargs = {
        "reduction": str(rng.choice(["mean", "sum", "none"])),
        "label_smoothing": float(rng.choice([0.0, 0.1, 0.5, 1.0])),
    }
    weight = rng.uniform(0.1, 2.0, size=c) if rng.random() < 0.5 else None
    if soft:
        target = rng.dirichlet(np.ones(c), size=n)
        t_target = torch.from_numpy(target)
    else:
        ignore = int(rng.choice([-100, 0, c - 1, 7]))
        kwargs["ignore_index"] = ignore
        target = rng.integers(0, c, size=n)
        target[rng.random(n) < 0.3] = ignore
        if ignore >= c and kwargs["reduction"] == "mean":
            target[0] = 0  # at least one target counts (all ignored: see its own test)
        t_target = torch.from_numpy(target)
    t_weight = None if weight is None else torch.from_numpy(weight)
    x_weight = None if weight is None else backend.asarray(weight, dtype="float64")
    x_target = backend.asarray(target, dtype="float64" if soft else "int64")
    return logits, x_target, x_weight, kwargs, t_target, t_weight


@pytest.mark.torch
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("seed", range(20))
def test_cross_entropy_options_match_torch(backend, seed, soft):
    rng = np.random.default_rng(seed)
    logits, target, weight, kwargs, t_target, t_weight = _options_case(backend, rng, soft)
    crit = nn.CrossEntropyLoss(weight=weight, **kwargs)
    twin = torch.nn.CrossEntropyLoss(weight=t_weight, **kwargs)
    tx = torch.tensor(logits, requires_grad=True)
    t_loss = twin(tx, t_target)
    upstream = rng.standard_normal(tuple(t_loss.shape))
    t_loss.backward(torch.from_numpy(upstream))

    loss = crit(backend.asarray(logits, dtype="float64"), target)
    assert tuple(loss.shape) == tuple(t_loss.shape)
    grad = crit.backward(backend.asarray(upstream, dtype="float64"))
    np.testing.assert_allclose(_host(backend, loss), t_loss.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(_host(backend, grad), tx.grad.numpy(), rtol=1e-9, atol=1e-12)

    # The graph API and F.cross_entropy give the same.
    x = xcnn.tensor(backend.asarray(logits, dtype="float64"), requires_grad=True)
    out = F.cross_entropy(x, target, weight=weight, **kwargs)
    out.backward(backend.asarray(upstream, dtype="float64"))
    np.testing.assert_allclose(_host(backend, out.data), t_loss.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(_host(backend, x.grad), tx.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_cross_entropy_options_gradcheck(backend, seed, soft):
    rng = np.random.default_rng(100 + seed)
    logits, target, weight, kwargs, _, _ = _options_case(backend, rng, soft)
    crit = nn.CrossEntropyLoss(weight=weight, **kwargs)
    shape = (int(logits.shape[0]),) if kwargs["reduction"] == "none" else ()

    def backward(g):
        return crit.backward(backend.xp.reshape(g, shape))

    x = backend.asarray(logits, dtype="float64")
    assert gradcheck(lambda z: crit(z, target), [x], backward, max_elements=None)


@pytest.mark.torch
@pytest.mark.parametrize("weighted", [False, True])
def test_every_target_ignored_matches_torch(backend, weighted):
    logits = np.arange(6.0).reshape(2, 3)
    w = np.array([1.0, 2.0, 3.0])
    crit = nn.CrossEntropyLoss(weight=backend.asarray(w) if weighted else None)
    twin = torch.nn.CrossEntropyLoss(weight=torch.from_numpy(w) if weighted else None)
    tx = torch.tensor(logits, requires_grad=True)
    t_loss = twin(tx, torch.tensor([-100, -100]))
    t_loss.backward()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 0/0 is NaN, as in torch
        loss = crit(backend.asarray(logits), backend.asarray(np.array([-100, -100])))
        grad = crit.backward()
    assert np.isnan(float(_host(backend, loss))) and torch.isnan(t_loss)
    np.testing.assert_array_equal(_host(backend, grad), tx.grad.numpy())


def test_reduction_none_layerwise_backward_needs_the_loss_shape(backend, rng):
    crit = nn.CrossEntropyLoss(reduction="none")
    logits = backend.asarray(rng.standard_normal((3, 4)))
    crit(logits, backend.asarray(np.array([0, 1, 2])))
    with pytest.raises(ValueError, match=r"CrossEntropyLoss.backward: the loss has shape \(3,\)"):
        crit.backward()
    with pytest.raises(
        ValueError, match=r"grad must have the loss's shape \(3,\), got shape \(2,\)"
    ):
        crit.backward(backend.asarray(np.ones(2)))
    assert crit.backward(backend.asarray(np.ones(3))).shape == (3, 4)  # still pending above


def test_cross_entropy_option_errors(backend, rng):
    logits = backend.asarray(rng.standard_normal((3, 4)), dtype="float32")
    good = backend.asarray(np.array([0, 1, 3]))
    with pytest.raises(ValueError, match=r"CrossEntropyLoss: reduction='avg' is not one of"):
        nn.CrossEntropyLoss(reduction="avg")
    with pytest.raises(ValueError, match=r"CrossEntropyLoss: label_smoothing must be in \[0, 1\]"):
        nn.CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(TypeError, match="CrossEntropyLoss: ignore_index must be an int"):
        nn.CrossEntropyLoss(ignore_index=0.5)
    with pytest.raises(ValueError, match=r"CrossEntropyLoss: expected weight of shape \(4,\)"):
        nn.CrossEntropyLoss(weight=backend.asarray(np.ones(3), dtype="float32"))(logits, good)
    with pytest.raises(TypeError, match="CrossEntropyLoss: expected weight in the logits' dtype"):
        nn.CrossEntropyLoss(weight=backend.asarray(np.ones(4)))(logits, good)
    with pytest.raises(
        ValueError, match=r"expected class-probability targets of the logits' shape \(3, 4\)"
    ):
        nn.CrossEntropyLoss()(logits, backend.asarray(np.ones((3, 5)), dtype="float32"))
    with pytest.raises(TypeError, match="expected class-probability targets of the logits' dtype"):
        nn.CrossEntropyLoss()(logits, backend.asarray(np.ones((3, 4))))
    with pytest.raises(ValueError, match=r"ignore_index=0 applies to class-index targets only"):
        probabilities = backend.asarray(np.ones((3, 4)), dtype="float32")
        nn.CrossEntropyLoss(ignore_index=0)(logits, probabilities)
    with pytest.raises(ValueError, match=r"only ignore_index=5 may lie outside"):
        nn.CrossEntropyLoss(ignore_index=5)(logits, backend.asarray(np.array([0, -100, 5])))
    with pytest.raises(ValueError, match=r"cross_entropy: target requires grad"):
        F.cross_entropy(
            xcnn.tensor(logits, requires_grad=True),
            xcnn.tensor(backend.asarray(np.ones((3, 4)), dtype="float32"), requires_grad=True),
        )


def test_weight_is_a_buffer_and_moves_with_the_module(rng):
    crit = nn.CrossEntropyLoss(weight=np.array([1.0, 2.0], dtype=np.float32))
    assert list(crit.state_dict()) == ["weight"]
    assert repr(crit) == "CrossEntropyLoss(weight=(2,))"
    crit.to("array_api_strict")
    assert backends.namespace_name(crit.weight) == "array_api_strict"
    assert repr(nn.CrossEntropyLoss(reduction="sum", label_smoothing=0.1)) == (
        "CrossEntropyLoss(reduction='sum', label_smoothing=0.1)"
    )


@pytest.mark.torch
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_reductions_match_torch(backend, rng, reduction):
    x, y = rng.standard_normal((3, 2, 4)), rng.standard_normal((3, 2, 4))
    tx = torch.tensor(x, requires_grad=True)
    t_loss = torch.nn.MSELoss(reduction=reduction)(tx, torch.from_numpy(y))
    upstream = rng.standard_normal(tuple(t_loss.shape))
    t_loss.backward(torch.from_numpy(upstream))
    crit = nn.MSELoss(reduction=reduction)
    loss = crit(backend.asarray(x), backend.asarray(y))
    grad = crit.backward(backend.asarray(upstream) if upstream.ndim else float(upstream))
    np.testing.assert_allclose(_host(backend, loss), t_loss.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(_host(backend, grad), tx.grad.numpy(), rtol=1e-12)
    out = F.mse_loss(xcnn.tensor(backend.asarray(x)), backend.asarray(y), reduction=reduction)
    np.testing.assert_allclose(_host(backend, out.data), t_loss.detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_mse_reductions_gradcheck(backend, rng, reduction):
    crit = nn.MSELoss(reduction=reduction)
    x = backend.asarray(rng.standard_normal((3, 4)))
    y = backend.asarray(rng.standard_normal((3, 4)))
    shape = (3, 4) if reduction == "none" else ()

    def backward(g):
        return crit.backward(backend.xp.reshape(g, shape))

    assert gradcheck(lambda z: crit(z, y), [x], backward, max_elements=None)
    with pytest.raises(ValueError, match=r"MSELoss: reduction='Sum' is not one of"):
        nn.MSELoss(reduction="Sum")


LOSS_CASES = {
    "cross_entropy": (lambda **kw: nn.CrossEntropyLoss(**kw), np.array([1, 0, 3])),
    "cross_entropy-options": (
        lambda **kw: nn.CrossEntropyLoss(
            backends.current().asarray(np.array([1.0, 2.0, 0.5, 1.0])),
            ignore_index=0,
            label_smoothing=0.1,
            **kw,
        ),
        np.array([1, 0, 3]),
    ),
    "cross_entropy-probabilities": (
        lambda **kw: nn.CrossEntropyLoss(**kw),
        np.full((3, 4), 0.25),
    ),
    "mse": (lambda **kw: nn.MSELoss(**kw), np.arange(12.0).reshape(3, 4) / 10),
}


@pytest.mark.torch
@pytest.mark.parametrize("case", list(LOSS_CASES))
@pytest.mark.parametrize("batch", [3, 0], ids=["batch", "empty-batch"])
def test_explicit_mean_and_empty_batches_match_torch_layerwise(backend, case, batch):
    """reduction="mean" given explicitly is the default, everywhere (module, to_torch
    twin, F); an empty batch gives torch's NaN mean, 0 sum and empty per-sample loss."""
    make, target = LOSS_CASES[case]
    target = target[:batch]
    host = np.random.default_rng(batch).standard_normal((batch, 4))
    for reduction in ("mean", "sum", "none"):
        crit = make(reduction=reduction)
        twin = to_torch(crit)
        assert twin.reduction == reduction
        loss = crit(backend.asarray(host), backend.asarray(target))
        tx = torch.from_numpy(host).requires_grad_()
        t_loss = twin(tx, torch.from_numpy(target))
        np.testing.assert_allclose(
            backend.to_numpy(loss), t_loss.detach().numpy(), rtol=1e-10, err_msg=reduction
        )
        grad = np.ones(tuple(loss.shape))
        gx = crit.backward(backend.asarray(grad) if grad.ndim else 1.0)
        t_loss.backward(torch.from_numpy(grad))
        np.testing.assert_allclose(backend.to_numpy(gx), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
        if reduction == "mean":
            default = make()
            np.testing.assert_array_equal(
                backend.to_numpy(default(backend.asarray(host), backend.asarray(target))),
                backend.to_numpy(loss),
            )
            assert repr(crit) == repr(default)
            assert np.isnan(float(backend.to_numpy(loss))) == (batch == 0)
