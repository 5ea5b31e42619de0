"""Inverted dropout: zero each element with probability ``p``, scale survivors by 1/(1-p).

Shapes: ``x: (any) -> y: (same)``. With ``u ~ U[0, 1)`` drawn per element::

    mask = [u >= p] / (1 - p)        (0 or 1/(1-p), in x's dtype)
    y    = x * mask                  so E[y] = x, and eval mode needs no rescaling
    gx   = gy * mask

The uniforms are drawn by the backend the input lives on
(``xcnn.backends.Backend.uniform``): on CuPy directly on the device, so a
mask never crosses the PCIe bus; elsewhere on the host from the generator's
NumPy stream. Which backend is *active* does not matter, only where ``x`` is.
"""

from __future__ import annotations

import numbers
from typing import Any

from xcnn import backends
from xcnn.backends import array_namespace

__all__ = ["dropout", "dropout_backward"]


def _check_p(p: Any, who: str) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) < 1.0:
        raise ValueError(f"{who}: expected a drop probability p in [0, 1), got {p!r}")
    return float(p)


def dropout(x: Any, p: float, generator: backends.Generator) -> tuple[Any, Any | None]:
    """Zero elements of ``x`` with probability ``p`` and scale the rest by ``1 / (1 - p)``.

    Parameters
    ----------
    x : array, any shape, floating dtype
    p : float in [0, 1)
        Probability of zeroing an element.
    generator : xcnn.backends.Generator
        The random stream; the same state gives the same mask.

    Returns
    -------
    y : array
        Same shape, dtype and namespace as ``x``.
    mask : array or None
        ``0`` or ``1/(1-p)`` per element, in ``x``'s dtype; pass it to
        :func:`dropout_backward`. ``None`` when ``p == 0`` (then ``y is x`` and
        no random numbers are drawn).

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn.backends import Generator
    >>> from xcnn.ops import dropout
    >>> y, mask = dropout(np.ones(6, dtype=np.float32), 0.5, Generator(0))
    >>> sorted(set(y.tolist()))
    [0.0, 2.0]
    """
    p = _check_p(p, "dropout")
    if not isinstance(generator, backends.Generator):
        raise TypeError(
            f"dropout: expected an xcnn.backends.Generator, got {type(generator).__name__}; "
            "create one with xcnn.backends.Generator(seed)"
        )
    xp = array_namespace(x)
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(
            f"dropout: expected a floating-point array, got dtype {backends.dtype_name(x.dtype)}"
        )
    if p == 0.0:
        return x, None
    backend = backends.get(backends.namespace_name(x))
    u = backend.uniform(generator, tuple(x.shape), x.dtype)
    # A Python float scale keeps the mask in x's dtype.
    mask = xp.astype(u >= p, x.dtype) * (1.0 / (1.0 - p))
    return x * mask, mask


def dropout_backward(gy: Any, mask: Any | None) -> Any:
    """Gradient of :func:`dropout`: ``gy * mask`` (``gy`` itself when ``mask`` is None)."""
    if mask is None:
        return gy
    if tuple(gy.shape) != tuple(mask.shape):
        raise ValueError(
            f"dropout_backward: expected gy of shape {tuple(mask.shape)} (the input's), "
            f"got shape {tuple(gy.shape)}"
        )
    return gy * mask
