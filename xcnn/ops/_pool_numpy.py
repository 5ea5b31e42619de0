"""NumPy fast path of max pooling (math in ``xcnn.ops.pool``; reached only via its dispatcher).

The general case runs the standard twin's loop over the KH*KW window offsets, but
with in-place ufuncs into preallocated buffers, so each offset costs three passes
over the output and no allocation; results are bit-identical to the twin.

2x2 windows with stride 2 (LeNet's pooling) take a two-stage pairwise kernel: the
max of horizontal neighbours over long 1-D strided loops, then of vertical
neighbours, which is about half the passes of the general loop. It keeps the
"first maximum wins" rule: right beats left, bottom beats top, only if strictly
greater, which is the first maximum in row-major order.

Backward writes each offset's masked gradient straight into its slice when windows
do not overlap (every input pixel belongs to at most one window) and accumulates
otherwise.
"""

from __future__ import annotations

import numpy as np

from xcnn.ops.pool import PoolGeometry, index_dtype, window_index


def max_pool2d(x: np.ndarray, g: PoolGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Max pooling with argmax window offsets, see ``xcnn.ops.pool.max_pool2d``."""
    n, c, h, w = x.shape
    if (g.kh, g.kw, g.sh, g.sw, g.ph, g.pw) == (2, 2, 2, 2, 0, 0) and h % 2 == 0 and w % 2 == 0:
        return _max_pool_2x2(x)
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
    return y, indices


def _max_pool_2x2(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n, c, h, w = x.shape
    oh, ow = h // 2, w // 2
    pairs = np.ascontiguousarray(x).reshape(-1, 2)  # (x[.., 2j], x[.., 2j+1]) for every row
    left, right = pairs[:, 0], pairs[:, 1]
    right_wins = np.greater(right, left).reshape(-1, 2, ow)  # (N*C*OH, row 2oh | 2oh+1, OW)
    row_max = np.maximum(left, right).reshape(-1, 2, ow)
    top, bottom = row_max[:, 0, :], row_max[:, 1, :]
    bottom_wins = np.greater(bottom, top)
    y = np.maximum(top, bottom)
    # column = where(bottom_wins, right_wins[bottom], right_wins[top]); np.where on these
    # strided bool views is several times slower than the bitwise form.
    column = (bottom_wins & right_wins[:, 1, :]) | (~bottom_wins & right_wins[:, 0, :])
    indices = bottom_wins.view(np.int8) * np.int8(2)  # offset = 2*row + column
    indices += column.view(np.int8)
    return y.reshape(n, c, oh, ow), indices.reshape(n, c, oh, ow)


def max_pool2d_backward(
    gy: np.ndarray, indices: np.ndarray, input_shape: tuple[int, ...], g: PoolGeometry
) -> np.ndarray:
    """Route each window's gradient to its argmax, see ``xcnn.ops.pool.max_pool2d_backward``."""
    n, c, h, w = input_shape
    hp, wp = h + 2 * g.ph, w + 2 * g.pw
    overlap = g.sh < g.kh or g.sw < g.kw
    tiled = (g.sh, g.sw) == (g.kh, g.kw) and (g.oh * g.kh, g.ow * g.kw) == (hp, wp)
    # When the windows tile the padded input exactly, every element is written below.
    gx_pad = (
        np.empty((n, c, hp, wp), dtype=gy.dtype) if tiled else np.zeros((n, c, hp, wp), gy.dtype)
    )
    mask = np.empty(gy.shape, dtype=bool)
    scratch = np.empty(gy.shape, dtype=gy.dtype) if overlap else None
    for k in range(g.kh * g.kw):
        region = gx_pad[window_index(k // g.kw, k % g.kw, g)]
        np.equal(indices, k, out=mask)
        if scratch is None:
            np.multiply(gy, mask, out=region)
        else:
            np.multiply(gy, mask, out=scratch)
            np.add(region, scratch, out=region)
    if g.ph or g.pw:
        return np.ascontiguousarray(gx_pad[:, :, g.ph : g.ph + h, g.pw : g.pw + w])
    return gx_pad
