"""nn.Conv2d: PyTorch parity, gradient checks, init, dtypes, caching and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xcnn import backends, nn
from xcnn.testing import gradcheck, to_torch


def _random_layer_config(rng):
    """Random constructor arguments and an input shape the layer accepts."""
    groups = int(rng.choice([1, 1, 1, 2, 3]))
    kernel = tuple(int(v) for v in rng.integers(1, 5, size=2))
    stride = tuple(int(v) for v in rng.integers(1, 4, size=2))
    padding = tuple(int(v) for v in rng.integers(0, 3, size=2))
    dilation = tuple(int(v) for v in rng.integers(1, 3, size=2))
    spatial = []
    for k, p, d in zip(kernel, padding, dilation, strict=True):
        smallest = max(1, d * (k - 1) + 1 - 2 * p)
        spatial.append(int(rng.integers(smallest, smallest + 8)))
    in_channels = groups * int(rng.integers(1, 4))
    args = {
        "in_channels": in_channels,
        "out_channels": groups * int(rng.integers(1, 4)),
        "kernel_size": kernel,
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "groups": groups,
        "bias": bool(rng.random() < 0.7),
    }
    return args, (int(rng.integers(1, 4)), in_channels, *spatial)


def _torch_twin(layer, args):
    twin = torch.nn.Conv2d(**args)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    return twin


@pytest.mark.torch
def test_matches_torch_conv2d(backend, rng):
    """Output, input grad and parameter grads equal torch.nn.Conv2d's on a seeded sweep."""
    for _ in range(50 if backend.name == "numpy" else 10):
        args, shape = _random_layer_config(rng)
        layer = nn.Conv2d(**args, rng=rng)
        twin = _torch_twin(layer, args)
        host_x = rng.standard_normal(shape).astype(np.float32)
        x = backend.asarray(host_x)
        y = layer(x)
        tx = torch.from_numpy(host_x).requires_grad_()
        ty = twin(tx)
        host_gy = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
        gx = layer.backward(backend.asarray(host_gy))
        ty.backward(torch.from_numpy(host_gy))

        tol = {"rtol": 1e-5, "atol": 1e-5}
        assert backends.namespace_name(y) == backend.name and y.dtype == backend.xp.float32
        np.testing.assert_allclose(backend.to_numpy(y), ty.detach().numpy(), **tol)
        np.testing.assert_allclose(backend.to_numpy(gx), tx.grad.numpy(), **tol)
        np.testing.assert_allclose(
            backend.to_numpy(layer.weight.grad), twin.weight.grad.numpy(), **tol
        )
        if args["bias"]:
            np.testing.assert_allclose(
                backend.to_numpy(layer.bias.grad), twin.bias.grad.numpy(), **tol
            )
        else:
            assert layer.bias is None and twin.bias is None


GRADCHECK_CASES = {
    "stride2_padding": ((3, 4, 3), {"stride": 2, "padding": 1}, (2, 3, 7, 6)),
    "dilation": ((2, 3, 3), {"dilation": 2, "padding": (1, 2)}, (2, 2, 6, 7)),
    "groups": ((4, 6, (2, 3)), {"groups": 2, "padding": 1}, (2, 4, 5, 6)),
    "non_square_kernel": ((2, 3, (1, 3)), {"stride": (2, 1)}, (2, 2, 5, 6)),
    "batch1_odd_no_bias": ((3, 2, 3), {"bias": False}, (1, 3, 5, 7)),
    "kernel_is_input": ((2, 3, (4, 3)), {}, (2, 2, 4, 3)),
}


@pytest.mark.parametrize("case", list(GRADCHECK_CASES), ids=list(GRADCHECK_CASES))
def test_gradcheck(backend, rng, case):
    """float64 finite differences w.r.t. the input, the weight and the bias."""
    args, kwargs, shape = GRADCHECK_CASES[case]
    layer = nn.Conv2d(*args, **kwargs, rng=rng).double()
    x = backend.asarray(rng.standard_normal(shape), dtype="float64")
    assert gradcheck(layer, x, max_elements=24)


