"""NumPy fast path of im2col / col2im (reached only through ``xcnn.ops.im2col``).

Layout and math are in ``xcnn/ops/im2col.py``. im2col is a single copy out of a
strided window view (no Python loop over positions); col2im adds the KH*KW kernel
taps back as strided slices in place: an integer-array ``+=`` would silently
drop the duplicate indices where windows overlap.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from xcnn.ops._geometry import Geometry, window_slices


def im2col(x: np.ndarray, g: Geometry) -> np.ndarray:
    n, c, h, w = x.shape
    if g.ph or g.pw:
        padded = np.zeros((n, c, h + 2 * g.ph, w + 2 * g.pw), dtype=x.dtype)
        padded[:, :, g.ph : g.ph + h, g.pw : g.pw + w] = x
    else:
        padded = x
    span = (g.dh * (g.kh - 1) + 1, g.dw * (g.kw - 1) + 1)
    # (N, C, OH, OW, KH, KW) view: every window, no copy yet; works for any input strides.
    windows = sliding_window_view(padded, span, axis=(2, 3))[
        :, :, :: g.sh, :: g.sw, :: g.dh, :: g.dw
    ]
    cols = np.empty((n, c, g.kh, g.kw, g.oh, g.ow), dtype=x.dtype)
    np.copyto(cols, windows.transpose(0, 1, 4, 5, 2, 3))
    return cols.reshape(n, c * g.kh * g.kw, g.oh * g.ow)


def col2im(cols: np.ndarray, shape: tuple[int, int, int, int], g: Geometry) -> np.ndarray:
    n, c, h, w = shape
    taps = cols.reshape(n, c, g.kh, g.kw, g.oh, g.ow)
    padded = np.zeros((n, c, h + 2 * g.ph, w + 2 * g.pw), dtype=cols.dtype)
    for i in range(g.kh):
        for j in range(g.kw):
            rows, columns = window_slices(g, i, j)
            padded[:, :, rows, columns] += taps[:, :, i, j]
    if g.ph or g.pw:
        return np.ascontiguousarray(padded[:, :, g.ph : g.ph + h, g.pw : g.pw + w])
    return padded
