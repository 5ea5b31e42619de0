"""Batch normalization: per-channel standardisation, then a learned affine map.

Shapes: ``x`` is ``(N, C)``, ``(N, C, L)`` or ``(N, C, H, W)``; the statistics of
channel ``c`` are taken over every axis but 1 (written ``A``: N, and L or H, W),
``M`` values per channel. ``gamma``, ``beta``, ``mean``, ``var``: ``(C,)``,
broadcast along ``A``.

Training (batch statistics; the BIASED variance normalises)::

    mean    = mean_A(x)
    var     = mean_A((x - mean)^2)
    inv_std = 1 / sqrt(var + eps)
    x_hat   = (x - mean) * inv_std
    y       = gamma * x_hat + beta

    gbeta   = sum_A(gy)
    ggamma  = sum_A(gy * x_hat)
    gx      = (gamma / sqrt(var + eps)) * (gy - mean_A(gy) - x_hat * mean_A(gy * x_hat))
            = (gamma * inv_std) * (gy - (gbeta + x_hat * ggamma) / M)

(mean and var depend on x, which is where the two subtracted terms come from.)

Eval (running statistics are constants, so the map is affine)::

    x_hat = (x - running_mean) / sqrt(running_var + eps),   y = gamma * x_hat + beta
    gx    = gy * gamma / sqrt(running_var + eps),  ggamma = sum_A(gy * x_hat),  gbeta = sum_A(gy)

Running statistics (PyTorch's convention; the UNBIASED variance is tracked)::

    running_mean = (1 - momentum) * running_mean + momentum * mean
    running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1)

``gamma=None`` / ``beta=None`` mean no affine map (gamma = 1, beta = 0).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from array_api_compat import device

from xcnn import backends
from xcnn.backends import array_namespace
from xcnn.ops._dispatch import fast_path

__all__ = [
    "BatchNormCache",
    "batch_norm_backward",
    "batch_norm_eval",
    "batch_norm_eval_backward",
    "batch_norm_train",
    "batch_norm_update_running",
]


class BatchNormCache(NamedTuple):
    """What :func:`batch_norm_train` keeps for :func:`batch_norm_backward`.

    Attributes
    ----------
    x_hat : array, shape of ``x``
        The normalised input.
    inv_std : array, shape (C,)
        ``1 / sqrt(var + eps)``.
    mean, var : array, shape (C,)
        The batch mean and biased batch variance (for the running statistics).
    """

    x_hat: Any
    inv_std: Any
    mean: Any
    var: Any


def _axes(x: Any) -> tuple[int, ...]:
    return (0, *range(2, x.ndim))


def _per_channel(v: Any, ndim: int) -> Any:
    """``(C,)`` -> ``(1, C, 1, ...)`` so it broadcasts over an ``ndim``-D input."""
    xp = array_namespace(v)
    return xp.reshape(v, (1, v.shape[0], *([1] * (ndim - 2))))


def values_per_channel(shape: tuple[int, ...]) -> int:
    """``M``: how many values the statistics of one channel are taken over."""
    count = int(shape[0])
    for size in shape[2:]:
        count *= int(size)
    return count


def _check(label: str, x: Any, **per_channel: Any) -> None:
    xp = array_namespace(x)
    shape = tuple(x.shape)
    if len(shape) < 2:
        raise ValueError(f"{label}: expected an input of shape (N, C, ...), got shape {shape}")
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(
            f"{label}: expected a floating-point input, got dtype {backends.dtype_name(x.dtype)}"
        )
    for name, v in per_channel.items():
        if v is None:
            continue
        if backends.namespace_name(v) != backends.namespace_name(x):
            raise TypeError(
                f"{label}: {name} is a {backends.namespace_name(v)} array but the input lives "
                f"on {backends.namespace_name(x)}; move both to one backend"
            )
        if tuple(v.shape) != (shape[1],):
            raise ValueError(
                f"{label}: {name} must have shape ({shape[1]},) for an input with "
                f"{shape[1]} channels, got shape {tuple(v.shape)}"
            )
        if v.dtype != x.dtype:
            raise TypeError(
                f"{label}: {name} is {backends.dtype_name(v.dtype)} but the input is "
                f"{backends.dtype_name(x.dtype)}; use one dtype for both"
            )


def check_batch(label: str, shape: tuple[int, ...]) -> None:
    """Raise when a channel has exactly one value (batch statistics need two).

    An empty batch (no values at all) passes, as in PyTorch: its output is empty and the
    running statistics stay as they are.
    """
    if values_per_channel(shape) == 1:
        raise ValueError(
            f"{label}: expected more than 1 value per channel when training, got input "
            f"shape {tuple(shape)}"
        )


def _affine(x_hat: Any, gamma: Any, beta: Any) -> Any:
    """``gamma * x_hat + beta`` as a new array (x_hat is cached: never hand it out)."""
    if gamma is not None:
        y = x_hat * _per_channel(gamma, x_hat.ndim)
    else:
        y = array_namespace(x_hat).asarray(x_hat, copy=True)
    if beta is not None:
        y += _per_channel(beta, x_hat.ndim)
    return y


def batch_norm_train(
    x: Any, gamma: Any = None, beta: Any = None, eps: float = 1e-5
) -> tuple[Any, BatchNormCache]:
    """Normalise with the batch's own statistics (training mode).

    Parameters
    ----------
    x : array, shape (N, C) or (N, C, L) or (N, C, H, W)
    gamma, beta : array, shape (C,), optional
        Scale and shift; ``None`` for none.
    eps : float
        Added to the variance.

    Returns
    -------
    y : array, shape of ``x``
        Same namespace and dtype as ``x``.
    cache : BatchNormCache
        For :func:`batch_norm_backward`; ``cache.mean`` / ``cache.var`` (biased) feed
        :func:`batch_norm_update_running`.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn.ops import batch_norm_train
    >>> y, cache = batch_norm_train(np.array([[1.0], [3.0]], dtype=np.float32))
    >>> y.round(3), cache.mean, cache.var
    (array([[-1.],
           [ 1.]], dtype=float32), array([2.], dtype=float32), array([1.], dtype=float32))
    """
    label = "batch_norm_train"
    _check(label, x, gamma=gamma, beta=beta)
    check_batch(label, tuple(x.shape))
    xp = array_namespace(x)
    channels = (x.shape[1],)
    if values_per_channel(tuple(x.shape)) == 0:
        # An empty batch, as torch: an empty output, no statistics to learn from (the
        # update below leaves the running ones as they are).
        zeros = xp.zeros(channels, dtype=x.dtype, device=device(x))
        cache = BatchNormCache(xp.zeros_like(x), zeros + 1.0, zeros, zeros + 1.0)
        return _affine(cache.x_hat, gamma, beta), cache
    # (N, C) inputs stay on the twin: with one value per row the fast path's
    # per-row reductions measured slower.
    if fast_path(xp) == "numpy" and x.ndim > 2 and x.flags.c_contiguous:
        from xcnn.ops._numpy import batchnorm as _bn_numpy

        y, parts = _bn_numpy.batch_norm_train(x, gamma, beta, eps)
        return y, BatchNormCache(*parts)
    axes = _axes(x)
    mean = xp.mean(x, axis=axes, keepdims=True)
    x_hat = x - mean
    var = xp.mean(x_hat * x_hat, axis=axes, keepdims=True)
    inv_std = 1.0 / xp.sqrt(var + eps)
    # In place on arrays made here: full-size passes and allocations are the cost.
    x_hat *= inv_std
    cache = BatchNormCache(
        x_hat,
        xp.reshape(inv_std, channels),
        xp.reshape(mean, channels),
        xp.reshape(var, channels),
    )
    return _affine(x_hat, gamma, beta), cache


def batch_norm_backward(
    grad_output: Any, cache: BatchNormCache, gamma: Any = None
) -> tuple[Any, Any, Any]:
    """Gradients of :func:`batch_norm_train` w.r.t. ``x``, ``gamma`` and ``beta``.

    Parameters
    ----------
    grad_output : array, shape of ``x``
    cache : BatchNormCache
        From the matching :func:`batch_norm_train` call.
    gamma : array, shape (C,), optional
        The scale used in the forward pass (``None``: 1).

    Returns
    -------
    gx : array, shape of ``x``
    ggamma, gbeta : array, shape (C,)
        Returned even without an affine map (then simply unused).
    """
    label = "batch_norm_backward"
    x_hat = cache.x_hat
    if tuple(grad_output.shape) != tuple(x_hat.shape):
        raise ValueError(
            f"{label}: grad_output has shape {tuple(grad_output.shape)}, expected the input "
            f"shape {tuple(x_hat.shape)}"
        )
    _check(label, grad_output, gamma=gamma)
    xp = array_namespace(grad_output, x_hat)
    ndim = x_hat.ndim
    if (
        fast_path(xp) == "numpy"
        and ndim > 2
        and values_per_channel(tuple(x_hat.shape)) > 0
        and grad_output.flags.c_contiguous
        and x_hat.flags.c_contiguous
        and x_hat.dtype == grad_output.dtype
    ):
        from xcnn.ops._numpy import batchnorm as _bn_numpy

        return _bn_numpy.batch_norm_backward(grad_output, x_hat, cache.inv_std, gamma)
    axes = _axes(x_hat)
    gbeta = xp.sum(grad_output, axis=axes)
    ggamma = xp.sum(grad_output * x_hat, axis=axes)
    scale = cache.inv_std if gamma is None else gamma * cache.inv_std
    # max: an empty batch has nothing to spread (gx is empty, ggamma and gbeta are 0).
    per_value = 1.0 / max(values_per_channel(tuple(x_hat.shape)), 1)
    # gx = scale * (gy - x_hat * ggamma/M - gbeta/M), one allocation, in-place passes.
    gx = x_hat * _per_channel(-ggamma * per_value, ndim)
    gx += grad_output
    gx -= _per_channel(gbeta * per_value, ndim)
    gx *= _per_channel(scale, ndim)
    return gx, ggamma, gbeta


def batch_norm_eval(
    x: Any,
    running_mean: Any,
    running_var: Any,
    gamma: Any = None,
    beta: Any = None,
    eps: float = 1e-5,
) -> Any:
    """Normalise with fixed (running) statistics (eval mode).

    Parameters
    ----------
    x : array, shape (N, C) or (N, C, L) or (N, C, H, W)
    running_mean, running_var : array, shape (C,)
    gamma, beta : array, shape (C,), optional
    eps : float

    Returns
    -------
    array, shape of ``x``
        ``gamma * (x - running_mean) / sqrt(running_var + eps) + beta``.
    """
    _check(
        "batch_norm_eval",
        x,
        running_mean=running_mean,
        running_var=running_var,
        gamma=gamma,
        beta=beta,
    )
    xp = array_namespace(x)
    scale = 1.0 / xp.sqrt(running_var + eps)
    if gamma is not None:
        scale = scale * gamma
    # One fused affine map: y = x * scale + (beta - mean * scale).
    shift = -running_mean * scale
    if beta is not None:
        shift = shift + beta
    y = x * _per_channel(scale, x.ndim)
    y += _per_channel(shift, x.ndim)
    return y


def batch_norm_eval_backward(
    grad_output: Any,
    x: Any,
    running_mean: Any,
    running_var: Any,
    gamma: Any = None,
    eps: float = 1e-5,
) -> tuple[Any, Any, Any]:
    """Gradients of :func:`batch_norm_eval` w.r.t. ``x``, ``gamma`` and ``beta``.

    Returns
    -------
    gx : array, shape of ``x``
        ``grad_output * gamma / sqrt(running_var + eps)``.
    ggamma, gbeta : array, shape (C,)
    """
    label = "batch_norm_eval_backward"
    if tuple(grad_output.shape) != tuple(x.shape):
        raise ValueError(
            f"{label}: grad_output has shape {tuple(grad_output.shape)}, expected the input "
            f"shape {tuple(x.shape)}"
        )
    _check(label, x, running_mean=running_mean, running_var=running_var, gamma=gamma)
    xp = array_namespace(grad_output, x)
    axes = _axes(x)
    inv_std = 1.0 / xp.sqrt(running_var + eps)
    x_hat = (x - _per_channel(running_mean, x.ndim)) * _per_channel(inv_std, x.ndim)
    scale = inv_std if gamma is None else gamma * inv_std
    gx = grad_output * _per_channel(scale, x.ndim)
    return gx, xp.sum(grad_output * x_hat, axis=axes), xp.sum(grad_output, axis=axes)


def batch_norm_update_running(
    running_mean: Any,
    running_var: Any,
    cache: BatchNormCache,
    momentum: float,
) -> tuple[Any, Any]:
    """New running statistics after one training batch (PyTorch's update rule).

    Parameters
    ----------
    running_mean, running_var : array, shape (C,)
    cache : BatchNormCache
        From :func:`batch_norm_train`; its biased variance is made unbiased here.
    momentum : float
        Weight of the new batch (``1 / num_batches`` gives a cumulative average).

    Returns
    -------
    running_mean, running_var : array, shape (C,)
    """
    m = values_per_channel(tuple(cache.x_hat.shape))
    if m == 0:  # an empty batch moves nothing, as in torch
        return running_mean, running_var
    unbiased = cache.var * (m / (m - 1))
    keep = 1.0 - momentum
    return (
        running_mean * keep + cache.mean * momentum,
        running_var * keep + unbiased * momentum,
    )
