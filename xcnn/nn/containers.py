"""Containers: ``Sequential`` chains layers, ``Residual`` adds a skip connection,
``ModuleList`` holds layers for a ``forward`` of one's own, ``Identity`` passes through.

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
from typing import Any, overload

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


class Identity(Module):
    """``y = x``: a placeholder layer, as ``torch.nn.Identity`` (arguments are ignored).

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn import nn
    >>> nn.Identity()(np.array([1.0, 2.0]))
    array([1., 2.])
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__()

    def forward(self, x: Any) -> Any:
        return x


class ModuleList(Module):
    """A list of modules whose parameters are registered, as ``torch.nn.ModuleList``.

    Indexable (a slice gives a ``ModuleList``), iterable, with ``append``, ``extend``,
    ``insert`` and ``del``; parameters are named ``"<index>.<name>"`` as in PyTorch. It
    has no ``forward``: a module's own ``forward`` calls its items.

    Examples
    --------
    >>> from xcnn import nn
    >>> layers = nn.ModuleList([nn.Linear(4, 4) for _ in range(2)])
    >>> len(layers.append(nn.ReLU()))
    3
    >>> [name for name, _ in layers.named_parameters()]
    ['0.weight', '0.bias', '1.weight', '1.bias']
    """

    def __init__(self, modules: Iterable[Module] | None = None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def _check(self, module: Any, position: int) -> Module:
        if not isinstance(module, Module):
            raise TypeError(
                f"ModuleList expects xcnn.nn.Module instances, got {type(module).__name__} "
                f"at position {position}"
            )
        return module

    def _index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(
                f"ModuleList indices must be integers or slices, got {type(index).__name__}"
            )
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"ModuleList has {n} modules, index {index} is out of range")
        return index % n

    def _renumber(self, modules: list[Module]) -> None:
        for name in list(self._modules):
            delattr(self, name)
            self._modules.pop(name, None)
        for i, module in enumerate(modules):
            setattr(self, str(i), module)

    def append(self, module: Module) -> ModuleList:
        """Add ``module`` at the end; returns ``self``."""
        setattr(self, str(len(self)), self._check(module, len(self)))
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        """Append each of ``modules``; returns ``self``."""
        if isinstance(modules, Module) and not isinstance(modules, (ModuleList, Sequential)):
            raise TypeError(
                f"ModuleList.extend expects an iterable of modules, got {type(modules).__name__}"
            )
        for module in list(modules):
            self.append(module)
        return self

    def insert(self, index: int, module: Module) -> None:
        """Insert ``module`` before position ``index`` (list semantics)."""
        modules = list(self)
        modules.insert(index, self._check(module, index))
        self._renumber(modules)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(list(self._modules.values()))

    def __iadd__(self, modules: Iterable[Module]) -> ModuleList:
        return self.extend(modules)

    @overload
    def __getitem__(self, index: int) -> Module: ...

    @overload
    def __getitem__(self, index: slice) -> ModuleList: ...

    def __getitem__(self, index: int | slice) -> Module | ModuleList:
        if isinstance(index, slice):
            return ModuleList(list(self._modules.values())[index])
        return list(self._modules.values())[self._index(index)]

    def __setitem__(self, index: int, module: Module) -> None:
        i = self._index(index)
        modules = list(self)
        modules[i] = self._check(module, i)
        self._renumber(modules)  # keeps the registration order that iteration follows

    def __delitem__(self, index: int | slice) -> None:
        modules = list(self)
        if isinstance(index, slice):
            del modules[index]
        else:
            del modules[self._index(index)]
        self._renumber(modules)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            "ModuleList has no forward(): call its modules in a forward() of your own, "
            "or use nn.Sequential to chain them"
        )
