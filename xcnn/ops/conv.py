"""2-D convolution (cross-correlation, as in PyTorch) by im2col + batched matmul.

Shapes, with ``G`` groups, ``Cg = C/G``, ``Og = O/G``, ``K = Cg*KH*KW``, ``L = OH*OW``::

    x:      (N, C, H, W)
    weight: (O, Cg, KH, KW)          -> Wm:   (G, Og, K)        (free reshape)
    bias:   (O,)
    cols  = im2col(x):  (N, C*KH*KW, L) -> (N, G, K, L)         (free reshape)
    y     = Wm @ cols + b:  (N, G, Og, L) -> (N, O, OH, OW)     (free reshape, no transpose)

Gradients, with ``gY = grad_output`` viewed as ``(N, G, Og, L)``::

    gW    = sum_n  gY[n] @ cols[n]^T           (G, Og, K) -> (O, Cg, KH, KW)
    gb    = sum of gY over N, OH, OW           (O,)
    gcols = Wm^T @ gY                          (N, G, K, L) -> (N, C*KH*KW, L)
    gx    = col2im(gcols)                      (N, C, H, W)

Cache: ``conv2d(..., return_cols=True)`` also returns ``cols``; pass it to
``conv2d_backward(..., cols=cols)`` so backward does not unfold ``x`` again (``gW``
needs it). ``nn.Conv2d`` keeps it between its forward and backward where
``reuses_cols(xp)`` says so (not on NumPy, whose fast path unfolds again). Backward can
skip ``gx`` (``input_grad=False``, e.g. for a model's first layer, whose input needs
no gradient) and ``gb`` (``bias=False``, as in ``linear_backward``).

Why this layout: the products above are matmuls batched over N on small
``(K, L)`` matrices, which were the fastest BLAS shapes we measured (they also map
to one strided-batched cuBLAS call on CuPy). On NumPy, ``ops/_numpy/conv.py`` does the same
math in cache-sized chunks of images, and computes ``gcols`` and its fold batch-last,
because NumPy's slice-adds in col2im are slow on OW-long runs (see that file).
Elsewhere the code below runs as written, on im2col/col2im, which have their own
CuPy kernels.
"""

from __future__ import annotations

from typing import Any

from xcnn import backends
from xcnn.backends import array_namespace
from xcnn.ops._dispatch import fast_path
from xcnn.ops._geometry import Geometry, geometry
from xcnn.ops.im2col import col2im, im2col

__all__ = ["conv2d", "conv2d_backward"]


