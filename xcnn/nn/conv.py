"""``Conv2d``: the convolution layer over ``F.conv2d`` (math in ``xcnn/ops/conv.py``).

What backward needs (``x``, and the unfolded input ``cols`` where backward reuses it:
not on NumPy, whose fast path unfolds again chunk by chunk in cache) is kept by the
graph node of each call, not by the layer.
"""

from __future__ import annotations

from typing import Any

from xcnn.nn import functional as F
from xcnn.nn import init
from xcnn.nn.module import Module
from xcnn.ops._geometry import conv_padding, output_size, pair

__all__ = ["Conv2d"]


class Conv2d(Module):
    """2-D convolution over NCHW input, as ``torch.nn.Conv2d`` (zero padding).

    Parameters
    ----------
    in_channels, out_channels : int
        Both divisible by ``groups``.
    kernel_size, stride, dilation : int or (int, int)
    padding : int, (int, int), "same" or "valid"
        ``"valid"`` pads nothing; ``"same"`` (stride 1 only) keeps the input's size,
        with the extra row/column of an odd total on the bottom/right, as PyTorch
        does. Kept as given (a string stays a string, as in torch).
    groups : int
        Split channels into ``groups`` independent convolutions.
    bias : bool
        Learn a per-output-channel bias.
    dtype : str
        ``"float32"`` (default) or ``"float64"``.
    rng : int, numpy.random.Generator or None
        Generator for the initial weights (default: xcnn's, see ``xcnn.manual_seed``).

    Attributes
    ----------
    weight : Parameter, shape (out_channels, in_channels/groups, KH, KW)
    bias : Parameter, shape (out_channels,), or None
        Initialised as in PyTorch: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for both,
        ``fan_in = in_channels/groups * KH * KW``.
    needs_input_grad : bool
        ``True`` by default. Set it to ``False`` on a model's first layer: backward
        then skips the input gradient (a col2im and a matmul) and returns ``None``,
        as PyTorch does for an input that does not require grad.

    Notes
    -----
    Shapes: ``(N, in_channels, H, W) -> (N, out_channels, OH, OW)`` with
    ``OH = (H + 2*padding - dilation*(KH-1) - 1) // stride + 1``; an unbatched
    ``(in_channels, H, W)`` input gives ``(out_channels, OH, OW)``.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn import nn
    >>> conv = nn.Conv2d(1, 6, 5, padding=2, rng=0)
    >>> conv
    Conv2d(1->6, kernel_size=(5, 5), padding=(2, 2))
    >>> conv(np.zeros((8, 1, 28, 28), dtype=np.float32)).shape
    (8, 6, 28, 28)
    >>> nn.Conv2d(1, 2, 4, padding="same", rng=0)(np.zeros((1, 5, 5), dtype=np.float32)).shape
    (2, 5, 5)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        dtype: str = "float32",
        rng: Any = None,
    ):
        super().__init__()
        label = f"Conv2d({in_channels}->{out_channels})"
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("groups", groups),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{label}: {name} must be a positive int, got {value!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{label}: in_channels ({in_channels}) and out_channels ({out_channels}) "
                f"must both be divisible by groups ({groups})"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = pair(kernel_size, f"{label}: kernel_size")
        self.stride = pair(stride, f"{label}: stride")
        self.padding = padding if isinstance(padding, str) else pair(padding, f"{label}: padding")
        self.dilation = pair(dilation, f"{label}: dilation")
        self.groups = groups
        checks = (
            ("kernel_size", self.kernel_size, 1, "positive"),
            ("stride", self.stride, 1, "positive"),
            ("padding", (0, 0) if isinstance(padding, str) else self.padding, 0, "non-negative"),
            ("dilation", self.dilation, 1, "positive"),
        )
        for name, value, low, word in checks:
            if min(value) < low:
                raise ValueError(f"{label}: {name} must be {word}, got {value}")
        # ((top, left), (bottom, right)); also refuses a bad string or "same" with a stride.
        self._pads = conv_padding(label, padding, self.kernel_size, self.stride, self.dilation)

        kh, kw = self.kernel_size
        fan_in = in_channels // groups * kh * kw
        self.weight = init.empty_parameter((out_channels, in_channels // groups, kh, kw), dtype)
        self.bias = init.empty_parameter((out_channels,), dtype) if bias else None
        init.default_layer_init_(self.weight, self.bias, fan_in, rng)
        self.needs_input_grad = True

    def extra_repr(self) -> str:
        parts = [f"{self.in_channels}->{self.out_channels}", f"kernel_size={self.kernel_size}"]
        defaults = (("stride", (1, 1)), ("padding", (0, 0)), ("dilation", (1, 1)))
        parts += [f"{n}={getattr(self, n)!r}" for n, d in defaults if getattr(self, n) != d]
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        if self.bias is None:
            parts.append("bias=False")
        return ", ".join(parts)

    def _label(self) -> str:
        return f"Conv2d({self.in_channels}->{self.out_channels})"

    def forward(self, x: Any) -> Any:
        """Convolve ``x`` of shape ``(N, in_channels, H, W)`` or ``(in_channels, H, W)``."""
        self._check_backend(x)
        shape = tuple(x.shape)
        if len(shape) not in (3, 4):
            raise ValueError(
                f"{self._label()}: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, "
                f"got shape {shape}"
            )
        if shape[-3] != self.in_channels:
            raise ValueError(
                f"{self._label()}: expected input with {self.in_channels} channels, "
                f"got shape {shape}"
            )
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        (top, left), (bottom, right) = self._pads
        # output_size pads both sides alike: pad by `bottom` and add the difference to H.
        oh = output_size(shape[-2] + top - bottom, kh, sh, bottom, dh)
        ow = output_size(shape[-1] + left - right, kw, sw, right, dw)
        if oh < 1 or ow < 1:
            raise ValueError(
                f"{self._label()}: input of spatial size {shape[-2:]} with padding "
                f"{self.padding} is smaller than the dilated kernel "
                f"{(dh * (kh - 1) + 1, dw * (kw - 1) + 1)} (output size {(oh, ow)}); "
                f"got shape {shape}"
            )
        if x.dtype != self.weight.dtype:
            raise TypeError(
                f"{self._label()}: input has dtype {x.dtype} but the parameters are "
                f"{self.weight.dtype}; cast the input or call .to() on the layer"
            )
        if not self.needs_input_grad:
            x = x.detach()
        return F.conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )
