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

Average pooling (zero padding, ``count_include_pad=True``: the divisor is always
``KH*KW``)::

    y[n, c, oh, ow]  = sum_k x_pad[n, c, oh*SH + i, ow*SW + j] / (KH*KW)
    gx_pad[n, c, oh*SH + i, ow*SW + j] += gy[n, c, oh, ow] / (KH*KW)

Global average pooling (``adaptive_avg_pool2d`` with output size 1)::

    y[n, c, 0, 0] = mean_{h, w} x[n, c, h, w]           gx[n, c, h, w] = gy[n, c, 0, 0] / (H*W)

``gx`` is ``gx_pad`` with the padding cropped away.

Implementations of max pooling (one dispatcher, see ``xcnn.ops._dispatch``):

* standard-only: a loop over the KH*KW window offsets (never over output positions)
  with strided slices, keeping a running max and running argmax; backward adds the
  KH*KW masked slices ``where(indices == k, gy, 0)`` back.
* NumPy (``ops/_numpy/pool.py``): the same loop with in-place ufuncs, a two-stage
  pairwise kernel for the common 2x2 / stride-2 case, direct writes (no
  accumulation) when windows do not overlap.
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
    index_dtype,
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
    if g.ph == 0 and g.pw == 0:
        return x
    n, c, h, w = x.shape
    padded = xp.full((n, c, h + 2 * g.ph, w + 2 * g.pw), value, dtype=x.dtype, device=device(x))
    padded[:, :, g.ph : g.ph + h, g.pw : g.pw + w] = x
    return padded


def _crop(gx_pad: Any, input_shape: tuple[int, ...], g: PoolGeometry) -> Any:
    h, w = input_shape[2], input_shape[3]
    return gx_pad[:, :, g.ph : g.ph + h, g.pw : g.pw + w]


# -- max pooling ------------------------------------------------------------------------


