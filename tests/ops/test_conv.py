"""xcnn.ops.conv2d / conv2d_backward: PyTorch parity, gradients, fast path == twin, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xcnn import backends
from xcnn.ops import conv2d, conv2d_backward, output_size, standard_only
from xcnn.ops._dispatch import fast_path
from xcnn.testing import gradcheck


def _random_conv(rng):
    """Random shapes and window parameters (incl. groups and non-square kernels)."""
    groups = int(rng.choice([1, 1, 1, 2, 3]))
    channels = groups * int(rng.integers(1, 4))
    out_channels = groups * int(rng.integers(1, 4))
    kernel = tuple(int(v) for v in rng.integers(1, 5, size=2))
    stride = tuple(int(v) for v in rng.integers(1, 4, size=2))
    padding = tuple(int(v) for v in rng.integers(0, 3, size=2))
    dilation = tuple(int(v) for v in rng.integers(1, 3, size=2))
    spatial = []
    for k, p, d in zip(kernel, padding, dilation, strict=True):
        smallest = max(1, d * (k - 1) + 1 - 2 * p)
        spatial.append(int(rng.integers(smallest, smallest + 8)))
    return {
        "x_shape": (int(rng.integers(1, 4)), channels, *spatial),
        "w_shape": (out_channels, channels // groups, *kernel),
        "bias": bool(rng.random() < 0.7),
        "window": {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups},
    }


def _out_shape(config):
    n, _, h, w = config["x_shape"]
    o, _, kh, kw = config["w_shape"]
    s, p, d = (config["window"][k] for k in ("stride", "padding", "dilation"))
    return (n, o, output_size(h, kh, s[0], p[0], d[0]), output_size(w, kw, s[1], p[1], d[1]))


def _arrays(backend, rng, config, dtype):
    x = backend.asarray(rng.standard_normal(config["x_shape"]), dtype=dtype)
    w = backend.asarray(rng.standard_normal(config["w_shape"]) * 0.5, dtype=dtype)
    b = backend.asarray(rng.standard_normal(config["w_shape"][0]), dtype=dtype)
    gy = backend.asarray(rng.standard_normal(_out_shape(config)), dtype=dtype)
    return x, w, (b if config["bias"] else None), gy


def _torch(backend, a):
    return torch.from_numpy(np.array(backend.to_numpy(a))).requires_grad_()


@pytest.mark.torch
def test_matches_torch_functional_conv2d(backend, rng):
    """Forward and the three gradients equal torch's (float32) on a seeded sweep."""
    for _ in range(50 if backend.name == "numpy" else 10):
        config = _random_conv(rng)
        x, w, b, gy = _arrays(backend, rng, config, "float32")
        y, cols = conv2d(x, w, b, **config["window"], return_cols=True)
        gx, gw, gb = conv2d_backward(gy, x, w, **config["window"], cols=cols, bias=b is not None)

        tx, tw = _torch(backend, x), _torch(backend, w)
        tb = None if b is None else _torch(backend, b)
        ty = torch.nn.functional.conv2d(tx, tw, tb, **config["window"])
        ty.backward(torch.from_numpy(np.array(backend.to_numpy(gy))))
        tol = {"rtol": 1e-5, "atol": 1e-5}
        for ours, theirs in ((y, ty), (gx, tx.grad), (gw, tw.grad)):
            assert backends.namespace_name(ours) == backend.name
            assert ours.dtype == backend.xp.float32
            np.testing.assert_allclose(backend.to_numpy(ours), theirs.detach().numpy(), **tol)
        if b is None:
            assert gb is None
        else:
            np.testing.assert_allclose(backend.to_numpy(gb), tb.grad.numpy(), **tol)


GRADCHECK_CASES = {
    "stride2_padding": ((2, 3, 7, 6), (4, 3, 3, 3), {"stride": 2, "padding": 1}),
    "dilation": ((2, 2, 7, 8), (3, 2, 3, 3), {"dilation": (2, 3), "padding": (1, 0)}),
    "groups": ((2, 4, 5, 6), (6, 2, 2, 3), {"groups": 2, "padding": 1}),
    "depthwise": ((1, 3, 5, 5), (6, 1, 3, 3), {"groups": 3, "stride": (1, 2)}),
    "non_square_kernel": ((2, 2, 6, 7), (3, 2, 1, 3), {"stride": (2, 1), "padding": (0, 1)}),
    "batch1_odd": ((1, 3, 5, 7), (2, 3, 3, 3), {}),
    "kernel_is_input": ((3, 2, 4, 3), (5, 2, 4, 3), {}),
    "stride_beyond_kernel": ((2, 1, 9, 8), (2, 1, 2, 2), {"stride": 3, "padding": 2}),
}


