"""Pooling ops: PyTorch oracle, gradient checks, fast-path parity, dtypes, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xcnn import backends
from xcnn.ops import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    max_pool2d,
    max_pool2d_backward,
    relu,
    relu_backward,
    standard_only,
)
from xcnn.ops._cupy import pool as _pool_cupy
from xcnn.ops._geometry import pool_geometry
from xcnn.testing import gradcheck

TF = torch.nn.functional


def random_config(rng: np.random.Generator) -> dict:
    """Random kernel/stride/padding (non-square included) and a size that fits them."""
    kh, kw = (int(v) for v in rng.integers(1, 5, size=2))
    if rng.random() < 0.3:
        kw = kh
    sh, sw = (int(v) for v in rng.integers(1, 4, size=2))
    stride = None if rng.random() < 0.25 else (sh, sw)
    ph, pw = int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1))
    h = int(rng.integers(max(kh - 2 * ph, 1), 10))
    w = int(rng.integers(max(kw - 2 * pw, 1), 10))
    n, c = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    return {"shape": (n, c, h, w), "kernel": (kh, kw), "stride": stride, "padding": (ph, pw)}


def sweep(backend, count_numpy: int = 50, count_other: int = 8, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    configs = [random_config(rng) for _ in range(count_numpy)]
    # LeNet's 2x2/2 and the kernel-equals-input case are always in.
    configs[:2] = [
        {"shape": (2, 3, 8, 6), "kernel": (2, 2), "stride": None, "padding": (0, 0)},
        {"shape": (1, 2, 3, 5), "kernel": (3, 5), "stride": 1, "padding": (0, 0)},
    ]
    return configs if backend.name != "array_api_strict" else configs[:count_other]


def host_input(rng: np.random.Generator, shape: tuple, ties: bool) -> np.ndarray:
    if ties:  # few distinct values: windows with several maxima
        return rng.integers(-2, 3, size=shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def torch_window_offsets(torch_indices: np.ndarray, cfg: dict) -> np.ndarray:
    """Turn PyTorch's flat ``h*W + w`` argmax into xcnn's window offsets ``i*KW + j``."""
    _, _, _, w = cfg["shape"]
    kw = cfg["kernel"][1]
    stride = cfg["kernel"] if cfg["stride"] is None else cfg["stride"]
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = cfg["padding"]
    oh, ow = torch_indices.shape[2:]
    rows = torch_indices // w + ph - sh * np.arange(oh)[:, None]
    cols = torch_indices % w + pw - sw * np.arange(ow)[None, :]
    return rows * kw + cols


@pytest.mark.torch
def test_max_pool2d_matches_torch_including_ties(backend):
    rng = np.random.default_rng(1)
    for number, cfg in enumerate(sweep(backend)):
        args = (cfg["kernel"], cfg["stride"], cfg["padding"])
        host = host_input(rng, cfg["shape"], ties=number % 2 == 0)
        tx = torch.from_numpy(host).requires_grad_()
        ty, tidx = TF.max_pool2d(tx, *args, return_indices=True)
        host_gy = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
        ty.backward(torch.from_numpy(host_gy))

        x = backend.asarray(host)
        y, indices = max_pool2d(x, *args)
        gx = max_pool2d_backward(backend.asarray(host_gy), indices, host.shape, *args)
        assert backends.namespace_name(y) == backend.name == backends.namespace_name(gx)
        np.testing.assert_array_equal(backend.to_numpy(y), ty.detach().numpy(), err_msg=str(cfg))
        np.testing.assert_array_equal(
            backend.to_numpy(indices), torch_window_offsets(tidx.numpy(), cfg), err_msg=str(cfg)
        )
        # Ties: the whole window gradient goes to the first max only, like PyTorch.
        np.testing.assert_allclose(
            backend.to_numpy(gx), tx.grad.numpy(), rtol=1e-5, atol=1e-6, err_msg=str(cfg)
        )


@pytest.mark.torch
def test_avg_pool2d_matches_torch(backend):
    rng = np.random.default_rng(2)
    for cfg in sweep(backend, seed=3):
        args = (cfg["kernel"], cfg["stride"], cfg["padding"])
        host = host_input(rng, cfg["shape"], ties=False)
        tx = torch.from_numpy(host).requires_grad_()
        ty = TF.avg_pool2d(tx, *args)  # count_include_pad=True is PyTorch's default
        host_gy = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
        ty.backward(torch.from_numpy(host_gy))
        y = avg_pool2d(backend.asarray(host), *args)
        gx = avg_pool2d_backward(backend.asarray(host_gy), host.shape, *args)
        np.testing.assert_allclose(
            backend.to_numpy(y), ty.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=str(cfg)
        )
        np.testing.assert_allclose(
            backend.to_numpy(gx), tx.grad.numpy(), rtol=1e-5, atol=1e-6, err_msg=str(cfg)
        )


@pytest.mark.torch
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 4, 1, 1), (3, 2, 8, 8)])
def test_adaptive_avg_pool2d_matches_torch(backend, rng, shape):
    host = rng.standard_normal(shape).astype(np.float32)
    tx = torch.from_numpy(host).requires_grad_()
    ty = TF.adaptive_avg_pool2d(tx, 1)
    host_gy = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    ty.backward(torch.from_numpy(host_gy))
    y = adaptive_avg_pool2d(backend.asarray(host), (1, 1))
    gx = adaptive_avg_pool2d_backward(backend.asarray(host_gy), shape)
    assert tuple(y.shape) == (shape[0], shape[1], 1, 1)
    np.testing.assert_allclose(backend.to_numpy(y), ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(backend.to_numpy(gx), tx.grad.numpy(), rtol=1e-5, atol=1e-7)


GRAD_CONFIGS = [
    pytest.param((2, 2, 6, 6), 2, None, 0, id="2x2-stride2"),
    pytest.param((1, 2, 7, 5), 3, 2, 1, id="3x3-stride2-pad1-odd-batch1"),
    pytest.param((2, 1, 6, 7), (3, 2), (1, 2), (1, 1), id="non-square"),
    pytest.param((1, 3, 4, 5), (4, 5), 1, 0, id="kernel-equals-input"),
    pytest.param((2, 2, 5, 5), 3, 1, 0, id="overlapping"),
]


@pytest.mark.parametrize(("shape", "kernel", "stride", "padding"), GRAD_CONFIGS)
def test_max_pool2d_gradcheck(backend, rng, shape, kernel, stride, padding):
    # A scaled permutation: no ties anywhere, so max pooling is differentiable here.
    size = int(np.prod(shape))
    host = (rng.permutation(size).reshape(shape) / size).astype(np.float64)
    cache = {}

    def forward(x):
        y, cache["indices"] = max_pool2d(x, kernel, stride, padding)
        return y

    def backward(gy):
        return max_pool2d_backward(gy, cache["indices"], shape, kernel, stride, padding)

    assert gradcheck(forward, backend.asarray(host), backward, max_elements=None)


@pytest.mark.parametrize(("shape", "kernel", "stride", "padding"), GRAD_CONFIGS)
def test_avg_pool2d_gradcheck(backend, rng, shape, kernel, stride, padding):
    x = backend.asarray(rng.standard_normal(shape), dtype="float64")

    def backward(gy):
        return avg_pool2d_backward(gy, shape, kernel, stride, padding)

    assert gradcheck(
        lambda x: avg_pool2d(x, kernel, stride, padding), x, backward, max_elements=None
    )


def test_adaptive_avg_pool2d_gradcheck(backend, rng):
    shape = (2, 3, 3, 5)
    x = backend.asarray(rng.standard_normal(shape), dtype="float64")
    assert gradcheck(
        adaptive_avg_pool2d,
        x,
        lambda gy: adaptive_avg_pool2d_backward(gy, shape),
        max_elements=None,
    )


PARITY_CONFIGS = [
    pytest.param((3, 4, 8, 10), 2, None, 0, id="2x2-fast"),
    pytest.param((2, 3, 7, 9), 2, None, 0, id="2x2-odd-size"),
    pytest.param((2, 3, 9, 8), 3, 2, 1, id="overlap-pad"),
    pytest.param((2, 2, 9, 11), (2, 3), (3, 2), (1, 0), id="gaps-non-square"),
    pytest.param((2, 2, 6, 6), 3, 3, 0, id="tiled"),
    pytest.param((1, 2, 5, 5), 4, 1, 2, id="large-overlap"),
]


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize(("shape", "kernel", "stride", "padding"), PARITY_CONFIGS)
def test_max_pool2d_fast_path_equals_standard_twin(rng, shape, kernel, stride, padding, ties):
    xp = backends.get("numpy").xp
    x = host_input(rng, shape, ties)
    y, indices = max_pool2d(x, kernel, stride, padding)
    gy = rng.standard_normal(tuple(y.shape)).astype(np.float32)
    gx = max_pool2d_backward(gy, indices, shape, kernel, stride, padding)
    with standard_only():
        y2, indices2 = max_pool2d(xp.asarray(x), kernel, stride, padding)
        gx2 = max_pool2d_backward(gy, indices2, shape, kernel, stride, padding)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(indices, indices2)
    assert indices.dtype == indices2.dtype == np.int8
    np.testing.assert_array_equal(gx, gx2)
    assert gx.dtype == gx2.dtype == np.float32


TILED_CONFIGS = [
    pytest.param((4, 3, 8, 10), 2, id="2x2"),
    pytest.param((2, 3, 7, 9), 2, id="2x2-floor-leftover"),
    pytest.param((2, 2, 9, 9), 3, id="3x3"),
    pytest.param((2, 2, 6, 9), (2, 3), id="2x3"),
    pytest.param((1, 2, 4, 5), 1, id="1x1"),
    pytest.param((1, 1, 4, 4), 4, id="kernel-equals-input"),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("shape", "kernel"), TILED_CONFIGS)
def test_tiled_fast_path_equals_twin_with_nan_inf_ties_and_strided_input(rng, shape, kernel, dtype):
    # Windows that tile the input run the twin's loop on contiguous planes: same maxima,
    # same indices, even for NaN (the first NaN stops the running argmax) and +-inf.
    xp = backends.get("numpy").xp
    x = rng.integers(-2, 3, size=shape).astype(dtype)
    x[rng.random(shape) < 0.15] = np.nan
    x[rng.random(shape) < 0.1] = np.inf
    x[rng.random(shape) < 0.1] = -np.inf
    strided = np.asfortranarray(x)  # same values, non-C-contiguous memory
    assert not strided.flags.c_contiguous
    with standard_only():
        y2, indices2 = max_pool2d(xp.asarray(x), kernel)
    for given in (x, strided):
        y, indices = max_pool2d(given, kernel)
        np.testing.assert_array_equal(y, y2)  # NaN positions must match too
        np.testing.assert_array_equal(indices, indices2)
        assert y.dtype == y2.dtype == np.dtype(dtype)
        assert indices.dtype == indices2.dtype


def test_tiled_fast_path_outputs_are_not_reused_across_calls(rng):
    # Scratch is reused between calls; what a call returns must never be.
    x1 = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    x2 = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    y1, indices1 = max_pool2d(x1, 2)
    kept_y, kept_indices = y1.copy(), indices1.copy()
    y2, indices2 = max_pool2d(x2, 2)
    gy = rng.standard_normal(tuple(y1.shape)).astype(np.float32)
    gx1 = max_pool2d_backward(gy, indices1, x1.shape, 2)
    kept_gx = gx1.copy()
    max_pool2d_backward(gy, indices2, x2.shape, 2)
    np.testing.assert_array_equal(y1, kept_y)
    np.testing.assert_array_equal(indices1, kept_indices)
    np.testing.assert_array_equal(gx1, kept_gx)
    assert not np.shares_memory(y1, y2) and not np.shares_memory(indices1, indices2)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_and_namespace_are_kept(backend, rng, dtype):
    xp = backend.xp
    x = backend.asarray(rng.standard_normal((2, 3, 6, 6)), dtype=dtype)
    y, indices = max_pool2d(x, 3, 2, 1)
    outputs = [
        y,
        max_pool2d_backward(xp.ones_like(y), indices, (2, 3, 6, 6), 3, 2, 1),
        avg_pool2d(x, 3, 2, 1),
        avg_pool2d_backward(xp.ones_like(y), (2, 3, 6, 6), 3, 2, 1),
        adaptive_avg_pool2d(x),
        adaptive_avg_pool2d_backward(xp.ones((2, 3, 1, 1), dtype=x.dtype), (2, 3, 6, 6)),
    ]
    for out in outputs:
        assert out.dtype == getattr(xp, dtype)
        assert backends.namespace_name(out) == backend.name
    assert xp.isdtype(indices.dtype, "signed integer")


def test_large_windows_use_wider_indices(backend, rng):
    x = backend.asarray(rng.standard_normal((1, 1, 12, 12)), dtype="float32")
    y, indices = max_pool2d(x, 12)
    assert indices.dtype == backend.xp.int32
    host = backend.to_numpy(x)
    assert int(backend.to_numpy(indices)[0, 0, 0, 0]) == int(np.argmax(host))
    assert float(backend.to_numpy(y)[0, 0, 0, 0]) == float(host.max())


def test_non_contiguous_input_gives_identical_results(rng):
    host = rng.standard_normal((2, 3, 8, 10)).astype(np.float32)
    transposed = np.ascontiguousarray(host.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    sliced = np.pad(host, ((0, 0), (0, 0), (1, 1), (2, 2)))[:, :, 1:-1, 2:-2]
    assert not transposed.flags.c_contiguous and not sliced.flags.c_contiguous
    gy = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    for kernel, stride, padding in [(2, None, 0), (3, 2, 1)]:
        y, idx = max_pool2d(host, kernel, stride, padding)
        gx = max_pool2d_backward(
            gy[:, :, : y.shape[2], : y.shape[3]], idx, host.shape, kernel, stride, padding
        )
        for other in (transposed, sliced):
            y2, idx2 = max_pool2d(other, kernel, stride, padding)
            np.testing.assert_array_equal(y, y2)
            np.testing.assert_array_equal(idx, idx2)
            np.testing.assert_array_equal(
                avg_pool2d(host, kernel, stride, padding),
                avg_pool2d(other, kernel, stride, padding),
            )
        strided_gy = np.ascontiguousarray(gy[:, :, : y.shape[2], : y.shape[3]].T).T
        np.testing.assert_array_equal(
            gx, max_pool2d_backward(strided_gy, idx, host.shape, kernel, stride, padding)
        )


def test_constant_input_routes_each_window_to_its_first_pixel(backend):
    x = backend.asarray(np.full((1, 1, 4, 4), 7.0, dtype=np.float32))
    y, indices = max_pool2d(x, 2, 1)
    gx = max_pool2d_backward(backend.xp.ones_like(y), indices, (1, 1, 4, 4), 2, 1)
    assert np.all(backend.to_numpy(indices) == 0)
    # Each 2x2/stride-1 window's first pixel is its top-left: the top-left 3x3 block.
    expected = np.zeros((4, 4), dtype=np.float32)
    expected[:3, :3] = 1.0
    np.testing.assert_array_equal(backend.to_numpy(gx)[0, 0], expected)


def test_padding_never_wins_and_never_gives_infinity(backend):
    host = -np.arange(1, 26, dtype=np.float32).reshape(1, 1, 5, 5) * 1e30
    y, _ = max_pool2d(backend.asarray(host), 3, 2, 1)
    expected = TF.max_pool2d(torch.from_numpy(host), 3, 2, 1).numpy()
    out = backend.to_numpy(y)
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out, expected)


def test_nan_propagates(backend):
    host = np.zeros((1, 1, 4, 4), dtype=np.float32)
    host[0, 0, 1, 2] = np.nan
    y, _ = max_pool2d(backend.asarray(host), 2)
    assert np.isnan(backend.to_numpy(y)[0, 0, 0, 1])
    assert not np.isnan(backend.to_numpy(y)[0, 0, 1, 1])


@pytest.mark.parametrize(
    ("shape", "kwargs", "message"),
    [
        ((2, 6, 6), {}, r"max_pool2d: expected a 4-D input \(N, C, H, W\), got shape \(2, 6, 6\)"),
        ((1, 1, 6, 6), {"padding": 2}, r"padding \(2, 2\) must be at most half the kernel size"),
        ((1, 1, 1, 6), {}, r"non-positive output size \(0, 3\)"),
        ((1, 1, 6, 6), {"stride": 0}, "stride must be positive"),
        ((1, 1, 6, 6), {"padding": -1}, "padding must be non-negative"),
    ],
)
def test_bad_arguments_raise(backend, shape, kwargs, message):
    x = backend.xp.zeros(shape, dtype=backend.xp.float32)
    with pytest.raises(ValueError, match=message):
        max_pool2d(x, 2, **kwargs)
    with pytest.raises(ValueError, match=message.replace("max_pool2d", "avg_pool2d")):
        avg_pool2d(x, 2, **kwargs)


def test_bad_kernel_and_dtype_raise(backend):
    xp = backend.xp
    with pytest.raises(ValueError, match="kernel_size must be positive"):
        max_pool2d(xp.zeros((1, 1, 4, 4), dtype=xp.float32), 0)
    with pytest.raises(TypeError, match="kernel_size must be an int or a pair"):
        avg_pool2d(xp.zeros((1, 1, 4, 4), dtype=xp.float32), 2.0)
    with pytest.raises(TypeError, match="max_pool2d: expected a floating-point input"):
        max_pool2d(xp.zeros((1, 1, 4, 4), dtype=xp.int64), 2)


def test_backward_shape_mismatch_raises(backend):
    xp = backend.xp
    y, indices = max_pool2d(xp.zeros((2, 3, 6, 6), dtype=xp.float32), 2)
    with pytest.raises(
        ValueError,
        match=r"grad_output has shape \(2, 3, 2, 2\), expected "
        r"\(2, 3, 3, 3\)",
    ):
        max_pool2d_backward(xp.zeros((2, 3, 2, 2), dtype=xp.float32), indices, (2, 3, 6, 6), 2)
    with pytest.raises(ValueError, match="indices have shape"):
        max_pool2d_backward(y, indices[:1, ...], (2, 3, 6, 6), 2)
    with pytest.raises(ValueError, match="avg_pool2d_backward: grad_output has shape"):
        avg_pool2d_backward(y, (2, 3, 8, 8), 2)
    with pytest.raises(ValueError, match="adaptive_avg_pool2d_backward: grad_output"):
        adaptive_avg_pool2d_backward(y, (2, 3, 6, 6))


@pytest.mark.parametrize("size", [0, (2, 0), (1, 2, 3), None, True, (2.0, 2)])
def test_adaptive_avg_pool2d_bad_output_size(backend, size):
    x = backend.xp.zeros((1, 1, 4, 4), dtype=backend.xp.float32)
    with pytest.raises(ValueError, match="adaptive_avg_pool2d: output_size must be a positive"):
        adaptive_avg_pool2d(x, size)


def test_adaptive_avg_pool2d_rank(backend):
    with pytest.raises(ValueError, match="adaptive_avg_pool2d: expected a 4-D input"):
        adaptive_avg_pool2d(backend.xp.zeros((3, 4, 4), dtype=backend.xp.float32))


def test_max_pool2d_without_indices_equals_the_indexed_output(backend):
    """return_indices=False (the inference path) gives exactly the same values,
    on every namespace and, on NumPy, from both the fast path and its twin."""
    rng = np.random.default_rng(7)
    for config in sweep(backend, count_numpy=30, count_other=8, seed=7):
        host = rng.standard_normal(config["shape"]).astype(np.float32)
        host[..., ::3] = np.round(host[..., ::3])  # ties
        if rng.random() < 0.3:
            host.flat[int(rng.integers(host.size))] = np.nan
        x = backend.asarray(host)
        args = (config["kernel"], config["stride"], config["padding"])
        expected, _ = max_pool2d(x, *args)
        got = max_pool2d(x, *args, return_indices=False)
        assert backends.namespace_name(got) == backend.name and got.dtype == x.dtype
        np.testing.assert_array_equal(backend.to_numpy(got), backend.to_numpy(expected))
        with standard_only():
            twin = max_pool2d(x, *args, return_indices=False)
        np.testing.assert_array_equal(backend.to_numpy(twin), backend.to_numpy(expected))


def test_max_pool2d_without_indices_returns_fresh_arrays(rng):
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    first = max_pool2d(x, 2, return_indices=False)
    kept = first.copy()
    max_pool2d(x * 2, 2, return_indices=False)
    np.testing.assert_array_equal(first, kept)


def _fused_pool_relu(x, gy, shape, args):
    y, indices = max_pool2d(x, *args, relu=True)
    values = max_pool2d(x, *args, return_indices=False, relu=True)
    gx = max_pool2d_backward(gy, indices, shape, *args, relu_output=y)
    return y, indices, values, gx


def test_max_pool2d_with_relu_equals_the_pool_then_relu(backend):
    """relu=True and relu_output= give exactly relu(max_pool2d) and its gradient, on every
    namespace and, on NumPy, from the fast path and its twin: with negative, zero and NaN
    windows, ties, both index paths and the inference path."""
    rng = np.random.default_rng(11)
    for config in sweep(backend, count_numpy=30, count_other=8, seed=11):
        host = rng.standard_normal(config["shape"]).astype(np.float32)
        host[..., ::3] = np.round(host[..., ::3])  # ties, and zeros
        host[:, :1] = -np.abs(host[:, :1])  # windows whose maximum is not positive
        if rng.random() < 0.3:
            host.flat[int(rng.integers(host.size))] = np.nan
        x = backend.asarray(host)
        shape, args = config["shape"], (config["kernel"], config["stride"], config["padding"])
        plain, indices = max_pool2d(x, *args)
        gy = backend.asarray(rng.standard_normal(tuple(plain.shape)).astype(np.float32))
        expected = backend.to_numpy(relu(plain))
        expected_gx = backend.to_numpy(
            max_pool2d_backward(relu_backward(gy, plain), indices, shape, *args)
        )

        results = [_fused_pool_relu(x, gy, shape, args)]
        with standard_only():
            results.append(_fused_pool_relu(x, gy, shape, args))
        for y, fused_indices, values, gx in results:
            np.testing.assert_array_equal(backend.to_numpy(y), expected)
            np.testing.assert_array_equal(backend.to_numpy(values), expected)
            np.testing.assert_array_equal(
                backend.to_numpy(fused_indices), backend.to_numpy(indices)
            )
            np.testing.assert_array_equal(backend.to_numpy(gx), expected_gx)


def test_relu_output_of_the_wrong_shape_raises(backend):
    xp = backend.xp
    y, indices = max_pool2d(xp.zeros((2, 3, 6, 6), dtype=xp.float32), 2, relu=True)
    with pytest.raises(ValueError, match=r"relu_output has shape \(1, 3, 3, 3\), expected"):
        max_pool2d_backward(y, indices, (2, 3, 6, 6), 2, relu_output=y[:1, ...])


# The CUDA kernels, run on the CPU (see tests/ops/conftest.py): same values, indices
# and gradients as the twin, to the last bit (the backward adds in the twin's order).
KERNEL_POOLS = [
    {"shape": (2, 3, 8, 6), "kernel": (2, 2), "stride": None, "padding": (0, 0)},  # LeNet's
    {"shape": (1, 2, 7, 7), "kernel": (3, 3), "stride": (2, 2), "padding": (1, 1)},  # ResNet's
    {"shape": (1, 1, 13, 13), "kernel": (12, 12), "stride": 1, "padding": (0, 0)},  # int32
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("special", [False, True], ids=["random", "ties-nan-inf"])
def test_cuda_max_pool_kernels_equal_the_twin(cupy_on_cpu, dtype, special):
    rng = np.random.default_rng(3)
    for cfg in KERNEL_POOLS + [random_config(rng) for _ in range(37)]:
        shape, args = cfg["shape"], (cfg["kernel"], cfg["stride"], cfg["padding"])
        x = host_input(rng, shape, ties=special).astype(dtype)
        if special:  # NaN and infinities, where the NaN rule and the padding matter
            picks = rng.random(shape)
            x[picks < 0.05] = np.nan
            x[(picks >= 0.05) & (picks < 0.1)] = np.inf
            x[(picks >= 0.1) & (picks < 0.15)] = -np.inf
        with standard_only():
            expected_y, expected_indices = max_pool2d(x, *args)
        g = pool_geometry("max_pool2d", shape, *args)
        y, indices = _pool_cupy.max_pool2d(x, g)
        assert y.dtype == dtype and indices.dtype == expected_indices.dtype
        np.testing.assert_array_equal(y, expected_y, err_msg=str(cfg))
        np.testing.assert_array_equal(indices, expected_indices, err_msg=str(cfg))

        gy = rng.standard_normal(y.shape).astype(dtype)
        with standard_only():
            expected_gx = max_pool2d_backward(gy, expected_indices, shape, *args)
        gx = _pool_cupy.max_pool2d_backward(gy, indices, shape, g)
        assert gx.dtype == dtype
        np.testing.assert_array_equal(gx, expected_gx, err_msg=str(cfg))


# -- ceil_mode, count_include_pad, divisor_override, adaptive sizes -------------------------


def test_max_pool2d_ceil_mode_indices_match_torch(backend):
    """The argmax of windows that hang past the padded input, as torch's (in window offsets)."""
    rng = np.random.default_rng(11)
    for _ in range(30 if backend.name == "numpy" else 6):
        cfg = random_config(rng)
        host = host_input(rng, cfg["shape"], ties=bool(rng.random() < 0.5))
        args = (cfg["kernel"], cfg["stride"], cfg["padding"])
        y, indices = max_pool2d(backend.asarray(host), *args, ceil_mode=True)
        ty, t_indices = TF.max_pool2d(
            torch.from_numpy(host), *args, ceil_mode=True, return_indices=True
        )
        np.testing.assert_array_equal(backend.to_numpy(y), ty.numpy())
        expected = torch_window_offsets(t_indices.numpy(), cfg)
        np.testing.assert_array_equal(backend.to_numpy(indices), expected, err_msg=str(cfg))


