"""Elementwise activations and their gradients.

Every op maps ``x: (any shape)`` to ``y`` of the same shape and dtype. With
``gy = dL/dy``::

    relu:        y = max(x, 0)                         gx = gy * [x > 0]
    leaky_relu:  y = x if x > 0 else a x               gx = gy if x > 0 else a gy
    sigmoid:     y = 1 / (1 + exp(-x))                 gx = gy * y * (1 - y)
    tanh:        y = tanh(x)                           gx = gy * (1 - y^2)

The gradient at the kink ``x = 0`` is taken from the left (0 for relu, ``a``
for leaky_relu), as PyTorch does. sigmoid and tanh backward take the OUTPUT
``y``, which is what their derivatives are cheapest in; relu and leaky_relu
take the input ``x``.

sigmoid is evaluated as ``1 / (1 + e)`` for ``x >= 0`` and ``e / (1 + e)`` for
``x < 0`` with ``e = exp(-|x|) <= 1``, so no exponential overflows (and no
overflow warning appears) for any finite ``x``.

Branches are taken by multiplying with 0/1 masks rather than ``xp.where``: on
NumPy ``where`` mispredicts a branch per element on activations' random signs
and is several times slower.
"""

from __future__ import annotations

import numbers
from typing import Any

from xcnn import backends
from xcnn.backends import array_namespace
from xcnn.ops._dispatch import fast_path

__all__ = [
    "leaky_relu",
    "leaky_relu_backward",
    "relu",
    "relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "tanh",
    "tanh_backward",
]


def _floating(x: Any, who: str) -> Any:
    """Return ``x``'s namespace after checking it is a floating-point array."""
    try:
        xp = array_namespace(x)
    except TypeError:
        raise TypeError(f"{who}: expected an array, got {type(x).__name__}") from None
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(
            f"{who}: expected a floating-point array, got dtype {backends.dtype_name(x.dtype)}"
        )
    return xp


def _same_shape(gy: Any, other: Any, who: str, name: str) -> None:
    if tuple(gy.shape) != tuple(other.shape):
        raise ValueError(
            f"{who}: expected gy of shape {tuple(other.shape)} (the {name}'s), "
            f"got shape {tuple(gy.shape)}"
        )


def _slope(negative_slope: Any, who: str) -> float:
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, numbers.Real):
        raise TypeError(f"{who}: negative_slope must be a real number, got {negative_slope!r}")
    # A Python float keeps float32 arrays float32 (a NumPy float64 scalar would not).
    return float(negative_slope)


def relu(x: Any) -> Any:
    """Rectified linear unit, ``max(x, 0)``; NaN stays NaN.

    Parameters
    ----------
    x : array, any shape, floating dtype

    Returns
    -------
    y : array, same shape, dtype and namespace as ``x``

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn.ops import relu
    >>> relu(np.array([-1.0, 0.0, 2.0], dtype=np.float32))
    array([0., 0., 2.], dtype=float32)
    """
    xp = _floating(x, "relu")
    if fast_path(xp) == "numpy" and x.flags.c_contiguous:
        from xcnn.ops._numpy import activation as _activation_numpy

        return _activation_numpy.relu(x)
    return xp.maximum(x, xp.asarray(0.0, dtype=x.dtype))


def relu_backward(gy: Any, x: Any) -> Any:
    """Gradient of :func:`relu`: ``gy`` where ``x > 0``, else 0.

    Parameters
    ----------
    gy : array, shape of ``x``
    x : array
        The forward INPUT.
    """
    xp = _floating(x, "relu_backward")
    _same_shape(gy, x, "relu_backward", "input")
    if (
        fast_path(xp) == "numpy"
        and gy.dtype == x.dtype
        and gy.flags.c_contiguous
        and x.flags.c_contiguous
    ):
        from xcnn.ops._numpy import activation as _activation_numpy

        return _activation_numpy.relu_backward(gy, x)
    # A 0/1 mask product, not xp.where (see the top of this file).
    return gy * xp.astype(x > 0, gy.dtype)


def leaky_relu(x: Any, negative_slope: float = 0.01) -> Any:
    """``x`` for ``x > 0``, ``negative_slope * x`` otherwise.

    Parameters
    ----------
    x : array, any shape, floating dtype
    negative_slope : float, default 0.01

    Returns
    -------
    y : array, same shape, dtype and namespace as ``x``

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn.ops import leaky_relu
    >>> leaky_relu(np.array([-2.0, 3.0], dtype=np.float32), 0.5)
    array([-1.,  3.], dtype=float32)
    """
    xp = _floating(x, "leaky_relu")
    slope = _slope(negative_slope, "leaky_relu")
    # max(x, a x) for a <= 1 and min(x, a x) for a > 1 pick exactly x or a x (and keep NaN).
    if slope <= 1.0:
        return xp.maximum(x, x * slope)
    return xp.minimum(x, x * slope)


def leaky_relu_backward(gy: Any, x: Any, negative_slope: float = 0.01) -> Any:
    """Gradient of :func:`leaky_relu`; ``x`` is the forward INPUT."""
    xp = _floating(x, "leaky_relu_backward")
    slope = _slope(negative_slope, "leaky_relu_backward")
    _same_shape(gy, x, "leaky_relu_backward", "input")
    positive = xp.astype(x > 0, gy.dtype)
    # positive + (1 - positive) * a is exactly 1 or a (in gy's dtype), as the slope's
    # two branches would give.
    return gy * (positive + (1.0 - positive) * slope)


def sigmoid(x: Any) -> Any:
    """Logistic function ``1 / (1 + exp(-x))``, free of overflow for any finite ``x``.

    Parameters
    ----------
    x : array, any shape, floating dtype

    Returns
    -------
    y : array, same shape, dtype and namespace as ``x``, values in [0, 1]

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn.ops import sigmoid
    >>> sigmoid(np.array([-1e4, 0.0, 1e4], dtype=np.float32))
    array([0. , 0.5, 1. ], dtype=float32)
    """
    xp = _floating(x, "sigmoid")
    e = xp.exp(-xp.abs(x))  # in (0, 1]: never overflows
    # Numerator 1 for x >= 0 and e for x < 0, blended exactly from a 0/1 mask.
    nonnegative = xp.astype(x >= 0, x.dtype)
    return (nonnegative + (1.0 - nonnegative) * e) / (1.0 + e)


def sigmoid_backward(gy: Any, y: Any) -> Any:
    """Gradient of :func:`sigmoid`: ``gy * y * (1 - y)``; ``y`` is the forward OUTPUT."""
    _floating(y, "sigmoid_backward")
    _same_shape(gy, y, "sigmoid_backward", "output")
    return gy * (y * (1.0 - y))


def tanh(x: Any) -> Any:
    """Hyperbolic tangent.

    Parameters
    ----------
    x : array, any shape, floating dtype

    Returns
    -------
    y : array, same shape, dtype and namespace as ``x``

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn.ops import tanh
    >>> tanh(np.array([0.0], dtype=np.float32))
    array([0.], dtype=float32)
    """
    xp = _floating(x, "tanh")
    return xp.tanh(x)


def tanh_backward(gy: Any, y: Any) -> Any:
    """Gradient of :func:`tanh`: ``gy * (1 - y^2)``; ``y`` is the forward OUTPUT."""
    _floating(y, "tanh_backward")
    _same_shape(gy, y, "tanh_backward", "output")
    # (1 - y)(1 + y) rather than 1 - y^2: near |y| = 1 the product is exact where
    # the subtraction would cancel away the rounding of y^2.
    return gy * ((1.0 - y) * (1.0 + y))
