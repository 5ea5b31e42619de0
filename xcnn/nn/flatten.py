"""``Flatten``: merge a range of dimensions into one (a reshape; backward reshapes back).

Shapes, with the defaults ``start_dim=1, end_dim=-1``::

    x: (N, C, H, W) -> y: (N, C*H*W)          gx = reshape(gy, (N, C, H, W))
"""

from __future__ import annotations

import math

from xcnn.autograd import Tensor, basic
from xcnn.backends import array_namespace
from xcnn.nn.module import Module

__all__ = ["Flatten"]


class Flatten(Module):
    """Flatten dimensions ``start_dim..end_dim`` (inclusive) into one, as ``torch.nn.Flatten``.

    Parameters
    ----------
    start_dim : int, default 1
        First dimension to flatten (dimension 0, the batch, is kept by default).
    end_dim : int, default -1
        Last dimension to flatten; negative values count from the end.

    Shapes
    ------
    ``(N, C, H, W) -> (N, C*H*W)`` with the defaults.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn import nn
    >>> nn.Flatten()(np.zeros((8, 16, 5, 5), dtype=np.float32)).shape
    (8, 400)
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        for name, value in (("start_dim", start_dim), ("end_dim", end_dim)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Flatten: {name} must be an int, got {value!r}")
        self.start_dim = start_dim
        self.end_dim = end_dim

    def extra_repr(self) -> str:
        if (self.start_dim, self.end_dim) == (1, -1):
            return ""
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

    def _output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        # Dimension d needs d + 1 dimensions when d >= 0, and -d when it counts from the end.
        need = max(d + 1 if d >= 0 else -d for d in (self.start_dim, self.end_dim))
        if len(shape) < need:
            raise ValueError(
                f"{self._label()}: expected an input with at least {need} dimensions, "
                f"got shape {shape}"
            )
        start = self.start_dim % len(shape)
        end = self.end_dim % len(shape)
        if start > end:
            raise ValueError(
                f"{self._label()}: start_dim {self.start_dim} comes after end_dim "
                f"{self.end_dim} for an input of shape {shape}"
            )
        return (*shape[:start], math.prod(shape[start : end + 1]), *shape[end + 1 :])

    def forward(self, x: Tensor) -> Tensor:
        try:
            array_namespace(x.data if isinstance(x, Tensor) else x)
        except TypeError:
            raise TypeError(f"{self._label()}: expected an array, got {type(x).__name__}") from None
        shape = tuple(int(n) for n in x.shape)
        return basic.Reshape.apply(x, shape=self._output_shape(shape))
