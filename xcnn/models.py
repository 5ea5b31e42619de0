"""Ready-made models, built from ``xcnn.nn`` layers with PyTorch-compatible names.

Each builder takes ``rng=`` (an int seed or a ``numpy.random.Generator``;
default: xcnn's generator, see ``xcnn.manual_seed``) and ``dtype=``. Layers draw
their initial weights from that one generator in construction order, so a seed
gives identical weights on every backend.

The first convolution of each model has ``needs_input_grad = False``: nothing upstream
of the input needs its gradient, so backward skips that layer's input gradient (the
largest fold of the model), as PyTorch does for inputs that do not require grad.
``model.backward`` then returns ``None``.
"""

from __future__ import annotations

from typing import Any

from xcnn import backends, nn
from xcnn.ops import output_size

__all__ = ["lenet5", "resnet20", "simple_cnn"]


def lenet5(
    num_classes: int = 10,
    in_channels: int = 1,
    *,
    input_size: int = 28,
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

    Returns
    -------
    Sequential
        Maps ``(N, in_channels, input_size, input_size)`` to logits ``(N, num_classes)``.
    """
    g = backends.host_rng(rng)
    side = output_size(output_size(input_size, 5, 1, 2) // 2, 5, 1, 0) // 2
    if side < 1:
        raise ValueError(f"lenet5: input_size {input_size} is too small (needs at least 12)")
    model = nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2, rng=g, dtype=dtype),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, rng=g, dtype=dtype),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * side * side, 120, rng=g, dtype=dtype),
        nn.ReLU(),
        nn.Linear(120, 84, rng=g, dtype=dtype),
        nn.ReLU(),
        nn.Linear(84, num_classes, rng=g, dtype=dtype),
    )
    return _input_layer_needs_no_grad(model)


def simple_cnn(
    num_classes: int = 10,
    in_channels: int = 1,
    *,
    input_size: int = 28,
    rng: Any = None,
    dtype: str = "float32",
) -> nn.Sequential:
    """The classic two-convolution CNN: conv32-pool-conv64-pool-fc512-dropout 0.5-fc.

    Convolutions are 3x3 with padding 1, so each pool halves the side:
    28 -> 14 -> 7, giving 64 * 7 * 7 = 3136 features into the 512-unit layer.
    """
    g = backends.host_rng(rng)
    side = input_size // 2 // 2
    if side < 1:
        raise ValueError(f"simple_cnn: input_size {input_size} is too small (needs at least 4)")
    model = nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1, rng=g, dtype=dtype),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, rng=g, dtype=dtype),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * side * side, 512, rng=g, dtype=dtype),
        nn.ReLU(),
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
    )
    shortcut = None
    if stride != 1 or in_channels != out_channels:
        # Projection shortcut ("option B"): a strided 1x1 convolution matches the shape.
        shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride, bias=False, rng=g, dtype=dtype),
            nn.BatchNorm2d(out_channels, dtype=dtype),
        )
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
    return _input_layer_needs_no_grad(nn.Sequential(*layers))


def _input_layer_needs_no_grad(model: nn.Sequential) -> nn.Sequential:
    """Mark the model's first layer (a convolution) to skip its input gradient."""
    model[0].needs_input_grad = False
    return model
