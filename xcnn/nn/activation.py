"""Activation layers ``ReLU``, ``LeakyReLU``, ``Sigmoid``, ``Tanh`` (math: ``xcnn.ops.activation``).

Each accepts any shape and returns the input's shape, dtype and namespace.
ReLU and LeakyReLU keep their input for backward, Sigmoid and Tanh their
output (what each derivative is cheapest in); in eval mode they keep nothing.
"""

from __future__ import annotations

from typing import Any

from xcnn import backends
from xcnn.backends import array_namespace
from xcnn.nn.module import Module
from xcnn.ops import activation as F

__all__ = ["LeakyReLU", "ReLU", "Sigmoid", "Tanh"]


class _Activation(Module):
    """Shared forward/backward plumbing; subclasses set the ops and what they keep."""

    keeps_output = False

    def __init__(self) -> None:
        super().__init__()
        self._cache = None

    def _forward(self, x: Any) -> Any:
        raise NotImplementedError

    def _backward(self, grad_output: Any, kept: Any) -> Any:
        raise NotImplementedError

    def forward(self, x: Any) -> Any:
        try:
            xp = array_namespace(x)
        except TypeError:
            raise TypeError(f"{self._label()}: expected an array, got {type(x).__name__}") from None
        if not xp.isdtype(x.dtype, "real floating"):
            dtype = backends.dtype_name(x.dtype)
            raise TypeError(f"{self._label()}: expected a floating-point input, got dtype {dtype}")
        y = self._forward(x)
        if self.training:
            self._cache = y if self.keeps_output else x
        return y

    def backward(self, grad_output: Any) -> Any:
        kept = self._require_cache()
        if tuple(grad_output.shape) != tuple(kept.shape):
            raise ValueError(
                f"{self._label()}: expected a gradient of the output's shape "
                f"{tuple(kept.shape)}, got shape {tuple(grad_output.shape)}"
            )
        grad_input = self._backward(grad_output, kept)
        self._cache = None
        return grad_input


class ReLU(_Activation):
    """``y = max(x, 0)``, elementwise.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn import nn
    >>> nn.ReLU()(np.array([-1.0, 2.0], dtype=np.float32))
    array([0., 2.], dtype=float32)
    """

    def _forward(self, x: Any) -> Any:
        return F.relu(x)

    def _backward(self, grad_output: Any, kept: Any) -> Any:
        return F.relu_backward(grad_output, kept)


class LeakyReLU(_Activation):
    """``y = x`` for ``x > 0``, ``negative_slope * x`` otherwise.

    Parameters
    ----------
    negative_slope : float, default 0.01

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn import nn
    >>> nn.LeakyReLU(0.1)(np.array([-1.0, 2.0], dtype=np.float32))
    array([-0.1,  2. ], dtype=float32)
    """

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = F._slope(negative_slope, "LeakyReLU")

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"

    def _forward(self, x: Any) -> Any:
        return F.leaky_relu(x, self.negative_slope)

    def _backward(self, grad_output: Any, kept: Any) -> Any:
        return F.leaky_relu_backward(grad_output, kept, self.negative_slope)


class Sigmoid(_Activation):
    """``y = 1 / (1 + exp(-x))``, computed without overflow for any finite ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn import nn
    >>> nn.Sigmoid()(np.array([0.0], dtype=np.float32))
    array([0.5], dtype=float32)
    """

    keeps_output = True

    def _forward(self, x: Any) -> Any:
        return F.sigmoid(x)

    def _backward(self, grad_output: Any, kept: Any) -> Any:
        return F.sigmoid_backward(grad_output, kept)


class Tanh(_Activation):
    """``y = tanh(x)``.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn import nn
    >>> nn.Tanh()(np.array([0.0], dtype=np.float32))
    array([0.], dtype=float32)
    """

    keeps_output = True

    def _forward(self, x: Any) -> Any:
        return F.tanh(x)

    def _backward(self, grad_output: Any, kept: Any) -> Any:
        return F.tanh_backward(grad_output, kept)
