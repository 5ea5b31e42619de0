"""Containers: ``Sequential`` chains layers, ``Residual`` adds a skip connection.

Backward runs the chain in reverse::

    Sequential:  y = f_n(...f_1(x))          gx = f_1'(...f_n'(gy))
    Residual:    y = block(x) + s(x)         gx = block'(gy) + s'(gy)   (s = identity: gy)

One fusion, exact in value and in gradient: ``Sequential`` runs a ``MaxPool2d``
and a ``ReLU`` directly before or after it as one op, ``max_pool2d(..., relu=True)``.
ReLU is monotone, so ``maxpool(relu(x)) == relu(maxpool(x))``; the first maximum of
a window is the same element in ``x`` and in ``relu(x)`` whenever the window's
maximum is positive, and when it is not, both orders give the window a zero
gradient. Fused, the ReLU touches only the pooled output (a quarter of the data
for 2x2 pooling), forward and backward, inside the pool's own pass over it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from xcnn.nn.activation import ReLU
from xcnn.nn.module import Module
from xcnn.nn.pool import MaxPool2d


class _PoolReLU:
    """A ``MaxPool2d`` and its neighbouring ``ReLU``, run as one step (see the top of this file)."""

    def __init__(self, pool: MaxPool2d):
        self.pool = pool

    def __call__(self, x: Any) -> Any:
        return self.pool._pool(x, relu=True)

    def backward(self, grad_output: Any) -> Any:
        return self.pool.backward(grad_output)


def _run_order(modules: Iterable[Module]) -> list[Module | _PoolReLU]:
    """The steps that run ``modules``: each ``MaxPool2d`` with a ``ReLU`` right before
    or after it becomes one fused step, every other module a step of its own."""
    order = list(modules)
    steps: list[Module | _PoolReLU] = []
    i = 0
    while i < len(order):
        pair = {type(m) for m in order[i : i + 2]}
        if pair == {ReLU, MaxPool2d} and i + 1 < len(order):
            pool = order[i] if type(order[i]) is MaxPool2d else order[i + 1]
            steps.append(_PoolReLU(pool))
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
        # The same layers, with MaxPool2d and a neighbouring ReLU as one step (see the
        # top of this file); backward walks the same steps in reverse.
        for module in _run_order(self._modules.values()):
            x = module(x)
        return x

    def backward(self, grad_output: Any) -> Any:
        for module in reversed(_run_order(self._modules.values())):
            grad_output = module.backward(grad_output)
        return grad_output


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

    def backward(self, grad_output: Any) -> Any:
        grad_block = self.block.backward(grad_output)
        if self.shortcut is None:
            return grad_block + grad_output
        return grad_block + self.shortcut.backward(grad_output)
