"""Pooling: max, average and global average over sliding windows.

Shapes (floor mode, as PyTorch's default)::

    x: (N, C, H, W)  ->  y: (N, C, OH, OW)
    OH = (H + 2*PH - KH) // SH + 1            (xcnn.ops._geometry.output_size; stride
    OW = (W + 2*PW - KW) // SW + 1             defaults to the kernel size)

Window (oh, ow) covers the padded pixels ``x_pad[oh*SH + i, ow*SW + j]`` for window
offsets ``k = i*KW + j``, ``0 <= i < KH``, ``0 <= j < KW``.

Max pooling (``x_pad`` padded with ``finfo(dtype).min``, so padding never wins and
never produces -inf)::

    y[n, c, oh, ow]       = max_k x_pad[n, c, oh*SH + i, ow*SW + j]
    indices[n, c, oh, ow] = the FIRST k (row-major) attaining that max
    gx_pad[n, c, oh*SH + i, ow*SW + j] += gy[n, c, oh, ow] * (indices[n, c, oh, ow] == k)

Routing by the stored index (not by ``x == y``) gives ties exactly one gradient, the
first maximum's, as PyTorch does. ``indices`` hold window offsets ``k`` (not
PyTorch's flat ``h*W + w``), int8 when ``KH*KW <= 127`` else int32: small, and what
the backward pass compares against.

``ceil_mode=True`` (PyTorch's rule) rounds ``OH``/``OW`` up, as long as the last
window starts inside the input or its left padding; such a window may hang past the
padded input, so ``x_pad`` gets ``EH``/``EW`` more rows/columns on the bottom/right
(``PoolGeometry.eh``/``ew``), which count as padding.

Average pooling (zero padding)::

    y[n, c, oh, ow]  = sum_k x_pad[n, c, oh*SH + i, ow*SW + j] / D[oh, ow]
    gx_pad[n, c, oh*SH + i, ow*SW + j] += gy[n, c, oh, ow] / D[oh, ow]

with ``D = KH*KW`` by default (``count_include_pad=True``), the count of real pixels
in the window with ``count_include_pad=False``, and ``divisor_override`` when given.
With ``ceil_mode`` and ``count_include_pad=True``, the part of a window past the
padded input is not counted (PyTorch's divisor). ``D`` is a product of a row count
and a column count (``_geometry.avg_pool_divisors``).

Adaptive average pooling to ``(OH, OW)``: output ``i`` averages the bin
``[floor(i*H/OH), ceil((i+1)*H/OH))`` (bins overlap when OH does not divide H), which
is a product of two averaging matrices ``A_H (OH, H)`` and ``A_W (OW, W)``::

    y  = A_H @ x @ A_W^T            gx = A_H^T @ gy @ A_W

Global average pooling (output size 1) is the mean over ``(H, W)``::

    y[n, c, 0, 0] = mean_{h, w} x[n, c, h, w]           gx[n, c, h, w] = gy[n, c, 0, 0] / (H*W)

``gx`` is ``gx_pad`` with the padding cropped away.

Implementations of max pooling (one dispatcher, see ``xcnn.ops._dispatch``):

* standard-only: a loop over the KH*KW window offsets (never over output positions)
  with strided slices, keeping a running max and running argmax; backward adds the
  KH*KW masked slices ``where(indices == k, gy, 0)`` back.
* NumPy (``ops/_numpy/pool.py``): the same loop with in-place ufuncs, a two-stage
  pairwise kernel for the common 2x2 / stride-2 case, direct writes (no
  accumulation) when windows do not overlap. ``ceil_mode`` windows past the padded
  input (``eh``/``ew`` > 0) take the standard path instead.
* CuPy (``ops/_cupy/pool.py``): one kernel per output for max+argmax; backward gathers,
  for each input pixel, the windows that cover it (deterministic, no atomics).

Average pooling is standard-only everywhere: KH*KW strided slice-adds are already
what a fast path would do.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import device

from xcnn import backends
from xcnn.backends import array_namespace
from xcnn.ops import activation
from xcnn.ops._dispatch import fast_path
from xcnn.ops._geometry import (
    PoolGeometry,
    adaptive_bins,
    adaptive_size,
    avg_pool_divisors,
    crop2d,
    index_dtype,
    pad2d,
    pool_geometry,
    window_index,
)

__all__ = [
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "max_pool2d",
    "max_pool2d_backward",
]


def _check_float(label: str, xp: Any, x: Any) -> None:
    if not xp.isdtype(x.dtype, "real floating"):
        dtype = backends.dtype_name(x.dtype)
        raise TypeError(f"{label}: expected a floating-point input, got dtype {dtype}")


def _check_grad(label: str, grad_output: Any, input_shape: tuple[int, ...], g: PoolGeometry):
    expected = (int(input_shape[0]), int(input_shape[1]), g.oh, g.ow)
    if tuple(grad_output.shape) != expected:
        raise ValueError(
            f"{label}: grad_output has shape {tuple(grad_output.shape)}, expected {expected} "
            f"(the forward output for input shape {tuple(input_shape)})"
        )


def _window(a: Any, i: int, j: int, g: PoolGeometry) -> Any:
    return a[window_index(i, j, g)]


def _pad(xp: Any, x: Any, g: PoolGeometry, value: float) -> Any:
    return pad2d(x, (g.ph, g.pw), (g.ph + g.eh, g.pw + g.ew), value, xp=xp)


def _padded_zeros(xp: Any, like: Any, input_shape: tuple[int, ...], g: PoolGeometry) -> Any:
    n, c, h, w = input_shape
    shape = (n, c, h + 2 * g.ph + g.eh, w + 2 * g.pw + g.ew)
    return xp.zeros(shape, dtype=like.dtype, device=device(like))


def _crop(gx_pad: Any, input_shape: tuple[int, ...], g: PoolGeometry) -> Any:
    return crop2d(gx_pad, (g.ph, g.pw), (int(input_shape[2]), int(input_shape[3])))


def _check_ceil_mode(label: str, ceil_mode: Any) -> None:
    if not isinstance(ceil_mode, bool):
        raise TypeError(f"{label}: ceil_mode must be True or False, got {ceil_mode!r}")


# -- max pooling ------------------------------------------------------------------------


def max_pool2d(
    x: Any,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    *,
    ceil_mode: bool = False,
    return_indices: bool = True,
    relu: bool = False,
) -> Any:
    """2-D max pooling; returns the output and the argmax of each window.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
        Floating-point input.
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int), default 0
        Implicit padding with the dtype's lowest finite value; at most half the kernel.
    ceil_mode : bool, default False
        Round the output size up (PyTorch's rule: the last window starts inside the
        input or its left padding).
    return_indices : bool, default True
        ``False`` returns ``y`` alone and skips the argmax (inference needs no
        backward, and the comparisons are most of the work).
    relu : bool, default False
        ``True`` returns ``relu(y)``: a ReLU after the pool, or equally before it
        (ReLU is monotone, so ``max(relu(x)) == relu(max(x))``, and the first maximum
        of a window is the same element whenever the maximum is positive). The
        NumPy path applies it while each thread's output is still in cache. Pass
        the result as ``relu_output`` to :func:`max_pool2d_backward`.

    Returns
    -------
    y : array, shape (N, C, OH, OW)
        Same namespace and dtype as ``x``.
    indices : array, shape (N, C, OH, OW)
        Only with ``return_indices=True``: window offset ``i*KW + j`` of the first
        maximum in each window (int8, or int32 for windows of more than 127
        elements). Pass it to :func:`max_pool2d_backward`.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn.ops import max_pool2d
    >>> x = np.array([[[[1, 5, 2, 2], [3, 4, 2, 2]]]], dtype=np.float32)
    >>> y, indices = max_pool2d(x, 2)
    >>> y
    array([[[[5., 2.]]]], dtype=float32)
    >>> indices
    array([[[[1, 0]]]], dtype=int8)
    """
    xp = array_namespace(x)
    _check_ceil_mode("max_pool2d", ceil_mode)
    g = pool_geometry("max_pool2d", tuple(x.shape), kernel_size, stride, padding, ceil_mode)
    _check_float("max_pool2d", xp, x)
    path = _max_pool_path(xp, g)
    if path == "numpy":
        from xcnn.ops._numpy import pool as _pool_numpy

        if not return_indices:
            return _pool_numpy.max_pool2d_values(x, g, relu)
        return _pool_numpy.max_pool2d(x, g, relu)
    if path == "cupy":
        from xcnn.ops._cupy import pool as _pool_cupy

        y, indices = _pool_cupy.max_pool2d(x, g)
    elif not return_indices:
        y, indices = _max_pool2d_values_standard(xp, x, g), None
    else:
        y, indices = _max_pool2d_standard(xp, x, g)
    if relu:
        y = activation.relu(y)
    return (y, indices) if return_indices else y


def max_pool2d_backward(
    grad_output: Any,
    indices: Any,
    input_shape: tuple[int, ...],
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    *,
    ceil_mode: bool = False,
    relu_output: Any = None,
) -> Any:
    """Gradient of :func:`max_pool2d` w.r.t. its input: each window's gradient goes to its argmax.

    Parameters
    ----------
    grad_output : array, shape (N, C, OH, OW)
    indices : array, shape (N, C, OH, OW)
        The ``indices`` returned by :func:`max_pool2d`.
    input_shape : tuple of int
        ``(N, C, H, W)`` of the forward input.
    kernel_size, stride, padding, ceil_mode
        As given to :func:`max_pool2d`.
    relu_output : array, shape (N, C, OH, OW), optional
        The ``y`` of ``max_pool2d(..., relu=True)``: the ReLU's backward is applied
        first, so windows whose output is not positive pass no gradient.

    Returns
    -------
    array, shape (N, C, H, W)
        Same namespace and dtype as ``grad_output``; where windows overlap, their
        gradients add.
    """
    xp = array_namespace(grad_output, indices)
    label = "max_pool2d_backward"
    _check_ceil_mode(label, ceil_mode)
    g = pool_geometry(label, input_shape, kernel_size, stride, padding, ceil_mode)
    _check_grad(label, grad_output, input_shape, g)
    if tuple(indices.shape) != tuple(grad_output.shape):
        raise ValueError(
            f"{label}: indices have shape {tuple(indices.shape)}, expected the shape of "
            f"grad_output {tuple(grad_output.shape)}"
        )
    if relu_output is not None and tuple(relu_output.shape) != tuple(grad_output.shape):
        raise ValueError(
            f"{label}: relu_output has shape {tuple(relu_output.shape)}, expected the shape "
            f"of grad_output {tuple(grad_output.shape)}"
        )
    shape = tuple(int(s) for s in input_shape)
    path = _max_pool_path(xp, g)
    if path == "numpy":
        from xcnn.ops._numpy import pool as _pool_numpy

        return _pool_numpy.max_pool2d_backward(grad_output, indices, shape, g, relu_output)
    if relu_output is not None:
        grad_output = activation.relu_backward(grad_output, relu_output)
    if path == "cupy":
        from xcnn.ops._cupy import pool as _pool_cupy

        return _pool_cupy.max_pool2d_backward(grad_output, indices, shape, g)
    return _max_pool2d_backward_standard(xp, grad_output, indices, shape, g)


def _max_pool_path(xp: Any, g: PoolGeometry) -> str | None:
    """The fast path for this geometry: NumPy's pads only by ``ph``/``pw`` on each side,
    so ``ceil_mode`` windows past the padded input take the standard path there (the
    CUDA kernels read every tap past the input as padding, so they cover them)."""
    path = fast_path(xp)
    return None if path == "numpy" and (g.eh or g.ew) else path


def _max_pool2d_standard(xp: Any, x: Any, g: PoolGeometry) -> tuple[Any, Any]:
    x_pad = _pad(xp, x, g, float(xp.finfo(x.dtype).min))
    y = _window(x_pad, 0, 0, g)
    indices = xp.zeros(tuple(y.shape), dtype=index_dtype(xp, g.kh * g.kw), device=device(x))
    for k in range(1, g.kh * g.kw):
        v = _window(x_pad, k // g.kw, k % g.kw, g)
        # k exceeds every earlier offset, so "where(better, k, indices)" is this maximum.
        indices = xp.maximum(indices, xp.astype(v > y, indices.dtype) * k)
        # maximum propagates NaN; once y is NaN, "v > y" is False and the index stays.
        y = xp.maximum(y, v)
    return y, indices


def _max_pool2d_values_standard(xp: Any, x: Any, g: PoolGeometry) -> Any:
    x_pad = _pad(xp, x, g, float(xp.finfo(x.dtype).min))
    y = _window(x_pad, 0, 0, g)
    for k in range(1, g.kh * g.kw):
        y = xp.maximum(y, _window(x_pad, k // g.kw, k % g.kw, g))
    return y


def _max_pool2d_backward_standard(
    xp: Any, gy: Any, indices: Any, input_shape: tuple[int, ...], g: PoolGeometry
) -> Any:
    gx_pad = _padded_zeros(xp, gy, input_shape, g)
    zero = xp.zeros((), dtype=gy.dtype, device=device(gy))
    for k in range(g.kh * g.kw):
        at = window_index(k // g.kw, k % g.kw, g)
        gx_pad[at] = gx_pad[at] + xp.where(indices == k, gy, zero)
    return _crop(gx_pad, input_shape, g)


# -- average pooling ----------------------------------------------------------------------


def _check_avg_options(label: str, count_include_pad: Any, divisor_override: Any) -> None:
    if not isinstance(count_include_pad, bool):
        raise TypeError(
            f"{label}: count_include_pad must be True or False, got {count_include_pad!r}"
        )
    if divisor_override is not None and (
        isinstance(divisor_override, bool)
        or not isinstance(divisor_override, int)
        or divisor_override == 0
    ):
        raise ValueError(
            f"{label}: divisor_override must be a non-zero int or None, got {divisor_override!r}"
        )


def _avg_divisor(
    xp: Any,
    like: Any,
    input_shape: tuple[int, ...],
    g: PoolGeometry,
    count_include_pad: bool,
    divisor_override: int | None,
) -> float | Any:
    """``1/D`` as a Python float where it is one number, else ``D`` as an (OH, OW) array."""
    if divisor_override is not None:
        return 1.0 / divisor_override
    if count_include_pad and not (g.eh or g.ew):
        return 1.0 / (g.kh * g.kw)
    h, w = int(input_shape[2]), int(input_shape[3])
    rows = avg_pool_divisors(h, g.kh, g.sh, g.ph, g.oh, count_include_pad)
    cols = avg_pool_divisors(w, g.kw, g.sw, g.pw, g.ow, count_include_pad)
    dev = device(like)
    return (
        xp.asarray(rows, dtype=like.dtype, device=dev)[:, None]
        * xp.asarray(cols, dtype=like.dtype, device=dev)[None, :]
    )


def _divide(xp: Any, a: Any, divisor: float | Any) -> Any:
    return a * divisor if isinstance(divisor, float) else a / divisor


def avg_pool2d(
    x: Any,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Any:
    """2-D average pooling with zero padding, PyTorch's options and defaults.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int), default 0
        At most half the kernel.
    ceil_mode : bool, default False
        Round the output size up (the last window starts inside the input or its
        left padding).
    count_include_pad : bool, default True
        Count the zero padding in the divisor (never the part of a ``ceil_mode``
        window past the padded input, as in PyTorch); ``False`` counts real pixels.
    divisor_override : int, optional
        Divide every window's sum by this instead.

    Returns
    -------
    array, shape (N, C, OH, OW)
        Same namespace and dtype as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn.ops import avg_pool2d
    >>> avg_pool2d(np.arange(8, dtype=np.float32).reshape(1, 1, 2, 4), 2)
    array([[[[2.5, 4.5]]]], dtype=float32)
    >>> avg_pool2d(np.ones((1, 1, 3, 3), dtype=np.float32), 2, ceil_mode=True)[0, 0]
    array([[1., 1.],
           [1., 1.]], dtype=float32)
    """
    xp = array_namespace(x)
    label = "avg_pool2d"
    _check_ceil_mode(label, ceil_mode)
    _check_avg_options(label, count_include_pad, divisor_override)
    g = pool_geometry(label, tuple(x.shape), kernel_size, stride, padding, ceil_mode)
    _check_float(label, xp, x)
    x_pad = _pad(xp, x, g, 0.0)
    total = _window(x_pad, 0, 0, g)
    for k in range(1, g.kh * g.kw):
        total = total + _window(x_pad, k // g.kw, k % g.kw, g)
    divisor = _avg_divisor(xp, x, tuple(x.shape), g, count_include_pad, divisor_override)
    return _divide(xp, total, divisor)


def avg_pool2d_backward(
    grad_output: Any,
    input_shape: tuple[int, ...],
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Any:
    """Gradient of :func:`avg_pool2d` w.r.t. its input.

    Parameters
    ----------
    grad_output : array, shape (N, C, OH, OW)
    input_shape : tuple of int
        ``(N, C, H, W)`` of the forward input.
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        As given to :func:`avg_pool2d`.

    Returns
    -------
    array, shape (N, C, H, W)
        Each window spreads ``grad_output / D`` over its pixels (``D`` its divisor);
        overlaps add.
    """
    xp = array_namespace(grad_output)
    label = "avg_pool2d_backward"
    _check_ceil_mode(label, ceil_mode)
    _check_avg_options(label, count_include_pad, divisor_override)
    g = pool_geometry(label, input_shape, kernel_size, stride, padding, ceil_mode)
    _check_grad(label, grad_output, input_shape, g)
    shape = tuple(int(s) for s in input_shape)
    divisor = _avg_divisor(xp, grad_output, shape, g, count_include_pad, divisor_override)
    share = _divide(xp, grad_output, divisor)
    gx_pad = _padded_zeros(xp, grad_output, shape, g)
    for k in range(g.kh * g.kw):
        at = window_index(k // g.kw, k % g.kw, g)
        gx_pad[at] = gx_pad[at] + share
    return _crop(gx_pad, shape, g)


# -- global average pooling ---------------------------------------------------------------


def _adaptive_output(label: str, output_size: Any, shape: tuple[int, ...]) -> tuple[int, int]:
    """``(OH, OW)`` for an input shape: ``None`` entries keep the input's size."""
    oh, ow = adaptive_size(label, output_size)
    return (shape[2] if oh is None else oh, shape[3] if ow is None else ow)


