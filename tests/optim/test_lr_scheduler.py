"""StepLR and CosineAnnealingLR against torch.optim.lr_scheduler, state, errors."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from xcnn import backends, optim
from xcnn.nn import Parameter
from xcnn.optim.lr_scheduler import CosineAnnealingLR, StepLR

EPOCHS = 30
BASE_LRS = (0.1, 0.02)


def make_optimizers():
    """An xcnn and a torch SGD, each with two groups of different base learning rates."""
    host = backends.get("numpy")
    ours = optim.SGD(
        [
            {"params": [Parameter(host.asarray([1.0]))], "lr": BASE_LRS[0]},
            {"params": [Parameter(host.asarray([2.0]))], "lr": BASE_LRS[1]},
        ],
        lr=BASE_LRS[0],
        momentum=0.9,
    )
    theirs = torch.optim.SGD(
        [
            {"params": [torch.nn.Parameter(torch.ones(1))], "lr": BASE_LRS[0]},
            {"params": [torch.nn.Parameter(torch.ones(1))], "lr": BASE_LRS[1]},
        ],
        lr=BASE_LRS[0],
        momentum=0.9,
    )
    return ours, theirs


def lr_curves(sched, tsched, topt, epochs=EPOCHS):
    ours, theirs = [], []
    for _ in range(epochs):
        ours.append(sched.get_last_lr())
        theirs.append(tsched.get_last_lr())
        assert [g["lr"] for g in sched.optimizer.param_groups] == sched.get_last_lr()
        topt.step()  # torch warns when the scheduler steps before the optimizer
        sched.step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # SequentialLR's deprecated step(0)
            tsched.step()
    return np.array(ours), np.array(theirs)


@pytest.mark.torch
@pytest.mark.parametrize(("step_size", "gamma"), [(7, 0.5), (1, 0.9), (10, 0.1)])
def test_step_lr_matches_torch(step_size, gamma):
    opt, topt = make_optimizers()
    sched = StepLR(opt, step_size, gamma=gamma)
    tsched = torch.optim.lr_scheduler.StepLR(topt, step_size, gamma)
    ours, theirs = lr_curves(sched, tsched, topt)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0)
    assert ours[0].tolist() == list(BASE_LRS)


@pytest.mark.torch
@pytest.mark.parametrize(("T_max", "eta_min"), [(30, 0.0), (10, 0.001), (7, 0.0)])
def test_cosine_matches_torch(T_max, eta_min):
    """T_max < EPOCHS also checks that the schedule continues past T_max as torch's does."""
    opt, topt = make_optimizers()
    sched = CosineAnnealingLR(opt, T_max, eta_min=eta_min)
    tsched = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max, eta_min=eta_min)
    ours, theirs = lr_curves(sched, tsched, topt)
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-15)
    closed = [
        [eta_min + (b - eta_min) * (1 + math.cos(math.pi * e / T_max)) / 2 for b in BASE_LRS]
        for e in range(EPOCHS)
    ]
    np.testing.assert_array_equal(ours, closed)


@pytest.mark.torch
@pytest.mark.parametrize(
    ("T_max", "warmup", "start", "eta_min"), [(24, 5, 0.1, 0.0), (12, 3, 0.25, 0.001)]
)
def test_cosine_warmup_matches_torch_linear_then_cosine(T_max, warmup, start, eta_min):
    opt, topt = make_optimizers()
    sched = CosineAnnealingLR(
        opt, T_max, eta_min=eta_min, warmup_epochs=warmup, warmup_start_factor=start
    )
    lr_sched = torch.optim.lr_scheduler
    tsched = lr_sched.SequentialLR(
        topt,
        [
            lr_sched.LinearLR(topt, start_factor=start, total_iters=warmup),
            lr_sched.CosineAnnealingLR(topt, T_max - warmup, eta_min=eta_min),
        ],
        milestones=[warmup],
    )
    ours, theirs = lr_curves(sched, tsched, topt)
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(ours[0], [start * b for b in BASE_LRS], rtol=1e-12)
    np.testing.assert_allclose(ours[warmup], BASE_LRS, rtol=1e-12)
    np.testing.assert_allclose(ours[T_max], [eta_min, eta_min], atol=1e-15)


