"""Containers: ``Sequential`` chains layers, ``Residual`` adds a skip connection.

Their backward is the graph's: the chain in reverse, and a sum where the residual
branches meet::

    Sequential:  y = f_n(...f_1(x))          gx = f_1'(...f_n'(gy))
    Residual:    y = block(x) + s(x)         gx = block'(gy) + s'(gy)   (s = identity: gy)

Two fusions, exact in value and in gradient, run a layer and the ``ReLU`` next to
it as one step: ``Linear`` then ``ReLU`` (``linear(..., relu=True)``), and
``MaxPool2d`` with a ``ReLU`` directly before or after it (``max_pool2d(...,
relu=True)``). The layer clamps its own output while it is in cache, and its graph
node keeps it to mask the gradient in backward, so the ReLU costs no pass of its own and no
module call. For the pool, the order does not matter: ReLU is monotone, so
``maxpool(relu(x)) == relu(maxpool(x))``; the first maximum of a window is the same
element in ``x`` and in ``relu(x)`` whenever the window's maximum is positive, and
when it is not, both orders give the window a zero gradient. Run after the pool,
the ReLU touches a quarter of the data (2x2 pooling).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from xcnn.nn.activation import ReLU
from xcnn.nn.linear import Linear
from xcnn.nn.module import Module
from xcnn.nn.pool import MaxPool2d


class _WithReLU:
    """A ``Linear`` or ``MaxPool2d`` and its neighbouring ``ReLU``, run as one step."""

    def __init__(self, layer: Linear | MaxPool2d):
        self.layer = layer

    def __call__(self, x: Any) -> Any:
        return self.layer._forward(x, relu=True)


def _fused_layer(first: Module, second: Module | None) -> Linear | MaxPool2d | None:
    """The layer that takes in the ReLU of the pair ``first, second``, if they fuse."""
    kinds = (type(first), type(second))
    if kinds in ((Linear, ReLU), (MaxPool2d, ReLU)):
        return first
    if kinds == (ReLU, MaxPool2d):
        return second
    return None


def _run_order(modules: Iterable[Module]) -> list[Module | _WithReLU]:
    """The steps that run ``modules``: a layer fused with its ReLU (see the top of this
    file) is one step, every other module a step of its own."""
    order = list(modules)
    steps: list[Module | _WithReLU] = []
    i = 0
    while i < len(order):
        layer = _fused_layer(order[i], order[i + 1] if i + 1 < len(order) else None)
        if layer is not None:
            steps.append(_WithReLU(layer))
            i += 2
        else:
            steps.append(order[i])
            i += 1
    return steps


class Sequential(Module):
    """Apply modules in order; parameters are named ``"<index>.<name>"`` as in PyTorch.

    Examples
    --------
    >>> from xcnn import nn
    >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> [name for name, _ in model.named_parameters()]
    ['0.weight', '0.bias', '2.weight', '2.bias']
    """

    def __init__(self, *modules: Module):
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module: Module) -> Sequential:
        """Add ``module`` at the end; returns ``self``."""
        if not isinstance(module, Module):
            raise TypeError(
                f"Sequential expects xcnn.nn.Module instances, got {type(module).__name__} "
                f"at position {len(self)}"
            )
        setattr(self, str(len(self._modules)), module)
        return self

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __getitem__(self, index: int) -> Module:
        modules = list(self._modules.values())
        try:
            return modules[index]
        except IndexError:
            raise IndexError(
                f"Sequential has {len(modules)} modules, index {index} is out of range"
            ) from None

    def forward(self, x: Any) -> Any:
        # The same layers, each ReLU that fuses into its neighbour run inside it (see
        # the top of this file).
        for module in _run_order(self._modules.values()):
            x = module(x)
        return x


class Residual(Module):
    """``y = block(x) + shortcut(x)``, with the identity when ``shortcut`` is None.

    Parameters
    ----------
    block : Module
        The residual branch; its output must have the shortcut's shape.
    shortcut : Module, optional
        E.g. a strided 1x1 ``Conv2d`` (+ ``BatchNorm2d``) when the block changes shape.
    """

    def __init__(self, block: Module, shortcut: Module | None = None):
        super().__init__()
        self.block = block
        self.shortcut = shortcut

    def forward(self, x: Any) -> Any:
        y = self.block(x)
        skip = x if self.shortcut is None else self.shortcut(x)
        if tuple(y.shape) != tuple(skip.shape):
            raise ValueError(
                f"Residual: the block gives shape {tuple(y.shape)} but the shortcut gives "
                f"{tuple(skip.shape)}; pass a shortcut module that matches the block's output"
            )
        return y + skip
