"""``xcnn.nn.functional``: the layers' math as functions of Tensors, PyTorch's signatures.

``import xcnn.nn.functional as F``. Each function is a ``Function`` (see
``xcnn/autograd/function.py``) over a forward/backward pair of ``xcnn.ops``: the
forward calls the op, the backward calls the op's backward. That pair is the only
copy of the math; the ``nn`` layers call these functions too, in both the graph API
and the layer-wise API.

Arguments may be Tensors or plain arrays of the active backend; the result is a
Tensor, recorded when grad mode is on and an input requires grad.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xcnn import backends
from xcnn.autograd import Tensor
from xcnn.autograd.function import Context, Function
from xcnn.autograd.tensor import as_array
from xcnn.autograd.tensor import flatten as _flatten
from xcnn.backends import array_namespace
from xcnn.ops import activation as _act
from xcnn.ops import batchnorm as _bn
from xcnn.ops import conv as _conv
from xcnn.ops import loss as _loss
from xcnn.ops import pool as _pool
from xcnn.ops._geometry import conv_padding, crop2d, pad2d, pair
from xcnn.ops.dropout import _check_p
from xcnn.ops.dropout import dropout as _dropout
from xcnn.ops.dropout import dropout_backward as _dropout_backward
from xcnn.ops.linear import _check_linear, _linear, _linear_backward

__all__ = [
    "adaptive_avg_pool2d",
    "avg_pool2d",
    "batch_norm",
    "conv2d",
    "cross_entropy",
    "dropout",
    "flatten",
    "leaky_relu",
    "linear",
    "log_softmax",
    "max_pool2d",
    "mse_loss",
    "relu",
    "sigmoid",
    "softmax",
    "tanh",
]


# -- unbatched input and explicit padding ---------------------------------------------------


def _unbatched(input: Any, who: str, run: Callable[[Any], Tensor]) -> Tensor:
    """``run`` on ``input``, a ``(C, H, W)`` input as a batch of one, as torch does.

    The batch axis is added and removed by graph reshapes, so gradients (in both APIs)
    come back in the ``(C, H, W)`` shape.
    """
    ndim = len(as_array(input).shape)
    if ndim == 4:
        return run(input)
    if ndim != 3:
        raise ValueError(
            f"{who}: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, got shape "
            f"{tuple(as_array(input).shape)}"
        )
    x = input if isinstance(input, Tensor) else Tensor(input)
    y = run(x.reshape(1, *x.shape))
    return y.reshape(*y.shape[1:])


class Pad2d(Function):
    """Constant padding of the last two axes, ``before`` on the top/left and ``after`` on
    the bottom/right; backward crops. For what implicit (symmetric) padding cannot do."""

    name = "pad"  # how errors name it

    @staticmethod
    def forward(ctx: Context, x: Any, before: Any, after: Any, value: float = 0.0) -> Any:
        ctx.crop = (before, tuple(int(s) for s in x.shape[-2:]))
        return pad2d(x, before, after, value, xp=array_namespace(x))

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        return crop2d(grad, *ctx.crop)


# -- convolution and linear -------------------------------------------------------------


class Conv2d(Function):
    """``y = conv2d(x, weight) + bias`` (``xcnn.ops.conv2d`` / ``conv2d_backward``)."""

    name = "conv2d"  # how errors name it

    @staticmethod
    def forward(
        ctx: Context,
        x: Any,
        weight: Any,
        bias: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
    ) -> Any:
        # Off NumPy, backward reuses forward's unfolded input instead of unfolding again.
        keep_cols = ctx.needs_input_grad[1] and _conv.reuses_cols(array_namespace(x))
        y = _conv.conv2d(x, weight, bias, stride, padding, dilation, groups, return_cols=keep_cols)
        y, cols = y if keep_cols else (y, None)
        ctx.save_for_backward(x, weight, cols)
        ctx.window = (stride, padding, dilation, groups, bias is not None)
        return y

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, Any, Any]:
        x, weight, cols = ctx.saved_tensors
        stride, padding, dilation, groups, has_bias = ctx.window
        gx, gw, gb = _conv.conv2d_backward(
            grad,
            x,
            weight,
            stride,
            padding,
            dilation,
            groups,
            cols=cols,
            input_grad=ctx.needs_input_grad[0],
            bias=has_bias,
        )
        return gx, gw, gb


def conv2d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> Tensor:
    """2-D convolution over ``(N, C, H, W)`` or ``(C, H, W)``, as ``torch.nn.functional.conv2d``.

    ``padding`` is an int, a pair, ``"valid"`` (none) or ``"same"`` (stride 1 only: the
    output has the input's size; an odd total ``dilation*(k-1)`` puts the extra row or
    column on the bottom/right, as PyTorch does, by padding the input explicitly).

    Examples
    --------
    >>> import numpy as np
    >>> import xcnn
    >>> import xcnn.nn.functional as F
    >>> x = xcnn.tensor(np.ones((1, 1, 3, 3), dtype=np.float32))
    >>> w = xcnn.tensor(np.ones((2, 1, 2, 2), dtype=np.float32), requires_grad=True)
    >>> y = F.conv2d(x, w, padding=1)
    >>> y.shape
    (1, 2, 4, 4)
    >>> y.sum().backward()
    >>> w.grad[0, 0]
    array([[9., 9.],
           [9., 9.]], dtype=float32)
    """
    if isinstance(padding, str):
        kernel = tuple(int(k) for k in as_array(weight).shape[-2:])
        before, after = conv_padding("conv2d", padding, kernel, stride, dilation)
    else:
        before = after = pair(padding, "conv2d: padding")

    def run(x: Any) -> Tensor:
        if after != before:  # "same" with an even dilated kernel: the extra goes last
            extra = (after[0] - before[0], after[1] - before[1])
            x = Pad2d.apply(x, (0, 0), extra)
        return Conv2d.apply(x, weight, bias, stride, before, dilation, groups)

    return _unbatched(input, "conv2d", run)


class Linear(Function):
    """``y = x W^T + b``, with ``relu=True`` also the ReLU after it, in one pass."""

    name = "linear"  # how errors name it

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any, bias: Any, relu: bool = False) -> Any:
        _check_linear(x, weight, bias, "linear")
        y = _linear(x, weight, bias, relu)
        # The fused ReLU's backward needs its output's sign; y is the next layer's input
        # anyway, so keeping it costs no memory.
        ctx.save_for_backward(x, weight, y if relu else None)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, Any, Any]:
        x, weight, relu_output = ctx.saved_tensors
        return _linear_backward(grad, x, weight, ctx.has_bias, relu_output)


def linear(input: Any, weight: Any, bias: Any = None) -> Tensor:
    """``input @ weight.T + bias``, as ``torch.nn.functional.linear`` (weight ``(out, in)``)."""
    return Linear.apply(input, weight, bias)


# -- activations -------------------------------------------------------------------------


class ReLU(Function):
    name = "relu"  # how errors name it

    @staticmethod
    def forward(ctx: Context, x: Any) -> Any:
        y = _act.relu(x)
        ctx.save_for_backward(x)
        return y

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        (x,) = ctx.saved_tensors
        return _act.relu_backward(grad, x)


class LeakyReLU(Function):
    name = "leaky_relu"  # how errors name it

    @staticmethod
    def forward(ctx: Context, x: Any, negative_slope: float = 0.01) -> Any:
        ctx.save_for_backward(x)
        ctx.slope = negative_slope
        return _act.leaky_relu(x, negative_slope)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        (x,) = ctx.saved_tensors
        return _act.leaky_relu_backward(grad, x, ctx.slope)


class Sigmoid(Function):
    name = "sigmoid"  # how errors name it

    @staticmethod
    def forward(ctx: Context, x: Any) -> Any:
        y = _act.sigmoid(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        (y,) = ctx.saved_tensors
        return _act.sigmoid_backward(grad, y)


class Tanh(Function):
    name = "tanh"  # how errors name it

    @staticmethod
    def forward(ctx: Context, x: Any) -> Any:
        y = _act.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        (y,) = ctx.saved_tensors
        return _act.tanh_backward(grad, y)


def relu(input: Any) -> Tensor:
    """``max(input, 0)`` elementwise."""
    return ReLU.apply(input)


def leaky_relu(input: Any, negative_slope: float = 0.01) -> Tensor:
    """``input`` where positive, ``negative_slope * input`` elsewhere."""
    return LeakyReLU.apply(input, negative_slope=_act._slope(negative_slope, "leaky_relu"))


def sigmoid(input: Any) -> Tensor:
    """``1 / (1 + exp(-input))``, without overflow."""
    return Sigmoid.apply(input)


def tanh(input: Any) -> Tensor:
    return Tanh.apply(input)


class Softmax(Function):
    """``y = softmax(x)``; ``gx = y * (g - sum(g * y))`` along ``dim``."""

    name = "softmax"  # how errors name it

    @staticmethod
    def forward(ctx: Context, x: Any, dim: int = -1) -> Any:
        y = _loss.softmax(x, axis=dim)
        ctx.save_for_backward(y)
        ctx.dim = dim
        return y

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        (y,) = ctx.saved_tensors
        xp = array_namespace(y)
        return y * (grad - xp.sum(grad * y, axis=ctx.dim, keepdims=True))


class LogSoftmax(Function):
    """``y = log_softmax(x)``; ``gx = g - exp(y) * sum(g)`` along ``dim``."""

    name = "log_softmax"  # how errors name it

    @staticmethod
    def forward(ctx: Context, x: Any, dim: int = -1) -> Any:
        y = _loss.log_softmax(x, axis=dim)
        ctx.save_for_backward(y)
        ctx.dim = dim
        return y

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        (y,) = ctx.saved_tensors
        xp = array_namespace(y)
        return grad - xp.exp(y) * xp.sum(grad, axis=ctx.dim, keepdims=True)


def _check_dim(who: str, input: Any, dim: int) -> None:
    ndim = len(as_array(input).shape)
    if isinstance(dim, bool) or not isinstance(dim, int) or not -ndim <= dim < ndim:
        raise IndexError(
            f"{who}: dim {dim!r} is out of range for an input of shape "
            f"{tuple(as_array(input).shape)} (valid: {-ndim} to {ndim - 1})"
        )


def softmax(input: Any, dim: int = -1) -> Tensor:
    """Softmax along ``dim`` (PyTorch requires ``dim``; xcnn defaults to the last axis)."""
    _check_dim("softmax", input, dim)
    return Softmax.apply(input, dim=dim)


def log_softmax(input: Any, dim: int = -1) -> Tensor:
    """``log(softmax(input))`` along ``dim``, computed stably."""
    _check_dim("log_softmax", input, dim)
    return LogSoftmax.apply(input, dim=dim)


# -- pooling -------------------------------------------------------------------------------


class MaxPool2d(Function):
    """Max pooling; with ``relu=True`` also a ReLU next to it (same values either order)."""

    name = "max_pool2d"  # how errors name it

    @staticmethod
    def forward(
        ctx: Context,
        x: Any,
        kernel_size: Any,
        stride: Any,
        padding: Any,
        relu: bool = False,
        ceil_mode: bool = False,
    ) -> Any:
        window = (kernel_size, stride, padding)
        if not ctx.needs_input_grad[0]:  # nothing to route a gradient to: skip the argmax
            return _pool.max_pool2d(
                x, *window, ceil_mode=ceil_mode, return_indices=False, relu=relu
            )
        y, indices = _pool.max_pool2d(x, *window, ceil_mode=ceil_mode, relu=relu)
        ctx.save_for_backward(indices, y if relu else None)
        ctx.meta = (tuple(x.shape), window, ceil_mode)
        return y

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        indices, relu_output = ctx.saved_tensors
        shape, window, ceil_mode = ctx.meta
        return _pool.max_pool2d_backward(
            grad, indices, shape, *window, ceil_mode=ceil_mode, relu_output=relu_output
        )


def check_max_pool_options(who: str, dilation: Any, return_indices: Any) -> None:
    """Refuse the torch max-pool options xcnn does not have, naming them."""
    if dilation not in (1, (1, 1), [1, 1]) or isinstance(dilation, bool):
        raise ValueError(
            f"{who}: dilation={dilation!r} is not supported (xcnn's max pooling is "
            "undilated); use dilation=1"
        )
    if return_indices is not False:
        raise ValueError(
            f"{who}: return_indices={return_indices!r} is not supported (xcnn's indices "
            "are window offsets, not torch's flat positions); use return_indices=False"
        )


def max_pool2d(
    input: Any,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Tensor:
    """2-D max pooling over ``(N, C, H, W)`` or ``(C, H, W)``, torch's signature.

    The gradient of a window goes to its first maximum. ``ceil_mode`` rounds the output
    size up (PyTorch's rule); ``dilation`` other than 1 and ``return_indices=True`` are
    refused with a ``ValueError``.
    """
    check_max_pool_options("max_pool2d", dilation, return_indices)
    return _unbatched(
        input,
        "max_pool2d",
        lambda x: MaxPool2d.apply(x, kernel_size, stride, padding, ceil_mode=ceil_mode),
    )


class AvgPool2d(Function):
    name = "avg_pool2d"  # how errors name it

    @staticmethod
    def forward(
        ctx: Context,
        x: Any,
        kernel_size: Any,
        stride: Any,
        padding: Any,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> Any:
        options = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
        ctx.meta = (tuple(x.shape), options)
        return _pool.avg_pool2d(x, *options)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        shape, options = ctx.meta
        return _pool.avg_pool2d_backward(grad, shape, *options)


def avg_pool2d(
    input: Any,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Tensor:
    """2-D average pooling over ``(N, C, H, W)`` or ``(C, H, W)``, torch's options.

    Zero padding is counted in the divisor unless ``count_include_pad=False``;
    ``divisor_override`` replaces the divisor; ``ceil_mode`` rounds the output size up.
    """
    options = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    return _unbatched(input, "avg_pool2d", lambda x: AvgPool2d.apply(x, *options))


class AdaptiveAvgPool2d(Function):
    name = "adaptive_avg_pool2d"  # how errors name it

    @staticmethod
    def forward(ctx: Context, x: Any, output_size: Any = 1) -> Any:
        ctx.meta = (tuple(x.shape), output_size)
        return _pool.adaptive_avg_pool2d(x, output_size)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        shape, output_size = ctx.meta
        return _pool.adaptive_avg_pool2d_backward(grad, shape, output_size)


def adaptive_avg_pool2d(input: Any, output_size: Any) -> Tensor:
    """Average pooling to ``output_size`` (int, or a pair of ints or ``None``), PyTorch's bins.

    ``None`` keeps that input size; ``(N, C, H, W)`` or ``(C, H, W)`` input.
    """
    return _unbatched(
        input,
        "adaptive_avg_pool2d",
        lambda x: AdaptiveAvgPool2d.apply(x, output_size=output_size),
    )


# -- dropout and batch norm ------------------------------------------------------------------


class Dropout(Function):
    name = "dropout"  # how errors name it

    @staticmethod
    def forward(ctx: Context, x: Any, p: float, generator: Any) -> Any:
        y, mask = _dropout(x, p, generator)
        ctx.save_for_backward(mask)
        return y

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        (mask,) = ctx.saved_tensors
        return _dropout_backward(grad, mask)


def dropout(input: Any, p: float = 0.5, training: bool = True, *, generator: Any = None) -> Tensor:
    """Zero elements with probability ``p`` and scale the rest by ``1/(1-p)`` when training.

    ``generator`` (an ``xcnn.backends.Generator``) draws the mask; by default a new one
    seeded from xcnn's generator (``xcnn.manual_seed``).
    """
    p = _check_p(p, "dropout")
    if not training or p == 0.0:
        # The input itself: a new Tensor over the same array would have a version
        # counter of its own, and in-place writes through it would go unnoticed.
        return input if isinstance(input, Tensor) else Tensor(input)
    return Dropout.apply(input, p=p, generator=generator or backends.Generator())


class BatchNormTrain(Function):
    """Normalise with the batch's statistics; ``update(cache)`` moves the running ones."""

    name = "batch_norm"  # how errors name it

    @staticmethod
    def forward(
        ctx: Context,
        x: Any,
        weight: Any,
        bias: Any,
        eps: float = 1e-5,
        update: Callable[[Any], None] | None = None,
    ) -> Any:
        y, cache = _bn.batch_norm_train(x, weight, bias, eps)
        if update is not None:
            update(cache)
        ctx.save_for_backward(weight, *cache)
        return y

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, Any, Any]:
        weight, *cache = ctx.saved_tensors
        return _bn.batch_norm_backward(grad, _bn.BatchNormCache(*cache), weight)


