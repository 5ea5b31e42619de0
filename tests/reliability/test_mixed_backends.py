"""Arrays never cross backends silently; state moves between backends exactly.

"Other" is each non-NumPy backend: ``array_api_strict`` (the CPU stand-in, always
run) and ``cupy`` (marked ``gpu``, SKIPPED where no CUDA device answers).
"""

from __future__ import annotations

import numpy as np
import pytest

import xcnn
from xcnn import backends, models, nn, optim


def _others() -> list:
    cupy_ok = "cupy" in backends.available()
    return [
        pytest.param("array_api_strict", id="array_api_strict"),
        pytest.param(
            "cupy",
            id="cupy",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(not cupy_ok, reason="CuPy with a usable CUDA device needed"),
            ],
        ),
    ]


OTHERS = _others()

LAYERS = {
    "Conv2d": (lambda: nn.Conv2d(2, 3, 3, rng=0), (2, 2, 5, 5), "Conv2d(2->3"),
    "Linear": (lambda: nn.Linear(4, 3, rng=0), (2, 4), "Linear(4->3)"),
    "BatchNorm2d": (lambda: nn.BatchNorm2d(2), (2, 2, 3, 3), "BatchNorm2d(2)"),
    "lenet5": (lambda: models.lenet5(rng=0), (2, 1, 28, 28), "Conv2d(1->6"),
}


def batch(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# -- a NumPy array into a model on another backend -------------------------------------


@pytest.mark.parametrize("other", OTHERS)
@pytest.mark.parametrize("layer", list(LAYERS))
def test_numpy_input_into_a_model_on_another_backend(other, layer):
    build, shape, label = LAYERS[layer]
    with backends.use(other):
        model = build()
    x = batch(shape)
    with pytest.raises(TypeError) as caught:
        model(x)
    message = str(caught.value)
    assert message.startswith(label), message
    assert "numpy" in message and other in message
    assert "model.to('numpy')" in message and "asarray" in message  # says what to do


@pytest.mark.parametrize("other", OTHERS)
@pytest.mark.parametrize("layer", list(LAYERS))
def test_other_backend_input_into_a_numpy_model(other, layer):
    build, shape, label = LAYERS[layer]
    with backends.use("numpy"):
        model = build()
    x = backends.get(other).asarray(batch(shape))
    with pytest.raises(TypeError) as caught:
        model(x)
    message = str(caught.value)
    assert message.startswith(label) and "numpy" in message and other in message


@pytest.mark.parametrize("other", OTHERS)
def test_loss_with_targets_on_another_backend(other):
    b = backends.get(other)
    logits = b.asarray(batch((3, 4)))
    with pytest.raises(TypeError) as caught:
        nn.CrossEntropyLoss()(logits, np.array([0, 1, 3]))
    message = str(caught.value)
    assert message.startswith("CrossEntropyLoss") and "numpy" in message and other in message


# -- state dicts and checkpoints across backends ---------------------------------------


def train_steps(model, opt, backend, steps=2, seed=0):
    """A few SGD/Adam steps of LeNet-5 on backend-resident random data."""
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = backend.asarray(rng.standard_normal((4, 1, 28, 28)).astype(np.float32))
        y = backend.asarray(rng.integers(0, 10, size=4).astype(np.int64))
        opt.zero_grad()
        loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        opt.step()


@pytest.mark.parametrize("other", OTHERS)
def test_state_dict_from_another_backend_loads_into_numpy(other):
    b = backends.get(other)
    with backends.use(other):
        source = models.lenet5(rng=0)
        opt = optim.SGD(source.parameters(), lr=0.1, momentum=0.9)
        train_steps(source, opt, b)
    state = source.state_dict()
    assert all(type(v) is np.ndarray for v in state.values())  # host copies
    with backends.use("numpy"):
        target = models.lenet5(rng=1)
    target.load_state_dict(state)
    for name, param in target.named_parameters():
        assert backends.namespace_name(param.data) == "numpy"
        assert param.data.dtype == np.float32
        np.testing.assert_array_equal(
            param.data, b.to_numpy(dict(source.named_parameters())[name].data)
        )
    # And back again: a NumPy state dict loads onto the other backend, staying there.
    with backends.use(other):
        back = models.lenet5(rng=2)
    back.load_state_dict(target.state_dict())
    for name, param in back.named_parameters():
        assert backends.namespace_name(param.data) == other
        np.testing.assert_array_equal(b.to_numpy(param.data), state[name])


@pytest.mark.parametrize("other", OTHERS)
def test_checkpoint_written_on_another_backend_resumes_on_numpy(other, tmp_path):
    b = backends.get(other)
    with backends.use(other):
        source = models.lenet5(rng=0)
        opt = optim.Adam(source.parameters(), lr=1e-3)
        train_steps(source, opt, b)
    path = xcnn.save(tmp_path / "ck.safetensors", source, opt, epoch=1, step=2)
    with backends.use("numpy"):
        target = models.lenet5(rng=1)
        target_opt = optim.Adam(target.parameters(), lr=0.5)
    xcnn.load(path, target, target_opt)
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[key], value)
    assert target_opt.param_groups[0]["lr"] == 1e-3
    # The optimizer state arrived on NumPy and the next step runs there.
    train_steps(target, target_opt, backends.get("numpy"), steps=1, seed=5)
    assert all(backends.namespace_name(p.data) == "numpy" for p in target.parameters())


