"""Losses: fused softmax cross-entropy (from logits) and mean squared error.

Softmax cross-entropy, mean over the batch, with ``logits z: (N, C)`` and
integer ``targets t: (N,)`` in ``[0, C)``::

    log_softmax(z)_ij = (z_ij - m_i) - log sum_k exp(z_ik - m_i),   m_i = max_k z_ik
    loss              = -(1/N) sum_i log_softmax(z)_{i, t_i}              (0-d)
    dloss/dz          = (softmax(z) - onehot(t)) / N                      (N, C)

Subtracting the row maximum makes every exponent <= 0, so nothing overflows
and the log's argument is >= 1: the loss is finite for logits of any finite
size (e.g. +-1e4 in float32). The one-hot matrix is built by comparison,
``t[:, None] == arange(C)[None, :]``, which every array-API namespace has
(integer-array scatter is not in the standard).

Mean squared error over all ``M`` elements, ``x`` and ``y`` of one shape::

    loss = (1/M) sum (x - y)^2            dloss/dx = 2 (x - y) / M

Every backward also takes an upstream scale ``grad`` (dL/dloss, default 1).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from xcnn import backends
from xcnn.backends import array_namespace

__all__ = [
    "log_softmax",
    "mse_loss",
    "mse_loss_backward",
    "softmax",
    "softmax_cross_entropy",
    "softmax_cross_entropy_backward",
]


def _floating_namespace(x: Any, who: str, name: str) -> Any:
    try:
        xp = array_namespace(x)
    except TypeError:
        raise TypeError(f"{who}: expected {name} to be an array, got {type(x).__name__}") from None
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(
            f"{who}: expected floating-point {name}, got dtype {backends.dtype_name(x.dtype)}"
        )
    return xp


def _same_backend(a: Any, b: Any, who: str, names: tuple[str, str]) -> None:
    have, want = backends.namespace_name(b), backends.namespace_name(a)
    if have != want:
        raise TypeError(
            f"{who}: {names[1]} is a {have} array but {names[0]} lives on {want}; "
            f"move {names[1]} with xcnn.backends.get({want!r}).asarray(...)"
        )


def log_softmax(x: Any, axis: int = -1) -> Any:
    """Numerically stable ``log(softmax(x))`` along ``axis``.

    Parameters
    ----------
    x : array, any shape, floating dtype
    axis : int, default -1

    Returns
    -------
    array, same shape, dtype and namespace as ``x``

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn.ops import log_softmax
    >>> log_softmax(np.array([[0.0, 0.0]], dtype=np.float32))
    array([[-0.6931472, -0.6931472]], dtype=float32)
    """
    xp = _floating_namespace(x, "log_softmax", "x")
    shifted = x - xp.max(x, axis=axis, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


def softmax(x: Any, axis: int = -1) -> Any:
    """Numerically stable softmax along ``axis`` (rows sum to 1).

    Parameters
    ----------
    x : array, any shape, floating dtype
    axis : int, default -1

    Returns
    -------
    array, same shape, dtype and namespace as ``x``

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn.ops import softmax
    >>> softmax(np.array([[1e4, 1e4]], dtype=np.float32))
    array([[0.5, 0.5]], dtype=float32)
    """
    xp = _floating_namespace(x, "softmax", "x")
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


def _check_cross_entropy(logits: Any, targets: Any, who: str) -> None:
    """Validate logits (N, C) and integer targets (N,) in [0, C).

    The range check reads one boolean back from the device (one host sync per
    batch): a label out of range would otherwise give a silently wrong loss.
    """
    xp = _floating_namespace(logits, who, "logits")
    try:
        array_namespace(targets)
    except TypeError:
        raise TypeError(
            f"{who}: expected targets to be an integer array, got {type(targets).__name__}"
        ) from None
    _same_backend(logits, targets, who, ("logits", "targets"))
    if logits.ndim != 2:
        raise ValueError(f"{who}: expected logits of shape (N, C), got shape {tuple(logits.shape)}")
    n, c = (int(v) for v in logits.shape)
    if targets.ndim != 1:
        raise ValueError(
            f"{who}: expected targets of shape (N,) holding class indices, "
            f"got shape {tuple(targets.shape)}"
        )
    if int(targets.shape[0]) != n:
        raise ValueError(
            f"{who}: logits have batch size {n} but targets have {int(targets.shape[0])} "
            f"(logits shape {tuple(logits.shape)}, targets shape {tuple(targets.shape)})"
        )
    if n == 0 or c == 0:
        raise ValueError(
            f"{who}: expected a non-empty batch and at least one class, "
            f"got logits of shape {tuple(logits.shape)}"
        )
    if not xp.isdtype(targets.dtype, "integral"):
        raise TypeError(
            f"{who}: expected integer class-index targets (e.g. int64), got dtype "
            f"{backends.dtype_name(targets.dtype)}; class probabilities are not supported"
        )
    # int64 first: C may not fit a narrow label dtype such as uint8.
    labels = xp.astype(targets, xp.int64, copy=False)
    if bool(xp.any((labels < 0) | (labels >= c))):
        low, high = int(xp.min(labels)), int(xp.max(labels))
        raise ValueError(
            f"{who}: expected targets in [0, {c}) for {c} classes, got values in [{low}, {high}]"
        )


def softmax_cross_entropy(logits: Any, targets: Any) -> tuple[Any, tuple[Any, Any]]:
    """Mean cross-entropy of ``softmax(logits)`` against integer class targets.

    Fused log-softmax + negative log-likelihood, as ``torch.nn.CrossEntropyLoss()``.

    Parameters
    ----------
    logits : array, shape (N, C), floating dtype
        Unnormalised scores.
    targets : array, shape (N,), integer dtype
        Class indices in ``[0, C)``; checked (one host sync).

    Returns
    -------
    loss : array, shape ()
        In ``logits``' dtype and namespace.
    cache : tuple ``(probs, onehot)``
        ``softmax(logits)`` (N, C) and the boolean one-hot targets (N, C), for
        :func:`softmax_cross_entropy_backward`.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn.ops import softmax_cross_entropy, softmax_cross_entropy_backward
    >>> logits = np.zeros((2, 4), dtype=np.float32)
    >>> loss, cache = softmax_cross_entropy(logits, np.array([0, 3]))
    >>> round(float(loss), 4)  # log(4)
    1.3863
    >>> softmax_cross_entropy_backward(cache).shape
    (2, 4)
    """
    _check_cross_entropy(logits, targets, "softmax_cross_entropy")
    return _softmax_cross_entropy(logits, targets)


def _softmax_cross_entropy(logits: Any, targets: Any) -> tuple[Any, tuple[Any, Any]]:
    xp = array_namespace(logits, targets)
    n, c = (int(v) for v in logits.shape)
    log_probs = log_softmax(logits, axis=1)
    # int64 on both sides: narrow (uint8) or unsigned targets compare exactly.
    labels = xp.astype(targets, xp.int64, copy=False)
    onehot = labels[:, None] == xp.arange(c, dtype=xp.int64)[None, :]
    zero = xp.asarray(0.0, dtype=logits.dtype)
    loss = -xp.sum(xp.where(onehot, log_probs, zero)) / n
    return _zero_d(xp, loss), (xp.exp(log_probs), onehot)


def _zero_d(xp: Any, value: Any) -> Any:
    """``value`` as a 0-d array: NumPy reductions return scalars (``np.float32``), not arrays."""
    return xp.asarray(value)


def _scale(grad: Any, like: Any, who: str) -> Any:
    """``grad`` as a Python float or a 0-d array in ``like``'s dtype and namespace."""
    if isinstance(grad, numbers.Real) and not isinstance(grad, bool):
        return float(grad)
    try:
        xp = array_namespace(grad)
    except TypeError:
        raise TypeError(
            f"{who}: grad must be a real number or a 0-d array, got {type(grad).__name__}"
        ) from None
    _same_backend(like, grad, who, ("the loss", "grad"))
    if grad.ndim != 0:
        raise ValueError(f"{who}: grad must be 0-d like the loss, got shape {tuple(grad.shape)}")
    return xp.astype(grad, like.dtype)