class BatchNormEval(Function):
    """Normalise with fixed running statistics."""

    name = "batch_norm"  # how errors name it

    @staticmethod
    def forward(
        ctx: Context,
        x: Any,
        weight: Any,
        bias: Any,
        running_mean: Any = None,
        running_var: Any = None,
        eps: float = 1e-5,
    ) -> Any:
        ctx.save_for_backward(x, weight, running_mean, running_var)
        ctx.eps = eps
        return _bn.batch_norm_eval(x, running_mean, running_var, weight, bias, eps)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, Any, Any]:
        x, weight, mean, var = ctx.saved_tensors
        return _bn.batch_norm_eval_backward(grad, x, mean, var, weight, ctx.eps)


def batch_norm(
    input: Any,
    running_mean: Any,
    running_var: Any,
    weight: Any = None,
    bias: Any = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Batch normalization, as ``torch.nn.functional.batch_norm``.

    In training (or without running statistics) the batch's own statistics normalise
    the input, and ``running_mean``/``running_var`` (arrays, when given) are updated in
    place with ``momentum``; otherwise the running statistics are used.
    """
    mean, var = as_array(running_mean), as_array(running_var)
    if (mean is None) != (var is None):
        raise ValueError(
            "batch_norm: give both running_mean and running_var, or neither (got "
            f"running_mean={'None' if mean is None else 'an array'}, "
            f"running_var={'None' if var is None else 'an array'})"
        )
    _bn._check("batch_norm", as_array(input), running_mean=mean, running_var=var)
    if training or mean is None:
        _bn.check_batch("batch_norm", tuple(as_array(input).shape))
        update = None
        if mean is not None:

            def update(cache: Any) -> None:
                new_mean, new_var = _bn.batch_norm_update_running(mean, var, cache, momentum)
                mean[...] = new_mean
                var[...] = new_var

        return BatchNormTrain.apply(input, weight, bias, eps=eps, update=update)
    return BatchNormEval.apply(input, weight, bias, running_mean=mean, running_var=var, eps=eps)


# -- losses --------------------------------------------------------------------------------


class CrossEntropy(Function):
    """Softmax cross-entropy from logits (fused and stable), PyTorch's options."""

    name = "cross_entropy"  # how errors name it

    @staticmethod
    def forward(
        ctx: Context,
        logits: Any,
        targets: Any,
        weight: Any = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        who: str = "cross_entropy",
    ) -> Any:
        options = (weight, ignore_index, reduction, label_smoothing)
        _loss._check_cross_entropy(logits, targets, who, *options)
        loss, cache = _loss._softmax_cross_entropy(logits, targets, *options)
        ctx.cache = cache
        return loss

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, None]:
        return _loss.softmax_cross_entropy_backward(ctx.cache, grad), None


