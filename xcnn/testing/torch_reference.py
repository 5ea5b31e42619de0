"""Build the PyTorch twin of an xcnn model, with the same weights (an oracle for tests).

``to_torch(model)`` walks the xcnn module tree and builds, for each module, the
``torch.nn`` module that computes the same function, under the same child names, so
the two state dicts have the same keys. It then loads ``model.state_dict()`` into it.
PyTorch is imported here only, on first call: it is a test dependency, never a
runtime one.

A ``Module`` subclass is defined by its ``forward``, which is free-form Python: no
walk of its children can tell what that forward computes. So only the subclasses
known here have twins: xcnn's layers and containers, and the model zoo's
:class:`~xcnn.models.ResNet`, :class:`~xcnn.models.BasicBlock` and
:class:`~xcnn.models.SEBlock`, whose twins are written out below with torchvision's
attribute names and forward.
"""

from __future__ import annotations

import functools
from typing import Any

from xcnn import models, nn

__all__ = ["to_torch"]


def to_torch(model: nn.Module) -> Any:
    """Return a CPU ``torch.nn.Module`` equal to ``model``, weights and buffers included.

    Parameters
    ----------
    model : Module
        Built only from these classes (exactly these: a subclass may override
        ``forward``, so it is not taken for its base):

        * the layers of ``xcnn.nn``: ``Conv2d``, ``Linear``, ``BatchNorm1d``,
          ``BatchNorm2d``, ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``,
          ``ReLU``, ``LeakyReLU``, ``Sigmoid``, ``Tanh``, ``Dropout``, ``Flatten``,
          ``CrossEntropyLoss``, ``MSELoss``;
        * the containers ``Sequential`` and ``Residual``;
        * ``xcnn.models.ResNet``, ``BasicBlock`` and ``SEBlock``, so every model of
          the zoo (``lenet5``, ``simple_cnn``, ``resnet20``, ``se_resnet20``,
          ``resnet18``).

        A ``Module`` subclass of your own has no automatic twin, since its ``forward``
        is arbitrary Python: write the torch module by hand, with the same attribute
        names, and load ``model.state_dict()`` into it.

    Returns
    -------
    torch.nn.Module
        Same state-dict keys, values, dtypes and ``requires_grad`` flags as
        ``model``; each submodule in the train/eval mode of its xcnn counterpart; a
        module that appears twice in ``model`` appears twice as one torch module.
        ``Dropout`` in training mode draws its own masks, so compare such models in
        eval mode.

    Raises
    ------
    TypeError
        For a module of any other class, named with its place in ``model``.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from xcnn import models
    >>> from xcnn.testing import to_torch
    >>> model = models.se_resnet20(reduction=4, rng=0, dtype="float64").eval()
    >>> twin = to_torch(model)
    >>> twin.fc.weight.dtype, twin.training
    (torch.float64, False)
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 16, 16))
    >>> with torch.no_grad():
    ...     expected = twin(torch.from_numpy(x)).numpy()
    >>> bool(np.allclose(model(x), expected, rtol=1e-10, atol=1e-12))
    True
    """
    import torch

    twin = _convert(model, "", torch, {})
    host = model.state_dict()
    tensors = twin.state_dict(keep_vars=True)
    # torch lists a shared module's tensors under each of its names, xcnn lists a
    # shared parameter under its first name only: fill in the other names.
    first_name: dict[int, str] = {}
    for key, tensor in tensors.items():
        first_name.setdefault(id(tensor), key)
    state = {key: torch.from_numpy(value.copy()) for key, value in host.items()}
    for key, tensor in tensors.items():
        if key not in state and first_name[id(tensor)] in state:
            state[key] = state[first_name[id(tensor)]]
        elif key in state and tensor.dtype != state[key].dtype and tensor.is_floating_point():
            # load_state_dict copies into the twin's dtype (torch's default, float32):
            # give the twin xcnn's dtype first, so that float64 weights stay float64.
            tensor.data = tensor.data.to(state[key].dtype)
    twin.load_state_dict(state)
    for name, param in model.named_parameters():
        twin.get_parameter(name).requires_grad_(param.requires_grad)
    return twin


def _convert(m: nn.Module, path: str, torch: Any, done: dict[int, Any]) -> Any:
    """The twin of ``m`` (at ``path`` in the model), converting each module once."""
    if id(m) not in done:
        twin = _twin_of(m, path, torch, done)
        twin.training = m.training  # per module: a model may mix train and eval parts
        done[id(m)] = twin
    return done[id(m)]


