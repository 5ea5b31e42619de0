"""SGD against torch.optim.SGD, plus its own rules (no aliasing, validation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xcnn import backends, optim
from xcnn.nn import Parameter

COMBOS = [
    {"lr": 0.1},
    {"lr": 0.05, "momentum": 0.9},
    {"lr": 0.05, "momentum": 0.9, "dampening": 0.3},
    {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    {"lr": 0.1, "momentum": 0.5, "weight_decay": 0.01},
    {"lr": 0.02, "momentum": 0.8, "nesterov": True, "weight_decay": 0.1},
    {"lr": 0.1, "weight_decay": 0.2},
]


@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("hyper", COMBOS, ids=lambda h: ",".join(f"{k}={v}" for k, v in h.items()))
def test_matches_torch(backend, side_by_side, hyper, dtype):
    params, opt, _, topt = side_by_side(
        backend, lambda p: optim.SGD(p, **hyper), lambda p: torch.optim.SGD(p, **hyper), dtype
    )
    if hyper.get("momentum"):
        ours, theirs = opt.state_dict()["state"], topt.state_dict()["state"]
        for i in range(len(params)):
            buf = ours[str(i)]["momentum_buffer"]
            assert isinstance(buf, np.ndarray) and buf.dtype == np.dtype(dtype)
            np.testing.assert_allclose(
                buf, theirs[i]["momentum_buffer"].numpy(), rtol=1e-5, atol=1e-6
            )
    else:
        assert not opt.state_dict()["state"]


def test_first_momentum_buffer_is_the_gradient(backend):
    p = Parameter(backend.asarray([1.0, -2.0, 0.5], dtype="float32"))
    opt = optim.SGD([p], lr=0.1, momentum=0.9, dampening=0.5)
    p.grad = backend.asarray([0.5, 1.0, -4.0], dtype="float32")
    opt.step()
    buf = opt.state[p]["momentum_buffer"]
    np.testing.assert_array_equal(backend.to_numpy(buf), [0.5, 1.0, -4.0])
    np.testing.assert_allclose(backend.to_numpy(p.data), [0.95, -2.1, 0.9], rtol=1e-6)
    p.grad = backend.asarray([1.0, 1.0, 1.0], dtype="float32")
    opt.step()
    # b = 0.9 * b + (1 - 0.5) * g
    np.testing.assert_allclose(backend.to_numpy(buf), [0.95, 1.4, -3.1], rtol=1e-6)


@pytest.mark.parametrize(
    "hyper", [{"momentum": 0.9, "weight_decay": 0.1}, {"momentum": 0.9, "nesterov": True}]
)
def test_grad_is_not_modified_or_aliased(backend, hyper):
    host_grad = np.array([[0.5, -1.0], [2.0, 0.25]], dtype=np.float32)
    p = Parameter(backend.asarray([[1.0, 2.0], [3.0, 4.0]], dtype="float32"))
    opt = optim.SGD([p], lr=0.1, **hyper)
    p.grad = backend.asarray(host_grad)
    for _ in range(3):
        opt.step()
        np.testing.assert_array_equal(backend.to_numpy(p.grad), host_grad)


def test_updates_in_place(backend):
    p = Parameter(backend.asarray([1.0, 2.0], dtype="float32"))
    data = p.data
    opt = optim.SGD([p], lr=0.5, momentum=0.9, weight_decay=0.1)
    p.grad = backend.asarray([1.0, 1.0], dtype="float32")
    opt.step()
    assert p.data is data
    np.testing.assert_allclose(backend.to_numpy(data), [0.45, 1.4], rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lr": -0.1}, ValueError, "lr must be a finite number >= 0"),
        ({"lr": float("nan")}, ValueError, "lr"),
        ({"lr": "0.1"}, TypeError, "lr must be a real number"),
        ({"lr": 0.1, "momentum": -0.5}, ValueError, "momentum"),
        ({"lr": 0.1, "weight_decay": -1e-4}, ValueError, "weight_decay"),
        ({"lr": 0.1, "dampening": 1.5}, ValueError, "dampening"),
        ({"lr": 0.1, "nesterov": True}, ValueError, "nesterov=True needs momentum > 0"),
        ({"lr": 0.1, "momentum": 0.9, "nesterov": True, "dampening": 0.1}, ValueError, "dampening"),
        ({"lr": 0.1, "nesterov": "yes"}, TypeError, "nesterov must be True or False"),
    ],
)
def test_bad_hyperparameters_raise(kwargs, error, match):
    p = Parameter(backends.get("numpy").asarray([1.0], dtype="float32"))
    with pytest.raises(error, match=match):
        optim.SGD([p], **kwargs)


def test_bad_hyperparameter_in_a_group_raises():
    b = backends.get("numpy")
    p, q = Parameter(b.asarray([1.0])), Parameter(b.asarray([2.0]))
    with pytest.raises(ValueError, match="SGD: lr must be"):
        optim.SGD([{"params": [p]}, {"params": [q], "lr": -1.0}], lr=0.1)


@pytest.mark.parametrize("hyper", COMBOS, ids=lambda h: ",".join(f"{k}={v}" for k, v in h.items()))
def test_bitwise_equal_to_the_update_rule_written_out(backend, make_problem, hyper):
    """The update, one parameter at a time in the order of the module docstring, on
    NumPy: the group-wise step gives the very same bits (not just torch's to rounding)."""
    weights, grads = make_problem("float32", steps=5, seed=3)
    params = [Parameter(backend.asarray(w.copy())) for w in weights]
    opt = optim.SGD(params, **hyper)
    lr, momentum = hyper["lr"], hyper.get("momentum", 0.0)
    dampening, decay = hyper.get("dampening", 0.0), hyper.get("weight_decay", 0.0)
    ref, bufs = [w.copy() for w in weights], [None] * len(weights)
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = backend.asarray(g)
        opt.step()
        for i, g in enumerate(step_grads):
            if decay != 0:
                g = g + decay * ref[i]
            if momentum != 0:
                if bufs[i] is None:
                    bufs[i] = g.copy()
                else:
                    bufs[i] = bufs[i] * momentum + (1.0 - dampening) * g
                g = g + momentum * bufs[i] if hyper.get("nesterov") else bufs[i]
            ref[i] = ref[i] - lr * g
        for p, r in zip(params, ref, strict=True):
            np.testing.assert_array_equal(backends.to_host(p.data), r)