def test_default_init_follows_pytorch(backend):
    """Shapes, PyTorch's bounds, one seed = same weights on every backend."""
    layer = nn.Conv2d(6, 16, (5, 3), groups=2, rng=7)
    assert layer.weight.shape == (16, 3, 5, 3) and layer.bias.shape == (16,)
    assert backends.namespace_name(layer.weight.data) == backend.name
    assert layer.weight.dtype == backend.xp.float32
    bound = 1.0 / math.sqrt(3 * 5 * 3)
    weight, bias = backend.to_numpy(layer.weight.data), backend.to_numpy(layer.bias.data)
    assert np.abs(weight).max() <= bound and np.abs(bias).max() <= bound
    assert weight.std() > bound / 3  # spread over the range, not a constant
    reference = nn.Conv2d(6, 16, (5, 3), groups=2, rng=7)
    np.testing.assert_array_equal(backend.to_numpy(reference.weight.data), weight)
    with backends.use("numpy"):
        on_numpy = nn.Conv2d(6, 16, (5, 3), groups=2, rng=7)
    np.testing.assert_array_equal(on_numpy.weight.data, weight)
    np.testing.assert_array_equal(on_numpy.bias.data, bias)
    assert list(layer.state_dict()) == ["weight", "bias"]
    no_bias = nn.Conv2d(3, 4, 3, bias=False, dtype="float64")
    assert no_bias.bias is None and [k for k, _ in no_bias.named_parameters()] == ["weight"]
    assert no_bias.weight.dtype == backend.xp.float64


