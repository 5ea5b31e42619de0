"""Ready-made models, built from ``xcnn.nn`` layers with PyTorch-compatible names.

Each builder takes ``rng=`` (an int seed or a ``numpy.random.Generator``;
default: xcnn's generator, see ``xcnn.manual_seed``) and ``dtype=``. Layers draw
their initial weights from that one generator in construction order, so a seed
gives identical weights on every backend.

The first convolution of each model has ``needs_input_grad = False``: nothing upstream
of the input needs its gradient, so backward skips that layer's input gradient (the
largest fold of the model), as PyTorch does for inputs that do not require grad.
``model.backward`` then returns ``None``.

``lenet5``, ``simple_cnn`` and ``resnet20`` are ``nn.Sequential`` chains. ``resnet18``
and ``se_resnet20`` are ``Module`` subclasses (:class:`ResNet`, :class:`BasicBlock`,
:class:`SEBlock`) whose ``forward`` is ordinary Python over Tensors; they train on the
graph (``loss.backward()``) and, called with arrays, layer-wise (``model.backward``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xcnn import backends, nn
from xcnn.autograd import Tensor
from xcnn.nn import functional as F
from xcnn.nn.containers import conv_batchnorm
from xcnn.ops import output_size

__all__ = [
    "ACTIVATIONS",
    "BasicBlock",
    "ResNet",
    "SEBlock",
    "lenet5",
    "resnet18",
    "resnet20",
    "se_resnet20",
    "simple_cnn",
]


def lenet5(
    num_classes: int = 10,
    in_channels: int = 1,
    *,
    input_size: int = 28,
    activation: str = "relu",
    batch_norm: bool = False,
    rng: Any = None,
    dtype: str = "float32",
) -> nn.Sequential:
    """LeNet-5 with ReLU and max pooling (LeCun et al., 1998, as commonly modernised).

    ``conv5x5 pad 2 -> 6, ReLU, maxpool 2, conv5x5 -> 16, ReLU, maxpool 2,
    flatten, 120, ReLU, 84, ReLU, num_classes``. On 28x28 input the flattened
    size is 16 * 5 * 5 = 400.

    Parameters
    ----------
    num_classes, in_channels : int
    input_size : int
        Height (= width) of the input images: 28 for MNIST, 32 for CIFAR-10.
    activation : {"relu", "leaky_relu", "sigmoid", "tanh"}, default "relu"
        The nonlinearity after every hidden layer (LeCun's original used a scaled tanh).
    batch_norm : bool, default False
        Put a batch norm between each hidden layer and its activation
        (``BatchNorm2d`` after the convolutions, ``BatchNorm1d`` after the hidden
        linear layers); those layers then have no bias, which the norm would cancel.

    Returns
    -------
    Sequential
        Maps ``(N, in_channels, input_size, input_size)`` to logits ``(N, num_classes)``.
    """
    g = backends.host_rng(rng)
    side = output_size(output_size(input_size, 5, 1, 2) // 2, 5, 1, 0) // 2
    if side < 1:
        raise ValueError(f"lenet5: input_size {input_size} is too small (needs at least 12)")
    act = _activation("lenet5", activation)
    block = _hidden_block(batch_norm, act, dtype)
    model = nn.Sequential(
        *block(nn.Conv2d(in_channels, 6, 5, padding=2, bias=not batch_norm, rng=g, dtype=dtype)),
        nn.MaxPool2d(2),
        *block(nn.Conv2d(6, 16, 5, bias=not batch_norm, rng=g, dtype=dtype)),
        nn.MaxPool2d(2),
        nn.Flatten(),
        *block(nn.Linear(16 * side * side, 120, bias=not batch_norm, rng=g, dtype=dtype)),
        *block(nn.Linear(120, 84, bias=not batch_norm, rng=g, dtype=dtype)),
        nn.Linear(84, num_classes, rng=g, dtype=dtype),
    )
    return _input_layer_needs_no_grad(model)


#: The activations ``lenet5`` and ``simple_cnn`` take by name.
ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def _activation(builder: str, name: str) -> type[nn.Module]:
    if name not in ACTIVATIONS:
        raise ValueError(
            f"{builder}: unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]


def _hidden_block(batch_norm: bool, act: type[nn.Module], dtype: str) -> Any:
    """``block(layer)``: ``[layer, act]``, or ``[layer, BatchNorm, act]`` with batch norm."""

    def block(layer: nn.Module) -> list[nn.Module]:
        if not batch_norm:
            return [layer, act()]
        norm = nn.BatchNorm2d if isinstance(layer, nn.Conv2d) else nn.BatchNorm1d
        return [layer, norm(layer.weight.shape[0], dtype=dtype), act()]

    return block


def simple_cnn(
    num_classes: int = 10,
    in_channels: int = 1,
    *,
    input_size: int = 28,
    activation: str = "relu",
    batch_norm: bool = False,
    rng: Any = None,
    dtype: str = "float32",
) -> nn.Sequential:
    """The classic two-convolution CNN: conv32-pool-conv64-pool-fc512-dropout 0.5-fc.

    Convolutions are 3x3 with padding 1, so each pool halves the side:
    28 -> 14 -> 7, giving 64 * 7 * 7 = 3136 features into the 512-unit layer.
    ``activation`` and ``batch_norm`` as for :func:`lenet5`.
    """
    g = backends.host_rng(rng)
    side = input_size // 2 // 2
    if side < 1:
        raise ValueError(f"simple_cnn: input_size {input_size} is too small (needs at least 4)")
    block = _hidden_block(batch_norm, _activation("simple_cnn", activation), dtype)
    model = nn.Sequential(
        *block(nn.Conv2d(in_channels, 32, 3, padding=1, bias=not batch_norm, rng=g, dtype=dtype)),
        nn.MaxPool2d(2),
        *block(nn.Conv2d(32, 64, 3, padding=1, bias=not batch_norm, rng=g, dtype=dtype)),
        nn.MaxPool2d(2),
        nn.Flatten(),
        *block(nn.Linear(64 * side * side, 512, bias=not batch_norm, rng=g, dtype=dtype)),
        nn.Dropout(0.5, rng=g),
        nn.Linear(512, num_classes, rng=g, dtype=dtype),
    )
    return _input_layer_needs_no_grad(model)


def _basic_block(
    in_channels: int, out_channels: int, stride: int, g: Any, dtype: str
) -> nn.Sequential:
    """conv3x3-BN-ReLU-conv3x3-BN plus the shortcut, then ReLU (He et al., 2016)."""
    body = nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False, rng=g, dtype=dtype),
        nn.BatchNorm2d(out_channels, dtype=dtype),
        nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False, rng=g, dtype=dtype),
        nn.BatchNorm2d(out_channels, dtype=dtype),
    ).fold_batchnorm(0, 3)
    shortcut = None
    if stride != 1 or in_channels != out_channels:
        # Projection shortcut ("option B"): a strided 1x1 convolution matches the shape.
        shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride, bias=False, rng=g, dtype=dtype),
            nn.BatchNorm2d(out_channels, dtype=dtype),
        ).fold_batchnorm(0)
    return nn.Sequential(nn.Residual(body, shortcut), nn.ReLU())


def resnet20(
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    rng: Any = None,
    dtype: str = "float32",
) -> nn.Sequential:
    """ResNet-20 for 32x32 images (He et al., 2016, section 4.2).

    A 3x3 stem with 16 channels, then three stages of three basic blocks with
    16, 32 and 64 channels (the second and third stages start with stride 2),
    global average pooling and a linear classifier: 19 convolutions + 1 linear.

    Each convolution declares the batch norm after it as foldable
    (``Sequential.fold_batchnorm``): in eval mode without gradients the pair runs as
    one convolution; ``model.eval()`` is all it takes.
    """
    g = backends.host_rng(rng)
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False, rng=g, dtype=dtype),
        nn.BatchNorm2d(16, dtype=dtype),
        nn.ReLU(),
    ]
    channels = 16
    for stage, width in enumerate((16, 32, 64)):
        for block in range(3):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(_basic_block(channels, width, stride, g, dtype))
            channels = width
    layers += [
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, num_classes, rng=g, dtype=dtype),
    ]
    return _input_layer_needs_no_grad(nn.Sequential(*layers).fold_batchnorm(0))


def _input_layer_needs_no_grad(model: nn.Sequential) -> nn.Sequential:
    """Mark the model's first layer (a convolution) to skip its input gradient."""
    model[0].needs_input_grad = False
    return model


# -- blocks and ResNets written as forward-only Module subclasses -----------------------


class SEBlock(nn.Module):
    """Squeeze-and-excitation: rescale each channel by a gate computed from all of them.

    Hu et al., "Squeeze-and-Excitation Networks" (CVPR 2018)::

        s = mean over (H, W) of x                      (N, C)      squeeze
        s = sigmoid(fc2(relu(fc1(s))))                 (N, C)      excitation
        y = x * s.reshape(N, C, 1, 1)                  (N, C, H, W) scale (broadcast)

    The gradient of the scale reaches both ``x`` directly and, through the gates,
    ``fc1``/``fc2`` and ``x`` again; the graph sums the two paths.

    Parameters
    ----------
    channels : int
        ``C``.
    reduction : int, default 16
        ``fc1`` maps ``C`` to ``max(1, C // reduction)`` units, as in the paper.
    rng : int, numpy.random.Generator or None
        Draws ``fc1`` then ``fc2`` (PyTorch's default ``Linear`` init, with biases as in
        the paper's fully connected layers).
    dtype : str, default "float32"

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn.models import SEBlock
    >>> se = SEBlock(32, reduction=8, rng=0)
    >>> [name for name, _ in se.named_parameters()]
    ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias']
    >>> se(np.ones((2, 32, 4, 4), dtype=np.float32)).shape
    (2, 32, 4, 4)
    """

    def __init__(
        self, channels: int, reduction: int = 16, *, rng: Any = None, dtype: str = "float32"
    ):
        super().__init__()
        if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"SEBlock: reduction must be a positive int, got {reduction!r}")
        g = backends.host_rng(rng)
        self.channels = channels
        self.reduction = reduction
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden, rng=g, dtype=dtype)
        self.fc2 = nn.Linear(hidden, channels, rng=g, dtype=dtype)

    def extra_repr(self) -> str:
        return f"{self.channels}, reduction={self.reduction}"

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"{self._label()}: expected input (N, {self.channels}, H, W), got shape {x.shape}"
            )
        n, c = x.shape[0], x.shape[1]
        s = F.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        s = F.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s.reshape(n, c, 1, 1)


