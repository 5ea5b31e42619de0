"""xcnn.ops.im2col / col2im: torch unfold/fold parity, adjointness, fast path == twin, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xcnn import backends
from xcnn.ops import col2im, im2col, output_size, standard_only
from xcnn.ops._cupy import im2col as _im2col_cupy
from xcnn.ops._dispatch import fast_path
from xcnn.ops._geometry import geometry


def _random_window(rng):
    """Random (input shape, kernel, stride, padding, dilation) with a positive output size."""
    kernel = tuple(int(v) for v in rng.integers(1, 5, size=2))
    stride = tuple(int(v) for v in rng.integers(1, 4, size=2))
    padding = tuple(int(v) for v in rng.integers(0, 3, size=2))
    dilation = tuple(int(v) for v in rng.integers(1, 3, size=2))
    spatial = []
    for k, p, d in zip(kernel, padding, dilation, strict=True):
        smallest = max(1, d * (k - 1) + 1 - 2 * p)
        spatial.append(int(rng.integers(smallest, smallest + 8)))
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 4)), *spatial)
    return shape, kernel, stride, padding, dilation


def _cols_shape(shape, kernel, stride, padding, dilation):
    oh = output_size(shape[2], kernel[0], stride[0], padding[0], dilation[0])
    ow = output_size(shape[3], kernel[1], stride[1], padding[1], dilation[1])
    return (shape[0], shape[1] * kernel[0] * kernel[1], oh * ow)


def _non_contiguous(backend, host):
    """Same values as ``host`` but a strided (transposed-back) view on the backend."""
    xp = backend.xp
    flipped = backend.asarray(np.ascontiguousarray(host.transpose(3, 2, 1, 0)))
    return xp.permute_dims(flipped, (3, 2, 1, 0))


@pytest.mark.torch
def test_im2col_and_col2im_match_torch_unfold_fold(backend, rng):
    """im2col == F.unfold and col2im == F.fold (same (c, i, j) row order, summed overlaps)."""
    for _ in range(40 if backend.name == "numpy" else 12):
        shape, kernel, stride, padding, dilation = _random_window(rng)
        host = rng.standard_normal(shape).astype(np.float32)
        cols = im2col(backend.asarray(host), kernel, stride, padding, dilation)
        window = dict(kernel_size=kernel, dilation=dilation, padding=padding, stride=stride)
        expected = torch.nn.functional.unfold(torch.from_numpy(host), **window).numpy()
        assert backends.namespace_name(cols) == backend.name
        np.testing.assert_array_equal(backend.to_numpy(cols), expected)

        g = rng.standard_normal(expected.shape).astype(np.float32)
        folded = col2im(backend.asarray(g), shape, kernel, stride, padding, dilation)
        reference = torch.nn.functional.fold(torch.from_numpy(g), shape[2:], **window).numpy()
        assert backends.namespace_name(folded) == backend.name
        np.testing.assert_allclose(backend.to_numpy(folded), reference, rtol=1e-6, atol=1e-6)


def test_col2im_is_the_adjoint_of_im2col(backend, rng):
    """<im2col(x), g> == <x, col2im(g)> for random x, g and window parameters."""
    xp = backend.xp
    for _ in range(30 if backend.name == "numpy" else 10):
        shape, kernel, stride, padding, dilation = _random_window(rng)
        x = backend.asarray(rng.standard_normal(shape), dtype="float64")
        g_host = rng.standard_normal(_cols_shape(shape, kernel, stride, padding, dilation))
        g = backend.asarray(g_host, dtype="float64")
        left = float(backend.to_numpy(xp.sum(im2col(x, kernel, stride, padding, dilation) * g)))
        right = float(
            backend.to_numpy(xp.sum(x * col2im(g, shape, kernel, stride, padding, dilation)))
        )
        assert left == pytest.approx(right, rel=1e-12, abs=1e-12)


def test_small_example_by_hand(backend):
    """2x2 kernel, stride 1, padding 1 on a 2x2 image: every column is one padded window."""
    x = backend.asarray(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), dtype="float32")
    cols = backend.to_numpy(im2col(x, 2, padding=1))
    # windows (oh, ow) in row-major order over the 3x3 output; rows are taps (0,0),(0,1),(1,0),(1,1)
    expected = np.array(
        [
            [0, 0, 0, 0, 1, 2, 0, 3, 4],
            [0, 0, 0, 1, 2, 0, 3, 4, 0],
            [0, 1, 2, 0, 3, 4, 0, 0, 0],
            [1, 2, 0, 3, 4, 0, 0, 0, 0],
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(cols[0], expected)
    counts = backend.to_numpy(col2im(backend.xp.ones((1, 4, 9)), (1, 1, 2, 2), 2, padding=1))
    np.testing.assert_array_equal(counts, np.full((1, 1, 2, 2), 4.0))


def test_fast_path_equals_standard_twin(backend, rng):
    """The backend's fast path gives the standard-only result bit for bit."""
    if fast_path(backend.xp) is None:
        pytest.skip(f"{backend.name} has no fast path: the standard code is the only one")
    for _ in range(30):
        shape, kernel, stride, padding, dilation = _random_window(rng)
        window = (kernel, stride, padding, dilation)
        x = backend.asarray(rng.standard_normal(shape), dtype="float32")
        g = backend.asarray(rng.standard_normal(_cols_shape(shape, *window)), dtype="float32")
        fast_cols, fast_img = im2col(x, *window), col2im(g, shape, *window)
        with standard_only():
            twin_cols, twin_img = im2col(x, *window), col2im(g, shape, *window)
        np.testing.assert_array_equal(backend.to_numpy(fast_cols), backend.to_numpy(twin_cols))
        # Both sum the taps in the same (i, j) order, so even the rounding agrees.
        np.testing.assert_array_equal(backend.to_numpy(fast_img), backend.to_numpy(twin_img))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_namespace_and_non_contiguous_input(backend, rng, dtype):
    shape, window = (2, 3, 7, 6), ((3, 2), (2, 1), (1, 0), (1, 2))
    host = rng.standard_normal(shape).astype(dtype)
    cols = im2col(backend.asarray(host), *window)
    strided = im2col(_non_contiguous(backend, host), *window)
    assert cols.dtype == getattr(backend.xp, dtype)
    assert backends.namespace_name(cols) == backend.name
    np.testing.assert_array_equal(backend.to_numpy(strided), backend.to_numpy(cols))

    g_host = rng.standard_normal(tuple(cols.shape)).astype(dtype)
    img = col2im(backend.asarray(g_host), shape, *window)
    transposed = np.ascontiguousarray(g_host.transpose(2, 1, 0))
    g_strided = backend.xp.permute_dims(backend.asarray(transposed), (2, 1, 0))
    img_strided = col2im(g_strided, shape, *window)
    assert img.dtype == getattr(backend.xp, dtype) and tuple(img.shape) == shape
    assert backends.namespace_name(img) == backend.name
    np.testing.assert_array_equal(backend.to_numpy(img_strided), backend.to_numpy(img))


