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

Class weights, ``ignore_index``, label smoothing and class-probability targets
(:func:`softmax_cross_entropy`) and ``reduction="mean"|"sum"|"none"`` follow
``torch.nn.CrossEntropyLoss`` / ``torch.nn.MSELoss``. Every backward also takes an
upstream gradient ``grad`` (dL/dloss, default 1; the loss's shape for "none").
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from array_api_compat import device

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


REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: Any, who: str) -> str:
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"{who}: reduction={reduction!r} is not one of 'mean', 'sum', 'none'")
    return reduction


def _check_cross_entropy_options(
    who: str, ignore_index: Any, reduction: Any, label_smoothing: Any
) -> tuple[int, str, float]:
    """``(ignore_index, reduction, label_smoothing)`` checked, as int, str and float."""
    _check_reduction(reduction, who)
    if (
        isinstance(label_smoothing, bool)
        or not isinstance(label_smoothing, numbers.Real)
        or not 0.0 <= float(label_smoothing) <= 1.0
    ):
        raise ValueError(f"{who}: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"{who}: ignore_index must be an int, got {ignore_index!r}")
    return int(ignore_index), reduction, float(label_smoothing)


def _check_cross_entropy(
    logits: Any,
    targets: Any,
    who: str,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> bool:
    """Validate the arguments of a cross-entropy; return True for class-probability targets.

    Index targets are range-checked, which reads one boolean back from the device (one
    host sync per batch): a label out of range would otherwise give a silently wrong loss.
    """
    xp = _floating_namespace(logits, who, "logits")
    _check_cross_entropy_options(who, ignore_index, reduction, label_smoothing)
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
    if c == 0:
        raise ValueError(
            f"{who}: expected at least one class, got logits of shape {tuple(logits.shape)}"
        )
    if weight is not None:
        try:
            array_namespace(weight)
        except TypeError:
            raise TypeError(
                f"{who}: expected weight to be an array of shape ({c},), "
                f"got {type(weight).__name__}"
            ) from None
        _same_backend(logits, weight, who, ("logits", "weight"))
        if tuple(weight.shape) != (c,):
            raise ValueError(
                f"{who}: expected weight of shape ({c},), one per class, "
                f"got shape {tuple(weight.shape)}"
            )
        if weight.dtype != logits.dtype:
            raise TypeError(
                f"{who}: expected weight in the logits' dtype "
                f"{backends.dtype_name(logits.dtype)}, got {backends.dtype_name(weight.dtype)}"
            )
    soft = xp.isdtype(targets.dtype, "real floating")
    if soft and targets.ndim == 1:
        raise TypeError(
            f"{who}: expected integer class-index targets (e.g. int64) of shape (N,), got "
            f"dtype {backends.dtype_name(targets.dtype)}; class probabilities need shape (N, C)"
        )
    if soft:
        # Class probabilities, as torch accepts: (N, C) in the logits' dtype.
        if tuple(targets.shape) != (n, c):
            raise ValueError(
                f"{who}: expected class-probability targets of the logits' shape {(n, c)}, "
                f"got shape {tuple(targets.shape)}"
            )
        if int(ignore_index) != -100:
            raise ValueError(
                f"{who}: ignore_index={int(ignore_index)} applies to class-index targets only "
                "(as in torch); leave it at -100 for class-probability targets"
            )
        if targets.dtype != logits.dtype:
            raise TypeError(
                f"{who}: expected class-probability targets of the logits' dtype "
                f"{backends.dtype_name(logits.dtype)}, got {backends.dtype_name(targets.dtype)}"
            )
        return True
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
    if not xp.isdtype(targets.dtype, "integral"):
        raise TypeError(
            f"{who}: expected integer class-index targets (e.g. int64) or floating class "
            f"probabilities, got dtype {backends.dtype_name(targets.dtype)}"
        )
    # int64 first: C may not fit a narrow label dtype such as uint8.
    labels = xp.astype(targets, xp.int64, copy=False)
    bad = ((labels < 0) | (labels >= c)) & (labels != int(ignore_index))
    if bool(xp.any(bad)):
        low, high = int(xp.min(labels)), int(xp.max(labels))
        raise ValueError(
            f"{who}: expected targets in [0, {c}) for {c} classes, got values in "
            f"[{low}, {high}] (only ignore_index={int(ignore_index)} may lie outside)"
        )
    return False


def softmax_cross_entropy(
    logits: Any,
    targets: Any,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> tuple[Any, tuple[Any, ...]]:
    """Cross-entropy of ``softmax(logits)`` against class targets, as ``torch.nn.CrossEntropyLoss``.

    Fused log-softmax + negative log-likelihood. With ``p = softmax(z)`` and a
    coefficient matrix ``A: (N, C)`` per target kind::

        index targets t:    A_ic = [t_i != ignore_index] w_c ((1-eps) [c == t_i] + eps/C)
        probabilities y:    A_ic = w_c ((1-eps) y_ic + eps/C)
        loss_i              = -sum_c A_ic log p_ic                             (N,)
        dloss_i/dz_i        = p_i sum_c A_ic - A_i

    ``reduction="mean"`` divides the sum by ``sum_i [t_i != ignore_index] w_{t_i}``
    (index targets; NaN when every target is ignored, as in torch) or by ``N``
    (probabilities).

    Parameters
    ----------
    logits : array, shape (N, C), floating dtype
        Unnormalised scores.
    targets : array, shape (N,) integer, or (N, C) in the logits' dtype
        Class indices in ``[0, C)`` (or ``ignore_index``; checked, one host sync) or
        class probabilities.
    weight : array, shape (C,), logits' dtype, optional
        A rescaling weight per class.
    ignore_index : int, default -100
        Index targets equal to it add nothing to the loss or to the mean's divisor.
    reduction : {"mean", "sum", "none"}, default "mean"
    label_smoothing : float in [0, 1], default 0.0

    Returns
    -------
    loss : array, shape () or (N,) for ``reduction="none"``
        In ``logits``' dtype and namespace.
    cache : tuple
        For :func:`softmax_cross_entropy_backward`.

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
    options = (weight, ignore_index, reduction, label_smoothing)
    _check_cross_entropy(logits, targets, "softmax_cross_entropy", *options)
    return _softmax_cross_entropy(logits, targets, *options)


def _softmax_cross_entropy(
    logits: Any,
    targets: Any,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> tuple[Any, tuple[Any, ...]]:
    xp = array_namespace(logits, targets)
    n, c = (int(v) for v in logits.shape)
    eps = float(label_smoothing)
    log_probs = log_softmax(logits, axis=1)
    if xp.isdtype(targets.dtype, "real floating"):
        coef = targets * (1.0 - eps) + eps / c if eps else targets
        if weight is not None:
            coef = coef * weight[None, :]
        denom = xp.asarray(float(n), dtype=logits.dtype)
    else:
        # int64 on both sides: narrow (uint8) or unsigned targets compare exactly.
        labels = xp.astype(targets, xp.int64, copy=False)
        onehot = xp.astype(labels[:, None] == xp.arange(c, dtype=xp.int64)[None, :], logits.dtype)
        valid = xp.astype(labels != int(ignore_index), logits.dtype)[:, None]
        picked = onehot * valid  # the weight of w_{t_i} in the mean's divisor
        coef = onehot * (1.0 - eps) + eps / c if eps else onehot
        coef = coef * valid
        if weight is not None:
            coef = coef * weight[None, :]
            picked = picked * weight[None, :]
        denom = xp.sum(picked)
    per_sample = -xp.sum(coef * log_probs, axis=1)
    if reduction == "none":
        loss = per_sample
    elif reduction == "sum":
        loss = _zero_d(xp, xp.sum(per_sample))
    elif n == 0:
        # The mean of no samples is NaN, as in torch (said outright: 0/0 would warn).
        loss = xp.asarray(float("nan"), dtype=logits.dtype, device=device(logits))
    else:
        loss = _zero_d(xp, xp.sum(per_sample) / denom)
    return loss, (xp.exp(log_probs), coef, denom, reduction)


def _zero_d(xp: Any, value: Any) -> Any:
    """``value`` as a 0-d array: NumPy reductions return scalars (``np.float32``), not arrays."""
    return xp.asarray(value)


def _scale(grad: Any, like: Any, who: str) -> Any:
    """``grad`` as a Python float or an array of ``like``'s shape, dtype and namespace.

    A 0-d ``like`` (a reduced loss) takes a number or a 0-d array; a per-sample loss
    (``reduction="none"``) takes an array of its own shape.
    """
    shape = tuple(like.shape)
    if isinstance(grad, numbers.Real) and not isinstance(grad, bool):
        if shape:
            raise ValueError(
                f"{who}: the loss has shape {shape} (reduction='none'); pass grad= "
                f"an array of that shape"
            )
        return float(grad)
    try:
        xp = array_namespace(grad)
    except TypeError:
        raise TypeError(
            f"{who}: grad must be a real number or an array of the loss's shape {shape}, "
            f"got {type(grad).__name__}"
        ) from None
    _same_backend(like, grad, who, ("the loss", "grad"))
    if tuple(grad.shape) != shape:
        raise ValueError(
            f"{who}: grad must have the loss's shape {shape}, got shape {tuple(grad.shape)}"
        )
    return xp.astype(grad, like.dtype)


def softmax_cross_entropy_backward(cache: tuple[Any, ...], grad: Any = 1.0) -> Any:
    """Gradient of :func:`softmax_cross_entropy` with respect to the logits.

    Parameters
    ----------
    cache : tuple
        The second value :func:`softmax_cross_entropy` returned.
    grad : float or array of the loss's shape, default 1.0
        Upstream gradient ``dL/dloss``: a number or 0-d array for a reduced loss,
        an ``(N,)`` array for ``reduction="none"``.

    Returns
    -------
    dlogits : array, shape (N, C)
        ``g_i (p_i sum_c A_ic - A_i)`` with ``g = grad / divisor`` for the mean,
        in the logits' dtype.
    """
    probs, coef, denom, reduction = cache
    xp = array_namespace(probs)
    like = probs[:, 0] if reduction == "none" else denom
    scale = _scale(grad, like, "softmax_cross_entropy_backward")
    rows = xp.sum(coef, axis=1, keepdims=True)
    gz = probs * rows - coef
    if reduction == "none":
        return gz * scale[:, None]
    if reduction == "sum" or probs.shape[0] == 0:  # no rows: nothing to divide
        return gz * scale
    # Rows with nothing to add (ignored targets) get exactly 0, also when the divisor
    # is 0 (every target ignored: the loss is NaN, the gradient 0, as in torch).
    zero = xp.asarray(0.0, dtype=probs.dtype)
    return xp.where(rows == zero, zero, gz * (scale / denom))


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
    # Casting keeps the loss in the input's dtype (float64 targets would promote it).
    return xp.astype(target, input.dtype, copy=False)


def mse_loss(input: Any, target: Any, reduction: str = "mean") -> tuple[Any, Any]:
    """Squared error ``(input - target)**2``, as ``torch.nn.MSELoss(reduction=...)``.

    Parameters
    ----------
    input : array, any shape, floating dtype
    target : array, same shape, floating dtype (cast to ``input``'s dtype)
    reduction : {"mean", "sum", "none"}, default "mean"
        Mean or sum over all elements, or the elementwise loss (``input``'s shape).

    Returns
    -------
    loss : array, shape () or ``input``'s shape for ``reduction="none"``
        In ``input``'s dtype and namespace.
    cache : tuple
        ``(input - target, reduction)``, for :func:`mse_loss_backward`.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn.ops import mse_loss
    >>> loss, _ = mse_loss(np.array([1.0, 3.0]), np.array([0.0, 0.0]))
    >>> float(loss)
    5.0
    """
    _check_reduction(reduction, "mse_loss")
    target = _check_mse(input, target, "mse_loss")
    return _mse_loss(input, target, reduction)


def _mse_loss(input: Any, target: Any, reduction: str = "mean") -> tuple[Any, Any]:
    xp = array_namespace(input, target)
    diff = input - target
    squared = diff * diff
    if reduction == "none":
        return squared, (diff, reduction)
    if reduction == "mean" and math.prod(tuple(diff.shape)) == 0:
        # The mean of no elements is NaN, as in torch (said outright: numpy would warn).
        total = xp.asarray(float("nan"), dtype=diff.dtype, device=device(diff))
    else:
        total = xp.sum(squared) if reduction == "sum" else xp.mean(squared)
    return _zero_d(xp, total), (diff, reduction)


def mse_loss_backward(cache: Any, grad: Any = 1.0) -> Any:
    """Gradient of :func:`mse_loss` with respect to ``input``.

    ``2 grad (x - y) / M`` for the mean over ``M`` elements, ``2 grad (x - y)`` for
    the sum and, elementwise, for ``reduction="none"``.

    Parameters
    ----------
    cache : tuple
        The second value :func:`mse_loss` returned.
    grad : float or array of the loss's shape, default 1.0
        Upstream gradient ``dL/dloss``.
    """
    diff, reduction = cache
    if reduction == "none":
        return diff * (2.0 * _scale(grad, diff, "mse_loss_backward"))
    like = array_namespace(diff).zeros((), dtype=diff.dtype, device=device(diff))
    scale = _scale(grad, like, "mse_loss_backward")
    # max: no elements, nothing to divide (the gradient is empty).
    count = 1 if reduction == "sum" else max(math.prod(tuple(diff.shape)), 1)
    return diff * (scale * (2.0 / count))
