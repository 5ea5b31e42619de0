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
from xcnn.ops.loss import _check_cross_entropy_options, _check_reduction, _scale

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
        grad : float or array of the loss's shape, default 1.0
            ``dL/dloss``: a scale (number or 0-d array) for a reduced loss, e.g. for
            loss weighting; with ``reduction="none"`` an array of the loss's shape.
        """
        calls = self.__dict__.get("_calls")
        if not calls:
            raise RuntimeError(
                f"{self._label()}: backward() called before forward(); compute "
                "loss = criterion(input, target) first (each forward allows one backward)"
            )
        inp, out = calls[-1]
        grad = _scale(grad, out.data, f"{self._label()}.backward")
        calls.pop()
        out.backward(grad)
        return inp.grad

    def extra_repr(self) -> str:
        return "" if self.reduction == "mean" else f"reduction={self.reduction!r}"


class CrossEntropyLoss(_Loss):
    """Cross-entropy of ``softmax(logits)`` and class targets, as ``torch.nn.CrossEntropyLoss``.

    The fused, numerically stable form (math in ``xcnn.ops.softmax_cross_entropy``).

    Parameters
    ----------
    weight : array, shape (C,), optional
        A rescaling weight per class, in the logits' dtype and on their backend; kept
        as the buffer ``weight`` (moved by ``.to()``, saved in ``state_dict``).
    ignore_index : int, default -100
        Index targets equal to it add nothing to the loss, its gradient or the mean's
        divisor (every target ignored: the mean is NaN, as in torch).
    reduction : {"mean", "sum", "none"}, default "mean"
        The weighted mean (divided by the summed weights of the non-ignored targets),
        the sum, or the per-sample loss ``(N,)``.
    label_smoothing : float in [0, 1], default 0.0
        Mixes the targets with the uniform distribution, as torch does.

    The options after ``weight`` are keyword-only (torch's deprecated ``size_average``
    and ``reduce`` sit between them positionally).

    Shapes
    ------
    logits ``(N, C)`` floating; targets ``(N,)`` integer in ``[0, C)`` (or
    ``ignore_index``), or class probabilities ``(N, C)`` in the logits' dtype
    -> loss ``()``, or ``(N,)`` for ``reduction="none"``.

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
    >>> per_sample = nn.CrossEntropyLoss(reduction="none")
    >>> per_sample(np.zeros((2, 4)), np.array([1, 3])).shape
    (2,)
    >>> per_sample.backward(np.ones(2)).shape
    (2, 4)
    """

    def __init__(
        self,
        weight: Any = None,
        *,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        who = "CrossEntropyLoss"
        options = _check_cross_entropy_options(who, ignore_index, reduction, label_smoothing)
        self.ignore_index, self.reduction, self.label_smoothing = options
        if weight is not None:
            if isinstance(weight, Tensor):
                weight = weight.detach().data
            if not hasattr(weight, "shape") or len(weight.shape) != 1:
                raise ValueError(
                    f"{who}: weight must be a 1-D array with one entry per class, got "
                    f"{getattr(weight, 'shape', type(weight).__name__)}"
                )
            self.register_buffer("weight", weight)
        else:
            self.weight = None

    def extra_repr(self) -> str:
        parts = []
        if self.weight is not None:
            parts.append(f"weight=({int(self.weight.shape[0])},)")
        if self.ignore_index != -100:
            parts.append(f"ignore_index={self.ignore_index}")
        if self.reduction != "mean":
            parts.append(f"reduction={self.reduction!r}")
        if self.label_smoothing:
            parts.append(f"label_smoothing={self.label_smoothing}")
        return ", ".join(parts)

    def forward(self, logits: Tensor, targets: Any) -> Tensor:  # type: ignore[override]
        """The loss: 0-d, or ``(N,)`` for ``reduction="none"``."""
        if isinstance(targets, Tensor):
            if targets.requires_grad:
                raise ValueError(
                    "CrossEntropyLoss: targets require grad, but xcnn does not "
                    "differentiate the loss with respect to its targets; pass targets.detach()"
                )
            targets = targets.data
        return F.CrossEntropy.apply(
            logits,
            targets,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
            who=self._label(),
        )


class MSELoss(_Loss):
    """Squared error ``(input - target)**2``, as ``torch.nn.MSELoss(reduction=...)``.

    Parameters
    ----------
    reduction : {"mean", "sum", "none"}, default "mean"
        Mean or sum over all elements, or the elementwise loss; keyword-only (torch's
        first two positional arguments are the deprecated ``size_average``/``reduce``).

    Shapes
    ------
    input and target of one shape (target cast to input's dtype) -> loss ``()``,
    or the input's shape for ``reduction="none"``.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn import nn
    >>> crit = nn.MSELoss()
    >>> float(crit(np.array([1.0, 3.0]), np.array([0.0, 0.0])))
    5.0
    >>> crit.backward()
    array([1., 3.])
    >>> total = nn.MSELoss(reduction="sum")
    >>> float(total(np.array([1.0, 3.0]), np.array([0.0, 0.0])))
    10.0
    """

    def __init__(self, *, reduction: str = "mean"):
        super().__init__()
        self.reduction = _check_reduction(reduction, "MSELoss")

    def forward(self, input: Tensor, target: Any) -> Tensor:  # type: ignore[override]
        """The squared error: 0-d, or the input's shape for ``reduction="none"``."""
        return F.MSE.apply(input, target, reduction=self.reduction, who=self._label())
