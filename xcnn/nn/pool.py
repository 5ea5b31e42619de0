"""Pooling layers ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d`` (math: ``xcnn.ops.pool``).

No parameters. A training-mode max pool's graph node keeps the argmax window
offsets of its forward pass (small integers, not the input), the average pools'
only the input shape; in eval mode nothing is kept. Each accepts an unbatched
``(C, H, W)`` input as a batch of one, as PyTorch does.
"""

from __future__ import annotations

from typing import Any

from xcnn import backends
from xcnn.autograd import Tensor
from xcnn.backends import array_namespace
from xcnn.nn import functional
from xcnn.nn.module import Module
from xcnn.ops import pool as F
from xcnn.ops._geometry import PoolGeometry, adaptive_size, pool_geometry, pool_params

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


def _batched_shape(label: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """``(N, C, H, W)`` of a 3-D or 4-D input shape (an unbatched input is a batch of one)."""
    if len(shape) not in (3, 4):
        raise ValueError(
            f"{label}: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, got shape {shape}"
        )
    return shape if len(shape) == 4 else (1, *shape)


class _Pool2d(Module):
    """Kernel/stride/padding/ceil_mode bookkeeping shared by MaxPool2d and AvgPool2d."""

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        ceil_mode: bool = False,
    ):
        super().__init__()
        label = type(self).__name__
        # Validate now so a bad model fails where it is built, not at its first batch.
        pool_params(label, kernel_size, stride, padding)
        if not isinstance(ceil_mode, bool):
            raise TypeError(f"{label}: ceil_mode must be True or False, got {ceil_mode!r}")
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.ceil_mode = ceil_mode

    def extra_repr(self) -> str:
        text = (
            f"kernel_size={_compact(self.kernel_size)}, stride={_compact(self.stride)}, "
            f"padding={_compact(self.padding)}"
        )
        return text + (", ceil_mode=True" if self.ceil_mode else "")

    def _geometry(self, shape: tuple[int, ...]) -> PoolGeometry:
        return pool_geometry(
            self._label(),
            _batched_shape(self._label(), shape),
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
        )


class MaxPool2d(_Pool2d):
    """2-D max pooling, PyTorch's signature (no dilation, no returned indices).

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int), default 0
        Implicit padding that never wins the max; at most half the kernel.
    dilation : 1
        Other values raise ``ValueError`` (xcnn's pooling is undilated).
    return_indices : False
        ``True`` raises ``ValueError``.
    ceil_mode : bool, default False
        Round the output size up, as PyTorch does: the last window must start inside
        the input or its left padding.

    Shapes
    ------
    input ``(N, C, H, W)`` or ``(C, H, W)`` -> output ``(N, C, OH, OW)`` or ``(C, OH, OW)``,
    ``OH = (H + 2*padding - kernel) // stride + 1`` (rounded up with ``ceil_mode``).

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
    >>> nn.MaxPool2d(2, ceil_mode=True)(np.zeros((6, 5, 5), dtype=np.float32)).shape
    (6, 3, 3)
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
    ):
        functional.check_max_pool_options("MaxPool2d", dilation, return_indices)
        super().__init__(kernel_size, stride, padding, ceil_mode)

    def forward(self, x: Any) -> Any:
        return self._forward(x, relu=False)

    def _forward(self, x: Tensor, relu: bool) -> Tensor:
        """Forward, with ``relu=True`` also the ReLU that ``Sequential`` fuses into it."""
        _check_input(self._label(), x)
        self._geometry(tuple(x.shape))
        window = (self.kernel_size, self.stride, self.padding)
        return functional._unbatched(
            x,
            self._label(),
            lambda t: functional.MaxPool2d.apply(t, *window, relu=relu, ceil_mode=self.ceil_mode),
        )


class AvgPool2d(_Pool2d):
    """2-D average pooling, PyTorch's signature and defaults.

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int), default 0
        Zero padding; at most half the kernel.
    ceil_mode : bool, default False
        Round the output size up, as PyTorch does.
    count_include_pad : bool, default True
        Count the zero padding in each window's divisor (not the part of a
        ``ceil_mode`` window past the padded input, as in PyTorch); ``False``
        divides by the number of real pixels.
    divisor_override : int, optional
        Divide every window's sum by this instead.

    Shapes
    ------
    input ``(N, C, H, W)`` or ``(C, H, W)`` -> output ``(N, C, OH, OW)`` or ``(C, OH, OW)``,
    ``OH = (H + 2*padding - kernel) // stride + 1`` (rounded up with ``ceil_mode``).

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn import nn
    >>> nn.AvgPool2d(2)(np.ones((1, 1, 4, 4), dtype=np.float32))[0, 0]
    array([[1., 1.],
           [1., 1.]], dtype=float32)
    >>> nn.AvgPool2d(3, 1, 1, count_include_pad=False)(np.ones((1, 3, 3), dtype=np.float32))
    array([[[1., 1., 1.],
            [1., 1., 1.],
            [1., 1., 1.]]], dtype=float32)
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        F._check_avg_options(type(self).__name__, count_include_pad, divisor_override)
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if not self.count_include_pad:
            text += ", count_include_pad=False"
        if self.divisor_override is not None:
            text += f", divisor_override={self.divisor_override}"
        return text

    def forward(self, x: Tensor) -> Tensor:
        _check_input(self._label(), x)
        self._geometry(tuple(x.shape))
        return functional.avg_pool2d(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )


class AdaptiveAvgPool2d(Module):
    """Adaptive average pooling to a fixed output size, PyTorch's bins.

    Parameters
    ----------
    output_size : int or (int or None, int or None)
        ``(OH, OW)``; ``None`` keeps that input size. Output ``i`` averages input rows
        ``floor(i*H/OH)`` to ``ceil((i+1)*H/OH) - 1`` (likewise for columns), so the
        bins overlap when ``OH`` does not divide ``H``.

    Shapes
    ------
    input ``(N, C, H, W)`` or ``(C, H, W)`` -> output ``(N, C, OH, OW)`` or ``(C, OH, OW)``.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn import nn
    >>> nn.AdaptiveAvgPool2d(1)(np.ones((8, 64, 8, 8), dtype=np.float32)).shape
    (8, 64, 1, 1)
    >>> nn.AdaptiveAvgPool2d((3, None))(np.ones((8, 64, 7, 5), dtype=np.float32)).shape
    (8, 64, 3, 5)
    """

    def __init__(self, output_size: Any):
        super().__init__()
        adaptive_size("AdaptiveAvgPool2d", output_size)
        self.output_size = output_size

    def extra_repr(self) -> str:
        if isinstance(self.output_size, (tuple, list)) and None in self.output_size:
            return f"output_size={tuple(self.output_size)}"
        return f"output_size={_compact(self.output_size)}"

    def forward(self, x: Any) -> Any:
        label = self._label()
        _check_input(label, x)
        shape = _batched_shape(label, tuple(x.shape))
        if shape[2] < 1 or shape[3] < 1:
            raise ValueError(f"{label}: expected a non-empty H x W, got shape {tuple(x.shape)}")
        return functional.adaptive_avg_pool2d(x, self.output_size)