@pytest.mark.parametrize("case", list(GRADCHECK_CASES), ids=list(GRADCHECK_CASES))
def test_gradcheck(backend, rng, case):
    """Finite differences (float64) agree with the gradients w.r.t. x, weight and bias."""
    x_shape, w_shape, window = GRADCHECK_CASES[case]
    x = backend.asarray(rng.standard_normal(x_shape), dtype="float64")
    w = backend.asarray(rng.standard_normal(w_shape), dtype="float64")
    b = backend.asarray(rng.standard_normal(w_shape[0]), dtype="float64")

    def forward(x, w, b):
        return conv2d(x, w, b, **window)

    def backward(gy):
        return conv2d_backward(gy, x, w, **window)

    assert gradcheck(forward, [x, w, b], backward, max_elements=24)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fast_path_equals_standard_twin(backend, rng, dtype):
    """conv2d and conv2d_backward agree with and without the fast paths.

    The fast input gradient sums the same products in another order (other matmul
    shapes), so it agrees to rounding, not bit for bit.
    """
    if fast_path(backend.xp) is None:
        pytest.skip(f"{backend.name} has no fast path: the standard code is the only one")
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == "float32" else {"rtol": 1e-12, "atol": 1e-12}
    for _ in range(25):
        config = _random_conv(rng)
        x, w, b, gy = _arrays(backend, rng, config, dtype)
        fast = (conv2d(x, w, b, **config["window"]), *conv2d_backward(gy, x, w, **config["window"]))
        with standard_only():
            twin = (
                conv2d(x, w, b, **config["window"]),
                *conv2d_backward(gy, x, w, **config["window"]),
            )
        for ours, reference in zip(fast, twin, strict=True):
            assert ours.dtype == reference.dtype
            np.testing.assert_allclose(backend.to_numpy(ours), backend.to_numpy(reference), **tol)


