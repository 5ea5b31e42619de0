"""Fully connected (dense) layer: ``y = x W^T + b``.

Shapes (any leading dimensions ``...`` are treated as extra batch dimensions)::

    x: (..., in)      weight W: (out, in)      bias b: (out,)      y: (..., out)

Gradients, with ``gy = dL/dy`` of shape ``(..., out)`` and the leading dimensions
flattened into one batch axis of length ``M`` (``x2: (M, in)``, ``gy2: (M, out)``)::

    gx = gy W                 (..., out) @ (out, in)  -> (..., in)
    gW = gy2^T x2             (out, M)   @ (M, in)    -> (out, in)
    gb = sum_M gy2            (out,)
"""

from __future__ import annotations

from typing import Any

from xcnn import backends
from xcnn.backends import array_namespace
from xcnn.ops import activation
from xcnn.ops._dispatch import fast_path

__all__ = ["linear", "linear_backward"]


def _check_linear(x: Any, weight: Any, bias: Any, who: str) -> None:
    """Validate a linear op's arguments; messages start with ``who``."""
    weight_space = backends.namespace_name(weight)
    for name, value in (("input", x), ("bias", bias)):
        if value is not None and backends.namespace_name(value) != weight_space:
            raise TypeError(
                f"{who}: {name} is a {backends.namespace_name(value)} array but the weight "
                f"lives on {weight_space}; put both on one backend"
            )
    if weight.ndim != 2:
        raise ValueError(
            f"{who}: expected a 2-D weight of shape (out, in), got shape {tuple(weight.shape)}"
        )
    out_features, in_features = (int(n) for n in weight.shape)
    if x.ndim < 1 or int(x.shape[-1]) != in_features:
        raise ValueError(
            f"{who}: expected input of shape (N, {in_features}) (or (..., {in_features})), "
            f"got shape {tuple(x.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (out_features,):
        raise ValueError(
            f"{who}: expected a bias of shape ({out_features},), got shape {tuple(bias.shape)}"
        )
    xp = array_namespace(weight)
    if not xp.isdtype(weight.dtype, "real floating"):
        dtype = backends.dtype_name(weight.dtype)
        raise TypeError(f"{who}: expected a floating-point weight, got dtype {dtype}")
    for name, value in (("input", x), ("bias", bias)):
        if value is not None and value.dtype != weight.dtype:
            # Mixing would silently promote float32 to float64 (or fail for ints).
            raise TypeError(
                f"{who}: {name} dtype {backends.dtype_name(value.dtype)} differs from the "
                f"weight dtype {backends.dtype_name(weight.dtype)}; cast the input "
                "(or call model.double() / model.float())"
            )


def linear(x: Any, weight: Any, bias: Any = None, *, relu: bool = False) -> Any:
    """Apply ``y = x W^T + b``.

    Parameters
    ----------
    x : array, shape (..., in)
        Input; usually ``(N, in)``.
    weight : array, shape (out, in)
        PyTorch's layout.
    bias : array, shape (out,), optional
    relu : bool, default False
        ``True`` returns ``relu(y)``, a ReLU fused after the layer (the NumPy path
        clamps each thread's block of ``y`` while it is in cache). Pass the result as
        ``relu_output`` to :func:`linear_backward`.

    Returns
    -------
    y : array, shape (..., out)
        Same dtype and namespace as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn.ops import linear
    >>> x = np.ones((2, 3), dtype=np.float32)
    >>> w = np.full((4, 3), 0.5, dtype=np.float32)
    >>> linear(x, w, np.zeros(4, dtype=np.float32))
    array([[1.5, 1.5, 1.5, 1.5],
           [1.5, 1.5, 1.5, 1.5]], dtype=float32)
    """
    _check_linear(x, weight, bias, "linear")
    return _linear(x, weight, bias, relu)


def _linear(x: Any, weight: Any, bias: Any, relu: bool = False) -> Any:
    if fast_path(array_namespace(x, weight)) == "numpy":
        from xcnn.ops._numpy import linear as _linear_numpy

        return _linear_numpy.linear(x, weight, bias, relu)
    # weight.T is a view; NumPy's matmul hands the transposed layout to BLAS as is.
    y = x @ weight.T
    if bias is not None:
        y = y + bias
    return activation.relu(y) if relu else y


def linear_backward(
    gy: Any, x: Any, weight: Any, *, bias: bool = True, relu_output: Any = None
) -> tuple[Any, Any, Any | None]:
    """Gradients of :func:`linear` with respect to input, weight and bias.

    Parameters
    ----------
    gy : array, shape (..., out)
        Gradient of the loss with respect to ``y``.
    x : array, shape (..., in)
        The forward input.
    weight : array, shape (out, in)
    bias : bool, default True
        Whether the forward pass had a bias (``False`` returns ``gb = None``).
    relu_output : array, shape (..., out), optional
        The ``y`` of ``linear(..., relu=True)``: the ReLU's backward is applied first,
        so outputs that are not positive pass no gradient.

    Returns
    -------
    gx : array, shape (..., in)
    gw : array, shape (out, in)
    gb : array, shape (out,), or None
    """
    _check_linear(x, weight, None, "linear_backward")
    expected = (*tuple(x.shape[:-1]), int(weight.shape[0]))
    if tuple(gy.shape) != expected:
        raise ValueError(
            f"linear_backward: expected gy of shape {expected} (the output's), "
            f"got shape {tuple(gy.shape)}"
        )
    if relu_output is not None and tuple(relu_output.shape) != expected:
        raise ValueError(
            f"linear_backward: expected relu_output of shape {expected} (the output's), "
            f"got shape {tuple(relu_output.shape)}"
        )
    return _linear_backward(gy, x, weight, bias, relu_output)


def _linear_backward(
    gy: Any, x: Any, weight: Any, bias: bool, relu_output: Any = None
) -> tuple[Any, Any, Any | None]:
    xp = array_namespace(gy, x, weight)
    if relu_output is not None:  # the fused ReLU's backward, on every path
        gy = activation.relu_backward(gy, relu_output)
    if fast_path(xp) == "numpy":
        from xcnn.ops._numpy import linear as _linear_numpy

        return _linear_numpy.linear_backward(gy, x, weight, bias)
    gx = gy @ weight
    if x.ndim == 2:
        x2, gy2 = x, gy
    else:
        x2 = xp.reshape(x, (-1, int(x.shape[-1])))
        gy2 = xp.reshape(gy, (-1, int(gy.shape[-1])))
    gw = gy2.T @ x2
    gb = xp.sum(gy2, axis=0) if bias else None
    return gx, gw, gb