def max_pool2d(
    x: Any,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    *,
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
    g = pool_geometry("max_pool2d", tuple(x.shape), kernel_size, stride, padding)
    _check_float("max_pool2d", xp, x)
    path = fast_path(xp)
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
    kernel_size, stride, padding
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
    g = pool_geometry(label, input_shape, kernel_size, stride, padding)
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
    path = fast_path(xp)
    if path == "numpy":
        from xcnn.ops._numpy import pool as _pool_numpy

        return _pool_numpy.max_pool2d_backward(grad_output, indices, shape, g, relu_output)
    if relu_output is not None:
        grad_output = activation.relu_backward(grad_output, relu_output)
    if path == "cupy":
        from xcnn.ops._cupy import pool as _pool_cupy

        return _pool_cupy.max_pool2d_backward(grad_output, indices, shape, g)
    return _max_pool2d_backward_standard(xp, grad_output, indices, shape, g)


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
    n, c, h, w = input_shape
    gx_pad = xp.zeros((n, c, h + 2 * g.ph, w + 2 * g.pw), dtype=gy.dtype, device=device(gy))
    zero = xp.zeros((), dtype=gy.dtype, device=device(gy))
    for k in range(g.kh * g.kw):
        at = window_index(k // g.kw, k % g.kw, g)
        gx_pad[at] = gx_pad[at] + xp.where(indices == k, gy, zero)
    return _crop(gx_pad, input_shape, g)


# -- average pooling ----------------------------------------------------------------------


def avg_pool2d(
    x: Any,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
) -> Any:
    """2-D average pooling, zero padding counted in the divisor (``count_include_pad=True``).

    Parameters
    ----------
    x : array, shape (N, C, H, W)
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int), default 0
        At most half the kernel.

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
    """
    xp = array_namespace(x)
    g = pool_geometry("avg_pool2d", tuple(x.shape), kernel_size, stride, padding)
    _check_float("avg_pool2d", xp, x)
    x_pad = _pad(xp, x, g, 0.0)
    total = _window(x_pad, 0, 0, g)
    for k in range(1, g.kh * g.kw):
        total = total + _window(x_pad, k // g.kw, k % g.kw, g)
    return total * (1.0 / (g.kh * g.kw))


def avg_pool2d_backward(
    grad_output: Any,
    input_shape: tuple[int, ...],
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
) -> Any:
    """Gradient of :func:`avg_pool2d` w.r.t. its input.

    Parameters
    ----------
    grad_output : array, shape (N, C, OH, OW)
    input_shape : tuple of int
        ``(N, C, H, W)`` of the forward input.
    kernel_size, stride, padding
        As given to :func:`avg_pool2d`.

    Returns
    -------
    array, shape (N, C, H, W)
        Each window spreads ``grad_output / (KH*KW)`` over its pixels; overlaps add.
    """
    xp = array_namespace(grad_output)
    label = "avg_pool2d_backward"
    g = pool_geometry(label, input_shape, kernel_size, stride, padding)
    _check_grad(label, grad_output, input_shape, g)
    n, c, h, w = (int(s) for s in input_shape)
    share = grad_output * (1.0 / (g.kh * g.kw))
    gx_pad = xp.zeros(
        (n, c, h + 2 * g.ph, w + 2 * g.pw), dtype=grad_output.dtype, device=device(grad_output)
    )
    for k in range(g.kh * g.kw):
        at = window_index(k // g.kw, k % g.kw, g)
        gx_pad[at] = gx_pad[at] + share
    return _crop(gx_pad, (n, c, h, w), g)


# -- global average pooling ---------------------------------------------------------------


def check_global_size(label: str, output_size: Any) -> None:
    """Raise unless ``output_size`` asks for global pooling (1 or (1, 1))."""
    if output_size not in (1, (1, 1), [1, 1]) or isinstance(output_size, bool):
        raise ValueError(
            f"{label}: only global average pooling is supported (output_size=1 or (1, 1)), "
            f"got output_size={output_size!r}"
        )


def adaptive_avg_pool2d(x: Any, output_size: int | tuple[int, int] = 1) -> Any:
    """Adaptive average pooling to a 1x1 output (global average pooling).

    Parameters
    ----------
    x : array, shape (N, C, H, W)
    output_size : 1 or (1, 1)
        Only global average pooling is supported; anything else raises ``ValueError``.

    Returns
    -------
    array, shape (N, C, 1, 1)
        The mean over ``(H, W)``; same namespace and dtype as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn.ops import adaptive_avg_pool2d
    >>> adaptive_avg_pool2d(np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2))[:, :, 0, 0]
    array([[1.5, 5.5]], dtype=float32)
    """
    xp = array_namespace(x)
    label = "adaptive_avg_pool2d"
    check_global_size(label, output_size)
    if x.ndim != 4:
        raise ValueError(f"{label}: expected a 4-D input (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"{label}: expected a non-empty H x W, got shape {tuple(x.shape)}")
    _check_float(label, xp, x)
    n, c, h, w = x.shape
    # One contiguous axis: the summation order, hence the result, is the same for any
    # memory layout of x (a reduction over strided axes may round differently).
    means = xp.mean(xp.reshape(x, (n, c, h * w)), axis=2)
    return xp.reshape(means, (n, c, 1, 1))


def adaptive_avg_pool2d_backward(grad_output: Any, input_shape: tuple[int, ...]) -> Any:
    """Gradient of :func:`adaptive_avg_pool2d` (global): ``gy / (H*W)`` spread over each plane.

    Parameters
    ----------
    grad_output : array, shape (N, C, 1, 1)
    input_shape : tuple of int
        ``(N, C, H, W)`` of the forward input.

    Returns
    -------
    array, shape (N, C, H, W)
    """
    xp = array_namespace(grad_output)
    shape = tuple(int(s) for s in input_shape)
    label = "adaptive_avg_pool2d_backward"
    if len(shape) != 4:
        raise ValueError(f"{label}: expected a 4-D input shape (N, C, H, W), got {shape}")
    if tuple(grad_output.shape) != (shape[0], shape[1], 1, 1):
        raise ValueError(
            f"{label}: grad_output has shape {tuple(grad_output.shape)}, expected "
            f"{(shape[0], shape[1], 1, 1)} for input shape {shape}"
        )
    spread = xp.broadcast_to(grad_output * (1.0 / (shape[2] * shape[3])), shape)
    # A real array, not a read-only broadcast view that later in-place code would trip on.
    return xp.asarray(spread, copy=True)