# -- an optimizer created before model.to(...) ------------------------------------------

OPTIMIZERS = {
    "sgd-momentum": lambda params: optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda params: optim.Adam(params, lr=1e-3),
    "adamw": lambda params: optim.AdamW(params, lr=1e-3, weight_decay=0.1),
}


@pytest.mark.parametrize("other", OTHERS)
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_created_before_the_move_steps_on_the_new_backend(other, name):
    b = backends.get(other)
    with backends.use("numpy"):
        moved = models.lenet5(rng=0)
    opt = OPTIMIZERS[name](moved.parameters())
    moved.to(other)
    train_steps(moved, opt, b, steps=3)

    # Reference: the same model built on the other backend, optimizer created there.
    with backends.use(other):
        direct = models.lenet5(rng=0)
    direct_opt = OPTIMIZERS[name](direct.parameters())
    train_steps(direct, direct_opt, b, steps=3)

    for (key, p), (_, q) in zip(moved.named_parameters(), direct.named_parameters(), strict=True):
        assert backends.namespace_name(p.data) == other, key
        np.testing.assert_array_equal(b.to_numpy(p.data), b.to_numpy(q.data), err_msg=key)
    for state in opt.state.values():
        for value in state.values():
            if hasattr(value, "shape"):
                assert backends.namespace_name(value) == other


@pytest.mark.parametrize("other", OTHERS)
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_state_follows_a_move_after_steps(other, name):
    """Steps on NumPy, move, more steps: same result as staying on NumPy (to fp32 rounding)."""
    b = backends.get(other)
    with backends.use("numpy"):
        moved, stay = models.lenet5(rng=0), models.lenet5(rng=0)
    opt, stay_opt = OPTIMIZERS[name](moved.parameters()), OPTIMIZERS[name](stay.parameters())
    numpy_backend = backends.get("numpy")
    train_steps(moved, opt, numpy_backend, steps=2)
    train_steps(stay, stay_opt, numpy_backend, steps=2)
    moved.to(other)
    train_steps(moved, opt, b, steps=2, seed=1)
    train_steps(stay, stay_opt, numpy_backend, steps=2, seed=1)
    for (key, p), (_, q) in zip(moved.named_parameters(), stay.named_parameters(), strict=True):
        assert backends.namespace_name(p.data) == other, key
        np.testing.assert_allclose(b.to_numpy(p.data), q.data, rtol=1e-5, atol=1e-6, err_msg=key)
    for state in opt.state.values():
        for value in state.values():
            if hasattr(value, "shape"):
                assert backends.namespace_name(value) == other