class BasicBlock(nn.Module):
    """The two-convolution residual block of ResNet-18/34 (He et al., 2016), torchvision's names.

    ``relu(bn2(conv2(relu(bn1(conv1(x))))) + identity)``, where ``identity`` is ``x`` or,
    when the block changes the shape, ``downsample(x)`` (a strided 1x1 convolution and
    batch norm, "option B"). With ``se_reduction`` an :class:`SEBlock` named ``se``
    rescales the residual branch before the sum (Hu et al.'s SE-ResNet block).

    Parameters
    ----------
    in_channels, out_channels : int
    stride : int, default 1
        Stride of ``conv1`` and of the shortcut; 2 halves the side.
    se_reduction : int or None, default None
        Add a squeeze-and-excitation block with this reduction.
    rng, dtype
        As for the layers: weights drawn in the order ``conv1, conv2, se, downsample``.

    Notes
    -----
    Parameter names: ``conv1.weight``, ``bn1.*``, ``conv2.weight``, ``bn2.*``,
    ``se.fc1.*``/``se.fc2.*`` (with SE), ``downsample.0.weight``, ``downsample.1.*``
    (when the shape changes). Shapes: ``(N, in_channels, H, W) ->
    (N, out_channels, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        se_reduction: int | None = None,
        rng: Any = None,
        dtype: str = "float32",
    ):
        super().__init__()
        g = backends.host_rng(rng)
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, 3, stride, 1, bias=False, rng=g, dtype=dtype
        )
        self.bn1 = nn.BatchNorm2d(out_channels, dtype=dtype)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False, rng=g, dtype=dtype)
        self.bn2 = nn.BatchNorm2d(out_channels, dtype=dtype)
        self.se = None
        if se_reduction is not None:
            self.se = SEBlock(out_channels, se_reduction, rng=g, dtype=dtype)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False, rng=g, dtype=dtype),
                nn.BatchNorm2d(out_channels, dtype=dtype),
            ).fold_batchnorm(0)
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        # In eval mode without gradients each convolution + batch norm runs as one
        # convolution (nn.containers.conv_batchnorm).
        out = self.relu(conv_batchnorm(self.conv1, self.bn1, x))
        out = conv_batchnorm(self.conv2, self.bn2, out)
        if self.se is not None:
            out = self.se(out)
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A ResNet of :class:`BasicBlock` stages, with torchvision's module names.

    ``conv1, bn1, relu[, maxpool], layer1 ... layerK, avgpool, flatten, fc``. Stage ``i``
    (``layer{i}``) is an ``nn.Sequential`` of ``blocks[i-1]`` blocks of ``widths[i-1]``
    channels; every stage but the first starts with stride 2.

    Parameters
    ----------
    blocks : sequence of int
        Blocks per stage: ``(2, 2, 2, 2)`` is ResNet-18, ``(3, 3, 3)`` ResNet-20.
    widths : sequence of int
        Channels per stage: ``(64, 128, 256, 512)`` (ImageNet) or ``(16, 32, 64)`` (CIFAR).
    num_classes, in_channels : int
    cifar_stem : bool, default False
        ``False``: torchvision's stem, a 7x7 stride-2 convolution and a 3x3 stride-2
        max pool (input side / 4). ``True``: He et al.'s CIFAR stem (section 4.2), one
        3x3 stride-1 convolution and no pool.
    se_reduction : int or None
        Put an :class:`SEBlock` in every block.
    rng, dtype
        Weights drawn from one generator in construction order: ``conv1``, then each
        block, then ``fc``. Every layer starts with PyTorch's default initialisation;
        the builders (:func:`resnet18`) may redraw the convolutions.

    Shapes
    ------
    ``(N, in_channels, H, W) -> (N, num_classes)``.
    """

    def __init__(
        self,
        blocks: Sequence[int],
        widths: Sequence[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        *,
        cifar_stem: bool = False,
        se_reduction: int | None = None,
        rng: Any = None,
        dtype: str = "float32",
    ):
        super().__init__()
        if len(blocks) != len(widths) or not blocks:
            raise ValueError(
                f"ResNet: blocks {tuple(blocks)} and widths {tuple(widths)} must be "
                "non-empty and of the same length (one entry per stage)"
            )
        g = backends.host_rng(rng)
        stem = widths[0]
        if cifar_stem:
            self.conv1 = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False, rng=g, dtype=dtype)
        else:
            self.conv1 = nn.Conv2d(in_channels, stem, 7, 2, 3, bias=False, rng=g, dtype=dtype)
        self.bn1 = nn.BatchNorm2d(stem, dtype=dtype)
        self.relu = nn.ReLU()
        self.maxpool = None if cifar_stem else nn.MaxPool2d(3, 2, 1)
        channels = stem
        self.num_stages = len(blocks)
        for stage, (count, width) in enumerate(zip(blocks, widths, strict=True), start=1):
            layer = nn.Sequential()
            for index in range(count):
                stride = 2 if stage > 1 and index == 0 else 1
                block = BasicBlock(
                    channels, width, stride, se_reduction=se_reduction, rng=g, dtype=dtype
                )
                layer.append(block)
                channels = width
            setattr(self, f"layer{stage}", layer)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes, rng=g, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(conv_batchnorm(self.conv1, self.bn1, x))
        if self.maxpool is not None:
            x = self.maxpool(x)
        for stage in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{stage}")(x)
        x = F.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet18(
    num_classes: int = 1000,
    in_channels: int = 3,
    *,
    rng: Any = None,
    dtype: str = "float32",
) -> ResNet:
    """ResNet-18 (He et al., 2016) exactly as torchvision lays it out.

    Four stages of two :class:`BasicBlock` each, 64-128-256-512 channels, after a 7x7
    stride-2 convolution and a 3x3 stride-2 max pool; global average pooling and
    ``fc``. The state-dict keys are torchvision's (``conv1.weight``, ``bn1.*``,
    ``layer1.0.conv1.weight``, ..., ``layer2.0.downsample.0.weight``, ``fc.weight``),
    so ``model.load_state_dict(torchvision_model.state_dict())`` works, and so does the
    reverse with the arrays wrapped by ``torch.from_numpy``. 11,689,512 parameters with
    1000 classes.

    Initialisation, torchvision's: every convolution ``N(0, 2 / fan_out)``
    (``kaiming_normal_(mode="fan_out", nonlinearity="relu")``), batch norm weight 1 and
    bias 0, ``fc`` PyTorch's ``Linear`` default ``U(-1/sqrt(512), 1/sqrt(512))``. As in
    torchvision, the layers are built with their default initialisation first and the
    convolutions are redrawn afterwards, in module order, from the same generator.

    The side shrinks 32-fold: 224x224 ImageNet input ends in 7x7 maps, 32x32 CIFAR input
    in 1x1 maps, whose batch norms then see one value per image.

    Returns
    -------
    ResNet
        ``(N, in_channels, H, W) -> (N, num_classes)`` logits.
    """
    g = backends.host_rng(rng)
    model = ResNet((2, 2, 2, 2), (64, 128, 256, 512), num_classes, in_channels, rng=g, dtype=dtype)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu", rng=g)
    model.conv1.needs_input_grad = False
    return model


