"""NumPy fast path of max pooling (math in ``xcnn.ops.pool``; reached only via its dispatcher).

The general case runs the standard twin's loop over the KH*KW window offsets, but
with in-place ufuncs into preallocated buffers, so each offset costs three passes
over the output and no allocation; results are bit-identical to the twin.

Windows that tile the input (stride == kernel, no padding: LeNet's 2x2 / stride 2)
first copy each window offset into its own contiguous plane (one strided copy), then
run the same loop on the planes: every pass is a 1-D SIMD loop, where comparisons
on strided slices run several times slower (2x2 on LeNet's first pool: ~1 ms instead
of ~2-3 ms). Being the twin's loop, ties and NaN pick the same index.

The batch is split across threads (``_threads``), each thread taking whole images.
Scratch (planes, masks) is kept per thread and reused; outputs go on recycled
buffers (``_recycle``) that no live array uses.

Backward writes each offset's masked gradient straight into its slice when windows
do not overlap (every input pixel belongs to at most one window) and accumulates
otherwise.

``relu=True`` (a ReLU fused after the pool) clamps each thread's output right after
its last maximum, while it is in cache; backward then zeroes the gradient of the
windows whose output is not positive before routing it, as ``relu_backward`` does
(``gy * [y > 0]``, bit for bit).
"""

from __future__ import annotations

import numpy as np

from xcnn.ops import _recycle, _threads
from xcnn.ops._geometry import PoolGeometry, index_dtype, window_index


