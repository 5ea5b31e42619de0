"""Build the PyTorch twin of an xcnn model, with the same weights (an oracle for tests).

``to_torch(model)`` walks the xcnn module tree, creates the matching
``torch.nn`` module for each layer (same constructor arguments, same child
names, so the state-dict keys agree) and loads ``model.state_dict()`` into it.
PyTorch is imported here only, on first call: it is a test dependency, never
a runtime one.
"""

from __future__ import annotations

from typing import Any

from xcnn import nn

__all__ = ["to_torch"]


def to_torch(model: nn.Module) -> Any:
    """Return a CPU ``torch.nn.Module`` equal to ``model``, weights and buffers included.

    Supports every layer of ``xcnn.nn`` and the containers ``Sequential`` and
    ``Residual``; the result is in the same train/eval mode as ``model``.
    """
    import torch

    twin = _convert(model, torch)
    state = {k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()}
    twin.load_state_dict(state)
    twin.train(model.training)
    return twin


def _convert(m: nn.Module, torch: Any) -> Any:
    tnn = torch.nn
    name = type(m).__name__
    if isinstance(m, nn.Sequential):
        return tnn.Sequential(*[_convert(child, torch) for child in m])
    if isinstance(m, nn.Residual):
        shortcut = None if m.shortcut is None else _convert(m.shortcut, torch)
        return _torch_residual(torch, _convert(m.block, torch), shortcut)
    if name == "Conv2d":
        return tnn.Conv2d(
            m.in_channels,
            m.out_channels,
            m.kernel_size,
            stride=m.stride,
            padding=m.padding,
            dilation=m.dilation,
            groups=m.groups,
            bias=m.bias is not None,
        )
    if name == "Linear":
        return tnn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    if name in ("MaxPool2d", "AvgPool2d"):
        return getattr(tnn, name)(m.kernel_size, stride=m.stride, padding=m.padding)
    if name == "AdaptiveAvgPool2d":
        return tnn.AdaptiveAvgPool2d(1)
    if name in ("BatchNorm1d", "BatchNorm2d"):
        return getattr(tnn, name)(
            m.num_features,
            eps=m.eps,
            momentum=m.momentum,
            affine=m.affine,
            track_running_stats=m.track_running_stats,
        )
    if name == "LeakyReLU":
        return tnn.LeakyReLU(m.negative_slope)
    if name == "Dropout":
        return tnn.Dropout(m.p)
    if name == "Flatten":
        return tnn.Flatten(m.start_dim, m.end_dim)
    if name in ("ReLU", "Sigmoid", "Tanh"):
        return getattr(tnn, name)()
    raise TypeError(f"to_torch: no PyTorch equivalent known for {name}")


def _torch_residual(torch: Any, block: Any, shortcut: Any) -> Any:
    """A torch module computing ``block(x) + (shortcut(x) if shortcut else x)``."""

    class Residual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = block
            self.shortcut = shortcut

        def forward(self, x: Any) -> Any:
            return self.block(x) + (x if self.shortcut is None else self.shortcut(x))

    return Residual()