CEIL_PARITY_CONFIGS = [
    pytest.param((2, 3, 7, 9), 2, None, 0, id="2x2-overhang"),  # would be the tiled path
    pytest.param((2, 3, 9, 8), 3, 2, 1, id="overlap-pad-overhang"),
    pytest.param((2, 2, 8, 11), (2, 3), (3, 2), (1, 0), id="gaps-non-square"),
    pytest.param((2, 2, 6, 6), 3, 3, 0, id="tiled-no-overhang"),  # ceil == floor: fast path
]


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize(("shape", "kernel", "stride", "padding"), CEIL_PARITY_CONFIGS)
def test_max_pool2d_ceil_mode_fast_path_equals_standard_twin(
    rng, shape, kernel, stride, padding, ties
):
    x = host_input(rng, shape, ties)
    args = (kernel, stride, padding)
    y, indices = max_pool2d(x, *args, ceil_mode=True)
    values = max_pool2d(x, *args, ceil_mode=True, return_indices=False)
    gy = rng.standard_normal(tuple(y.shape)).astype(np.float32)
    gx = max_pool2d_backward(gy, indices, shape, *args, ceil_mode=True)
    with standard_only():
        y2, indices2 = max_pool2d(x, *args, ceil_mode=True)
        gx2 = max_pool2d_backward(gy, indices2, shape, *args, ceil_mode=True)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(values, y2)
    np.testing.assert_array_equal(indices, indices2)
    np.testing.assert_array_equal(gx, gx2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_max_pool_kernels_equal_the_twin_in_ceil_mode(cupy_on_cpu, dtype):
    """The kernels read every tap past the input as padding, so ceil_mode's overhanging
    windows need nothing of them but the larger output size."""
    rng = np.random.default_rng(4)
    overhanging = 0
    for cfg in [random_config(rng) for _ in range(40)]:
        shape, args = cfg["shape"], (cfg["kernel"], cfg["stride"], cfg["padding"])
        x = host_input(rng, shape, ties=True).astype(dtype)
        with standard_only():
            expected_y, expected_indices = max_pool2d(x, *args, ceil_mode=True)
        g = pool_geometry("max_pool2d", shape, *args, ceil_mode=True)
        overhanging += bool(g.eh or g.ew)
        y, indices = _pool_cupy.max_pool2d(x, g)
        np.testing.assert_array_equal(y, expected_y, err_msg=str(cfg))
        np.testing.assert_array_equal(indices, expected_indices, err_msg=str(cfg))
        gy = rng.standard_normal(y.shape).astype(dtype)
        with standard_only():
            expected_gx = max_pool2d_backward(gy, expected_indices, shape, *args, ceil_mode=True)
        gx = _pool_cupy.max_pool2d_backward(gy, indices, shape, g)
        np.testing.assert_array_equal(gx, expected_gx, err_msg=str(cfg))
    assert overhanging > 5


@pytest.mark.parametrize(
    ("options", "shape"),
    [
        ({"ceil_mode": True}, (1, 2, 6, 7)),
        ({"ceil_mode": True, "count_include_pad": False}, (2, 1, 7, 6)),
        ({"count_include_pad": False}, (1, 2, 5, 5)),
        ({"divisor_override": 4, "ceil_mode": True}, (1, 1, 6, 6)),
    ],
)
def test_avg_pool2d_options_gradcheck(backend, rng, options, shape):
    x = backend.asarray(rng.standard_normal(shape), dtype="float64")
    args = (3, 2, 1)
    assert gradcheck(
        lambda a: avg_pool2d(a, *args, **options),
        x,
        backward=lambda gy: avg_pool2d_backward(gy, shape, *args, **options),
        max_elements=None,
    )


@pytest.mark.parametrize("output_size", [(3, 2), (None, 4), 5, (1, 7)])
def test_adaptive_avg_pool2d_any_size_gradcheck_and_torch(backend, rng, output_size):
    host = rng.standard_normal((2, 2, 5, 6))
    x = backend.asarray(host, dtype="float64")
    y = adaptive_avg_pool2d(x, output_size)
    expected = TF.adaptive_avg_pool2d(torch.from_numpy(host), output_size).numpy()
    np.testing.assert_allclose(backend.to_numpy(y), expected, rtol=1e-12, atol=1e-14)
    assert gradcheck(
        lambda a: adaptive_avg_pool2d(a, output_size),
        x,
        backward=lambda gy: adaptive_avg_pool2d_backward(gy, (2, 2, 5, 6), output_size),
        max_elements=None,
    )
