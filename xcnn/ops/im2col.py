"""im2col / col2im: unfold sliding windows into columns, and fold them back.

Shapes (``G`` = groups is not involved here; conv2d reshapes the rows per group)::

    x:    (N, C, H, W)
    cols: (N, C*KH*KW, OH*OW)        row    r = (c*KH + i)*KW + j   (channel-major)
                                     column l = oh*OW + ow
    cols[n, (c, i, j), (oh, ow)] = x_pad[n, c, oh*SH + i*DH, ow*SW + j*DW]

    x_pad = x zero-padded by (PH, PW) on each side
    OH = (H + 2*PH - DH*(KH-1) - 1) // SH + 1      (xcnn.ops._geometry.output_size)

Why this layout: with the weight viewed as ``Wm = W.reshape(O, C*KH*KW)`` the
convolution is one batched matmul ``Wm @ cols -> (N, O, OH*OW)``, which *is* NCHW
after a free reshape, so the forward pass needs no transpose; the batch axis is
the matmul's batch axis and the rows of one group are contiguous (channel-major),
so groups are a free reshape ``(N, G, C/G*KH*KW, OH*OW)`` as well. The backward
products ``Wm^T @ gY`` and ``gY @ cols^T`` are batched matmuls on the same views.

col2im is the adjoint (transpose) of im2col, not its inverse: every window that
covers a pixel adds its column entry into it::

    col2im(g)[n, c, h, w] = sum over (i, j, oh, ow) with
                            oh*SH + i*DH - PH = h  and  ow*SW + j*DW - PW = w
                            of g[n, (c, i, j), (oh, ow)]

so ``<im2col(x), g> == <x, col2im(g)>`` for all x, g, and the gradient of a loss
through ``cols = im2col(x)`` is ``gx = col2im(gcols)``.

Implementations (one dispatcher each, see ``xcnn.ops._dispatch``):

* standard-only: zero-pad by slice assignment, take the KH*KW strided slices and
  stack them; col2im adds the KH*KW slices back into a padded buffer.
* NumPy (``ops/_numpy/im2col.py``): one copy from a strided window view; col2im by the
  same KH*KW slice-adds done in place (integer-array ``+=`` would drop duplicates).
* CuPy (``ops/_cupy/im2col.py``): one gather kernel each; col2im gathers per input pixel
  (deterministic, no atomics).
"""

from __future__ import annotations

from typing import Any

from array_api_compat import device

from xcnn.backends import array_namespace
from xcnn.ops._dispatch import fast_path
from xcnn.ops._geometry import Geometry, geometry, window_slices

__all__ = ["col2im", "im2col"]


def im2col(
    x: Any,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
) -> Any:
    """Unfold every sliding window of ``x`` into a column.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
    kernel_size, stride, padding, dilation : int or (int, int)
        As in ``torch.nn.Conv2d``; zero padding.

    Returns
    -------
    array, shape (N, C*KH*KW, OH*OW)
        Same namespace and dtype as ``x``; rows ordered ``(c, i, j)``, columns ``(oh, ow)``.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn.ops.im2col import im2col
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> im2col(x, 2, stride=2)[0]
    array([[ 0.,  2.,  8., 10.],
           [ 1.,  3.,  9., 11.],
           [ 4.,  6., 12., 14.],
           [ 5.,  7., 13., 15.]], dtype=float32)
    """
    xp = array_namespace(x)
    g = geometry("im2col", tuple(x.shape), kernel_size, stride, padding, dilation)
    path = fast_path(xp)
    if path == "numpy":
        from xcnn.ops._numpy import im2col as _im2col_numpy

        return _im2col_numpy.im2col(x, g)
    if path == "cupy":
        from xcnn.ops._cupy import im2col as _im2col_cupy

        return _im2col_cupy.im2col(x, g)
    return _im2col_standard(xp, x, g)


def col2im(
    cols: Any,
    input_shape: tuple[int, int, int, int],
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
) -> Any:
    """Fold columns back into an image, summing where windows overlap (adjoint of im2col).

    Parameters
    ----------
    cols : array, shape (N, C*KH*KW, OH*OW)
        E.g. the gradient with respect to ``im2col(x, ...)``.
    input_shape : (N, C, H, W)
        Shape of the image that was unfolded.
    kernel_size, stride, padding, dilation : int or (int, int)
        The values given to :func:`im2col`.

    Returns
    -------
    array, shape (N, C, H, W)
        Same namespace and dtype as ``cols``; padding positions are dropped.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn.ops.im2col import col2im
    >>> col2im(np.ones((1, 4, 9), dtype=np.float32), (1, 1, 4, 4), 2)[0, 0]
    array([[1., 2., 2., 1.],
           [2., 4., 4., 2.],
           [2., 4., 4., 2.],
           [1., 2., 2., 1.]], dtype=float32)
    """
    xp = array_namespace(cols)
    g = geometry("col2im", tuple(input_shape), kernel_size, stride, padding, dilation)
    n, c, h, w = (int(s) for s in input_shape)
    expected = (n, c * g.kh * g.kw, g.oh * g.ow)
    if tuple(cols.shape) != expected:
        raise ValueError(
            f"col2im: expected cols of shape {expected} for input shape {(n, c, h, w)}, "
            f"got {tuple(cols.shape)}"
        )
    path = fast_path(xp)
    if path == "numpy":
        from xcnn.ops._numpy import im2col as _im2col_numpy

        return _im2col_numpy.col2im(cols, (n, c, h, w), g)
    if path == "cupy":
        from xcnn.ops._cupy import im2col as _im2col_cupy

        return _im2col_cupy.col2im(cols, (n, c, h, w), g)
    return _col2im_standard(xp, cols, (n, c, h, w), g)


def _im2col_standard(xp: Any, x: Any, g: Geometry) -> Any:
    n, c, h, w = (int(s) for s in x.shape)
    if g.ph or g.pw:
        padded = xp.zeros((n, c, h + 2 * g.ph, w + 2 * g.pw), dtype=x.dtype, device=device(x))
        padded[:, :, g.ph : g.ph + h, g.pw : g.pw + w] = x
    else:
        padded = x
    taps = []
    for i in range(g.kh):
        for j in range(g.kw):
            rows, columns = window_slices(g, i, j)
            taps.append(padded[:, :, rows, columns])
    cols = xp.stack(taps, axis=2)  # (N, C, KH*KW, OH, OW)
    return xp.reshape(cols, (n, c * g.kh * g.kw, g.oh * g.ow))


def _col2im_standard(xp: Any, cols: Any, shape: tuple[int, int, int, int], g: Geometry) -> Any:
    n, c, h, w = shape
    taps = xp.reshape(cols, (n, c, g.kh, g.kw, g.oh, g.ow))
    padded = xp.zeros((n, c, h + 2 * g.ph, w + 2 * g.pw), dtype=cols.dtype, device=device(cols))
    for i in range(g.kh):
        for j in range(g.kw):
            rows, columns = window_slices(g, i, j)
            padded[:, :, rows, columns] = padded[:, :, rows, columns] + taps[:, :, i, j, ...]
    if g.ph or g.pw:
        return padded[:, :, g.ph : g.ph + h, g.pw : g.pw + w]
    return padded