@pytest.mark.parametrize("out_channels", [2, 16], ids=["few_out", "channels_last_grad"])
@pytest.mark.parametrize(
    "window",
    [
        {"padding": 2},  # stride 1, few output channels: the wide layout
        {"padding": (1, 0), "dilation": (2, 1), "groups": 2},
        {"stride": (2, 1), "padding": 1},  # the strided-window unfold
        {"padding": 1},  # OW = W: the edge layout
        {"padding": (0, 2), "dilation": (1, 2), "groups": 2},  # edge, dilated columns
    ],
    ids=["wide", "wide_dilated_groups", "strided", "edge", "edge_dilated_groups"],
)
def test_numpy_chunks_equal_standard_twin(backend, rng, monkeypatch, window, out_channels):
    """The NumPy path cut into many chunks (the last one partial) equals the twin.

    16 output channels (with 36 or 18 unfolded rows per group) take the weight
    gradient's channels-last layout of gY; 2 take the transposed view.
    """
    if fast_path(backend.xp) != "numpy":
        pytest.skip("the chunked path is NumPy's")
    from xcnn.ops._numpy import conv as _conv_numpy

    # 1 to 5 images per chunk for these shapes: 7 images make 2 to 7 chunks, the last partial.
    monkeypatch.setattr(_conv_numpy, "_CHUNK_BYTES", 2 * 4 * (8 + 4 * 9) * 9 * 12)
    x = backend.asarray(rng.standard_normal((7, 4, 9, 10)), dtype="float32")
    w_shape = (out_channels, 4 // window.get("groups", 1), 3, 3)
    w = backend.asarray(rng.standard_normal(w_shape), "float32")
    b = backend.asarray(rng.standard_normal(out_channels), dtype="float32")
    y = conv2d(x, w, b, **window)
    gy = backend.asarray(rng.standard_normal(tuple(y.shape)), dtype="float32")
    fast = (y, *conv2d_backward(gy, x, w, **window))
    with standard_only():
        twin = (conv2d(x, w, b, **window), *conv2d_backward(gy, x, w, **window))
    for ours, reference in zip(fast, twin, strict=True):
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_edge_layout_with_4k_rows_equals_standard_twin(backend, rng, dtype):
    """32x32 images at 3x3, padding 1: each unfolded row is 4 KiB (float32) or 8 KiB, the
    case whose rows the edge layout spaces out by 64 bytes; forward and backward still
    equal the twin."""
    if fast_path(backend.xp) != "numpy":
        pytest.skip("the edge layout is NumPy's")
    from xcnn.ops._numpy import conv as _conv_numpy

    x = backend.asarray(rng.standard_normal((3, 2, 32, 32)), dtype=dtype)
    w = backend.asarray(rng.standard_normal((4, 2, 3, 3)), dtype=dtype)
    b = backend.asarray(rng.standard_normal(4), dtype=dtype)
    chunks = _conv_numpy._Chunks(tuple(x.shape), x.dtype, geometry_of(x, w, padding=1), 4)
    assert chunks.edge and chunks._cols.strides[1] > 1024 * x.dtype.itemsize
    gy = backend.asarray(rng.standard_normal((3, 4, 32, 32)), dtype=dtype)
    fast = (conv2d(x, w, b, padding=1), *conv2d_backward(gy, x, w, padding=1))
    fast_first = conv2d_backward(gy, x, w, padding=1, input_grad=False)
    with standard_only():
        twin = (conv2d(x, w, b, padding=1), *conv2d_backward(gy, x, w, padding=1))
    tol = 1e-4 if dtype == "float32" else 1e-11
    for ours, reference in zip(fast, twin, strict=True):
        np.testing.assert_allclose(ours, reference, rtol=tol, atol=tol)
    for ours, reference in zip(fast_first[1:], twin[2:], strict=True):
        np.testing.assert_allclose(ours, reference, rtol=tol, atol=tol)


def geometry_of(x, w, **window):
    from xcnn.ops._geometry import geometry

    return geometry("conv2d", tuple(x.shape), tuple(w.shape[2:]), 1, window["padding"], 1)


@pytest.mark.parametrize(
    ("kernel", "channels", "window"),
    [
        ((3, 3), (5, 7), {"padding": 1}),  # ResNet's 3x3
        ((5, 3), (5, 7), {"padding": (2, 1)}),
        ((3, 3), (5, 7), {"padding": (2, 1), "dilation": (2, 1)}),
        ((3, 3), (40, 4), {"padding": 1}),  # C >= O*KH*KW: gY's unfold is not wide
        ((1, 1), (6, 3), {"padding": 0}),
    ],
    ids=["3x3", "5x3", "dilated", "plain_unfold", "1x1"],
)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_same_size_backward_equals_standard_twin(
    backend, rng, monkeypatch, kernel, channels, window, threads, dtype
):
    """Stride 1 with OH = H, OW = W: one unfold of gY per chunk gives gx (a convolution
    of gY with the flipped weight) and gW; all three gradients equal the twin's to
    rounding, cut into many chunks (the last partial) and split across threads."""
    if fast_path(backend.xp) != "numpy":
        pytest.skip("the transposed-convolution backward is NumPy's")
    import xcnn
    from xcnn.ops._geometry import geometry
    from xcnn.ops._numpy import conv as _conv_numpy

    c, o = channels
    # About 2 images per chunk: 7 images make 4 chunks, the last partial.
    image_bytes = np.dtype(dtype).itemsize * (o * kernel[0] * kernel[1] + 2 * c) * 9 * 12
    monkeypatch.setattr(_conv_numpy, "_CHUNK_BYTES", 2 * image_bytes)
    monkeypatch.setattr(xcnn.ops._threads, "GRAIN", 1)
    x = backend.asarray(rng.standard_normal((7, c, 9, 8)), dtype=dtype)
    w = backend.asarray(rng.standard_normal((o, c, *kernel)), dtype=dtype)
    g = geometry("conv2d", tuple(x.shape), kernel, 1, window["padding"], window.get("dilation", 1))
    assert _conv_numpy._transposed_geometry(tuple(x.shape), 1, g) is not None
    gy = backend.asarray(rng.standard_normal((7, o, 9, 8)), dtype=dtype)
    before = xcnn.get_num_threads()
    xcnn.set_num_threads(threads)
    try:
        fast = conv2d_backward(gy, x, w, **window)
    finally:
        xcnn.set_num_threads(before)
    with standard_only():
        twin = conv2d_backward(gy, x, w, **window)
    tol = 1e-5 if dtype == "float32" else 1e-12
    for ours, reference in zip(fast, twin, strict=True):
        assert ours.shape == reference.shape and ours.dtype == reference.dtype
        np.testing.assert_allclose(ours, reference, rtol=tol, atol=tol)


@pytest.mark.parametrize(
    ("kernel", "window", "size"),
    [
        ((3, 3), {"stride": 2, "padding": 1}, (9, 8)),  # ResNet's downsampling 3x3
        ((1, 1), {"stride": 2}, (8, 7)),  # its 1x1 projection shortcut: some phases get no tap
        ((3, 2), {"stride": (2, 3), "padding": (2, 0)}, (7, 11)),
        ((4, 5), {"stride": (3, 1), "padding": (1, 2)}, (10, 6)),
        ((2, 2), {"stride": 3}, (2, 8)),  # fewer rows than the stride
    ],
    ids=["3x3s2", "1x1s2", "3x2s2x3", "4x5s3x1", "short"],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_strided_input_grad_by_phases_equals_standard_twin(
    backend, rng, kernel, window, size, dtype
):
    """Stride > 1: gx computed phase by phase (stride-1 convolutions of gY with every
    S-th tap) equals the twin's col2im to rounding."""
    if fast_path(backend.xp) != "numpy":
        pytest.skip("the phase-by-phase input gradient is NumPy's")
    from xcnn.ops._geometry import geometry
    from xcnn.ops._numpy import conv as _conv_numpy

    x = backend.asarray(rng.standard_normal((3, 4, *size)), dtype=dtype)
    w = backend.asarray(rng.standard_normal((5, 4, *kernel)), dtype=dtype)
    g = geometry("conv2d", tuple(x.shape), kernel, window["stride"], window.get("padding", 0), 1)
    assert _conv_numpy._phase_plan(tuple(x.shape), 1, g)
    gy = backend.asarray(rng.standard_normal((3, 5, g.oh, g.ow)), dtype=dtype)
    fast = conv2d_backward(gy, x, w, **window, bias=False)[0]
    with standard_only():
        twin = conv2d_backward(gy, x, w, **window, bias=False)[0]
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(fast, twin, rtol=tol, atol=tol)


def test_cache_and_skipped_gradients(backend, rng):
    """Passing forward's cols changes nothing; input_grad/bias=False skip those results."""
    config = {
        "x_shape": (2, 4, 6, 5),
        "w_shape": (6, 2, 3, 2),
        "bias": True,
        "window": {"stride": (2, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 2},
    }
    x, w, b, gy = _arrays(backend, rng, config, "float64")
    y, cols = conv2d(x, w, b, **config["window"], return_cols=True)
    np.testing.assert_array_equal(
        backend.to_numpy(y), backend.to_numpy(conv2d(x, w, b, **config["window"]))
    )
    assert tuple(cols.shape) == (2, 4 * 3 * 2, 3 * 6)
    cached = conv2d_backward(gy, x, w, **config["window"], cols=cols)
    recomputed = conv2d_backward(gy, x, w, **config["window"])
    for a, r in zip(cached, recomputed, strict=True):
        np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(r))
    gx, gw, gb = conv2d_backward(gy, x, w, **config["window"], input_grad=False, bias=False)
    assert gx is None and gb is None
    np.testing.assert_array_equal(backend.to_numpy(gw), backend.to_numpy(cached[1]))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kernel", [(3, 2), (3, 3)], ids=["wider_out", "size_keeping"])
def test_dtype_namespace_and_non_contiguous_input(backend, rng, dtype, kernel):
    xp = backend.xp
    host_x = rng.standard_normal((2, 3, 6, 7)).astype(dtype)
    host_w = rng.standard_normal((4, 3, *kernel)).astype(dtype)
    x, w = backend.asarray(host_x), backend.asarray(host_w)
    strided_x = xp.permute_dims(
        backend.asarray(np.ascontiguousarray(host_x.transpose(0, 1, 3, 2))), (0, 1, 3, 2)
    )
    y = conv2d(x, w, padding=1)
    assert y.dtype == getattr(xp, dtype) and backends.namespace_name(y) == backend.name
    np.testing.assert_array_equal(
        backend.to_numpy(conv2d(strided_x, w, padding=1)), backend.to_numpy(y)
    )
    host_gy = rng.standard_normal(tuple(y.shape)).astype(dtype)
    gy = backend.asarray(host_gy)
    strided_gy = xp.permute_dims(
        backend.asarray(np.ascontiguousarray(host_gy.transpose(3, 2, 1, 0))), (3, 2, 1, 0)
    )
    expected = conv2d_backward(gy, x, w, padding=1)
    for a, e in zip(conv2d_backward(strided_gy, strided_x, w, padding=1), expected, strict=True):
        assert a.dtype == getattr(xp, dtype) and backends.namespace_name(a) == backend.name
        np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(e))


def test_bad_inputs_are_explained(backend):
    xp = backend.xp
    x = xp.zeros((2, 4, 8, 8), dtype=xp.float32)
    w = xp.zeros((6, 2, 3, 3), dtype=xp.float32)
    with pytest.raises(ValueError, match=r"conv2d: expected x of rank 4 .* got shape \(4, 8, 8\)"):
        conv2d(xp.zeros((4, 8, 8), dtype=xp.float32), w, groups=2)
    with pytest.raises(ValueError, match=r"conv2d: expected weight of rank 4"):
        conv2d(x, xp.zeros((6, 4), dtype=xp.float32))
    with pytest.raises(ValueError, match=r"conv2d: expected x with 2 channels .* \(2, 4, 8, 8\)"):
        conv2d(x, w)
    with pytest.raises(ValueError, match=r"conv2d: out channels 6 .* divisible by groups=4"):
        conv2d(x, xp.zeros((6, 1, 3, 3), dtype=xp.float32), groups=4)
    with pytest.raises(ValueError, match=r"conv2d: groups must be a positive int, got 0"):
        conv2d(x, w, groups=0)
    with pytest.raises(ValueError, match=r"conv2d: expected bias of shape \(6,\), got \(4,\)"):
        conv2d(x, w, xp.zeros((4,), dtype=xp.float32), groups=2)
    with pytest.raises(TypeError, match=r"conv2d: weight has dtype .*float64"):
        conv2d(x, xp.zeros((6, 2, 3, 3), dtype=xp.float64), groups=2)
    with pytest.raises(ValueError, match=r"conv2d: .*smaller than the dilated kernel \(5, 5\)"):
        conv2d(xp.zeros((2, 4, 4, 4), dtype=xp.float32), w, groups=2, dilation=2)
    with pytest.raises(ValueError, match=r"conv2d: stride must be positive"):
        conv2d(x, w, groups=2, stride=(1, 0))
    with pytest.raises(ValueError, match=r"conv2d: padding must be non-negative"):
        conv2d(x, w, groups=2, padding=-1)
    with pytest.raises(ValueError, match=r"conv2d_backward: expected grad_output of shape"):
        conv2d_backward(xp.zeros((2, 6, 5, 5), dtype=xp.float32), x, w, groups=2)
    gy = xp.zeros((2, 6, 6, 6), dtype=xp.float32)
    with pytest.raises(ValueError, match=r"conv2d_backward: expected cols of shape \(2, 36, 36\)"):
        conv2d_backward(gy, x, w, groups=2, cols=xp.zeros((2, 36, 35), dtype=xp.float32))
    with pytest.raises(TypeError, match=r"conv2d_backward: grad_output has dtype"):
        conv2d_backward(xp.zeros((2, 6, 6, 6), dtype=xp.float64), x, w, groups=2)


def test_arrays_from_two_backends_are_refused(backend):
    if backend.name == "numpy":
        pytest.skip("needs a second backend besides numpy")
    x = backend.xp.zeros((1, 1, 4, 4), dtype=backend.xp.float32)
    w = np.zeros((1, 1, 3, 3), dtype=np.float32)
    with pytest.raises(
        TypeError, match=rf"conv2d: .*x lives on {backend.name}, weight lives on numpy"
    ):
        conv2d(x, w)