def _no_grad_for(value: Any, name: str, who: str) -> None:
    if isinstance(value, Tensor) and value.requires_grad:
        raise ValueError(
            f"{who}: {name} requires grad, but xcnn does not differentiate the loss with "
            f"respect to its {name}; pass {name}.detach()"
        )


def cross_entropy(
    input: Any,
    target: Any,
    weight: Any = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Cross-entropy of ``softmax(input)`` and ``target``, as torch's ``F.cross_entropy``.

    Shapes: ``input (N, C)`` logits; ``target (N,)`` integers in ``[0, C)`` (or
    ``ignore_index``) or ``(N, C)`` class probabilities in the input's dtype; ``weight
    (C,)``. The loss is ``()``, or ``(N,)`` for ``reduction="none"``. The math is in
    ``xcnn.ops.softmax_cross_entropy``. The options after ``weight`` are keyword-only:
    torch's deprecated ``size_average``/``reduce`` sit between them positionally.

    Examples
    --------
    >>> import numpy as np
    >>> import xcnn
    >>> import xcnn.nn.functional as F
    >>> logits = xcnn.tensor(np.zeros((2, 4)), requires_grad=True)
    >>> F.cross_entropy(logits, np.array([1, -100])).item()  # the ignored row adds nothing
    1.3862943611198906
    """
    _loss._check_reduction(reduction, "cross_entropy")
    _no_grad_for(target, "target", "cross_entropy")
    _no_grad_for(weight, "weight", "cross_entropy")
    return CrossEntropy.apply(
        input,
        as_array(target),
        weight=as_array(weight),
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
    )


class MSE(Function):
    name = "mse_loss"  # how errors name it

    @staticmethod
    def forward(
        ctx: Context, x: Any, target: Any, reduction: str = "mean", who: str = "mse_loss"
    ) -> Any:
        _loss._check_reduction(reduction, who)
        target = _loss._check_mse(x, target, who)
        loss, cache = _loss._mse_loss(x, target, reduction)
        ctx.cache = cache
        return loss

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, Any]:
        gx = _loss.mse_loss_backward(ctx.cache, grad)
        gt = -gx if ctx.needs_input_grad[1] else None
        return gx, gt


def mse_loss(input: Any, target: Any, *, reduction: str = "mean") -> Tensor:
    """``(input - target)**2``: its mean, its sum, or elementwise (``reduction="none"``).

    ``reduction`` is keyword-only: torch's third and fourth positional arguments are the
    deprecated ``size_average`` and ``reduce``, which xcnn does not have.
    """
    _loss._check_reduction(reduction, "mse_loss")
    return MSE.apply(input, target, reduction=reduction)


def flatten(input: Any, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge dimensions ``start_dim..end_dim`` into one, as ``torch.flatten``."""
    return _flatten(input if isinstance(input, Tensor) else Tensor(input), start_dim, end_dim)
