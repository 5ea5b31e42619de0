"""Adam and AdamW against torch.optim, plus validation and dtype handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xcnn import backends, optim
from xcnn.nn import Parameter

COMBOS = [
    ("Adam", {}),
    ("Adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("Adam", {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-6}),
    ("AdamW", {}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.1}),
    ("AdamW", {"lr": 0.05, "betas": (0.5, 0.9), "weight_decay": 0.0}),
]


@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    ("name", "hyper"),
    COMBOS,
    ids=[f"{n}-{','.join(f'{k}={v}' for k, v in h.items())}".replace(" ", "") for n, h in COMBOS],
)
def test_matches_torch(backend, side_by_side, name, hyper, dtype):
    params, opt, _, topt = side_by_side(
        backend,
        lambda p: getattr(optim, name)(p, **hyper),
        lambda p: getattr(torch.optim, name)(p, **hyper),
        dtype,
    )
    ours, theirs = opt.state_dict()["state"], topt.state_dict()["state"]
    for i in range(len(params)):
        assert ours[str(i)]["step"] == int(theirs[i]["step"]) == 6
        for key in ("exp_avg", "exp_avg_sq"):
            assert ours[str(i)][key].dtype == np.dtype(dtype)
            np.testing.assert_allclose(
                ours[str(i)][key], theirs[i][key].numpy(), rtol=1e-5, atol=1e-9, err_msg=key
            )


def test_adamw_decays_weights_adam_decays_gradient(backend):
    """With a zero gradient, AdamW still shrinks the weights; Adam moves them by ~lr."""
    w = [2.0, -4.0]
    p_w = Parameter(backend.asarray(w, dtype="float32"))
    p_a = Parameter(backend.asarray(w, dtype="float32"))
    adamw = optim.AdamW([p_w], lr=0.1, weight_decay=0.5)
    adam = optim.Adam([p_a], lr=0.1, weight_decay=0.5)
    for p in (p_w, p_a):
        p.grad = backend.asarray([0.0, 0.0], dtype="float32")
    adamw.step()
    adam.step()
    np.testing.assert_allclose(backend.to_numpy(p_w.data), [1.9, -3.8], rtol=1e-6)
    # Adam: g = 0.5 * w, so the first bias-corrected step is lr * sign(w).
    np.testing.assert_allclose(backend.to_numpy(p_a.data), [1.9, -3.9], rtol=1e-6)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_float32_stays_float32_with_numpy_scalar_hyperparameters(backend, name):
    """A NumPy float64 lr (e.g. from a config array) must not promote float32 weights."""
    p = Parameter(backend.asarray(np.ones((2, 3), dtype=np.float32)))
    opt = getattr(optim, name)([p], lr=np.float64(0.01), betas=(np.float64(0.9), 0.999))
    opt.param_groups[0]["lr"] = np.float64(0.02)
    for _ in range(2):
        p.grad = backend.asarray(np.full((2, 3), 0.5, dtype=np.float32))
        opt.step()
    assert backends.namespace_name(p.data) == backend.name
    assert backend.to_numpy(p.data).dtype == np.float32
    for key in ("exp_avg", "exp_avg_sq"):
        assert backend.to_numpy(opt.state[p][key]).dtype == np.float32


def test_updates_in_place_and_leaves_grad_alone(backend):
    host_grad = np.array([0.5, -2.0], dtype=np.float32)
    p = Parameter(backend.asarray([1.0, 2.0], dtype="float32"))
    data = p.data
    opt = optim.Adam([p], lr=0.1, weight_decay=0.1)
    p.grad = backend.asarray(host_grad)
    opt.step()
    opt.step()
    assert p.data is data
    np.testing.assert_array_equal(backend.to_numpy(p.grad), host_grad)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lr": -1e-3}, ValueError, "lr must be a finite number >= 0"),
        ({"eps": -1e-8}, ValueError, "eps"),
        ({"weight_decay": -0.01}, ValueError, "weight_decay"),
        ({"betas": (1.0, 0.999)}, ValueError, r"betas\[0\] must be in \[0, 1\)"),
        ({"betas": (0.9, -0.1)}, ValueError, r"betas\[1\]"),
        ({"betas": (0.9,)}, TypeError, "betas must be a pair"),
        ({"betas": 0.9}, TypeError, "betas must be a pair"),
        ({"lr": None}, TypeError, "lr must be a real number"),
    ],
)
def test_bad_hyperparameters_raise(name, kwargs, error, match):
    p = Parameter(backends.get("numpy").asarray([1.0], dtype="float32"))
    with pytest.raises(error, match=f"{name}: {match}"):
        getattr(optim, name)([p], **kwargs)
