"""Pooling layers: PyTorch oracle, gradient checks, caching contract, dtypes, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xcnn import backends, nn
from xcnn.testing import gradcheck, to_torch


def random_layer_config(rng: np.random.Generator) -> tuple[dict, tuple[int, ...]]:
    kh, kw = (int(v) for v in rng.integers(1, 5, size=2))
    kernel = kh if rng.random() < 0.5 else (kh, kw)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    stride = None if rng.random() < 0.3 else (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    padding = (int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1)))
    h = int(rng.integers(max(kh - 2 * padding[0], 1), 10))
    w = int(rng.integers(max(kw - 2 * padding[1], 1), 10))
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 4)), h, w)
    return {"kernel_size": kernel, "stride": stride, "padding": padding}, shape


def configs_for(backend, seed: int) -> list[tuple[dict, tuple[int, ...]]]:
    rng = np.random.default_rng(seed)
    configs = [({"kernel_size": 2}, (4, 6, 12, 12))]  # LeNet's pooling
    configs += [random_layer_config(rng) for _ in range(49)]
    return configs if backend.name != "array_api_strict" else configs[:8]


def check_against_torch(backend, layer, torch_layer, shape, rng, ties=False):
    if ties:
        host = rng.integers(-2, 3, size=shape).astype(np.float32)
    else:
        host = rng.standard_normal(shape).astype(np.float32)
    tx = torch.from_numpy(host).requires_grad_()
    ty = torch_layer(tx)
    host_gy = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    ty.backward(torch.from_numpy(host_gy))
    y = layer(backend.asarray(host))
    gx = layer.backward(backend.asarray(host_gy))
    assert backends.namespace_name(y) == backend.name == backends.namespace_name(gx)
    np.testing.assert_allclose(backend.to_numpy(y), ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(backend.to_numpy(gx), tx.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.torch
@pytest.mark.parametrize("name", ["MaxPool2d", "AvgPool2d"])
def test_layer_matches_torch(backend, name):
    rng = np.random.default_rng(5)
    for number, (kwargs, shape) in enumerate(configs_for(backend, seed=6)):
        layer = getattr(nn, name)(**kwargs)
        torch_layer = getattr(torch.nn, name)(**kwargs)
        check_against_torch(backend, layer, torch_layer, shape, rng, ties=number % 2 == 0)
        assert layer._pending() == 0  # backward freed it


@pytest.mark.torch
@pytest.mark.parametrize("output_size", [1, (1, 1)])
def test_adaptive_avg_pool2d_matches_torch(backend, rng, output_size):
    for shape in [(2, 3, 5, 7), (1, 4, 1, 1), (4, 2, 8, 8)]:
        check_against_torch(
            backend,
            nn.AdaptiveAvgPool2d(output_size),
            torch.nn.AdaptiveAvgPool2d(output_size),
            shape,
            rng,
        )


LAYERS = [
    pytest.param(lambda: nn.MaxPool2d(2), (2, 2, 6, 6), id="max-2x2"),
    pytest.param(lambda: nn.MaxPool2d(3, stride=2, padding=1), (1, 2, 7, 5), id="max-3-s2-p1"),
    pytest.param(lambda: nn.MaxPool2d((3, 2), (1, 2), 1), (2, 1, 6, 7), id="max-non-square"),
    pytest.param(lambda: nn.MaxPool2d((4, 5), 1), (1, 3, 4, 5), id="max-kernel-is-input"),
    pytest.param(lambda: nn.AvgPool2d(2), (2, 2, 6, 6), id="avg-2x2"),
    pytest.param(lambda: nn.AvgPool2d(3, stride=2, padding=1), (1, 2, 7, 5), id="avg-3-s2-p1"),
    pytest.param(lambda: nn.AvgPool2d((3, 2), (1, 2), 1), (2, 1, 6, 7), id="avg-non-square"),
    pytest.param(lambda: nn.AvgPool2d((4, 5), 1), (1, 3, 4, 5), id="avg-kernel-is-input"),
    pytest.param(lambda: nn.AdaptiveAvgPool2d(1), (2, 3, 3, 5), id="global"),
]


@pytest.mark.parametrize(("make", "shape"), LAYERS)
def test_gradcheck(backend, rng, make, shape):
    size = int(np.prod(shape))
    # A scaled permutation has no ties, so max pooling is differentiable at it.
    host = rng.permutation(size).reshape(shape) / size
    assert gradcheck(make().double(), backend.asarray(host, dtype="float64"), max_elements=40)


@pytest.mark.parametrize(("make", "shape"), LAYERS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_namespace_and_eval_cache(backend, rng, make, shape, dtype):
    layer = make()
    x = backend.asarray(rng.standard_normal(shape), dtype=dtype)
    y = layer(x)
    assert y.dtype == x.dtype
    assert backends.namespace_name(y) == backend.name
    gx = layer.backward(backend.xp.ones_like(y))
    assert gx.dtype == x.dtype and tuple(gx.shape) == shape
    assert backends.namespace_name(gx) == backend.name
    layer.eval()
    y_eval = layer(x)
    assert layer._pending() == 0
    np.testing.assert_array_equal(backend.to_numpy(y_eval), backend.to_numpy(y))
    with pytest.raises(RuntimeError, match=r"backward\(\) called without a preceding forward"):
        layer.backward(backend.xp.ones_like(y))


@pytest.mark.parametrize(("make", "shape"), LAYERS)
def test_backward_before_forward_raises(make, shape):
    layer = make()
    with pytest.raises(RuntimeError, match=r"\): backward\(\) called without a preceding"):
        layer.backward(np.ones(shape, dtype=np.float32))


@pytest.mark.parametrize(("make", "shape"), LAYERS)
def test_non_contiguous_input_gives_identical_results(rng, make, shape):
    host = rng.standard_normal(shape).astype(np.float32)
    transposed = np.ascontiguousarray(host.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    layer = make()
    y = layer(host)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx = layer.backward(gy)
    y2 = layer(transposed)
    gx2 = layer.backward(np.asfortranarray(gy))
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(gx, gx2)


def test_repr_and_torch_style_attributes():
    pool = nn.MaxPool2d(3, padding=1)
    assert repr(pool) == "MaxPool2d(kernel_size=3, stride=3, padding=1)"
    assert (pool.kernel_size, pool.stride, pool.padding) == (3, 3, 1)
    avg = nn.AvgPool2d((2, 3), stride=1)
    assert repr(avg) == "AvgPool2d(kernel_size=(2, 3), stride=1, padding=0)"
    assert repr(nn.AdaptiveAvgPool2d((1, 1))) == "AdaptiveAvgPool2d(output_size=1)"
    assert list(pool.parameters()) == [] and pool.state_dict() == {}


@pytest.mark.parametrize("name", ["MaxPool2d", "AvgPool2d"])
def test_input_errors_name_the_layer(backend, name):
    xp = backend.xp
    layer = getattr(nn, name)(2)
    label = rf"{name}\(kernel_size=2, stride=2, padding=0\)"
    with pytest.raises(
        ValueError, match=label + r": expected a 3-D \(C, H, W\) or 4-D .* got shape \(8, 8\)"
    ):
        layer(xp.zeros((8, 8), dtype=xp.float32))
    with pytest.raises(ValueError, match=label + r": input of spatial size \(1, 8\) .* \(0, 4\)"):
        layer(xp.zeros((2, 3, 1, 8), dtype=xp.float32))
    with pytest.raises(TypeError, match=label + ": expected a floating-point input"):
        layer(xp.zeros((2, 3, 4, 4), dtype=xp.int64))
    with pytest.raises(TypeError, match=label + ": expected an array, got list"):
        layer([[1.0]])
    y = layer(xp.zeros((2, 3, 4, 4), dtype=xp.float32))
    with pytest.raises(ValueError, match=label + r": expected a gradient of the output's shape"):
        layer.backward(xp.zeros((2, 3, 4, 4), dtype=xp.float32))
    assert tuple(y.shape) == (2, 3, 2, 2)


@pytest.mark.parametrize("name", ["MaxPool2d", "AvgPool2d"])
def test_constructor_errors(name):
    cls = getattr(nn, name)
    with pytest.raises(ValueError, match=rf"{name}: padding \(2, 2\) must be at most half"):
        cls(3, padding=2)
    with pytest.raises(ValueError, match=rf"{name}: kernel_size must be positive"):
        cls(0)
    with pytest.raises(ValueError, match=rf"{name}: stride must be positive"):
        cls(2, stride=(1, 0))
    with pytest.raises(TypeError, match="kernel_size must be an int or a pair"):
        cls("2")


@pytest.mark.parametrize("size", [0, (7, 0), (1, 2, 3), None, "2", (True, 1), -1])
def test_adaptive_avg_pool2d_bad_output_size(size):
    with pytest.raises(ValueError, match="AdaptiveAvgPool2d: output_size must be a positive int"):
        nn.AdaptiveAvgPool2d(size)


def test_adaptive_avg_pool2d_rank_and_grad_shape(backend):
    xp = backend.xp
    layer = nn.AdaptiveAvgPool2d(1)
    with pytest.raises(ValueError, match=r"AdaptiveAvgPool2d\(output_size=1\): expected a 3-D"):
        layer(xp.zeros((4, 4), dtype=xp.float32))
    layer(xp.zeros((2, 3, 4, 4), dtype=xp.float32))
    with pytest.raises(ValueError, match="expected a gradient of the output's shape"):
        layer.backward(xp.zeros((2, 3), dtype=xp.float32))


def test_pooling_in_a_sequential_matches_torch(backend, rng):
    model = nn.Sequential(nn.MaxPool2d(2), nn.AvgPool2d(3, 1, 1), nn.AdaptiveAvgPool2d(1))
    twin = torch.nn.Sequential(
        torch.nn.MaxPool2d(2), torch.nn.AvgPool2d(3, 1, 1), torch.nn.AdaptiveAvgPool2d(1)
    )
    check_against_torch(backend, model, twin, (2, 3, 8, 10), rng)


# -- PyTorch's remaining options, layer-wise (y = m(x); m.backward(gy)) --------------------


@st.composite
def layer_with_options(draw):
    """A pooling layer with PyTorch's options, its torch twin and an input shape
    (unbatched (C, H, W) half of the time)."""
    name = draw(st.sampled_from(["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"]))
    lead = () if draw(st.booleans()) else (draw(st.integers(1, 2)),)
    if name == "AdaptiveAvgPool2d":
        size = (draw(st.integers(1, 8)), draw(st.integers(1, 8)))
        out = draw(
            st.one_of(
                st.integers(1, 6), st.tuples(st.none() | st.integers(1, 6), st.integers(1, 6))
            )
        )
        return {"output_size": out}, name, (*lead, 2, *size)
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    kwargs = {
        "kernel_size": kernel,
        "stride": draw(st.none() | st.tuples(st.integers(1, 3), st.integers(1, 3))),
        "padding": (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2))),
        "ceil_mode": draw(st.booleans()),
    }
    if name == "AvgPool2d":
        kwargs["count_include_pad"] = draw(st.booleans())
        kwargs["divisor_override"] = draw(st.sampled_from([None, None, 2, 5]))
    p = kwargs["padding"]
    size = [draw(st.integers(max(1, k - 2 * q), 8)) for k, q in zip(kernel, p, strict=True)]
    return kwargs, name, (*lead, 2, *size)


@pytest.mark.torch
@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=layer_with_options(), seed=st.integers(0, 2**16))
def test_layers_with_options_match_torch_layerwise(backend, case, seed):
    kwargs, name, shape = case
    layer = getattr(nn, name)(**kwargs)
    twin = to_torch(layer)
    assert isinstance(twin, getattr(torch.nn, name))
    ties = seed % 2 == 0 and name == "MaxPool2d"
    check_against_torch(backend, layer, twin, shape, np.random.default_rng(seed), ties=ties)
    assert layer._pending() == 0


@pytest.mark.parametrize(
    ("make", "shape"),
    [
        pytest.param(lambda: nn.MaxPool2d(3, 2, 1, ceil_mode=True), (1, 2, 6, 7), id="max-ceil"),
        pytest.param(lambda: nn.MaxPool2d(2, ceil_mode=True), (2, 5, 3), id="max-unbatched"),
        pytest.param(
            lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
            (2, 1, 6, 5),
            id="avg-ceil-exclude",
        ),
        pytest.param(lambda: nn.AvgPool2d(2, 1, 1, divisor_override=3), (2, 4, 3), id="avg-div"),
        pytest.param(lambda: nn.AdaptiveAvgPool2d((3, None)), (2, 5, 4), id="adaptive"),
    ],
)
def test_gradcheck_with_options_layerwise(backend, rng, make, shape):
    size = int(np.prod(shape))
    host = rng.permutation(size).reshape(shape) / size
    assert gradcheck(make().double(), backend.asarray(host, dtype="float64"), max_elements=40)


def test_repr_and_attributes_of_the_options():
    pool = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
    assert repr(pool) == "MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True)"
    assert pool.ceil_mode is True
    avg = nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False, divisor_override=3)
    assert repr(avg) == (
        "AvgPool2d(kernel_size=2, stride=2, padding=0, ceil_mode=True, "
        "count_include_pad=False, divisor_override=3)"
    )
    assert (avg.count_include_pad, avg.divisor_override) == (False, 3)
    assert repr(nn.AdaptiveAvgPool2d((None, 3))) == "AdaptiveAvgPool2d(output_size=(None, 3))"
    assert repr(nn.AdaptiveAvgPool2d((2, 3))) == "AdaptiveAvgPool2d(output_size=(2, 3))"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: nn.MaxPool2d(2, dilation=2), r"MaxPool2d: dilation=2 is not supported"),
        (lambda: nn.MaxPool2d(2, return_indices=True), "MaxPool2d: return_indices=True is not"),
        (lambda: nn.MaxPool2d(2, ceil_mode=1), "MaxPool2d: ceil_mode must be True or False"),
        (lambda: nn.AvgPool2d(2, divisor_override=0), "AvgPool2d: divisor_override must be a"),
        (lambda: nn.AvgPool2d(2, count_include_pad=None), "AvgPool2d: count_include_pad must"),
    ],
)
def test_refused_options_name_the_option(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()