def softmax_cross_entropy_backward(cache: tuple[Any, Any], grad: Any = 1.0) -> Any:
    """Gradient of :func:`softmax_cross_entropy` with respect to the logits.

    Parameters
    ----------
    cache : tuple
        The second value :func:`softmax_cross_entropy` returned.
    grad : float or 0-d array, default 1.0
        Upstream gradient ``dL/dloss``.

    Returns
    -------
    dlogits : array, shape (N, C)
        ``grad * (softmax(logits) - onehot(targets)) / N``, in the logits' dtype.
    """
    probs, onehot = cache
    xp = array_namespace(probs)
    scale = _scale(grad, probs, "softmax_cross_entropy_backward")
    return (probs - xp.astype(onehot, probs.dtype)) * (scale / int(probs.shape[0]))


def _check_mse(input: Any, target: Any, who: str) -> Any:
    """Validate ``input``/``target``; return ``target`` in ``input``'s dtype."""
    _floating_namespace(input, who, "input")
    xp = _floating_namespace(target, who, "target")
    _same_backend(input, target, who, ("input", "target"))
    if tuple(input.shape) != tuple(target.shape):
        raise ValueError(
            f"{who}: expected target of the input's shape {tuple(input.shape)}, "
            f"got shape {tuple(target.shape)}"
        )
    if math.prod(tuple(input.shape)) == 0:
        raise ValueError(f"{who}: expected a non-empty input, got shape {tuple(input.shape)}")
    # Casting keeps the loss in the input's dtype (float64 targets would promote it).
    return xp.astype(target, input.dtype, copy=False)


def mse_loss(input: Any, target: Any) -> tuple[Any, Any]:
    """Mean squared error over all elements, as ``torch.nn.MSELoss()``.

    Parameters
    ----------
    input : array, any shape, floating dtype
    target : array, same shape, floating dtype (cast to ``input``'s dtype)

    Returns
    -------
    loss : array, shape ()
        In ``input``'s dtype and namespace.
    cache : array
        ``input - target``, for :func:`mse_loss_backward`.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn.ops import mse_loss
    >>> loss, _ = mse_loss(np.array([1.0, 3.0]), np.array([0.0, 0.0]))
    >>> float(loss)
    5.0
    """
    target = _check_mse(input, target, "mse_loss")
    return _mse_loss(input, target)


def _mse_loss(input: Any, target: Any) -> tuple[Any, Any]:
    xp = array_namespace(input, target)
    diff = input - target
    return _zero_d(xp, xp.mean(diff * diff)), diff


def mse_loss_backward(cache: Any, grad: Any = 1.0) -> Any:
    """Gradient of :func:`mse_loss` with respect to ``input``: ``grad * 2 (x - y) / M``.

    Parameters
    ----------
    cache : array
        The second value :func:`mse_loss` returned.
    grad : float or 0-d array, default 1.0
        Upstream gradient ``dL/dloss``.
    """
    diff = cache
    scale = _scale(grad, diff, "mse_loss_backward")
    return diff * (scale * (2.0 / math.prod(tuple(diff.shape))))