def _averaging_matrix(xp: Any, like: Any, size: int, out: int) -> Any:
    """``A (out, size)``: row ``i`` is ``1/len`` on bin ``i`` of :func:`adaptive_bins`, else 0."""
    bins = adaptive_bins(size, out)
    dev = device(like)
    starts = xp.asarray([s for s, _ in bins], dtype=xp.int64, device=dev)[:, None]
    ends = xp.asarray([e for _, e in bins], dtype=xp.int64, device=dev)[:, None]
    lengths = xp.asarray([e - s for s, e in bins], dtype=like.dtype, device=dev)[:, None]
    at = xp.arange(size, dtype=xp.int64, device=dev)[None, :]
    inside = xp.astype((at >= starts) & (at < ends), like.dtype)
    return inside / lengths


def adaptive_avg_pool2d(x: Any, output_size: Any = 1) -> Any:
    """Adaptive average pooling to ``output_size``, PyTorch's bins.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
    output_size : int or (int or None, int or None), default 1
        ``(OH, OW)``; ``None`` keeps that input size. Output ``i`` averages the input
        rows ``floor(i*H/OH)`` to ``ceil((i+1)*H/OH) - 1`` (and likewise for columns).

    Returns
    -------
    array, shape (N, C, OH, OW)
        Same namespace and dtype as ``x``; ``output_size=1`` is the mean over ``(H, W)``.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn.ops import adaptive_avg_pool2d
    >>> adaptive_avg_pool2d(np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2))[:, :, 0, 0]
    array([[1.5, 5.5]], dtype=float32)
    >>> adaptive_avg_pool2d(np.arange(3, dtype=np.float32).reshape(1, 1, 1, 3), (1, 2))
    array([[[[0.5, 1.5]]]], dtype=float32)
    """
    xp = array_namespace(x)
    label = "adaptive_avg_pool2d"
    adaptive_size(label, output_size)
    if x.ndim != 4:
        raise ValueError(f"{label}: expected a 4-D input (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"{label}: expected a non-empty H x W, got shape {tuple(x.shape)}")
    _check_float(label, xp, x)
    n, c, h, w = (int(s) for s in x.shape)
    oh, ow = _adaptive_output(label, output_size, (n, c, h, w))
    if (oh, ow) == (1, 1):
        # One contiguous axis: the summation order, hence the result, is the same for any
        # memory layout of x (a reduction over strided axes may round differently).
        means = xp.mean(xp.reshape(x, (n, c, h * w)), axis=2)
        return xp.reshape(means, (n, c, 1, 1))
    rows = _averaging_matrix(xp, x, h, oh)
    cols = _averaging_matrix(xp, x, w, ow)
    return xp.matmul(rows, xp.matmul(x, xp.matrix_transpose(cols)))


def adaptive_avg_pool2d_backward(
    grad_output: Any, input_shape: tuple[int, ...], output_size: Any = 1
) -> Any:
    """Gradient of :func:`adaptive_avg_pool2d`: ``A_H^T @ gy @ A_W``.

    Parameters
    ----------
    grad_output : array, shape (N, C, OH, OW)
    input_shape : tuple of int
        ``(N, C, H, W)`` of the forward input.
    output_size : int or (int or None, int or None), default 1
        As given to :func:`adaptive_avg_pool2d`.

    Returns
    -------
    array, shape (N, C, H, W)
        Each output's gradient spread evenly over its bin; overlapping bins add.
    """
    xp = array_namespace(grad_output)
    shape = tuple(int(s) for s in input_shape)
    label = "adaptive_avg_pool2d_backward"
    if len(shape) != 4:
        raise ValueError(f"{label}: expected a 4-D input shape (N, C, H, W), got {shape}")
    oh, ow = _adaptive_output(label, output_size, shape)
    if tuple(grad_output.shape) != (shape[0], shape[1], oh, ow):
        raise ValueError(
            f"{label}: grad_output has shape {tuple(grad_output.shape)}, expected "
            f"{(shape[0], shape[1], oh, ow)} for input shape {shape}"
        )
    if (oh, ow) == (1, 1):
        spread = xp.broadcast_to(grad_output * (1.0 / (shape[2] * shape[3])), shape)
        # A real array, not a read-only broadcast view that later in-place code would trip on.
        return xp.asarray(spread, copy=True)
    rows = _averaging_matrix(xp, grad_output, shape[2], oh)
    cols = _averaging_matrix(xp, grad_output, shape[3], ow)
    return xp.matmul(xp.matrix_transpose(rows), xp.matmul(grad_output, cols))