def test_label_and_repr(backend):
    layer = nn.Conv2d(3, 16, 3, stride=2, padding=1, groups=1, bias=False)
    assert layer._label() == "Conv2d(3->16)"
    assert (
        repr(layer)
        == "Conv2d(3->16, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), bias=False)"
    )
    assert repr(nn.Conv2d(4, 4, (1, 2), dilation=2, groups=4)) == (
        "Conv2d(4->4, kernel_size=(1, 2), dilation=(2, 2), groups=4)"
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_namespace_and_non_contiguous_input(backend, rng, dtype):
    xp = backend.xp
    layer = nn.Conv2d(3, 4, (3, 2), padding=1, rng=rng, dtype=dtype)
    host = rng.standard_normal((2, 3, 6, 5)).astype(dtype)
    strided = xp.permute_dims(
        backend.asarray(np.ascontiguousarray(host.transpose(3, 2, 1, 0))), (3, 2, 1, 0)
    )
    y = layer(backend.asarray(host))
    gy = backend.asarray(rng.standard_normal(tuple(y.shape)).astype(dtype))
    gx = layer.backward(gy)
    gw = backend.to_numpy(layer.weight.grad)
    layer.zero_grad()
    y_strided = layer(strided)
    gx_strided = layer.backward(gy)
    for a in (y, gx, layer.weight.grad, layer.bias.grad):
        assert a.dtype == getattr(xp, dtype) and backends.namespace_name(a) == backend.name
    np.testing.assert_array_equal(backend.to_numpy(y_strided), backend.to_numpy(y))
    np.testing.assert_array_equal(backend.to_numpy(gx_strided), backend.to_numpy(gx))
    np.testing.assert_array_equal(backend.to_numpy(layer.weight.grad), gw)


def test_gradients_accumulate_and_cache_is_released(backend, rng):
    layer = nn.Conv2d(2, 3, 3, rng=rng, dtype="float64")
    x = backend.asarray(rng.standard_normal((2, 2, 5, 5)), dtype="float64")
    gy = backend.asarray(rng.standard_normal((2, 3, 3, 3)), dtype="float64")
    layer(x)
    layer.backward(gy)
    assert layer._pending() == 0
    once_w = backend.to_numpy(layer.weight.grad).copy()
    once_b = backend.to_numpy(layer.bias.grad).copy()
    layer(x)
    layer.backward(gy)
    np.testing.assert_allclose(backend.to_numpy(layer.weight.grad), 2 * once_w)
    np.testing.assert_allclose(backend.to_numpy(layer.bias.grad), 2 * once_b)


def test_needs_input_grad_false_skips_only_the_input_gradient(backend, rng):
    layer = nn.Conv2d(2, 3, 3, padding=1, rng=rng)
    x = backend.asarray(rng.standard_normal((2, 2, 5, 5)), dtype="float32")
    gy = backend.asarray(rng.standard_normal((2, 3, 5, 5)), dtype="float32")
    layer(x)
    assert layer.backward(gy) is not None
    expected = backend.to_numpy(layer.weight.grad).copy()
    layer.zero_grad()
    layer.needs_input_grad = False
    layer(x)
    assert layer.backward(gy) is None
    np.testing.assert_array_equal(backend.to_numpy(layer.weight.grad), expected)


def test_eval_mode_caches_nothing(backend, rng):
    layer = nn.Conv2d(1, 2, 3, rng=rng)
    x = backend.asarray(rng.standard_normal((1, 1, 4, 4)), dtype="float32")
    train_y = layer(x)
    layer.eval()
    assert layer._pending() == 0  # eval() drops a pending cache
    eval_y = layer(x)
    assert layer._pending() == 0
    np.testing.assert_array_equal(backend.to_numpy(eval_y), backend.to_numpy(train_y))
    with pytest.raises(RuntimeError, match=r"Conv2d\(1->2\): backward\(\) called without"):
        layer.backward(backend.xp.zeros((1, 2, 2, 2), dtype=backend.xp.float32))


def test_backward_before_forward(backend):
    layer = nn.Conv2d(1, 2, 3)
    with pytest.raises(RuntimeError, match=r"Conv2d\(1->2\): backward\(\) called without"):
        layer.backward(backend.xp.zeros((1, 2, 2, 2), dtype=backend.xp.float32))


def test_bad_inputs_are_explained(backend):
    xp = backend.xp
    layer = nn.Conv2d(3, 16, 5)
    with pytest.raises(ValueError, match=r"Conv2d\(3->16\): expected a 3-D .* 4-D .*\(8, 8\)"):
        layer(xp.zeros((8, 8), dtype=xp.float32))
    with pytest.raises(
        ValueError,
        match=r"Conv2d\(3->16\): expected input with 3 channels, got shape \(8, 1, 28, 28\)",
    ):
        layer(xp.zeros((8, 1, 28, 28), dtype=xp.float32))
    with pytest.raises(ValueError, match=r"Conv2d\(3->16\): .*smaller than the dilated kernel"):
        layer(xp.zeros((1, 3, 4, 9), dtype=xp.float32))
    dilated = nn.Conv2d(3, 4, 3, dilation=3, padding=1)
    with pytest.raises(ValueError, match=r"Conv2d\(3->4\): .*output size \(-1, 3\)"):
        dilated(xp.zeros((1, 3, 3, 7), dtype=xp.float32))
    with pytest.raises(TypeError, match=r"Conv2d\(3->16\): input has dtype .*float64"):
        layer(xp.zeros((1, 3, 8, 8), dtype=xp.float64))
    layer(xp.zeros((1, 3, 8, 8), dtype=xp.float32))
    with pytest.raises(ValueError, match=r"Conv2d\(3->16\): expected a gradient of the output"):
        layer.backward(xp.zeros((1, 16, 3, 3), dtype=xp.float32))


def test_input_on_another_backend_is_refused():
    with backends.use("array_api_strict"):
        layer = nn.Conv2d(1, 2, 3)
    with pytest.raises(
        TypeError, match=r"Conv2d\(1->2\): input is a numpy array .*array_api_strict"
    ):
        layer(np.zeros((1, 1, 5, 5), dtype=np.float32))


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((4, 6, 3), {"groups": 4}, r"Conv2d\(4->6\): .*divisible by groups \(4\)"),
        ((3, 6, 3), {"groups": 2}, r"Conv2d\(3->6\): .*divisible by groups \(2\)"),
        ((0, 6, 3), {}, r"Conv2d\(0->6\): in_channels must be a positive int, got 0"),
        ((3, 6, 3), {"groups": 0}, r"groups must be a positive int, got 0"),
        ((3, 6, 0), {}, r"Conv2d\(3->6\): kernel_size must be positive, got \(0, 0\)"),
        ((3, 6, 3), {"stride": (1, 0)}, r"stride must be positive, got \(1, 0\)"),
        ((3, 6, 3), {"stride": -1}, r"stride must be positive, got \(-1, -1\)"),
        ((3, 6, 3), {"padding": -1}, r"padding must be non-negative, got \(-1, -1\)"),
        ((3, 6, 3), {"dilation": 0}, r"dilation must be positive, got \(0, 0\)"),
    ],
)
def test_bad_constructor_arguments(backend, args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        nn.Conv2d(*args, **kwargs)


def test_non_int_sizes_are_refused(backend):
    with pytest.raises(TypeError, match=r"Conv2d\(3->6\): kernel_size must be an int or a pair"):
        nn.Conv2d(3, 6, (3, 3, 3))
    with pytest.raises(TypeError, match=r"Conv2d\(3->6\): padding must be an int or a pair"):
        nn.Conv2d(3, 6, 3, padding=(1, 1, 1))


# -- padding="same" | "valid" and unbatched (C, H, W) input, layer-wise -------------------


@st.composite
def string_padding_layer(draw):
    padding = draw(st.sampled_from(["same", "valid"]))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (1, 1) if padding == "same" else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    smallest = [
        1 if padding == "same" else d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True)
    ]
    size = [draw(st.integers(s, s + 4)) for s in smallest]
    args = {
        "in_channels": 2,
        "out_channels": draw(st.integers(1, 3)),
        "kernel_size": kernel,
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "bias": draw(st.booleans()),
    }
    lead = () if draw(st.booleans()) else (draw(st.integers(1, 2)),)
    return args, (*lead, 2, *size)


