"""Loss modules: ``CrossEntropyLoss`` and ``MSELoss`` (math in ``xcnn.ops.loss``).

Usage differs from layers in two ways::

    loss = crit(logits, targets)     # a 0-d array on the logits' backend
    dlogits = crit.backward()        # no argument: the loss is the end of the chain

Given Tensors, ``crit(logits, targets)`` returns a 0-d Tensor for ``loss.backward()``.

A loss has no eval behaviour, so with plain arrays it keeps its last call's (small)
graph in training and eval mode alike: ``crit.backward()`` works after any forward.
Backward consumes it: a second backward needs a new forward.
"""

from __future__ import annotations

from typing import Any

from xcnn.autograd import Tensor
from xcnn.autograd.grad_mode import enable_grad
from xcnn.nn import functional as F
from xcnn.nn.module import Module
from xcnn.ops.loss import _scale

__all__ = ["CrossEntropyLoss", "MSELoss"]


class _Loss(Module):
    """Shared plumbing: two-argument call, argument-free layer-wise backward."""

    def __call__(self, input: Any, target: Any) -> Any:  # type: ignore[override]
        if isinstance(input, Tensor):
            return self.forward(input, target)
        # Layer-wise: record this call (only the latest), return the loss's array.
        with enable_grad():
            inp = Tensor(input)
            inp._requires_grad = True
            try:
                out = self.forward(inp, target)
            except TypeError:
                if not hasattr(input, "dtype"):
                    raise
                inp._requires_grad = False  # e.g. an integer input: let the op say why
                out = self.forward(inp, target)
        object.__setattr__(self, "_calls", [(inp, out)])
        return out.data

    def _label(self) -> str:
        return type(self).__name__

    def _clear_cache(self) -> None:
        # model.eval() must not drop a loss's pending call: losses behave the same in
        # both modes.
        pass

    def backward(self, grad: Any = 1.0) -> Any:  # type: ignore[override]
        """Gradient of the last loss with respect to its input (the input's shape).

        Parameters
        ----------
        grad : float or 0-d array, default 1.0
            Scale (``dL/dloss``), e.g. for loss weighting.
        """
        calls = self.__dict__.get("_calls")
        if not calls:
            raise RuntimeError(
                f"{self._label()}: backward() called before forward(); compute "
                "loss = criterion(input, target) first (each forward allows one backward)"
            )
        inp, out = calls.pop()
        out.backward(_scale(grad, out.data, f"{self._label()}.backward"))
        return inp.grad


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

    def forward(self, logits: Tensor, targets: Any) -> Tensor:  # type: ignore[override]
        """The mean loss (0-d)."""
        return F.CrossEntropy.apply(logits, targets, who=self._label())


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

    def forward(self, input: Tensor, target: Any) -> Tensor:  # type: ignore[override]
        """The mean squared error (0-d)."""
        return F.MSE.apply(input, target, who=self._label())
