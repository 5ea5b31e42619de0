"""``Softmax`` and ``LogSoftmax`` layers along one dimension (math: ``xcnn.ops.loss``).

With ``y = softmax(x)`` along ``dim``::

    softmax:      y = exp(x - max x) / sum exp(x - max x)     gx = y * (g - sum(g * y))
    log_softmax:  y = log(softmax(x))                         gx = g - exp(y) * sum(g)

For a classifier's loss use ``CrossEntropyLoss`` on the logits: it fuses the two steps.
"""

from __future__ import annotations

from typing import Any

from xcnn.autograd import Tensor
from xcnn.nn import functional as F
from xcnn.nn.module import Module

__all__ = ["LogSoftmax", "Softmax"]


class _AlongDim(Module):
    def __init__(self, dim: int | None = None):
        super().__init__()
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int)):
            raise TypeError(f"{type(self).__name__}: dim must be an int, got {dim!r}")
        self.dim = dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def _dim(self) -> int:
        if self.dim is None:
            # torch guesses a dim from the input's rank (deprecated, with a warning).
            raise ValueError(
                f"{type(self).__name__}: dim=None is not supported (PyTorch's implicit "
                f"choice is deprecated); pass dim=, e.g. {type(self).__name__}(dim=1)"
            )
        return self.dim


class Softmax(_AlongDim):
    """``softmax`` along ``dim``, as ``torch.nn.Softmax(dim)``: slices along it sum to 1.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn import nn
    >>> nn.Softmax(dim=1)(np.zeros((1, 4), dtype=np.float32))
    array([[0.25, 0.25, 0.25, 0.25]], dtype=float32)
    """

    def forward(self, x: Any) -> Tensor:
        return F.softmax(x, dim=self._dim())


class LogSoftmax(_AlongDim):
    """``log(softmax(x))`` along ``dim``, computed stably, as ``torch.nn.LogSoftmax(dim)``.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn import nn
    >>> nn.LogSoftmax(dim=1)(np.zeros((1, 2)))
    array([[-0.69314718, -0.69314718]])
    """

    def forward(self, x: Any) -> Tensor:
        return F.log_softmax(x, dim=self._dim())