def se_resnet20(
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    reduction: int = 16,
    rng: Any = None,
    dtype: str = "float32",
) -> ResNet:
    """SE-ResNet-20 for 32x32 images: :func:`resnet20` with an SE block in every block.

    He et al.'s CIFAR ResNet-20 (3x3 stem with 16 channels, three stages of three
    basic blocks with 16, 32 and 64 channels) where each block rescales its residual
    branch with an :class:`SEBlock` before the sum (Hu et al., 2018, figure 3). Keys:
    ``conv1.weight``, ``bn1.*``, ``layer1.0.conv1.weight``, ``layer1.0.se.fc1.weight``,
    ``layer2.0.downsample.0.weight``, ..., ``fc.weight``. PyTorch's default
    initialisation throughout, as :func:`resnet20`.

    Parameters
    ----------
    reduction : int, default 16
        SE reduction ratio (16 channels -> 1 hidden unit in the first stage, as in the
        common CIFAR SE-ResNets).
    """
    g = backends.host_rng(rng)
    model = ResNet(
        (3, 3, 3),
        (16, 32, 64),
        num_classes,
        in_channels,
        cifar_stem=True,
        se_reduction=reduction,
        rng=g,
        dtype=dtype,
    )
    model.conv1.needs_input_grad = False
    return model
