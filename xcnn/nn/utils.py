"""Training utilities on parameters' gradients: ``clip_grad_norm_``, as ``torch.nn.utils``.

With ``g_k`` the gradient arrays and ``p`` the norm type::

    total = || (||g_1||_p, ..., ||g_K||_p) ||_p        (= ||concat(g_k)||_p; max |g| for inf)
    coef  = min(max_norm / (total + 1e-6), 1)          g_k <- coef * g_k
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

from xcnn import backends
from xcnn.backends import array_namespace

__all__ = ["clip_grad_norm_"]


def _norm(xp: Any, x: Any, p: float) -> Any:
    a = xp.abs(xp.reshape(x, (-1,)))
    if p == math.inf:
        return xp.max(a) if int(a.shape[0]) else xp.asarray(0.0, dtype=x.dtype)
    if p == 1.0:
        return xp.sum(a)
    if p == 2.0:
        return xp.sqrt(xp.sum(a * a))
    return xp.sum(a**p) ** (1.0 / p)


def clip_grad_norm_(
    parameters: Any,
    max_norm: float,
    norm_type: float | str = 2.0,
    error_if_nonfinite: bool = False,
) -> Any:
    """Scale the gradients so that their joint norm is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``: the norm is taken over all gradients
    together, as if concatenated into one vector; each gradient is multiplied by
    ``min(max_norm / (total_norm + 1e-6), 1)``. Parameters without a gradient
    (``grad is None``) are skipped.

    Parameters
    ----------
    parameters : Parameter or iterable of Parameters (or Tensors)
        E.g. ``model.parameters()``.
    max_norm : float
        The largest norm the gradients keep.
    norm_type : float or "inf", default 2.0
        ``p`` of the p-norm, any ``p > 0``, or ``math.inf`` / ``"inf"`` for the largest
        absolute value.
    error_if_nonfinite : bool, default False
        Raise ``RuntimeError`` when the total norm is NaN or infinite (costs one host
        sync); otherwise clipping goes ahead as in torch (an infinite norm turns the
        gradients into zeros and NaNs).

    Returns
    -------
    total_norm : 0-d array
        The norm before clipping, on the gradients' backend and in their (promoted)
        dtype, as torch returns a 0-d tensor; ``float(total_norm)`` gives a number.
        Without any gradient: a float32 zero on the active backend.

    Notes
    -----
    Each ``p.grad`` is replaced by its scaled array rather than written into: the first
    gradient a parameter accumulates may be an array it shares with another leaf.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn import nn
    >>> layer = nn.Linear(2, 1, bias=False)
    >>> layer.weight.grad = np.array([[3.0, 4.0]], dtype=np.float32)
    >>> float(nn.utils.clip_grad_norm_(layer.parameters(), max_norm=1.0))
    5.0
    >>> np.round(layer.weight.grad, 4)
    array([[0.6, 0.8]], dtype=float32)
    """
    who = "clip_grad_norm_"
    if isinstance(norm_type, str):
        if norm_type.lower() != "inf":
            raise ValueError(f"{who}: norm_type must be a number > 0 or 'inf', got {norm_type!r}")
        norm_type = math.inf
    if isinstance(norm_type, bool) or not isinstance(norm_type, numbers.Real) or not norm_type > 0:
        raise ValueError(f"{who}: norm_type must be a number > 0 or 'inf', got {norm_type!r}")
    if isinstance(max_norm, bool) or not isinstance(max_norm, numbers.Real):
        raise TypeError(f"{who}: max_norm must be a real number, got {max_norm!r}")
    p, max_norm = float(norm_type), float(max_norm)
    params = [parameters] if hasattr(parameters, "grad") else list(_iterable(parameters, who))
    owners = [param for param in params if getattr(param, "grad", None) is not None]
    if not owners:
        xp = backends.current().xp
        return xp.asarray(0.0, dtype=xp.float32)
    grads = [param.grad for param in owners]
    first = backends.namespace_name(grads[0])
    for g in grads[1:]:
        if backends.namespace_name(g) != first:
            raise TypeError(
                f"{who}: gradients live on different backends ({first} and "
                f"{backends.namespace_name(g)}); move the model with model.to(...) first"
            )
    xp = array_namespace(*grads)
    dtype = xp.result_type(*grads)
    norms = xp.stack([xp.astype(_norm(xp, g, p), dtype) for g in grads])
    total = xp.asarray(_norm(xp, norms, p))
    if error_if_nonfinite and not bool(xp.all(xp.isfinite(total))):
        raise RuntimeError(
            f"{who}: the total norm of order {norm_type} of the gradients is "
            f"{float(total)}, so they cannot be clipped; pass error_if_nonfinite=False "
            "to clip anyway, as torch does"
        )
    coef = xp.minimum(max_norm / (total + 1e-6), xp.asarray(1.0, dtype=dtype))
    for param, g in zip(owners, grads, strict=True):
        param.grad = g * xp.astype(coef, g.dtype)
    return total


def _iterable(parameters: Any, who: str) -> Iterable[Any]:
    if isinstance(parameters, Iterable):
        return parameters
    raise TypeError(
        f"{who}: expected a Parameter or an iterable of Parameters (e.g. model.parameters()), "
        f"got {type(parameters).__name__}"
    )