def _twin_of(m: nn.Module, path: str, torch: Any, done: dict[int, Any]) -> Any:
    tnn = torch.nn
    cls = type(m)
    graph_twins = _graph_twins(torch)
    if cls is nn.Sequential or cls in graph_twins:
        children = {
            name: _convert(child, f"{path}.{name}" if path else name, torch, done)
            for name, child in m._modules.items()
        }
        if cls is nn.Sequential:
            return tnn.Sequential(*children.values())
        twin = graph_twins[cls](m)
        for name, child in children.items():  # xcnn's order, so the keys' order too
            setattr(twin, name, child)
        return twin
    if cls is nn.Conv2d:
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
    if cls is nn.Linear:
        return tnn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    if cls is nn.MaxPool2d:
        return tnn.MaxPool2d(
            m.kernel_size, stride=m.stride, padding=m.padding, ceil_mode=m.ceil_mode
        )
    if cls is nn.AvgPool2d:
        return tnn.AvgPool2d(
            m.kernel_size,
            stride=m.stride,
            padding=m.padding,
            ceil_mode=m.ceil_mode,
            count_include_pad=m.count_include_pad,
            divisor_override=m.divisor_override,
        )
    if cls is nn.AdaptiveAvgPool2d:
        return tnn.AdaptiveAvgPool2d(m.output_size)
    if cls in (nn.BatchNorm1d, nn.BatchNorm2d):
        return getattr(tnn, cls.__name__)(
            m.num_features,
            eps=m.eps,
            momentum=m.momentum,
            affine=m.affine,
            track_running_stats=m.track_running_stats,
        )
    if cls is nn.LeakyReLU:
        return tnn.LeakyReLU(m.negative_slope)
    if cls is nn.Dropout:
        return tnn.Dropout(m.p)
    if cls is nn.Flatten:
        return tnn.Flatten(m.start_dim, m.end_dim)
    if cls is nn.CrossEntropyLoss:
        weight = m.state_dict().get("weight")
        return tnn.CrossEntropyLoss(
            weight=None if weight is None else torch.from_numpy(weight.copy()),
            ignore_index=m.ignore_index,
            reduction=m.reduction,
            label_smoothing=m.label_smoothing,
        )
    if cls is nn.MSELoss:
        return tnn.MSELoss(reduction=m.reduction)
    if cls in (nn.ReLU, nn.Sigmoid, nn.Tanh):
        return getattr(tnn, cls.__name__)()
    where = f" at {path!r}" if path else ""
    raise TypeError(
        f"to_torch: no PyTorch twin for {cls.__module__}.{cls.__qualname__}{where}. "
        "to_torch knows the layers of xcnn.nn, Sequential, Residual and xcnn.models' "
        "ResNet, BasicBlock and SEBlock (not their subclasses); a Module subclass with "
        "its own forward has no automatic twin: write the torch module by hand with the "
        "same attribute names and load model.state_dict() into it"
    )


@functools.cache
def _graph_twins(torch: Any) -> dict[type, Any]:
    """Torch twins of xcnn's Module subclasses, built from xcnn's module.

    Each twin is created empty, takes the xcnn module's converted children (same
    names, same order) by ``setattr``, and copies only what its forward needs besides
    them. A child that is ``None`` in xcnn (no shortcut, no SE, no max pool) is
    ``None`` here too.
    """
    tnn = torch.nn

    class Residual(tnn.Module):
        """``block(x) + shortcut(x)``, or ``block(x) + x`` without a shortcut."""

        def __init__(self, m: nn.Residual) -> None:
            super().__init__()
            self.shortcut = None

        def forward(self, x: Any) -> Any:
            return self.block(x) + (x if self.shortcut is None else self.shortcut(x))

    class SEBlock(tnn.Module):
        """Squeeze (mean over H, W), excite (fc1, ReLU, fc2, sigmoid), scale."""

        def __init__(self, m: models.SEBlock) -> None:
            super().__init__()

        def forward(self, x: Any) -> Any:
            s = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3))))))
            return x * s[:, :, None, None]

    class BasicBlock(tnn.Module):
        """torchvision.models.resnet.BasicBlock's forward, with xcnn's optional ``se``."""

        def __init__(self, m: models.BasicBlock) -> None:
            super().__init__()
            self.se = None
            self.downsample = None

        def forward(self, x: Any) -> Any:
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if self.se is not None:
                out = self.se(out)
            if self.downsample is not None:
                identity = self.downsample(x)
            # torchvision adds in place (out += identity); out of place is the same sum.
            return self.relu(out + identity)

    class ResNet(tnn.Module):
        """torchvision.models.resnet.ResNet's forward over ``layer1 ... layerK``."""

        def __init__(self, m: models.ResNet) -> None:
            super().__init__()
            self.maxpool = None
            self.num_stages = m.num_stages

        def forward(self, x: Any) -> Any:
            x = self.relu(self.bn1(self.conv1(x)))
            if self.maxpool is not None:
                x = self.maxpool(x)
            for stage in range(1, self.num_stages + 1):
                x = getattr(self, f"layer{stage}")(x)
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return {
        nn.Residual: Residual,
        models.SEBlock: SEBlock,
        models.BasicBlock: BasicBlock,
        models.ResNet: ResNet,
    }
