"""CuPy fast path of im2col / col2im: one gather kernel each (reached only through
``xcnn.ops.im2col``; CuPy is imported lazily, so ``import xcnn`` never needs it).

Layout and math are in ``xcnn/ops/im2col.py``. Both kernels run one thread per
*output* element and only read, so they need no atomics and are deterministic:

* im2col: thread ``(n, c, i, j, oh, ow)`` reads ``x_pad[n, c, oh*SH + i*DH, ow*SW + j*DW]``
  (0 in the padding);
* col2im: thread ``(n, c, h, w)`` sums the column entries of every window tap that
  lands on it: ``i`` with ``(h + PH - i*DH) % SH == 0`` and ``0 <= (h + PH - i*DH)/SH < OH``,
  likewise for ``j``.

Index arithmetic is 64-bit (``long long``) so arrays past 2**31 elements work;
inputs are made C-contiguous because the kernels index them flat.
"""

from __future__ import annotations

import functools
from typing import Any

from xcnn.ops._geometry import Geometry

_GEOMETRY_PARAMS = (
    "int64 H, int64 W, int64 OH, int64 OW, int64 KH, int64 KW, "
    "int64 SH, int64 SW, int64 PH, int64 PW, int64 DH, int64 DW"
)

_IM2COL_BODY = """
    const long long idx = i;
    const long long ow = idx % OW;
    const long long oh = (idx / OW) % OH;
    const long long kj = (idx / (OW * OH)) % KW;
    const long long ki = (idx / (OW * OH * KW)) % KH;
    const long long nc = idx / (OW * OH * KW * KH);
    const long long y = oh * SH + ki * DH - PH;
    const long long x = ow * SW + kj * DW - PW;
    T value = (T)0;
    if (y >= 0 && y < H && x >= 0 && x < W) {
        value = img[(nc * H + y) * W + x];
    }
    col = value;
"""

_COL2IM_BODY = """
    const long long idx = i;
    const long long x = idx % W + PW;
    const long long y = (idx / W) % H + PH;
    const long long nc = idx / (W * H);
    T total = (T)0;
    for (long long ki = 0; ki < KH; ++ki) {
        const long long ty = y - ki * DH;
        if (ty < 0 || ty % SH != 0) continue;
        const long long oy = ty / SH;
        if (oy >= OH) continue;
        for (long long kj = 0; kj < KW; ++kj) {
            const long long tx = x - kj * DW;
            if (tx < 0 || tx % SW != 0) continue;
            const long long ox = tx / SW;
            if (ox >= OW) continue;
            total += col[(((nc * KH + ki) * KW + kj) * OH + oy) * OW + ox];
        }
    }
    img = total;
"""


@functools.cache
def _kernels() -> tuple[Any, Any]:
    """Build the two kernels once; CuPy compiles each dtype on first launch and caches it."""
    import cupy

    im2col_kernel = cupy.ElementwiseKernel(
        f"raw T img, {_GEOMETRY_PARAMS}", "T col", _IM2COL_BODY, "xcnn_im2col"
    )
    col2im_kernel = cupy.ElementwiseKernel(
        f"raw T col, {_GEOMETRY_PARAMS}", "T img", _COL2IM_BODY, "xcnn_col2im"
    )
    return im2col_kernel, col2im_kernel


def _args(h: int, w: int, g: Geometry) -> tuple[int, ...]:
    return (h, w, g.oh, g.ow, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw)


def im2col(x: Any, g: Geometry) -> Any:
    import cupy

    n, c, h, w = (int(s) for s in x.shape)
    x = cupy.ascontiguousarray(x)
    cols = cupy.empty((n, c * g.kh * g.kw, g.oh * g.ow), dtype=x.dtype)
    _kernels()[0](x, *_args(h, w, g), cols)
    return cols


def col2im(cols: Any, shape: tuple[int, int, int, int], g: Geometry) -> Any:
    import cupy

    n, c, h, w = shape
    cols = cupy.ascontiguousarray(cols)
    img = cupy.empty((n, c, h, w), dtype=cols.dtype)
    _kernels()[1](cols, *_args(h, w, g), img)
    return img