@pytest.mark.parametrize(
    "shape, kwargs, message",
    [
        ((3, 8, 8), {}, r"im2col: expected a 4-D input \(N, C, H, W\), got shape \(3, 8, 8\)"),
        ((1, 1, 8, 8), {"stride": 0}, r"stride must be positive, got \(0, 0\)"),
        ((1, 1, 8, 8), {"stride": (1, -2)}, r"stride must be positive, got \(1, -2\)"),
        ((1, 1, 8, 8), {"padding": -1}, r"padding must be non-negative, got \(-1, -1\)"),
        ((1, 1, 8, 8), {"dilation": 0}, r"dilation must be positive"),
        ((1, 1, 8, 8), {"kernel_size": 0}, r"kernel_size must be positive"),
        ((1, 1, 4, 8), {"kernel_size": 5}, r"smaller than the dilated kernel \(5, 5\)"),
        ((1, 1, 8, 8), {"dilation": 4}, r"non-positive output size \(0, 0\)"),
        ((1, 1, 3, 3), {"kernel_size": (4, 2), "padding": (0, 1)}, r"spatial size \(3, 3\)"),
    ],
)
def test_im2col_bad_arguments(backend, shape, kwargs, message):
    x = backend.xp.zeros(shape, dtype=backend.xp.float32)
    arguments = {"kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        im2col(x, **arguments)


def test_im2col_rejects_non_int_sizes(backend):
    x = backend.xp.zeros((1, 1, 4, 4), dtype=backend.xp.float32)
    with pytest.raises(TypeError, match=r"im2col: kernel_size must be an int or a pair"):
        im2col(x, 2.5)
    with pytest.raises(TypeError, match=r"im2col: stride must be an int or a pair"):
        im2col(x, 2, stride=(1, 1, 1))


def test_col2im_checks_cols_shape_and_input_shape(backend):
    xp = backend.xp
    with pytest.raises(ValueError, match=r"col2im: expected cols of shape \(2, 12, 9\)"):
        col2im(xp.zeros((2, 12, 8)), (2, 3, 4, 4), 2)
    with pytest.raises(ValueError, match=r"col2im: expected a 4-D input"):
        col2im(xp.zeros((2, 12, 9)), (3, 4, 4), 2)
    with pytest.raises(ValueError, match=r"col2im: .*smaller than the dilated kernel"):
        col2im(xp.zeros((2, 12, 9)), (2, 3, 1, 1), 2)


# The CUDA kernels, run on the CPU (see tests/ops/conftest.py): the index math of each.
KERNEL_WINDOWS = [  # LeNet-5's two convolutions and a ResNet 3x3 with stride 2
    ((2, 1, 28, 28), (5, 5), (1, 1), (2, 2), (1, 1)),
    ((2, 6, 14, 14), (5, 5), (1, 1), (0, 0), (1, 1)),
    ((2, 4, 9, 8), (3, 3), (2, 2), (1, 1), (1, 1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_im2col_kernel_equals_the_twin(cupy_on_cpu, rng, dtype):
    for window in KERNEL_WINDOWS + [_random_window(rng) for _ in range(37)]:
        shape = window[0]
        x = rng.standard_normal(shape).astype(dtype)
        with standard_only():
            expected = im2col(x, *window[1:])
        got = _im2col_cupy.im2col(x, geometry("im2col", *window))
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, expected, err_msg=str(window))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_col2im_kernel_equals_the_twin(cupy_on_cpu, rng, dtype):
    for window in KERNEL_WINDOWS + [_random_window(rng) for _ in range(37)]:
        cols = rng.standard_normal(_cols_shape(*window)).astype(dtype)
        with standard_only():
            expected = col2im(cols, *window)
        got = _im2col_cupy.col2im(cols, window[0], geometry("col2im", *window))
        assert got.dtype == dtype
        tolerance = 1e-6 if dtype == np.float32 else 1e-14
        np.testing.assert_allclose(
            got, expected, rtol=tolerance, atol=tolerance, err_msg=str(window)
        )


def test_cuda_col2im_kernel_sums_every_overlapping_tap(cupy_on_cpu):
    # All-ones columns: each pixel gets the number of windows that cover it.
    shape = (1, 1, 5, 5)
    g = geometry("col2im", shape, (3, 3), (1, 1), (1, 1), (1, 1))
    counts = _im2col_cupy.col2im(np.ones((1, 9, 25), np.float64), shape, g)[0, 0]
    expected = np.outer([2, 3, 3, 3, 2], [2, 3, 3, 3, 2])
    np.testing.assert_array_equal(counts, expected)
