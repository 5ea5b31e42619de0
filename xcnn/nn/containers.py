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

A third, chosen by the model rather than found by type: a ``Sequential`` told
``fold_batchnorm(i)`` runs its ``Conv2d`` at ``i`` and the ``BatchNorm2d`` at ``i + 1``,
in eval mode with no gradient recorded, as one convolution whose weights and bias
take in the normalisation (see :func:`conv_batchnorm`). Training, and eval with
a gradient (a saliency map), run the two layers as they are, and so does anything
inside :func:`unfolded` (code that must see each layer's own output or weights).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, overload

from xcnn.autograd import Tensor
from xcnn.autograd.grad_mode import is_grad_enabled
from xcnn.backends import array_namespace
from xcnn.nn import functional as F
from xcnn.nn.activation import ReLU
from xcnn.nn.batchnorm import BatchNorm2d
from xcnn.nn.conv import Conv2d
from xcnn.nn.linear import Linear
from xcnn.nn.module import Module
from xcnn.nn.pool import MaxPool2d

_folding = threading.local()


@contextmanager
def unfolded() -> Iterator[None]:
    """Within: every declared convolution + batch norm pair runs as its two layers.

    For code that watches the layers rather than the result: ``xcnn.plot.feature_maps``
    records each ``Conv2d``'s own output, ``xcnn.onnx.export`` names every weight by its
    ``state_dict`` key. Per thread; nests.
    """
    previous = getattr(_folding, "off", False)
    _folding.off = True
    try:
        yield
    finally:
        _folding.off = previous


class _WithReLU:
    """A ``Linear`` or ``MaxPool2d`` and its neighbouring ``ReLU``, run as one step."""

    def __init__(self, layer: Linear | MaxPool2d):
        self.layer = layer

    def __call__(self, x: Any) -> Any:
        return self.layer._forward(x, relu=True)


def _folds(first: Module, second: Module) -> bool:
    """Whether ``first, second`` is a convolution and a batch norm that can fold."""
    return (
        type(first) is Conv2d
        and type(second) is BatchNorm2d
        and second.num_features == first.out_channels
        and second.track_running_stats
    )


def _fused_layer(first: Module, second: Module | None) -> Linear | MaxPool2d | None:
    """The layer that takes in the ReLU of the pair ``first, second``, if they fuse."""
    kinds = (type(first), type(second))
    if kinds in ((Linear, ReLU), (MaxPool2d, ReLU)):
        return first
    if kinds == (ReLU, MaxPool2d):
        return second
    return None


class _ConvBatchNormEval:
    """A declared ``Conv2d`` + ``BatchNorm2d`` pair of a ``Sequential``, one step that runs
    :func:`conv_batchnorm`."""

    def __init__(self, conv: Conv2d, bn: BatchNorm2d):
        self.conv = conv
        self.bn = bn

    def __call__(self, x: Any) -> Any:
        return conv_batchnorm(self.conv, self.bn, x)


def conv_batchnorm(conv: Conv2d, bn: BatchNorm2d, x: Any) -> Any:
    """``bn(conv(x))``, for a module's own ``forward``; folded as ``Sequential.fold_batchnorm``.

    In eval mode without a gradient recorded (and outside :func:`unfolded`) the pair
    runs as one convolution with the batch norm folded into its weights and bias.
    With ``s = gamma / sqrt(running_var + eps)`` per output channel::

        bn(conv(x, W) + b) = conv(x, W * s) + (b - running_mean) * s + beta

    so the batch norm's pass over the activations (and its output array) goes away;
    the folded bias rides in the convolution's matmul. The fold is worked out again at
    every call, from the layers' current arrays: a fold kept between calls would go
    stale without notice when an optimizer or ``load_state_dict`` changes a weight or
    a running statistic in place. Values agree with the two layers run one after the
    other to float rounding. Otherwise (training, a gradient wanted, a batch norm
    without running statistics, or an input the fold does not pay for, see
    :func:`_fold_pays`) the two layers run as they are.

    Examples
    --------
    >>> import numpy as np
    >>> import xcnn
    >>> from xcnn import nn
    >>> conv, bn = nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2)
    >>> x = np.ones((1, 1, 4, 4), dtype=np.float32)
    >>> with xcnn.no_grad():
    ...     y = nn.containers.conv_batchnorm(conv.eval(), bn.eval(), x)
    >>> y.shape
    (1, 2, 4, 4)
    """
    if (
        conv.training
        or bn.training
        or is_grad_enabled()
        or getattr(_folding, "off", False)
        or not _folds(conv, bn)
        or not _fold_pays(conv, x)
    ):
        return bn(conv(x))  # also what explains an input the layers refuse
    weight, bias = fold_batchnorm_into_conv(conv, bn)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _fold_pays(conv: Conv2d, x: Any) -> bool:
    """An input the two layers take without complaint (else they run, and raise),
    and large enough for the fold to pay.

    Folding reads and writes the weights (``O * C/groups * KH * KW`` values) where
    the batch norm it replaces makes passes over the output (``N * O * OH * OW``):
    with few output positions and many input channels (ResNet-18's last stages on
    32x32 images, or one image at a time) it costs more than it saves. Measured on
    ResNet-18, batch 32, 32x32: folding every pair was 0.86x to 0.95x the speed of
    the unfolded layers.
    """
    weight = conv.weight.data
    data = x.data if isinstance(x, Tensor) else x
    if not (
        type(data) is type(weight)
        and data.ndim == 4
        and data.shape[1] == conv.in_channels
        and data.dtype == weight.dtype
    ):
        return False
    n, _, h, w = (int(d) for d in data.shape)
    positions = n * h * w // (conv.stride[0] * conv.stride[1])
    return positions >= math.prod(weight.shape[1:])


def fold_batchnorm_into_conv(conv: Conv2d, bn: BatchNorm2d) -> tuple[Any, Any]:
    """The weight and bias of one convolution that computes ``bn(conv(x))`` in eval mode.

    Parameters
    ----------
    conv : Conv2d
        ``out_channels`` equal to ``bn.num_features``.
    bn : BatchNorm2d
        With running statistics (``track_running_stats=True``).

    Returns
    -------
    weight : array, shape (out_channels, in_channels / groups, KH, KW)
        ``conv.weight * s`` per output channel, ``s = gamma / sqrt(running_var + eps)``.
    bias : array, shape (out_channels,)
        ``(conv.bias - running_mean) * s + beta`` (``conv.bias`` 0 when absent).

    Examples
    --------
    >>> from xcnn import nn
    >>> conv, bn = nn.Conv2d(3, 8, 3, bias=False, rng=0), nn.BatchNorm2d(8)
    >>> weight, bias = nn.containers.fold_batchnorm_into_conv(conv, bn)
    >>> weight.shape, bias.shape
    ((8, 3, 3, 3), (8,))
    """
    xp = array_namespace(conv.weight.data)
    # The order of batch_norm_eval's own arithmetic: 1/sqrt, then times gamma.
    scale = 1.0 / xp.sqrt(bn.running_var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight.data
    weight = conv.weight.data * xp.reshape(scale, (-1, 1, 1, 1))
    shift = -bn.running_mean * scale
    if conv.bias is not None:
        shift = conv.bias.data * scale + shift
    if bn.affine:
        shift = shift + bn.bias.data
    return weight, shift


def _run_order(
    modules: Iterable[Module], folds: frozenset[int] = frozenset()
) -> list[Module | _WithReLU | _ConvBatchNormEval]:
    """The steps that run ``modules``: a layer fused with its ReLU (see the top of this
    file) is one step, a convolution and batch norm declared in ``folds`` (by the
    convolution's index) one step, every other module a step of its own."""
    order = list(modules)
    steps: list[Module | _WithReLU | _ConvBatchNormEval] = []
    i = 0
    while i < len(order):
        if i in folds and i + 1 < len(order) and _folds(order[i], order[i + 1]):
            steps.append(_ConvBatchNormEval(order[i], order[i + 1]))
            i += 2
            continue
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

    def fold_batchnorm(self, *indices: int) -> Sequential:
        """Declare convolution + batch norm pairs to run as one convolution in eval mode.

        For each index ``i``, the ``Conv2d`` at ``i`` and the ``BatchNorm2d`` at ``i + 1``
        run, in eval mode when no gradient is recorded (``model.eval()``, or under
        ``xcnn.no_grad()``), as one convolution with the batch norm folded into its
        weights and bias (:func:`fold_batchnorm_into_conv`). Parameters, buffers and
        ``state_dict`` keys stay those of the two layers; training is unchanged.

        Parameters
        ----------
        *indices : int
            Positions of the convolutions.

        Returns
        -------
        Sequential
            ``self``.

        Raises
        ------
        ValueError
            An index does not hold a ``Conv2d`` followed by a ``BatchNorm2d`` with as
            many features as the convolution has output channels.

        Examples
        --------
        >>> from xcnn import nn
        >>> block = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        >>> block.fold_batchnorm(0).eval()[0].out_channels
        8
        """
        modules = list(self._modules.values())
        for i in indices:
            pair = modules[i : i + 2] if isinstance(i, int) and 0 <= i < len(modules) else []
            if len(pair) != 2 or not _folds(*pair):
                found = ", ".join(type(m).__name__ for m in pair) or "nothing"
                raise ValueError(
                    f"Sequential.fold_batchnorm: index {i!r} must hold a Conv2d followed by "
                    f"a BatchNorm2d of its out_channels (with running statistics), found "
                    f"{found}"
                )
        folds = self.__dict__.get("_folds", frozenset())
        object.__setattr__(self, "_folds", folds | frozenset(indices))
        return self

    def forward(self, x: Any) -> Any:
        # The same layers, each ReLU that fuses into its neighbour run inside it, each
        # declared convolution + batch norm pair as one step (see the top of this file).
        for module in self._steps():
            x = module(x)
        return x

    def _steps(self) -> list[Module | _WithReLU | _ConvBatchNormEval]:
        """``_run_order`` of the current modules, worked out again only when they change."""
        key = (tuple(self._modules.values()), self.__dict__.get("_folds", frozenset()), _run_order)
        cached = self.__dict__.get("_order")
        if cached is None or cached[0] != key:
            # _run_order is in the key: xcnn.summary swaps it to see every layer.
            if _run_order is list:
                steps = list(key[0])
            else:
                steps = _run_order(key[0], key[1])
            cached = (key, steps)
            object.__setattr__(self, "_order", cached)
        return cached[1]


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
