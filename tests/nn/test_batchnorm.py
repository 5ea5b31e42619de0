"""BatchNorm1d / BatchNorm2d: PyTorch oracle over several steps, state dicts, gradchecks, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xcnn import backends, nn
from xcnn.testing import gradcheck

TOL = {"rtol": 1e-5, "atol": 1e-5}


def random_config(rng: np.random.Generator) -> tuple[str, dict, tuple[int, ...]]:
    name = ("BatchNorm1d", "BatchNorm2d")[int(rng.integers(2))]
    c = int(rng.integers(1, 5))
    n = int(rng.integers(2, 5))
    if name == "BatchNorm2d":
        shape = (n, c, int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    elif rng.random() < 0.5:
        shape = (n, c)
    else:
        shape = (n, c, int(rng.integers(1, 5)))
    kwargs = {
        "eps": float(rng.choice([1e-5, 1e-3])),
        "momentum": [0.1, 0.5, None, 1.0][int(rng.integers(4))],
        "affine": bool(rng.random() < 0.8),
        "track_running_stats": bool(rng.random() < 0.8),
    }
    return name, {"num_features": c, **kwargs}, shape


def to_torch_state(layer: nn.Module) -> dict:
    return {k: torch.from_numpy(v) for k, v in layer.state_dict().items()}


def run_steps(backend, layer, twin, shape, rng, steps: int) -> None:
    """Train ``steps`` batches then one eval batch, comparing everything after each."""
    for step in range(steps + 1):
        if step == steps:
            layer.eval()
            twin.eval()
        host = (rng.standard_normal(shape) * 3.0 + 1.0).astype(np.float32)
        host_gy = rng.standard_normal(shape).astype(np.float32)
        tx = torch.from_numpy(host).requires_grad_()
        ty = twin(tx)
        y = layer(backend.asarray(host))
        np.testing.assert_allclose(backend.to_numpy(y), ty.detach().numpy(), **TOL)
        assert y.dtype == backend.xp.float32
        assert backends.namespace_name(y) == backend.name
        if layer.training:
            ty.backward(torch.from_numpy(host_gy))
            gx = layer.backward(backend.asarray(host_gy))
            np.testing.assert_allclose(backend.to_numpy(gx), tx.grad.numpy(), **TOL)
        else:
            assert layer._pending() == 0
        ours = layer.state_dict()
        for key, value in twin.state_dict().items():
            np.testing.assert_allclose(ours[key], value.numpy(), rtol=1e-5, atol=1e-6, err_msg=key)
            assert ours[key].dtype == value.numpy().dtype, key
    if layer.affine:
        np.testing.assert_allclose(backend.to_numpy(layer.weight.grad), twin.weight.grad, **TOL)
        np.testing.assert_allclose(backend.to_numpy(layer.bias.grad), twin.bias.grad, **TOL)


@pytest.mark.torch
def test_matches_torch_over_training_steps_and_eval(backend):
    rng = np.random.default_rng(11)
    count = 50 if backend.name != "array_api_strict" else 8
    for _ in range(count):
        name, kwargs, shape = random_config(rng)
        layer = getattr(nn, name)(**kwargs)
        twin = getattr(torch.nn, name)(**kwargs)
        if layer.affine:  # non-trivial gamma/beta, moved into torch through the state dict
            layer.load_state_dict(
                {
                    "weight": rng.uniform(0.5, 1.5, kwargs["num_features"]),
                    "bias": rng.standard_normal(kwargs["num_features"]),
                },
                strict=False,
            )
        twin.load_state_dict(to_torch_state(layer))
        run_steps(backend, layer, twin, shape, rng, steps=3)


def test_state_dict_is_pytorch_shaped_and_loads_both_ways(backend, rng):
    layer = nn.BatchNorm2d(4)
    layer(backend.asarray(rng.standard_normal((3, 4, 2, 2)), dtype="float32"))
    state = layer.state_dict()
    twin = torch.nn.BatchNorm2d(4)
    assert sorted(state) == sorted(twin.state_dict())
    assert state["num_batches_tracked"].dtype == np.int64
    assert state["num_batches_tracked"].shape == ()
    assert int(state["num_batches_tracked"]) == 1
    assert state["running_var"].dtype == np.float32
    twin.load_state_dict(to_torch_state(layer))
    twin(torch.randn(3, 4, 2, 2))
    fresh = nn.BatchNorm2d(4)
    fresh.load_state_dict(twin.state_dict())
    for key, value in twin.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key], value.numpy())
    assert backends.namespace_name(fresh.num_batches_tracked) == backend.name


def test_momentum_none_is_a_cumulative_average(backend, rng):
    layer = nn.BatchNorm1d(3, momentum=None)
    batches = [rng.standard_normal((4, 3)).astype(np.float32) for _ in range(5)]
    for batch in batches:
        layer(backend.asarray(batch))
    expected_mean = np.mean([b.mean(axis=0) for b in batches], axis=0)
    expected_var = np.mean([b.var(axis=0, ddof=1) for b in batches], axis=0)
    np.testing.assert_allclose(backend.to_numpy(layer.running_mean), expected_mean, rtol=1e-5)
    np.testing.assert_allclose(backend.to_numpy(layer.running_var), expected_var, rtol=1e-5)
    assert int(backend.to_numpy(layer.num_batches_tracked)) == 5


LAYERS = [
    pytest.param(lambda: nn.BatchNorm1d(3), (5, 3), id="1d-NC"),
    pytest.param(lambda: nn.BatchNorm1d(2, affine=False), (3, 2, 4), id="1d-NCL-plain"),
    pytest.param(lambda: nn.BatchNorm2d(3), (2, 3, 3, 2), id="2d"),
    pytest.param(lambda: nn.BatchNorm2d(2, momentum=None), (1, 2, 3, 3), id="2d-batch1"),
    pytest.param(
        lambda: nn.BatchNorm2d(2, track_running_stats=False), (3, 2, 2, 2), id="2d-nostats"
    ),
]


@pytest.mark.parametrize(("make", "shape"), LAYERS)
def test_gradcheck(backend, rng, make, shape):
    layer = make().double()
    # Non-trivial gamma and beta so their gradients matter.
    for param in layer.parameters():
        param.data = backend.asarray(rng.uniform(0.5, 1.5, param.shape), dtype="float64")
    x = backend.asarray(rng.standard_normal(shape) * 2.0 + 1.0, dtype="float64")
    assert gradcheck(layer, x, max_elements=40)


@pytest.mark.parametrize(("make", "shape"), LAYERS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_namespace_and_eval_cache(backend, rng, make, shape, dtype):
    layer = make().to(dtype)
    x = backend.asarray(rng.standard_normal(shape), dtype=dtype)
    y = layer(x)
    gx = layer.backward(backend.xp.ones_like(y))
    for out in (y, gx):
        assert out.dtype == x.dtype and tuple(out.shape) == shape
        assert backends.namespace_name(out) == backend.name
    for _, param in layer.named_parameters():
        assert param.grad.dtype == x.dtype
    if layer.track_running_stats:
        assert layer.running_mean.dtype == x.dtype
        assert layer.num_batches_tracked.dtype == backend.xp.int64
    layer.eval()
    layer(x)
    assert layer._pending() == 0
    with pytest.raises(RuntimeError, match=r"backward\(\) called without a preceding forward"):
        layer.backward(backend.xp.ones_like(y))


@pytest.mark.parametrize(("make", "shape"), LAYERS)
def test_non_contiguous_input_gives_identical_results(rng, make, shape):
    host = rng.standard_normal(shape).astype(np.float32)
    strided = np.ascontiguousarray(host.T).T
    assert host.ndim == 2 or not strided.flags.c_contiguous
    gy = rng.standard_normal(shape).astype(np.float32)
    a, b = make(), make()
    np.testing.assert_allclose(a(host), b(strided), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        a.backward(gy), b.backward(np.asfortranarray(gy)), rtol=1e-5, atol=1e-6
    )


def test_eval_uses_running_statistics(backend, rng):
    layer = nn.BatchNorm2d(2, eps=1e-3)
    layer.load_state_dict(
        {"running_mean": np.array([1.0, -2.0]), "running_var": np.array([4.0, 0.25])},
        strict=False,
    )
    layer.eval()
    host = rng.standard_normal((1, 2, 2, 2)).astype(np.float32)
    y = backend.to_numpy(layer(backend.asarray(host)))
    mean = np.array([1.0, -2.0]).reshape(1, 2, 1, 1)
    std = np.sqrt(np.array([4.0, 0.25]) + 1e-3).reshape(1, 2, 1, 1)
    np.testing.assert_allclose(y, (host - mean) / std, rtol=1e-5, atol=1e-6)
    assert int(backend.to_numpy(layer.num_batches_tracked)) == 0  # eval changes nothing


def test_flags_change_parameters_and_buffers():
    assert [n for n, _ in nn.BatchNorm1d(3, affine=False).named_parameters()] == []
    assert sorted(nn.BatchNorm1d(3, track_running_stats=False).state_dict()) == ["bias", "weight"]
    layer = nn.BatchNorm2d(3)
    np.testing.assert_array_equal(layer.weight.data, np.ones(3, dtype=np.float32))
    np.testing.assert_array_equal(layer.bias.data, np.zeros(3, dtype=np.float32))
    np.testing.assert_array_equal(layer.running_var, np.ones(3, dtype=np.float32))
    layer(np.ones((2, 3, 2, 2), dtype=np.float32))
    layer.reset_running_stats()
    np.testing.assert_array_equal(layer.running_mean, np.zeros(3, dtype=np.float32))
    assert int(layer.num_batches_tracked) == 0
    assert repr(layer) == (
        "BatchNorm2d(3, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"
    )
    assert layer._label() == "BatchNorm2d(3)"


@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (lambda: nn.BatchNorm1d(4), (1, 4)),
        (lambda: nn.BatchNorm1d(4), (1, 4, 1)),
        (lambda: nn.BatchNorm2d(4), (1, 4, 1, 1)),
        (lambda: nn.BatchNorm2d(4, track_running_stats=False), (1, 4, 1, 1)),
    ],
)
def test_one_value_per_channel_cannot_train(backend, make, shape):
    layer = make()
    x = backend.xp.ones(shape, dtype=backend.xp.float32)
    with pytest.raises(
        ValueError,
        match=r"BatchNorm.d\(4\): expected more than 1 value per channel when training, "
        r"got input shape \(1, 4",
    ):
        layer(x)
    if layer.track_running_stats:
        assert int(backend.to_numpy(layer.num_batches_tracked)) == 0  # nothing was updated
        layer.eval()
        assert tuple(layer(x).shape) == shape


def test_input_errors_name_the_layer(backend):
    xp = backend.xp
    with pytest.raises(ValueError, match=r"BatchNorm1d\(3\): expected 2-D \(N, C\) or 3-D"):
        nn.BatchNorm1d(3)(xp.ones((2, 3, 4, 4), dtype=xp.float32))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3\): expected 4-D \(N, C, H, W\) input"):
        nn.BatchNorm2d(3)(xp.ones((2, 3), dtype=xp.float32))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3\): expected input with 3 channels, got"):
        nn.BatchNorm2d(3)(xp.ones((2, 4, 2, 2), dtype=xp.float32))
    with pytest.raises(TypeError, match=r"BatchNorm2d\(3\): input is float64 but the layer is"):
        nn.BatchNorm2d(3)(xp.ones((2, 3, 2, 2), dtype=xp.float64))
    with pytest.raises(TypeError, match="expected a floating-point input"):
        nn.BatchNorm1d(3, affine=False)(xp.ones((2, 3), dtype=xp.int64))
    layer = nn.BatchNorm1d(3)
    layer(xp.ones((2, 3), dtype=xp.float32))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(3\): expected a gradient of the output"):
        layer.backward(xp.ones((2, 4), dtype=xp.float32))


@pytest.mark.parametrize("affine", [True, False])
def test_input_on_another_backend_raises(affine):
    with backends.use("array_api_strict"):
        layer = nn.BatchNorm2d(2, affine=affine)
    with pytest.raises(TypeError, match=r"BatchNorm2d\(2\): input is a numpy array but the"):
        layer(np.ones((2, 2, 2, 2), dtype=np.float32))


def test_backward_before_forward_raises():
    with pytest.raises(RuntimeError, match=r"BatchNorm2d\(2\): backward\(\) called without"):
        nn.BatchNorm2d(2).backward(np.ones((2, 2, 2, 2), dtype=np.float32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_features": 0}, "num_features must be a positive int"),
        ({"num_features": 3, "eps": 0.0}, "eps must be positive"),
        ({"num_features": 3, "momentum": 1.5}, r"momentum must be in \[0, 1\] or None"),
        ({"num_features": 3, "dtype": "int32"}, "dtype must be float32 or float64"),
    ],
)
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError, match="BatchNorm2d: " + message):
        nn.BatchNorm2d(**kwargs)


@pytest.mark.torch
@pytest.mark.parametrize(
    ("name", "shape"), [("BatchNorm2d", (0, 3, 4, 5)), ("BatchNorm1d", (0, 3))]
)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_empty_batch_in_training_matches_torch(backend, name, shape, momentum):
    """torch returns an empty output, leaves the running statistics and counts the batch
    (it raises only for a single value per channel); the gradients are empty and 0."""
    layer = getattr(nn, name)(3, momentum=momentum)
    twin = getattr(torch.nn, name)(3, momentum=momentum)
    twin.load_state_dict(to_torch_state(layer))
    tx = torch.zeros(shape, requires_grad=True)
    ty = twin(tx)
    y = layer(backend.asarray(np.zeros(shape, dtype=np.float32)))
    assert tuple(y.shape) == tuple(ty.shape) == shape
    ty.backward(torch.zeros(shape))
    gx = layer.backward(backend.asarray(np.zeros(shape, dtype=np.float32)))
    assert tuple(gx.shape) == shape and backends.namespace_name(gx) == backend.name
    for key, value in twin.state_dict().items():
        np.testing.assert_array_equal(layer.state_dict()[key], value.numpy(), err_msg=key)
    np.testing.assert_array_equal(backend.to_numpy(layer.weight.grad), twin.weight.grad.numpy())
    np.testing.assert_array_equal(backend.to_numpy(layer.bias.grad), twin.bias.grad.numpy())
    # A following non-empty batch updates the statistics as torch does (momentum=None
    # counts the empty batch too).
    host = np.random.default_rng(0).standard_normal((4, *shape[1:])).astype(np.float32)
    layer(backend.asarray(host))
    twin(torch.from_numpy(host))
    for key, value in twin.state_dict().items():
        np.testing.assert_allclose(layer.state_dict()[key], value.numpy(), **TOL, err_msg=key)


def test_batchnorm2d_refuses_unbatched_input_as_torch_does(backend):
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3\): expected 4-D \(N, C, H, W\) input"):
        nn.BatchNorm2d(3)(backend.xp.zeros((3, 4, 4), dtype=backend.xp.float32))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3\): expected more than 1 value"):
        nn.BatchNorm2d(3)(backend.xp.zeros((1, 3, 1, 1), dtype=backend.xp.float32))