def _check(
    op: str,
    x: Any,
    weight: Any,
    bias: Any,
    stride: int | tuple[int, int],
    padding: int | tuple[int, int],
    dilation: int | tuple[int, int],
    groups: int,
) -> tuple[Any, Geometry]:
    """Validate a convolution's arrays and window parameters; return ``(xp, geometry)``."""
    arrays = [("x", x), ("weight", weight)] + ([] if bias is None else [("bias", bias)])
    names = {label: backends.namespace_name(a) for label, a in arrays}
    if len(set(names.values())) > 1:
        listed = ", ".join(f"{label} lives on {name}" for label, name in names.items())
        raise TypeError(f"{op}: all arrays must live on one backend, but {listed}")
    xp = array_namespace(*(a for _, a in arrays))
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(
            f"{op}: expected a floating-point x, got dtype {backends.dtype_name(x.dtype)}"
        )
    for label, a in arrays[1:]:
        if a.dtype != x.dtype:
            raise TypeError(
                f"{op}: {label} has dtype {a.dtype} but x has dtype {x.dtype}; cast one of them"
            )
    if len(x.shape) != 4:
        raise ValueError(f"{op}: expected x of rank 4 (N, C, H, W), got shape {tuple(x.shape)}")
    if len(weight.shape) != 4:
        raise ValueError(
            f"{op}: expected weight of rank 4 (O, C/groups, KH, KW), got shape "
            f"{tuple(weight.shape)}"
        )
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    out_channels, group_channels, kh, kw = (int(s) for s in weight.shape)
    channels = int(x.shape[1])
    if out_channels % groups:
        raise ValueError(
            f"{op}: out channels {out_channels} (weight shape {tuple(weight.shape)}) must be "
            f"divisible by groups={groups}"
        )
    if group_channels * groups != channels:
        raise ValueError(
            f"{op}: expected x with {group_channels * groups} channels (weight shape "
            f"{tuple(weight.shape)}, groups={groups}), got shape {tuple(x.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(f"{op}: expected bias of shape {(out_channels,)}, got {tuple(bias.shape)}")
    return xp, geometry(op, tuple(x.shape), (kh, kw), stride, padding, dilation)


def conv2d(
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    *,
    return_cols: bool = False,
) -> Any:
    """2-D convolution over an NCHW batch, as ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
    weight : array, shape (O, C/groups, KH, KW)
    bias : array, shape (O,), optional
    stride, padding, dilation : int or (int, int)
        Zero padding on both sides.
    groups : int
        ``C`` and ``O`` are split into ``groups`` independent convolutions.
    return_cols : bool
        Also return the unfolded input, the cache :func:`conv2d_backward` accepts.

    Returns
    -------
    y : array, shape (N, O, OH, OW)
        Same namespace and dtype as ``x``.
    cols : array, shape (N, C*KH*KW, OH*OW)
        Only when ``return_cols`` is true.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn.ops import conv2d
    >>> x = np.ones((1, 1, 3, 3), dtype=np.float32)
    >>> conv2d(x, np.ones((2, 1, 2, 2), dtype=np.float32), padding=1).shape
    (1, 2, 4, 4)
    """
    xp, g = _check("conv2d", x, weight, bias, stride, padding, dilation, groups)
    n = int(x.shape[0])
    out_channels = int(weight.shape[0])
    window = ((g.kh, g.kw), (g.sh, g.sw), (g.ph, g.pw), (g.dh, g.dw))
    if fast_path(xp) == "numpy":
        from xcnn.ops._numpy import conv as _conv_numpy

        y = _conv_numpy.conv2d(x, weight, bias, groups, g)
        return (y, im2col(x, *window)) if return_cols else y
    cols = im2col(x, *window)
    y = _weight_times_cols(xp, weight, cols, groups)
    if bias is not None:
        # In place: y is our own fresh matmul result, so this saves a full output copy.
        y += xp.reshape(bias, (1, out_channels, 1))
    y = xp.reshape(y, (n, out_channels, g.oh, g.ow))
    return (y, cols) if return_cols else y


def reuses_cols(xp: Any) -> bool:
    """Whether :func:`conv2d_backward` on namespace ``xp`` is faster given forward's ``cols``.

    False on NumPy, whose fast path re-unfolds each batch chunk while it is in cache
    (see ``ops/_numpy/conv.py``), so a layer need not keep ``cols`` between the passes.
    """
    return fast_path(xp) != "numpy"


def _weight_times_cols(xp: Any, weight: Any, cols: Any, groups: int) -> Any:
    """``Wm @ cols`` as ``(N, O, L)``; one matmul batched over N (and G)."""
    n, rows, length = (int(s) for s in cols.shape)
    out_channels = int(weight.shape[0])
    if groups == 1:
        return xp.matmul(xp.reshape(weight, (out_channels, rows)), cols)
    wm = xp.reshape(weight, (groups, out_channels // groups, rows // groups))
    y = xp.matmul(wm, xp.reshape(cols, (n, groups, rows // groups, length)))
    return xp.reshape(y, (n, out_channels, length))


def conv2d_backward(
    grad_output: Any,
    x: Any,
    weight: Any,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    *,
    cols: Any = None,
    input_grad: bool = True,
    bias: bool = True,
) -> tuple[Any, Any, Any]:
    """Gradients of :func:`conv2d` with respect to x, weight and bias.

    Parameters
    ----------
    grad_output : array, shape (N, O, OH, OW)
        Gradient of the loss with respect to the convolution's output.
    x, weight, stride, padding, dilation, groups
        The forward pass's arguments (``x`` only gives the input shape when ``cols`` is given).
    cols : array, shape (N, C*KH*KW, OH*OW), optional
        The cache from ``conv2d(..., return_cols=True)`` on the same arguments; without
        it ``x`` is unfolded again.
    input_grad : bool
        False skips ``grad_x`` (returned as ``None``), e.g. for a model's first layer.
    bias : bool
        Whether the forward pass had a bias; False returns ``grad_bias`` as ``None``.

    Returns
    -------
    grad_x : array, shape (N, C, H, W), or None
    grad_weight : array, shape (O, C/groups, KH, KW)
    grad_bias : array, shape (O,), or None

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn.ops import conv2d, conv2d_backward
    >>> x = np.ones((1, 1, 3, 3), dtype=np.float32)
    >>> w = np.ones((1, 1, 2, 2), dtype=np.float32)
    >>> gy = np.ones((1, 1, 2, 2), dtype=np.float32)
    >>> gx, gw, gb = conv2d_backward(gy, x, w)
    >>> gx[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]], dtype=float32)
    >>> gb
    array([4.], dtype=float32)
    """
    xp, g = _check("conv2d_backward", x, weight, None, stride, padding, dilation, groups)
    n, channels = int(x.shape[0]), int(x.shape[1])
    out_channels = int(weight.shape[0])
    expected = (n, out_channels, g.oh, g.ow)
    if tuple(grad_output.shape) != expected:
        raise ValueError(
            f"conv2d_backward: expected grad_output of shape {expected}, "
            f"got {tuple(grad_output.shape)}"
        )
    if grad_output.dtype != x.dtype:
        raise TypeError(
            f"conv2d_backward: grad_output has dtype {grad_output.dtype} but x has dtype "
            f"{x.dtype}; cast one of them"
        )
    rows, length = channels * g.kh * g.kw, g.oh * g.ow
    if cols is not None and tuple(cols.shape) != (n, rows, length):
        raise ValueError(
            f"conv2d_backward: expected cols of shape {(n, rows, length)} (from "
            f"conv2d(..., return_cols=True) on this input), got {tuple(cols.shape)}"
        )

    og, kg = out_channels // groups, rows // groups
    if fast_path(xp) == "numpy":
        from xcnn.ops._numpy import conv as _conv_numpy

        # cols is not needed: the fast path unfolds x again chunk by chunk, in cache.
        return _conv_numpy.conv2d_backward(grad_output, x, weight, groups, g, input_grad, bias)

    gy = xp.reshape(grad_output, (n, groups, og, length))
    # Summed from the reshaped gY, which is C-ordered whatever grad_output's strides were,
    # so the rounding does not depend on the caller's memory layout.
    grad_bias = xp.reshape(xp.sum(gy, axis=(0, 3)), (out_channels,)) if bias else None

    if cols is None:
        cols = im2col(x, (g.kh, g.kw), (g.sh, g.sw), (g.ph, g.pw), (g.dh, g.dw))
    grouped_cols = xp.reshape(cols, (n, groups, kg, length))
    # gW^T = sum_n cols[n] @ gY[n]^T: (K, L) @ (L, Og) is the faster BLAS shape here.
    gw_t = xp.sum(xp.matmul(grouped_cols, xp.matrix_transpose(gy)), axis=0)
    grad_weight = xp.reshape(xp.matrix_transpose(gw_t), tuple(weight.shape))

    grad_x = None
    input_shape = (n, channels, int(x.shape[2]), int(x.shape[3]))
    if input_grad:
        wm = xp.reshape(weight, (groups, og, kg))
        gcols = xp.matmul(xp.matrix_transpose(wm), gy)  # (N, G, K, L)
        window = ((g.kh, g.kw), (g.sh, g.sw), (g.ph, g.pw), (g.dh, g.dw))
        grad_x = col2im(xp.reshape(gcols, (n, rows, length)), input_shape, *window)
    return grad_x, grad_weight, grad_bias
