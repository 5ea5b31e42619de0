"""CuPy fast path of max pooling (math in ``xcnn.ops.pool``; reached only via its dispatcher).

Forward: one thread per output element scans its KH*KW window (out-of-bounds
taps read as ``finfo(T).min``, like the twin's padding) and keeps the running max
and the first argmax, with the twin's NaN rule (NaN propagates, the index stays).

Backward: one thread per input pixel gathers, from every window covering it, the
gradient of the windows whose argmax is this pixel. No atomics, so the result is
deterministic; the windows are visited in the twin's order (ascending window
offset, i.e. descending output position), so the sums round the same way.

CuPy is imported lazily here only; kernels are built on first use and CuPy caches
the compiled code per dtype. All index arithmetic is 64-bit.
"""

from __future__ import annotations

import functools
from typing import Any

from xcnn.ops._geometry import PoolGeometry, index_dtype

_GEOMETRY = (
    "int64 H, int64 W, int64 OH, int64 OW, int64 KH, int64 KW, "
    "int64 SH, int64 SW, int64 PH, int64 PW"
)

_FORWARD = r"""
const long long ow = i % OW;
const long long oh = (i / OW) % OH;
const long long plane = i / (OW * OH);
const T* src = &x[plane * H * W];
T best = lowest;
long long arg = 0;
for (long long k = 0; k < KH * KW; ++k) {
    const long long h = oh * SH - PH + k / KW;
    const long long w = ow * SW - PW + k % KW;
    const T v = (h >= 0 && h < H && w >= 0 && w < W) ? src[h * W + w] : lowest;
    if (k == 0) {
        best = v;
    } else if (v > best) {
        best = v;
        arg = k;
    } else if (isnan(v)) {
        best = v;
    }
}
y = best;
indices = (S)arg;
"""

_BACKWARD = r"""
const long long w = i % W;
const long long h = (i / W) % H;
const long long plane = i / (W * H);
const long long hp = h + PH;
const long long wp = w + PW;
// Windows oh with oh*SH <= hp <= oh*SH + KH - 1 (likewise for ow).
const long long oh_lo = hp >= KH ? (hp - KH) / SH + 1 : 0;
const long long ow_lo = wp >= KW ? (wp - KW) / SW + 1 : 0;
const long long oh_hi = hp / SH < OH - 1 ? hp / SH : OH - 1;
const long long ow_hi = wp / SW < OW - 1 ? wp / SW : OW - 1;
const T* g = &gy[plane * OH * OW];
const S* ind = &indices[plane * OH * OW];
T acc = 0;
for (long long oh = oh_hi; oh >= oh_lo; --oh) {
    for (long long ow = ow_hi; ow >= ow_lo; --ow) {
        const long long k = (hp - oh * SH) * KW + (wp - ow * SW);
        if ((long long)ind[oh * OW + ow] == k) {
            acc += g[oh * OW + ow];
        }
    }
}
gx = acc;
"""


@functools.cache
def _kernels() -> tuple[Any, Any]:
    import cupy

    forward = cupy.ElementwiseKernel(
        f"raw T x, T lowest, {_GEOMETRY}",
        "T y, S indices",
        _FORWARD,
        "xcnn_max_pool2d_forward",
    )
    backward = cupy.ElementwiseKernel(
        f"raw T gy, raw S indices, {_GEOMETRY}",
        "T gx",
        _BACKWARD,
        "xcnn_max_pool2d_backward",
    )
    return forward, backward


def _geometry_args(h: int, w: int, g: PoolGeometry) -> tuple[int, ...]:
    return (h, w, g.oh, g.ow, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw)


def max_pool2d(x: Any, g: PoolGeometry) -> tuple[Any, Any]:
    """Max pooling with argmax window offsets, see ``xcnn.ops.pool.max_pool2d``."""
    import cupy

    forward, _ = _kernels()
    x = cupy.ascontiguousarray(x)
    n, c, h, w = x.shape
    y = cupy.empty((n, c, g.oh, g.ow), dtype=x.dtype)
    indices = cupy.empty((n, c, g.oh, g.ow), dtype=index_dtype(cupy, g.kh * g.kw))
    lowest = x.dtype.type(cupy.finfo(x.dtype).min)
    forward(x, lowest, *_geometry_args(h, w, g), y, indices)
    return y, indices


def max_pool2d_backward(
    gy: Any, indices: Any, input_shape: tuple[int, ...], g: PoolGeometry
) -> Any:
    """Gather each pixel's gradient from the windows that chose it."""
    import cupy

    _, backward = _kernels()
    gy = cupy.ascontiguousarray(gy)
    indices = cupy.ascontiguousarray(indices)
    n, c, h, w = input_shape
    gx = cupy.empty((n, c, h, w), dtype=gy.dtype)
    backward(gy, indices, *_geometry_args(h, w, g), gx)
    return gx