def max_pool2d(x: np.ndarray, g: PoolGeometry, relu: bool) -> tuple[np.ndarray, np.ndarray]:
    """Max pooling with argmax window offsets, see ``xcnn.ops.pool.max_pool2d``."""
    n, c, h, w = x.shape
    if (g.sh, g.sw) == (g.kh, g.kw) and g.ph == 0 and g.pw == 0:
        return _max_pool_tiled(x, g, relu)
    x_pad = x
    if g.ph or g.pw:
        x_pad = np.full((n, c, h + 2 * g.ph, w + 2 * g.pw), np.finfo(x.dtype).min, dtype=x.dtype)
        x_pad[:, :, g.ph : g.ph + h, g.pw : g.pw + w] = x
    shape = (n, c, g.oh, g.ow)
    y = np.empty(shape, dtype=x.dtype)
    np.copyto(y, x_pad[window_index(0, 0, g)])
    indices = np.zeros(shape, dtype=index_dtype(np, g.kh * g.kw))
    better = np.empty(shape, dtype=bool)
    scaled = np.empty(shape, dtype=indices.dtype)
    for k in range(1, g.kh * g.kw):
        v = x_pad[window_index(k // g.kw, k % g.kw, g)]
        np.greater(v, y, out=better)
        # bool -> int8 is a free view; k exceeds every earlier offset, so max == where.
        np.multiply(better.view(np.int8), indices.dtype.type(k), out=scaled)
        np.maximum(indices, scaled, out=indices)
        np.maximum(y, v, out=y)
    if relu:
        np.maximum(y, x.dtype.type(0), out=y)
    return y, indices


def max_pool2d_values(x: np.ndarray, g: PoolGeometry, relu: bool) -> np.ndarray:
    """Max pooling without the argmax (inference), see ``xcnn.ops.pool.max_pool2d``."""
    n, c, h, w = x.shape
    if (g.sh, g.sw) == (g.kh, g.kw) and g.ph == 0 and g.pw == 0:
        kh, kw, oh, ow = g.kh, g.kw, g.oh, g.ow
        y = _recycle.empty((n, c, oh, ow), x.dtype)

        def run(first: int, last: int) -> None:
            planes = _planes(x[first:last], g)
            values = y[first:last].reshape(-1)
            np.copyto(values, planes[0])
            for k in range(1, kh * kw):
                np.maximum(values, planes[k], out=values)
            if relu:
                np.maximum(values, x.dtype.type(0), out=values)

        _threads.map_batch(run, n, item_size=2 * c * oh * kh * ow * kw)
        return y
    x_pad = x
    if g.ph or g.pw:
        x_pad = np.full((n, c, h + 2 * g.ph, w + 2 * g.pw), np.finfo(x.dtype).min, dtype=x.dtype)
        x_pad[:, :, g.ph : g.ph + h, g.pw : g.pw + w] = x
    y = np.empty((n, c, g.oh, g.ow), dtype=x.dtype)
    np.copyto(y, x_pad[window_index(0, 0, g)])
    for k in range(1, g.kh * g.kw):
        np.maximum(y, x_pad[window_index(k // g.kw, k % g.kw, g)], out=y)
    if relu:
        np.maximum(y, x.dtype.type(0), out=y)
    return y


def _planes(x: np.ndarray, g: PoolGeometry) -> np.ndarray:
    """``(KH*KW, N*C*OH*OW)`` per-thread scratch: window offset k's values in row k.

    One copy gathers each window offset into its own contiguous plane, so every later
    pass is a 1-D SIMD loop: comparisons on the strided slices run several times
    slower, and 2-D loops over OW-long rows pay a call per row. Splitting H and W into
    (OH, KH) and (OW, KW) is a view for any strides; rows and columns past the last
    window (floor mode) are left out. Only for windows that tile the input.
    """
    n, c = x.shape[:2]
    kh, kw, oh, ow = g.kh, g.kw, g.oh, g.ow
    tiles = x[:, :, : oh * kh, : ow * kw].reshape(n, c, oh, kh, ow, kw)
    planes = _recycle.scratch("planes", (kh, kw, n, c, oh, ow), x.dtype)
    np.copyto(planes, tiles.transpose(3, 5, 0, 1, 2, 4))
    return planes.reshape(kh * kw, -1)


def _max_pool_tiled(x: np.ndarray, g: PoolGeometry, relu: bool) -> tuple[np.ndarray, np.ndarray]:
    """Windows that tile the input (stride == kernel, no padding): the twin's loop on planes."""
    n, c = x.shape[0], x.shape[1]
    kh, kw, oh, ow = g.kh, g.kw, g.oh, g.ow
    y = _recycle.empty((n, c, oh, ow), x.dtype)
    indices = _recycle.empty((n, c, oh, ow), index_dtype(np, kh * kw))

    def run(first: int, last: int) -> None:
        planes = _planes(x[first:last], g)
        size = planes.shape[1]
        values = y[first:last].reshape(size)
        argmax = indices[first:last].reshape(size)
        if kh * kw == 1:
            np.copyto(values, planes[0])
            argmax.fill(0)
        else:
            _running_max(planes, values, argmax)
        if relu:
            np.maximum(values, x.dtype.type(0), out=values)

    _threads.map_batch(run, n, item_size=2 * c * oh * kh * ow * kw)
    return y, indices


def _running_max(planes: np.ndarray, values: np.ndarray, argmax: np.ndarray) -> None:
    """Max and first argmax over the rows of ``planes`` (at least two), into the outputs.

    The same running max/argmax as the standard twin, offset by offset, so ties and NaN
    pick the same index: "v > y" is False once y is NaN.
    """
    better = _recycle.scratch("better", (values.size,), np.bool_)
    scaled = _recycle.scratch("scaled", (values.size,), argmax.dtype)
    np.greater(planes[1], planes[0], out=better)
    np.copyto(argmax, better, casting="unsafe")
    np.maximum(planes[0], planes[1], out=values)
    for k in range(2, planes.shape[0]):
        v = planes[k]
        np.greater(v, values, out=better)
        np.multiply(better.view(np.int8), argmax.dtype.type(k), out=scaled)
        np.maximum(argmax, scaled, out=argmax)
        np.maximum(values, v, out=values)


def max_pool2d_backward(
    gy: np.ndarray,
    indices: np.ndarray,
    input_shape: tuple[int, ...],
    g: PoolGeometry,
    relu_output: np.ndarray | None,
) -> np.ndarray:
    """Route each window's gradient to its argmax, see ``xcnn.ops.pool.max_pool2d_backward``."""
    n, c, h, w = input_shape
    hp, wp = h + 2 * g.ph, w + 2 * g.pw
    overlap = g.sh < g.kh or g.sw < g.kw
    tiled = (g.sh, g.sw) == (g.kh, g.kw) and (g.oh * g.kh, g.ow * g.kw) == (hp, wp)
    # When the windows tile the padded input exactly, every element is written below.
    gx_pad = _recycle.empty((n, c, hp, wp), gy.dtype)
    if not tiled:
        gx_pad.fill(0)

    def run(first: int, last: int) -> None:
        grad, argmax, out = gy[first:last], indices[first:last], gx_pad[first:last]
        mask = _recycle.scratch("mask", grad.shape, np.bool_)
        if relu_output is not None:
            np.greater(relu_output[first:last], 0, out=mask)
            grad = np.multiply(grad, mask, out=_recycle.scratch("relu grad", grad.shape, gy.dtype))
        scratch = _recycle.scratch("accumulate", grad.shape, gy.dtype) if overlap else None
        for k in range(g.kh * g.kw):
            region = out[window_index(k // g.kw, k % g.kw, g)]
            np.equal(argmax, k, out=mask)
            if scratch is None:
                np.multiply(grad, mask, out=region)
            else:
                np.multiply(grad, mask, out=scratch)
                np.add(region, scratch, out=region)

    _threads.map_batch(run, n, item_size=2 * c * hp * wp)
    if g.ph or g.pw:
        return np.ascontiguousarray(gx_pad[:, :, g.ph : g.ph + h, g.pw : g.pw + w])
    return gx_pad