@pytest.mark.torch
@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=string_padding_layer(), seed=st.integers(0, 2**16))
def test_padding_strings_and_unbatched_match_torch_layerwise(backend, case, seed):
    args, shape = case
    rng = np.random.default_rng(seed)
    layer = nn.Conv2d(**args, rng=rng)
    twin = to_torch(layer)
    assert twin.padding == args["padding"] == layer.padding  # kept as given, as torch does
    host_x = rng.standard_normal(shape).astype(np.float32)
    tx = torch.from_numpy(host_x).requires_grad_()
    ty = twin(tx)
    y = layer(backend.asarray(host_x))
    host_gy = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    gx = layer.backward(backend.asarray(host_gy))
    ty.backward(torch.from_numpy(host_gy))
    assert tuple(y.shape) == tuple(ty.shape) and tuple(gx.shape) == shape
    if args["padding"] == "same":
        assert tuple(y.shape[-2:]) == shape[-2:]
    tol = {"rtol": 1e-4, "atol": 1e-5}
    np.testing.assert_allclose(backend.to_numpy(y), ty.detach().numpy(), **tol)
    np.testing.assert_allclose(backend.to_numpy(gx), tx.grad.numpy(), **tol)
    got = {"weight": layer.weight.grad} | ({"bias": layer.bias.grad} if args["bias"] else {})
    for name, grad in got.items():
        expected = getattr(twin, name).grad.numpy()
        np.testing.assert_allclose(backend.to_numpy(grad), expected, **tol, err_msg=name)


@pytest.mark.parametrize(
    ("kwargs", "shape"),
    [
        pytest.param({"kernel_size": (2, 4), "padding": "same", "dilation": (3, 1)}, (1, 2, 5, 4)),
        pytest.param({"kernel_size": 3, "padding": "valid", "stride": 2}, (2, 6, 7)),
        pytest.param({"kernel_size": 2, "padding": 1}, (2, 3, 3)),
    ],
)
def test_gradcheck_padding_strings_and_unbatched(backend, rng, kwargs, shape):
    layer = nn.Conv2d(2, 3, **kwargs, rng=rng, dtype="float64")
    x = backend.asarray(rng.standard_normal(shape), dtype="float64")
    assert gradcheck(layer, x, max_elements=40)


def test_padding_strings_repr_and_refusals():
    assert repr(nn.Conv2d(1, 2, 4, padding="same", rng=0)) == (
        "Conv2d(1->2, kernel_size=(4, 4), padding='same')"
    )
    assert repr(nn.Conv2d(1, 2, 4, padding="valid", rng=0)) == (
        "Conv2d(1->2, kernel_size=(4, 4), padding='valid')"
    )
    with pytest.raises(ValueError, match=r"Conv2d\(1->2\): padding='same' is not supported for"):
        nn.Conv2d(1, 2, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match=r"Conv2d\(1->2\): padding='full' is not one of"):
        nn.Conv2d(1, 2, 3, padding="full")
    layer = nn.Conv2d(2, 2, 5, padding="valid", rng=0)
    with pytest.raises(ValueError, match=r"Conv2d\(2->2\): input of spatial size \(4, 6\)"):
        layer(np.zeros((2, 4, 6), dtype=np.float32))
