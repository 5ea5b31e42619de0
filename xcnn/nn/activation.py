"""Activation layers ``ReLU``, ``LeakyReLU``, ``Sigmoid``, ``Tanh`` (math: ``xcnn.ops.activation``).

Each accepts any shape and returns the input's shape, dtype and namespace.
The graph node of a ReLU or LeakyReLU call keeps its input for backward, of a
Sigmoid or Tanh call its output (what each derivative is cheapest in).
"""

from __future__ import annotations

from xcnn import backends
from xcnn.autograd import Tensor
from xcnn.backends import array_namespace
from xcnn.nn import functional as F
from xcnn.nn.module import Module
from xcnn.ops.activation import _slope

__all__ = ["LeakyReLU", "ReLU", "Sigmoid", "Tanh"]


class _Activation(Module):
    """Shared input check; subclasses give the functional op."""

    def _forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        data = x.data if isinstance(x, Tensor) else x
        try:
            xp = array_namespace(data)
        except TypeError:
            raise TypeError(f"{self._label()}: expected an array, got {type(x).__name__}") from None
        if not xp.isdtype(data.dtype, "real floating"):
            dtype = backends.dtype_name(data.dtype)
            raise TypeError(f"{self._label()}: expected a floating-point input, got dtype {dtype}")
        return self._forward(x)


class ReLU(_Activation):
    """``y = max(x, 0)``, elementwise.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn import nn
    >>> nn.ReLU()(np.array([-1.0, 2.0], dtype=np.float32))
    array([0., 2.], dtype=float32)
    """

    def _forward(self, x: Tensor) -> Tensor:
        return F.relu(x)


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
        self.negative_slope = _slope(negative_slope, "LeakyReLU")

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"

    def _forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope)


class Sigmoid(_Activation):
    """``y = 1 / (1 + exp(-x))``, computed without overflow for any finite ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn import nn
    >>> nn.Sigmoid()(np.array([0.0], dtype=np.float32))
    array([0.5], dtype=float32)
    """

    def _forward(self, x: Tensor) -> Tensor:
        return F.sigmoid(x)


class Tanh(_Activation):
    """``y = tanh(x)``.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn import nn
    >>> nn.Tanh()(np.array([0.0], dtype=np.float32))
    array([0.], dtype=float32)
    """

    def _forward(self, x: Tensor) -> Tensor:
        return F.tanh(x)
