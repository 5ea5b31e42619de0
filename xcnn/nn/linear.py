"""``Linear``: the fully connected layer ``y = x W^T + b`` (math in ``xcnn.ops.linear``)."""

from __future__ import annotations

from typing import Any

from xcnn.autograd import Tensor
from xcnn.nn import functional as F
from xcnn.nn import init
from xcnn.nn.module import Module
from xcnn.ops.linear import _check_linear

__all__ = ["Linear"]


class Linear(Module):
    """Fully connected layer, PyTorch's signature, layout and default initialisation.

    Parameters
    ----------
    in_features : int
        Size of each input sample.
    out_features : int
        Size of each output sample.
    bias : bool, default True
        Learn an additive bias.
    dtype : str, default "float32"
        ``"float32"`` or ``"float64"``.
    rng : int, numpy.random.Generator or xcnn.backends.Generator, optional
        Draws the initial weights (default: xcnn's generator, see ``xcnn.manual_seed``).

    Attributes
    ----------
    weight : Parameter, shape (out_features, in_features)
        ``U(-1/sqrt(in_features), 1/sqrt(in_features))`` at creation.
    bias : Parameter, shape (out_features,), or None
        Same distribution as the weight.

    Shapes
    ------
    input ``(N, in_features)`` (or ``(..., in_features)``) -> output ``(N, out_features)``
    (or ``(..., out_features)``).

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn import nn
    >>> fc = nn.Linear(400, 120, rng=0)
    >>> fc
    Linear(400->120)
    >>> fc(np.zeros((8, 400), dtype=np.float32)).shape
    (8, 120)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        dtype: str = "float32",
        rng: Any = None,
    ):
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Linear: {name} must be a positive int, got {value!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.weight = init.empty_parameter((out_features, in_features), dtype)
        self.bias = init.empty_parameter((out_features,), dtype) if bias else None
        init.default_layer_init_(self.weight, self.bias, in_features, rng)

    def extra_repr(self) -> str:
        text = f"{self.in_features}->{self.out_features}"
        return text if self.bias is not None else f"{text}, bias=False"

    def forward(self, x: Any) -> Any:
        return self._forward(x, relu=False)

    def _forward(self, x: Tensor, relu: bool) -> Tensor:
        """Forward, with ``relu=True`` also the ReLU that ``Sequential`` fuses into it."""
        self._check_backend(x)
        bias = None if self.bias is None else self.bias.data
        _check_linear(x.data, self.weight.data, bias, self._label())
        return F.Linear.apply(x, self.weight, self.bias, relu=relu)
