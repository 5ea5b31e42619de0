"""Schedulers against torch.optim.lr_scheduler, state, errors."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from xcnn import backends, optim
from xcnn.nn import Parameter
from xcnn.optim.lr_scheduler import CosineAnnealingLR, OneCycleLR, ReduceLROnPlateau, StepLR

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


ONE_CYCLE_SETTINGS = [
    {"max_lr": 0.5, "total_steps": 40},
    {"max_lr": [0.5, 0.05], "total_steps": 37, "pct_start": 0.25, "anneal_strategy": "linear"},
    {"max_lr": 1.0, "epochs": 4, "steps_per_epoch": 9, "three_phase": True},
    {"max_lr": 0.3, "total_steps": 25, "pct_start": 0.0, "div_factor": 10.0},
    {
        "max_lr": 0.3,
        "total_steps": 25,
        "pct_start": 0.4,
        "final_div_factor": 100.0,
        "three_phase": True,
        "anneal_strategy": "linear",
    },
]


@pytest.mark.torch
@pytest.mark.parametrize("kwargs", ONE_CYCLE_SETTINGS)
def test_one_cycle_matches_torch(kwargs):
    opt, topt = make_optimizers()
    sched = OneCycleLR(opt, **kwargs)
    tsched = torch.optim.lr_scheduler.OneCycleLR(topt, cycle_momentum=False, **kwargs)
    total = sched.total_steps
    # Steps 0 .. total_steps - 1 compared, then step total_steps, which torch allows too.
    ours, theirs = lr_curves(sched, tsched, topt, epochs=total)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-18)
    assert sched.get_last_lr() == pytest.approx(tsched.get_last_lr(), rel=1e-12)
    max_lrs = np.broadcast_to(np.asarray(kwargs["max_lr"], dtype=float), (2,))
    div = kwargs.get("div_factor", 25.0)
    if kwargs.get("pct_start", 0.3) > 0:
        np.testing.assert_allclose(ours[0], max_lrs / div, rtol=1e-12)
    # The peak is max_lr exactly only when pct_start * total_steps is a whole number.
    assert np.all(ours.max(axis=0) <= max_lrs * (1 + 1e-12))
    assert np.all(ours.max(axis=0) >= 0.95 * max_lrs)
    np.testing.assert_allclose(
        ours[-1], max_lrs / div / kwargs.get("final_div_factor", 1e4), rtol=1e-9
    )


@pytest.mark.torch
def test_one_cycle_stepping_past_total_steps_raises_like_torch():
    opt, topt = make_optimizers()
    sched = OneCycleLR(opt, 0.1, total_steps=3)
    tsched = torch.optim.lr_scheduler.OneCycleLR(topt, 0.1, total_steps=3, cycle_momentum=False)
    for _ in range(3):
        topt.step()
        sched.step()
        tsched.step()
    with pytest.raises(ValueError, match="Tried to step 4 times"):
        tsched.step()
    with pytest.raises(ValueError, match="OneCycleLR: tried to step 4 times, but total_steps is 3"):
        sched.step()


def momentum_of(group):
    return group["betas"][0] if "betas" in group else group["momentum"]


@pytest.mark.torch
@pytest.mark.parametrize("kind", ["SGD", "Adam"])
@pytest.mark.parametrize("three_phase", [False, True])
def test_one_cycle_momentum_matches_torch(kind, three_phase):
    host = backends.get("numpy")
    groups = [{"lr": lr} for lr in BASE_LRS]
    ours_opt = getattr(optim, kind)(
        [{"params": [Parameter(host.asarray([1.0]))], **g} for g in groups], lr=0.1
    )
    topt = getattr(torch.optim, kind)(
        [{"params": [torch.nn.Parameter(torch.ones(1))], **g} for g in groups], lr=0.1
    )
    kwargs = {
        "max_lr": [0.5, 0.1],
        "total_steps": 23,
        "three_phase": three_phase,
        "base_momentum": [0.8, 0.85],
        "max_momentum": 0.9,
    }
    sched = OneCycleLR(ours_opt, cycle_momentum=True, **kwargs)
    tsched = torch.optim.lr_scheduler.OneCycleLR(topt, cycle_momentum=True, **kwargs)
    ours, theirs = [], []
    for _ in range(23):
        ours.append([momentum_of(g) for g in ours_opt.param_groups] + sched.get_last_lr())
        theirs.append([momentum_of(g) for g in topt.param_groups] + tsched.get_last_lr())
        topt.step()
        sched.step()
        tsched.step()
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-18)
    assert ours[0][:2] == [0.9, 0.9]
    if kind == "Adam":
        assert [g["betas"][1] for g in ours_opt.param_groups] == [0.999, 0.999]


def run_plateau(sched, metrics):
    lrs = []
    for metric in metrics:
        sched.step(metric)
        lrs.append(sched.get_last_lr())
        assert [g["lr"] for g in sched.optimizer.param_groups] == sched.get_last_lr()
    return lrs


# Plateaus, noise below and above the threshold, and a long tail so min_lr is reached.
PLATEAU_METRICS = [5.0, 4.0, 3.0, 3.0, 3.0, 2.9999, 3.0, 3.0, 3.0, 2.0, 2.0, 2.5, 2.0, 1.99999] + [
    1.0 + 0.001 * math.sin(i) for i in range(40)
]


@pytest.mark.torch
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"factor": 0.5, "patience": 2},
        {"factor": 0.5, "patience": 1, "cooldown": 2, "min_lr": 0.004},
        {"mode": "max", "factor": 0.3, "patience": 0, "threshold": 0.01},
        {"patience": 1, "threshold_mode": "abs", "threshold": 0.5, "min_lr": [0.001, 0.0]},
        {"mode": "max", "threshold_mode": "abs", "patience": 3, "cooldown": 1, "eps": 1e-3},
    ],
)
def test_reduce_on_plateau_matches_torch(kwargs):
    opt, topt = make_optimizers()
    sched = ReduceLROnPlateau(opt, **kwargs)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kwargs)
    metrics = PLATEAU_METRICS if kwargs.get("mode") != "max" else [-m for m in PLATEAU_METRICS]
    ours = run_plateau(sched, metrics)
    theirs = []
    for metric in metrics:
        tsched.step(metric)
        theirs.append(tsched.get_last_lr())
    assert ours == theirs
    assert (sched.best, sched.num_bad_epochs, sched.cooldown_counter) == (
        tsched.best,
        tsched.num_bad_epochs,
        tsched.cooldown_counter,
    )
    assert len({tuple(lr) for lr in ours}) > 1  # the schedule did reduce


@pytest.mark.parametrize(
    ("make", "advance"),
    [
        (lambda opt: OneCycleLR(opt, [0.4, 0.1], total_steps=30), lambda s, i: s.step()),
        (
            lambda opt: OneCycleLR(
                opt, 0.4, total_steps=31, three_phase=True, anneal_strategy="linear"
            ),
            lambda s, i: s.step(),
        ),
        (
            lambda opt: OneCycleLR(opt, 0.4, total_steps=30, cycle_momentum=True),
            lambda s, i: s.step(),
        ),
        (
            lambda opt: ReduceLROnPlateau(opt, factor=0.5, patience=1, cooldown=1),
            lambda s, i: s.step(PLATEAU_METRICS[i]),
        ),
    ],
    ids=["one-cycle", "one-cycle-three-phase", "one-cycle-momentum", "plateau"],
)
def test_new_schedulers_state_dict_round_trip_through_json(make, advance):
    opt, _ = make_optimizers()
    sched = make(opt)
    for i in range(8):
        advance(sched, i)
    text = json.dumps(sched.state_dict())
    momenta_at_8 = [g["momentum"] for g in opt.param_groups]
    expected = []
    for i in range(8, 20):
        advance(sched, i)
        expected.append(sched.get_last_lr() + [g["momentum"] for g in opt.param_groups])

    fresh_opt, _ = make_optimizers()
    fresh = make(fresh_opt)
    fresh.load_state_dict(json.loads(text))
    assert fresh.last_epoch == 8
    assert [g["lr"] for g in fresh_opt.param_groups] == fresh.get_last_lr()
    assert [g["momentum"] for g in fresh_opt.param_groups] == momenta_at_8
    resumed = []
    for i in range(8, 20):
        advance(fresh, i)
        resumed.append(fresh.get_last_lr() + [g["momentum"] for g in fresh_opt.param_groups])
    assert resumed == expected


def test_plateau_load_state_dict_missing_counter_raises():
    opt, _ = make_optimizers()
    sched = ReduceLROnPlateau(opt)
    state = {k: v for k, v in sched.state_dict().items() if k != "best"}
    with pytest.raises(KeyError, match="missing entries \\['best'\\]"):
        sched.load_state_dict(state)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda o: OneCycleLR(o, 0.1), ValueError, "total_steps or both epochs"),
        (lambda o: OneCycleLR(o, 0.1, epochs=3), ValueError, "total_steps or both epochs"),
        (lambda o: OneCycleLR(o, 0.1, total_steps=0), ValueError, "total_steps must be >= 1"),
        (lambda o: OneCycleLR(o, 0.1, total_steps=5.0), TypeError, "total_steps must be an int"),
        (
            lambda o: OneCycleLR(o, 0.1, epochs=0, steps_per_epoch=3),
            ValueError,
            "epochs must be >= 1",
        ),
        (lambda o: OneCycleLR(o, 0.0, total_steps=5), ValueError, "max_lr must be > 0"),
        (lambda o: OneCycleLR(o, [0.1], total_steps=5), ValueError, "max_lr has 1 value"),
        (lambda o: OneCycleLR(o, 0.1, 5, pct_start=1.5), ValueError, "pct_start must be in"),
        (lambda o: OneCycleLR(o, 0.1, 5, anneal_strategy="exp"), ValueError, "anneal_strategy"),
        (lambda o: OneCycleLR(o, 0.1, 5, div_factor=0.0), ValueError, "div_factor must be > 0"),
        (lambda o: OneCycleLR(o, 0.1, 5, final_div_factor=-1.0), ValueError, "final_div_factor"),
        (lambda o: OneCycleLR(o, 0.1, 5, three_phase=1), TypeError, "three_phase must be a bool"),
        (
            lambda o: OneCycleLR(o, 0.1, 5, cycle_momentum=True, max_momentum=1.0),
            ValueError,
            "max_momentum must be in \\[0, 1\\)",
        ),
        (
            lambda o: OneCycleLR(o, 0.1, 5, cycle_momentum=True, base_momentum=[0.8]),
            ValueError,
            "base_momentum has 1 value",
        ),
        (lambda o: OneCycleLR(o, 0.1, 5, cycle_momentum=1), TypeError, "cycle_momentum must be"),
        (lambda o: ReduceLROnPlateau(o, mode="avg"), ValueError, "mode must be 'min' or 'max'"),
        (lambda o: ReduceLROnPlateau(o, factor=1.0), ValueError, "factor must be < 1"),
        (lambda o: ReduceLROnPlateau(o, factor=-0.5), ValueError, "factor"),
        (lambda o: ReduceLROnPlateau(o, patience=-1), ValueError, "patience must be >= 0"),
        (lambda o: ReduceLROnPlateau(o, patience=2.5), TypeError, "patience must be an int"),
        (lambda o: ReduceLROnPlateau(o, cooldown=-1), ValueError, "cooldown must be >= 0"),
        (lambda o: ReduceLROnPlateau(o, threshold_mode="x"), ValueError, "threshold_mode"),
        (lambda o: ReduceLROnPlateau(o, threshold=-1.0), ValueError, "threshold"),
        (lambda o: ReduceLROnPlateau(o, min_lr=[0.0]), ValueError, "min_lr must be one number"),
        (lambda o: ReduceLROnPlateau(o, min_lr=-1.0), ValueError, "min_lr"),
        (lambda o: ReduceLROnPlateau(o, eps=-1.0), ValueError, "eps"),
    ],
)
def test_new_schedulers_bad_arguments_raise(make, error, match):
    opt, _ = make_optimizers()
    with pytest.raises(error, match=match):
        make(opt)


def test_plateau_needs_an_xcnn_optimizer():
    _, topt = make_optimizers()
    with pytest.raises(TypeError, match=r"ReduceLROnPlateau: expected an xcnn\.optim\.Optimizer"):
        ReduceLROnPlateau(topt)