def test_scheduler_drives_the_optimizer_step(backend):
    p = Parameter(backend.asarray([0.0], dtype="float32"))
    opt = optim.SGD([p], lr=1.0)
    sched = StepLR(opt, step_size=1, gamma=0.5)
    moves = []
    for _ in range(3):
        before = float(backend.to_numpy(p.data)[0])
        p.grad = backend.asarray([1.0], dtype="float32")
        opt.step()
        moves.append(before - float(backend.to_numpy(p.data)[0]))
        sched.step()
    assert moves == [1.0, 0.5, 0.25]
    assert backend.to_numpy(p.data).dtype == np.float32


@pytest.mark.parametrize(
    "make",
    [
        lambda opt: StepLR(opt, 4, gamma=0.3),
        lambda opt: CosineAnnealingLR(opt, 20, eta_min=1e-4, warmup_epochs=3),
    ],
    ids=["step", "cosine-warmup"],
)
def test_state_dict_round_trip_through_json(make):
    opt, _ = make_optimizers()
    sched = make(opt)
    for _ in range(5):
        sched.step()
    text = json.dumps(sched.state_dict())
    expected = []
    for _ in range(10):
        sched.step()
        expected.append(sched.get_last_lr())

    fresh_opt, _ = make_optimizers()
    fresh = make(fresh_opt)
    fresh.load_state_dict(json.loads(text))
    assert fresh.last_epoch == 5
    assert [g["lr"] for g in fresh_opt.param_groups] == fresh.get_last_lr()
    resumed = []
    for _ in range(10):
        fresh.step()
        resumed.append(fresh.get_last_lr())
    assert resumed == expected


def test_load_state_dict_restores_hyperparameters():
    opt, _ = make_optimizers()
    sched = CosineAnnealingLR(opt, 10)
    other_opt, _ = make_optimizers()
    other = CosineAnnealingLR(other_opt, 50, warmup_epochs=2)
    sched.load_state_dict(other.state_dict())
    assert (sched.T_max, sched.warmup_epochs) == (50, 2)


def test_load_state_dict_mismatch_raises():
    opt, _ = make_optimizers()
    sched = StepLR(opt, 3)
    good = sched.state_dict()
    with pytest.raises(ValueError, match="2 parameter group\\(s\\), the state dict has 1"):
        sched.load_state_dict({**good, "base_lrs": [0.1]})
    with pytest.raises(KeyError, match="missing entries \\['gamma'\\]"):
        sched.load_state_dict({k: v for k, v in good.items() if k != "gamma"})
    with pytest.raises(ValueError, match="step_size must be >= 1"):
        sched.load_state_dict({**good, "step_size": 0})
    assert sched.state_dict() == good


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda o: StepLR(o, 0), ValueError, "StepLR: step_size must be >= 1"),
        (lambda o: StepLR(o, 2.5), TypeError, "StepLR: step_size must be an int"),
        (lambda o: StepLR(o, 2, gamma=-0.1), ValueError, "StepLR: gamma"),
        (lambda o: StepLR(o, 2, gamma=0), ValueError, "StepLR: gamma must be > 0"),
        (lambda o: CosineAnnealingLR(o, 0), ValueError, "T_max must be >= 1"),
        (lambda o: CosineAnnealingLR(o, 10.0), TypeError, "T_max must be an int"),
        (lambda o: CosineAnnealingLR(o, 10, eta_min=-1.0), ValueError, "eta_min"),
        (lambda o: CosineAnnealingLR(o, 5, warmup_epochs=5), ValueError, "warmup_epochs"),
        (lambda o: CosineAnnealingLR(o, 5, warmup_epochs=-1), ValueError, "warmup_epochs"),
        (
            lambda o: CosineAnnealingLR(o, 5, warmup_epochs=2, warmup_start_factor=0.0),
            ValueError,
            "warmup_start_factor must be in \\(0, 1\\]",
        ),
    ],
)
def test_bad_hyperparameters_raise(make, error, match):
    opt, _ = make_optimizers()
    with pytest.raises(error, match=match):
        make(opt)


def test_scheduler_needs_an_xcnn_optimizer():
    _, topt = make_optimizers()
    with pytest.raises(TypeError, match=r"StepLR: expected an xcnn\.optim\.Optimizer, got SGD"):
        StepLR(topt, 2)
