"""NumPy fast path of conv2d's input gradient (reached only through ``xcnn.ops.conv``).

The standard route is ``gcols = Wm^T @ gY`` in the ``(N, C*KH*KW, OH*OW)`` layout,
then ``col2im``: KH*KW slice-adds whose contiguous runs are only OW long (10 for
LeNet's second conv). NumPy pays a fixed cost per run, and for in-place adds it
dominates: col2im took several times longer than the matmuls around it.

This path computes the same ``gx`` in a *batch-last* layout, where each run is
OW*N long (stride 1) or N long, so the slice-adds run at memory speed::

    gyT   = gY transposed per output channel:      (O, OH*OW*N)
    gcols = Wm^T @ gyT  per group:  (G, K, Og) @ (G, Og, L*N) -> (C*KH*KW, OH*OW*N)
    gxT   = fold(gcols): KH*KW slice-adds into a zero (C, Hp, Wp, N) buffer
    gx    = gxT without the padding, transposed per channel: (N, C, H, W)

The transposes are activation-sized and done per channel, so each piece stays
in cache. Forward and the weight gradient keep the standard layout: there its
batched matmuls are the faster BLAS shapes.
"""

from __future__ import annotations

import numpy as np

from xcnn.ops.im2col import Geometry, _window_slices


def grad_input(
    grad_output: np.ndarray,
    weight: np.ndarray,
    input_shape: tuple[int, int, int, int],
    groups: int,
    g: Geometry,
) -> np.ndarray:
    """``gx`` of a convolution, ``(N, C, H, W)``, from ``gY`` ``(N, O, OH, OW)``."""
    n, c, h, w = input_shape
    out_channels = weight.shape[0]
    length = g.oh * g.ow
    gy = grad_output.reshape(n, out_channels, length)
    gy_t = np.empty((out_channels, length, n), dtype=grad_output.dtype)
    for o in range(out_channels):
        gy_t[o] = gy[:, o, :].T
    og, kg = out_channels // groups, c * g.kh * g.kw // groups
    wm = weight.reshape(groups, og, kg)
    gcols = np.matmul(wm.transpose(0, 2, 1), gy_t.reshape(groups, og, length * n))

    taps = gcols.reshape(c, g.kh, g.kw, g.oh, g.ow, n)
    padded = np.zeros((c, h + 2 * g.ph, w + 2 * g.pw, n), dtype=gcols.dtype)
    for i in range(g.kh):
        for j in range(g.kw):
            rows, columns = _window_slices(g, i, j)
            padded[:, rows, columns, :] += taps[:, i, j]
    grad_x = np.empty((n, c, h, w), dtype=gcols.dtype)
    for channel in range(c):
        grad_x[:, channel] = padded[channel, g.ph : g.ph + h, g.pw : g.pw + w, :].transpose(2, 0, 1)
    return grad_x
