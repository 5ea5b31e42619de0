"""Pooling layers ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d`` (math: ``xcnn.ops.pool``).

No parameters. A training-mode max pool's graph node keeps the argmax window
offsets of its forward pass (small integers, not the input), the average pools'
only the input shape; in eval mode nothing is kept.
"""

from __future__ import annotations

from typing import Any

from xcnn import backends
from xcnn.autograd import Tensor
from xcnn.backends import array_namespace
from xcnn.nn import functional
from xcnn.nn.module import Module
from xcnn.ops import pool as F
from xcnn.ops._geometry import PoolGeometry, pool_geometry, pool_params

__all__ = ["AdaptiveAvgPool2d", "AvgPool2d", "MaxPool2d"]


def _compact(value: int | tuple[int, int]) -> str:
    """``2`` for ``2`` or ``(2, 2)``, else ``(2, 3)``: how the layer names itself."""
    if isinstance(value, int) or (isinstance(value, (tuple, list)) and len(set(value)) == 1):
        return str(value if isinstance(value, int) else value[0])
    return str(tuple(value))


def _check_input(label: str, x: Any) -> None:
    x = x.data if isinstance(x, Tensor) else x
    try:
        xp = array_namespace(x)
    except TypeError:
        raise TypeError(f"{label}: expected an array, got {type(x).__name__}") from None
    if not xp.isdtype(x.dtype, "real floating"):
        dtype = backends.dtype_name(x.dtype)
        raise TypeError(f"{label}: expected a floating-point input, got dtype {dtype}")


class _Pool2d(Module):
    """Kernel/stride/padding bookkeeping shared by MaxPool2d and AvgPool2d."""

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
    ):
        super().__init__()
        # Validate now so a bad model fails where it is built, not at its first batch.
        pool_params(type(self).__name__, kernel_size, stride, padding)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding

    def extra_repr(self) -> str:
        return (
            f"kernel_size={_compact(self.kernel_size)}, stride={_compact(self.stride)}, "
            f"padding={_compact(self.padding)}"
        )

    def _geometry(self, shape: tuple[int, ...]) -> PoolGeometry:
        return pool_geometry(self._label(), shape, self.kernel_size, self.stride, self.padding)


class MaxPool2d(_Pool2d):
    """2-D max pooling, PyTorch's signature (floor mode, no dilation).

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int), default 0
        Implicit padding that never wins the max; at most half the kernel.

    Shapes
    ------
    input ``(N, C, H, W)`` -> output ``(N, C, OH, OW)``,
    ``OH = (H + 2*padding - kernel) // stride + 1``.

    Notes
    -----
    The gradient of each window goes to its first maximum only (ties included),
    as in PyTorch.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn import nn
    >>> pool = nn.MaxPool2d(2)
    >>> pool
    MaxPool2d(kernel_size=2, stride=2, padding=0)
    >>> pool(np.zeros((8, 6, 28, 28), dtype=np.float32)).shape
    (8, 6, 14, 14)
    """

    def forward(self, x: Any) -> Any:
        return self._forward(x, relu=False)

    def _forward(self, x: Tensor, relu: bool) -> Tensor:
        """Forward, with ``relu=True`` also the ReLU that ``Sequential`` fuses into it."""
        _check_input(self._label(), x)
        self._geometry(tuple(x.shape))
        return functional.MaxPool2d.apply(x, self.kernel_size, self.stride, self.padding, relu=relu)


class AvgPool2d(_Pool2d):
    """2-D average pooling, PyTorch's signature and default ``count_include_pad=True``.

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int), default 0
        Zero padding, counted in the divisor; at most half the kernel.

    Shapes
    ------
    input ``(N, C, H, W)`` -> output ``(N, C, OH, OW)``,
    ``OH = (H + 2*padding - kernel) // stride + 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn import nn
    >>> nn.AvgPool2d(2)(np.ones((1, 1, 4, 4), dtype=np.float32))[0, 0]
    array([[1., 1.],
           [1., 1.]], dtype=float32)
    """

    def forward(self, x: Tensor) -> Tensor:
        _check_input(self._label(), x)
        self._geometry(tuple(x.shape))
        return functional.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class AdaptiveAvgPool2d(Module):
    """Global average pooling: the mean of each channel's plane.

    Parameters
    ----------
    output_size : 1 or (1, 1)
        Only global average pooling is supported; other sizes raise ``ValueError``.

    Shapes
    ------
    input ``(N, C, H, W)`` -> output ``(N, C, 1, 1)``.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn import nn
    >>> nn.AdaptiveAvgPool2d(1)(np.ones((8, 64, 8, 8), dtype=np.float32)).shape
    (8, 64, 1, 1)
    """

    def __init__(self, output_size: int | tuple[int, int]):
        super().__init__()
        F.check_global_size("AdaptiveAvgPool2d", output_size)
        self.output_size = output_size

    def extra_repr(self) -> str:
        return f"output_size={_compact(self.output_size)}"

    def forward(self, x: Any) -> Any:
        label = self._label()
        _check_input(label, x)
        shape = tuple(x.shape)
        if len(shape) != 4:
            raise ValueError(f"{label}: expected a 4-D input (N, C, H, W), got shape {shape}")
        if shape[2] < 1 or shape[3] < 1:
            raise ValueError(f"{label}: expected a non-empty H x W, got shape {shape}")
        return functional.adaptive_avg_pool2d(x, 1)
