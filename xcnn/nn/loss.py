"""Loss modules: ``CrossEntropyLoss`` and ``MSELoss`` (math in ``xcnn.ops.loss``).

Usage differs from layers in two ways::

    loss = crit(logits, targets)     # a 0-d array on the logits' backend
    dlogits = crit.backward()        # no argument: the loss is the end of the chain

A loss has no eval behaviour, so it keeps its (small) cache in training and
eval mode alike: ``crit.backward()`` works after any forward. As for layers,
backward consumes the cache: a second backward needs a new forward.
"""

from __future__ import annotations

from typing import Any

from xcnn.nn.module import Module
from xcnn.ops.loss import (
    _check_cross_entropy,
    _check_mse,
    _mse_loss,
    _softmax_cross_entropy,
    mse_loss_backward,
    softmax_cross_entropy_backward,
)

__all__ = ["CrossEntropyLoss", "MSELoss"]


class _Loss(Module):
    """Shared plumbing: two-argument call, argument-free backward."""

    def __init__(self) -> None:
        super().__init__()
        self._cache = None

    def __call__(self, input: Any, target: Any) -> Any:  # type: ignore[override]
        return self.forward(input, target)

    def _label(self) -> str:
        return type(self).__name__

    def _clear_cache(self) -> None:
        # model.eval() must not drop a loss's cache: losses behave the same in both modes.
        pass

    def _cached(self) -> Any:
        if self._cache is None:
            raise RuntimeError(
                f"{self._label()}: backward() called before forward(); compute "
                "loss = criterion(input, target) first (each forward allows one backward)"
            )
        return self._cache


class CrossEntropyLoss(_Loss):
    """Mean cross-entropy between ``softmax(logits)`` and integer class targets.

    The fused, numerically stable form of ``torch.nn.CrossEntropyLoss()``
    (``reduction="mean"``, no class weights, no label smoothing).

    Shapes
    ------
    logits ``(N, C)`` floating, targets ``(N,)`` integer in ``[0, C)`` -> loss ``()``.

    Notes
    -----
    The label range check reads one boolean from the device per call (one host
    sync per batch on CuPy); an out-of-range label would otherwise give a
    silently wrong loss.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn import nn
    >>> crit = nn.CrossEntropyLoss()
    >>> loss = crit(np.zeros((2, 4), dtype=np.float32), np.array([1, 3]))
    >>> round(float(loss), 4)
    1.3863
    >>> crit.backward().shape
    (2, 4)
    """

    def forward(self, logits: Any, targets: Any) -> Any:  # type: ignore[override]
        """Return the mean loss (0-d) and keep what :meth:`backward` needs."""
        _check_cross_entropy(logits, targets, self._label())
        loss, self._cache = _softmax_cross_entropy(logits, targets)
        return loss

    def backward(self, grad: Any = 1.0) -> Any:  # type: ignore[override]
        """Gradient of the last loss with respect to the logits, ``(N, C)``.

        Parameters
        ----------
        grad : float or 0-d array, default 1.0
            Scale (``dL/dloss``), e.g. for loss weighting.
        """
        grad_logits = softmax_cross_entropy_backward(self._cached(), grad)
        self._cache = None
        return grad_logits


class MSELoss(_Loss):
    """Mean squared error over all elements, as ``torch.nn.MSELoss()``.

    Shapes
    ------
    input and target of one shape (target cast to input's dtype) -> loss ``()``.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn import nn
    >>> crit = nn.MSELoss()
    >>> float(crit(np.array([1.0, 3.0]), np.array([0.0, 0.0])))
    5.0
    >>> crit.backward()
    array([1., 3.])
    """

    def forward(self, input: Any, target: Any) -> Any:  # type: ignore[override]
        """Return the mean squared error (0-d) and keep what :meth:`backward` needs."""
        target = _check_mse(input, target, self._label())
        loss, self._cache = _mse_loss(input, target)
        return loss

    def backward(self, grad: Any = 1.0) -> Any:  # type: ignore[override]
        """Gradient of the last loss with respect to the input (the input's shape).

        Parameters
        ----------
        grad : float or 0-d array, default 1.0
            Scale (``dL/dloss``).
        """
        grad_input = mse_loss_backward(self._cached(), grad)
        self._cache = None
        return grad_input
