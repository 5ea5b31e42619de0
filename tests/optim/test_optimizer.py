"""The Optimizer base: lazy state, backends, groups, state_dict round trips, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from xcnn import backends, optim
from xcnn.nn import Module, Parameter

HOST = backends.get("numpy")


class TwoParams(Module):
    def __init__(self, weights):
        super().__init__()
        # Copies: NumPy's asarray would alias the host arrays, which steps update in place.
        self.weight = Parameter(HOST.asarray(weights[0].copy()))
        self.bias = Parameter(HOST.asarray(weights[1].copy()))


OPTIMIZERS = {
    "sgd": lambda p, **kw: optim.SGD(p, **{"lr": 0.1, "momentum": 0.9, "nesterov": True, **kw}),
    "sgd-wd": lambda p, **kw: optim.SGD(
        p, **{"lr": 0.05, "momentum": 0.5, "dampening": 0.2, "weight_decay": 0.01, **kw}
    ),
    "adam": lambda p, **kw: optim.Adam(p, **{"lr": 0.01, "weight_decay": 0.1, **kw}),
    "adamw": lambda p, **kw: optim.AdamW(p, **{"lr": 0.01, **kw}),
}


def set_grads(backend, params, grads):
    for p, g in zip(params, grads, strict=True):
        p.grad = backend.asarray(g)


def host_weights(backend, params):
    return [backend.to_numpy(p.data).copy() for p in params]


def to_json_and_arrays(state_dict):
    """Split a state dict the way a pickle-free checkpoint does: arrays + a JSON string."""
    arrays, meta = {}, {"state": {}, "param_groups": state_dict["param_groups"]}
    for index, entries in state_dict["state"].items():
        meta["state"][index] = {}
        for key, value in entries.items():
            if isinstance(value, np.ndarray):
                arrays[f"{index}.{key}"] = value
            else:
                meta["state"][index][key] = value
    return arrays, json.dumps(meta)


def from_json_and_arrays(arrays, text):
    state_dict = json.loads(text)
    for name, value in arrays.items():
        index, key = name.split(".")
        state_dict["state"][index][key] = value
    return state_dict


# -- lazy state and backends ---------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_is_created_lazily_on_the_parameters_backend(backend, make_problem, name):
    weights, grads = make_problem("float32", steps=1, shapes=((3, 2), (2,)))
    model = TwoParams(weights)
    opt = OPTIMIZERS[name](list(model.parameters()))
    assert opt.state == {}
    model.to(backend.name)  # after building the optimizer, before its first step
    set_grads(backend, model.parameters(), grads[0])
    opt.step()
    assert len(opt.state) == 2
    for p in model.parameters():
        assert backends.namespace_name(p.data) == backend.name
        for value in opt.state[p].values():
            if hasattr(value, "shape"):
                assert backends.namespace_name(value) == backend.name
                assert value.shape == p.data.shape and value.dtype == p.data.dtype


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_follows_a_parameter_moved_after_some_steps(make_problem, name):
    weights, grads = make_problem("float32", steps=4, shapes=((3, 2), (2,)))
    numpy_b, strict_b = backends.get("numpy"), backends.get("array_api_strict")

    model = TwoParams(weights)
    opt = OPTIMIZERS[name](list(model.parameters()))
    for t in range(4):
        if t == 2:
            model.to("array_api_strict")
        set_grads(strict_b if t >= 2 else numpy_b, model.parameters(), grads[t])
        opt.step()
    for p in model.parameters():
        assert backends.namespace_name(p.data) == "array_api_strict"
        for value in opt.state[p].values():
            if hasattr(value, "shape"):
                assert backends.namespace_name(value) == "array_api_strict"

    reference = TwoParams(weights)
    ref_opt = OPTIMIZERS[name](list(reference.parameters()))
    for t in range(4):
        set_grads(numpy_b, reference.parameters(), grads[t])
        ref_opt.step()
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        np.testing.assert_allclose(strict_b.to_numpy(p.data), q.data, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_parameters_without_grad_are_skipped(backend, name):
    p = Parameter(backend.asarray([1.0, 2.0], dtype="float32"))
    q = Parameter(backend.asarray([3.0, 4.0], dtype="float32"))
    opt = OPTIMIZERS[name]([p, q])
    for _ in range(2):
        p.grad = backend.asarray([0.5, -0.5], dtype="float32")
        opt.step()
    np.testing.assert_array_equal(backend.to_numpy(q.data), [3.0, 4.0])
    assert q not in opt.state
    assert p in opt.state
    assert not np.array_equal(backend.to_numpy(p.data), [1.0, 2.0])
    if "step" in opt.state[p]:
        assert opt.state[p]["step"] == 2
    assert list(opt.state_dict()["state"]) == ["0"]


def test_zero_grad_sets_grads_to_none(backend):
    params = [Parameter(backend.asarray([1.0])), Parameter(backend.asarray([2.0]))]
    opt = optim.SGD(params, lr=0.1)
    for p in params:
        p.grad = backend.asarray([1.0])
    opt.zero_grad()
    assert all(p.grad is None for p in params)


def test_step_returns_the_closure_result(backend):
    p = Parameter(backend.asarray([1.0], dtype="float32"))
    opt = optim.SGD([p], lr=0.5)

    def closure():
        p.grad = backend.asarray([2.0], dtype="float32")
        return 7.0

    assert opt.step(closure) == 7.0
    np.testing.assert_array_equal(backend.to_numpy(p.data), [0.0])


# -- parameter groups ----------------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_param_groups_with_their_own_hyperparameters_match_torch(backend, side_by_side, name):
    def groups(params):
        return [
            {"params": params[:1], "lr": 0.1, "weight_decay": 0.05},
            {"params": params[1:]},
        ]

    extra = {"momentum": 0.9} if name == "SGD" else {}
    _, opt, _, _ = side_by_side(
        backend,
        lambda p: getattr(optim, name)(groups(p), lr=0.01, **extra),
        lambda p: getattr(torch.optim, name)(groups(p), lr=0.01, **extra),
    )
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]
    assert [len(g["params"]) for g in opt.param_groups] == [1, 2]


def test_add_param_group(backend):
    p = Parameter(backend.asarray([1.0], dtype="float32"))
    q = Parameter(backend.asarray([1.0], dtype="float32"))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    opt.add_param_group({"params": [q], "lr": 0.5})
    assert opt.param_groups[1]["momentum"] == 0.9
    for param in (p, q):
        param.grad = backend.asarray([1.0], dtype="float32")
    opt.step()
    np.testing.assert_allclose(backend.to_numpy(p.data), [0.9])
    np.testing.assert_allclose(backend.to_numpy(q.data), [0.5])
    assert opt.state_dict()["param_groups"][1]["params"] == [1]


# -- state_dict ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_dict_round_trip_continues_exactly(backend, make_problem, name):
    weights, grads = make_problem("float32", steps=6)

    params = [Parameter(backend.asarray(w.copy())) for w in weights]
    opt = OPTIMIZERS[name](params)
    for t in range(6):
        set_grads(backend, params, grads[t])
        opt.step()
    uninterrupted = host_weights(backend, params)

    params = [Parameter(backend.asarray(w.copy())) for w in weights]
    opt = OPTIMIZERS[name](params)
    for t in range(3):
        set_grads(backend, params, grads[t])
        opt.step()
    arrays, text = to_json_and_arrays(opt.state_dict())
    saved_weights = host_weights(backend, params)

    resumed = [Parameter(backend.asarray(w.copy())) for w in saved_weights]
    fresh = OPTIMIZERS[name](resumed, lr=123.0)  # the saved lr must win
    fresh.load_state_dict(from_json_and_arrays(arrays, text))
    assert fresh.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    for t in range(3, 6):
        set_grads(backend, resumed, grads[t])
        fresh.step()
    for a, b in zip(host_weights(backend, resumed), uninterrupted, strict=True):
        np.testing.assert_array_equal(a, b)


def test_state_dict_holds_host_copies_and_json_scalars(backend):
    p = Parameter(backend.asarray([1.0, 2.0], dtype="float32"))
    opt = optim.Adam([p], lr=0.1, betas=(0.8, 0.9))
    p.grad = backend.asarray([1.0, 1.0], dtype="float32")
    opt.step()
    sd = opt.state_dict()
    entry = sd["state"]["0"]
    assert type(entry["exp_avg"]) is np.ndarray and entry["exp_avg"].dtype == np.float32
    assert type(entry["step"]) is int
    assert sd["param_groups"] == [
        {"lr": 0.1, "betas": [0.8, 0.9], "eps": 1e-8, "weight_decay": 0.0, "params": [0]}
    ]
    json.dumps(sd["param_groups"])
    entry["exp_avg"][...] = 100.0  # a copy: the optimizer must not see this
    np.testing.assert_allclose(backend.to_numpy(opt.state[p]["exp_avg"]), [0.2, 0.2], rtol=1e-6)


def test_load_state_dict_moves_state_to_the_parameters_backend_and_dtype(backend):
    host_params = [Parameter(HOST.asarray([1.0, 2.0], dtype="float64"))]
    source = optim.SGD(host_params, lr=0.1, momentum=0.9)
    host_params[0].grad = HOST.asarray([0.25, 0.5], dtype="float64")
    source.step()

    p = Parameter(backend.asarray([1.0, 2.0], dtype="float32"))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    opt.load_state_dict(source.state_dict())
    buf = opt.state[p]["momentum_buffer"]
    assert backends.namespace_name(buf) == backend.name
    assert backend.to_numpy(buf).dtype == np.float32
    np.testing.assert_array_equal(backend.to_numpy(buf), [0.25, 0.5])


@pytest.mark.torch
@pytest.mark.parametrize(
    ("name", "hyper"),
    [("SGD", {"lr": 0.1, "momentum": 0.9}), ("Adam", {"lr": 0.01}), ("AdamW", {"lr": 0.01})],
)
def test_loads_a_torch_optimizer_state_dict(backend, make_problem, name, hyper):
    weights, grads = make_problem("float64", steps=6)
    tparams = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in weights]
    topt = getattr(torch.optim, name)(tparams, **hyper)
    for t in range(3):
        for tp, g in zip(tparams, grads[t], strict=True):
            tp.grad = torch.from_numpy(g.copy())
        topt.step()

    params = [Parameter(backend.asarray(tp.detach().numpy().copy())) for tp in tparams]
    opt = getattr(optim, name)(params, **hyper)
    opt.load_state_dict(topt.state_dict())
    for t in range(3, 6):
        set_grads(backend, params, grads[t])
        for tp, g in zip(tparams, grads[t], strict=True):
            tp.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    for p, tp in zip(params, tparams, strict=True):
        np.testing.assert_allclose(
            backend.to_numpy(p.data), tp.detach().numpy(), rtol=1e-10, atol=1e-12
        )


def _adam_after_one_step(shapes=((2,), (3,))):
    params = [Parameter(HOST.asarray(np.ones(s, dtype=np.float32))) for s in shapes]
    opt = optim.Adam(params, lr=0.1)
    for p in params:
        p.grad = HOST.asarray(np.ones(p.shape, dtype=np.float32))
    opt.step()
    return opt


def _mutate(sd, how):
    if how == "missing-key":
        del sd["state"]
    elif how == "extra-param":
        sd["param_groups"][0]["params"].append(2)
    elif how == "extra-group":
        sd["param_groups"].append({**sd["param_groups"][0], "params": []})
    elif how == "shape":
        sd["state"]["1"]["exp_avg"] = np.zeros((4,), dtype=np.float32)
    elif how == "unknown-entry":
        sd["state"]["0"]["momentum_buffer"] = np.zeros((2,), dtype=np.float32)
    elif how == "incomplete":
        del sd["state"]["0"]["exp_avg_sq"]
    elif how == "bad-index":
        sd["state"]["7"] = sd["state"]["0"]
    elif how == "bad-lr":
        sd["param_groups"][0]["lr"] = -1.0
    elif how == "decoupled":
        sd["param_groups"][0]["decoupled_weight_decay"] = True
    elif how == "amsgrad":
        sd["param_groups"][0]["amsgrad"] = True
    return sd


@pytest.mark.parametrize(
    ("how", "error", "match"),
    [
        ("missing-key", KeyError, "missing \\['state'\\]"),
        ("extra-param", ValueError, "group 0 has 2 parameters, the state dict's has 3"),
        ("extra-group", ValueError, "has 1 parameter group\\(s\\), the state dict has 2"),
        ("shape", ValueError, "'exp_avg' of parameter 1 has shape \\(4,\\), expected .*\\(3,\\)"),
        ("unknown-entry", ValueError, "unexpected entries \\['momentum_buffer'\\]"),
        ("incomplete", ValueError, "incomplete"),
        ("bad-index", ValueError, "state entry '7' names no parameter"),
        ("bad-lr", ValueError, "lr must be"),
        ("decoupled", ValueError, "decoupled_weight_decay"),
        ("amsgrad", ValueError, "amsgrad=True, which Adam does not support"),
    ],
)
def test_load_state_dict_mismatch_raises_and_changes_nothing(how, error, match):
    target = _adam_after_one_step()
    before = target.state_dict()
    bad = _mutate(_adam_after_one_step().state_dict(), how)
    if how != "bad-lr":
        bad["param_groups"][0]["lr"] = 0.5  # would show if a failed load applied anything
    with pytest.raises(error, match=match):
        target.load_state_dict(bad)
    after = target.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for index, entries in before["state"].items():
        for key, value in entries.items():
            np.testing.assert_array_equal(after["state"][index][key], value)


# -- construction and gradient errors ---------------------------------------------------------


def test_bad_params_raise():
    p = Parameter(HOST.asarray([1.0]))
    with pytest.raises(TypeError, match="got a single Parameter; pass \\[param\\]"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(ValueError, match="SGD: got an empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match=r"entry 1: expected an xcnn\.nn\.Parameter .*got ndarray"):
        optim.SGD([p, HOST.asarray([1.0])], lr=0.1)
    with pytest.raises(ValueError, match="appears more than once"):
        optim.Adam([{"params": [p]}, {"params": [p]}])
    with pytest.raises(ValueError, match="group 0 has no 'params' entry"):
        optim.Adam([{"lr": 0.1}])


def test_grad_on_another_backend_or_dtype_or_shape_raises():
    strict = backends.get("array_api_strict")
    first = Parameter(strict.asarray([5.0], dtype="float32"))
    first.grad = strict.asarray([1.0], dtype="float32")
    p = Parameter(strict.asarray([1.0, 2.0], dtype="float32"))
    opt = optim.SGD([first, p], lr=0.1, momentum=0.9)
    p.grad = HOST.asarray([1.0, 2.0], dtype="float32")
    with pytest.raises(
        TypeError, match="parameter 1 \\(2,\\) lives on array_api_strict but its grad is a numpy"
    ):
        opt.step()
    p.grad = strict.asarray([1.0, 2.0], dtype="float64")
    with pytest.raises(TypeError, match="dtype float32 but its grad has dtype float64"):
        opt.step()
    p.grad = strict.asarray([1.0, 2.0, 3.0], dtype="float32")
    with pytest.raises(ValueError, match="shape \\(2,\\) but its grad has shape \\(3,\\)"):
        opt.step()
    # Every gradient is checked before any update: the good parameter was left alone.
    np.testing.assert_array_equal(strict.to_numpy(first.data), [5.0])
    assert opt.state == {}


def test_any_leaf_tensor_is_optimized_and_non_leaves_are_refused(backend):
    from xcnn.autograd import Tensor

    w = Tensor(backend.asarray(np.array([3.0, -2.0]), dtype="float64"), requires_grad=True)
    opt = optim.SGD([w], lr=0.25)
    for _ in range(3):
        opt.zero_grad()
        (w * w).sum().backward()
        opt.step()
    # w <- w - 0.25 * 2w = w / 2 each step
    np.testing.assert_allclose(backend.to_numpy(w.data), [3.0 / 8, -2.0 / 8])
    with pytest.raises(TypeError, match=r"entry 0: .*got a non-leaf Tensor"):
        optim.SGD([w * 2.0], lr=0.1)
