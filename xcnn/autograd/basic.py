"""The Functions behind ``Tensor``'s operators and methods: arithmetic, reductions, shapes.

Each is a forward/backward pair on arrays, written against the array API standard.
Broadcasting: an input that was broadcast in forward gets its gradient summed back
over the broadcast axes (``unbroadcast``). Python numbers are passed through as
numbers, so ``t * 0.5`` keeps ``t``'s dtype.
"""

from __future__ import annotations

import math
from typing import Any

from xcnn.autograd.function import Context, Function
from xcnn.backends import array_namespace

__all__ = [
    "Abs",
    "Add",
    "Cast",
    "Cat",
    "Clamp",
    "Div",
    "Exp",
    "GetItem",
    "Log",
    "MatMul",
    "Max",
    "Mean",
    "Mul",
    "Neg",
    "Permute",
    "Pow",
    "Reshape",
    "Sqrt",
    "Stack",
    "Sub",
    "Sum",
    "unbroadcast",
]


def unbroadcast(grad: Any, shape: tuple[int, ...]) -> Any:
    """Sum ``grad`` over the axes along which an input of ``shape`` was broadcast."""
    if tuple(grad.shape) == shape:
        return grad
    xp = array_namespace(grad)
    extra = len(grad.shape) - len(shape)
    if extra:
        grad = xp.sum(grad, axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = xp.sum(grad, axis=axes, keepdims=True)
    return grad


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.shape) if hasattr(value, "shape") else ()


class Add(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, b: Any) -> Any:
        ctx.shapes = (_shape(a), _shape(b))
        return a + b

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, Any]:
        sa, sb = ctx.shapes
        ga = unbroadcast(grad, sa) if ctx.needs_input_grad[0] else None
        gb = unbroadcast(grad, sb) if ctx.needs_input_grad[1] else None
        return ga, gb


class Sub(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, b: Any) -> Any:
        ctx.shapes = (_shape(a), _shape(b))
        return a - b

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, Any]:
        sa, sb = ctx.shapes
        ga = unbroadcast(grad, sa) if ctx.needs_input_grad[0] else None
        gb = unbroadcast(-grad, sb) if ctx.needs_input_grad[1] else None
        return ga, gb


class Mul(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, b: Any) -> Any:
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, Any]:
        a, b = ctx.saved_tensors
        ga = unbroadcast(grad * b, _shape(a)) if ctx.needs_input_grad[0] else None
        gb = unbroadcast(grad * a, _shape(b)) if ctx.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, b: Any) -> Any:
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, Any]:
        a, b = ctx.saved_tensors
        ga = unbroadcast(grad / b, _shape(a)) if ctx.needs_input_grad[0] else None
        gb = unbroadcast(-grad * a / (b * b), _shape(b)) if ctx.needs_input_grad[1] else None
        return ga, gb


class Neg(Function):
    @staticmethod
    def forward(ctx: Context, a: Any) -> Any:
        return -a

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        return -grad


class Pow(Function):
    """``a ** b`` for a tensor and a number (either side) or two tensors."""

    @staticmethod
    def forward(ctx: Context, a: Any, b: Any) -> Any:
        y = a**b
        ctx.save_for_backward(a, b, y)
        return y

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, Any]:
        a, b, y = ctx.saved_tensors
        ga = gb = None
        if ctx.needs_input_grad[0]:
            # d(a^b)/da = b a^(b-1), written without a^(b-1) so that b = 0 stays finite.
            base = b * a ** (b - 1) if not isinstance(b, (int, float)) or b != 0 else 0.0 * a
            ga = unbroadcast(grad * base, _shape(a))
        if ctx.needs_input_grad[1]:
            xp = array_namespace(y)
            log_a = xp.log(a) if hasattr(a, "shape") else math.log(a)
            gb = unbroadcast(grad * y * log_a, _shape(b))
        return ga, gb


class MatMul(Function):
    """``a @ b`` with the standard's rules: 1-D operands, batch broadcasting."""

    @staticmethod
    def forward(ctx: Context, a: Any, b: Any) -> Any:
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, Any]:
        a, b = ctx.saved_tensors
        xp = array_namespace(grad)
        # Promote 1-D operands to matrices, as matmul does, and undo it at the end.
        a2 = a[None, ...] if a.ndim == 1 else a
        b2 = b[..., None] if b.ndim == 1 else b
        g2 = grad
        # b's axis first: for vector @ vector the gradient is 0-d, and axis=-2 needs 1-D.
        if b.ndim == 1:
            g2 = xp.expand_dims(g2, axis=-1)
        if a.ndim == 1:
            g2 = xp.expand_dims(g2, axis=-2)
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = g2 @ xp.matrix_transpose(b2)
            ga = unbroadcast(ga, tuple(a2.shape))
            ga = xp.reshape(ga, tuple(a.shape))
        if ctx.needs_input_grad[1]:
            gb = xp.matrix_transpose(a2) @ g2
            gb = unbroadcast(gb, tuple(b2.shape))
            gb = xp.reshape(gb, tuple(b.shape))
        return ga, gb


class Exp(Function):
    @staticmethod
    def forward(ctx: Context, a: Any) -> Any:
        y = array_namespace(a).exp(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        (y,) = ctx.saved_tensors
        return grad * y


class Log(Function):
    @staticmethod
    def forward(ctx: Context, a: Any) -> Any:
        ctx.save_for_backward(a)
        return array_namespace(a).log(a)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        (a,) = ctx.saved_tensors
        return grad / a


class Sqrt(Function):
    @staticmethod
    def forward(ctx: Context, a: Any) -> Any:
        y = array_namespace(a).sqrt(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        (y,) = ctx.saved_tensors
        return grad / (2.0 * y)


class Abs(Function):
    """``|a|``; the gradient at 0 is 0, as PyTorch's ``sign``."""

    @staticmethod
    def forward(ctx: Context, a: Any) -> Any:
        ctx.save_for_backward(a)
        return array_namespace(a).abs(a)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        (a,) = ctx.saved_tensors
        return grad * array_namespace(a).sign(a)


class Clamp(Function):
    """``min(max(a, low), high)``; the gradient passes where ``low <= a <= high`` (PyTorch)."""

    @staticmethod
    def forward(ctx: Context, a: Any, low: float | None = None, high: float | None = None) -> Any:
        xp = array_namespace(a)
        ctx.save_for_backward(a)
        ctx.bounds = (low, high)
        y = a
        if low is not None:
            y = xp.maximum(y, xp.asarray(low, dtype=a.dtype))
        if high is not None:
            y = xp.minimum(y, xp.asarray(high, dtype=a.dtype))
        return y

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        (a,) = ctx.saved_tensors
        xp = array_namespace(a)
        low, high = ctx.bounds
        keep = xp.ones(a.shape, dtype=xp.bool)
        if low is not None:
            keep = keep & (a >= low)
        if high is not None:
            keep = keep & (a <= high)
        return grad * xp.astype(keep, grad.dtype)


def _axes(dim: int | tuple[int, ...] | None, ndim: int) -> tuple[int, ...]:
    """Normalised reduction axes (``None``: all of them)."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    out = []
    for d in dims:
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise IndexError(f"dimension {d} is out of range for a tensor with {ndim} dimensions")
        out.append(d % max(ndim, 1))
    return tuple(sorted(set(out)))


def _expand_reduced(grad: Any, shape: tuple[int, ...], axes: tuple[int, ...], keepdim: bool) -> Any:
    """Bring a reduced gradient back to ``shape`` by broadcasting over ``axes``."""
    xp = array_namespace(grad)
    if not keepdim and shape:
        kept = [1 if i in axes else n for i, n in enumerate(shape)]
        grad = xp.reshape(grad, tuple(kept))
    return xp.broadcast_to(grad, shape)


class Sum(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, dim: Any = None, keepdim: bool = False) -> Any:
        axes = _axes(dim, a.ndim)
        ctx.meta = (tuple(a.shape), axes, keepdim)
        return array_namespace(a).sum(a, axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        shape, axes, keepdim = ctx.meta
        return _expand_reduced(grad, shape, axes, keepdim)


class Mean(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, dim: Any = None, keepdim: bool = False) -> Any:
        axes = _axes(dim, a.ndim)
        ctx.meta = (tuple(a.shape), axes, keepdim)
        return array_namespace(a).mean(a, axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        shape, axes, keepdim = ctx.meta
        count = math.prod(shape[i] for i in axes) if shape else 1
        return _expand_reduced(grad / float(count), shape, axes, keepdim)


class Max(Function):
    """The maximum over ``dim`` (the gradient goes to the first maximum, as PyTorch's
    ``max(dim)``), or over everything (shared evenly among ties, as PyTorch's ``max()``)."""

    @staticmethod
    def forward(ctx: Context, a: Any, dim: int | None = None, keepdim: bool = False) -> Any:
        xp = array_namespace(a)
        if dim is None:
            y = xp.max(a)
            ctx.save_for_backward(a, y)
            ctx.dim = None
            return y
        (axis,) = _axes(dim, a.ndim)
        index = xp.argmax(a, axis=axis, keepdims=True)
        y = xp.max(a, axis=axis, keepdims=True)
        ctx.save_for_backward(index)
        ctx.dim = (tuple(a.shape), axis)
        if not keepdim:
            y = xp.squeeze(y, axis=axis)
            index = xp.squeeze(index, axis=axis)
        ctx.mark_non_differentiable(index)
        return y, index

    @staticmethod
    def backward(ctx: Context, grad: Any, grad_index: Any = None) -> Any:
        if ctx.dim is None:
            a, y = ctx.saved_tensors
            xp = array_namespace(a)
            hits = xp.astype(a == y, a.dtype)
            return grad * hits / xp.sum(hits)
        (index,) = ctx.saved_tensors
        shape, axis = ctx.dim
        xp = array_namespace(grad)
        positions = xp.arange(shape[axis], dtype=index.dtype)
        positions = xp.reshape(positions, tuple(-1 if i == axis else 1 for i in range(len(shape))))
        one_hot = xp.astype(positions == index, grad.dtype)
        if grad.ndim < len(shape):
            grad = xp.expand_dims(grad, axis=axis)
        return grad * one_hot


class Cast(Function):
    """A floating dtype change; the gradient goes back in the input's dtype."""

    @staticmethod
    def forward(ctx: Context, a: Any, dtype: str = "float32") -> Any:
        xp = array_namespace(a)
        ctx.dtype = a.dtype
        return xp.astype(a, getattr(xp, dtype))

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        return array_namespace(grad).astype(grad, ctx.dtype)


class Reshape(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, shape: tuple[int, ...]) -> Any:
        ctx.in_shape = tuple(a.shape)
        return array_namespace(a).reshape(a, shape)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        return array_namespace(grad).reshape(grad, ctx.in_shape)


class Permute(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, dims: tuple[int, ...]) -> Any:
        ctx.dims = dims
        return array_namespace(a).permute_dims(a, dims)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        inverse = [0] * len(ctx.dims)
        for i, d in enumerate(ctx.dims):
            inverse[d] = i
        return array_namespace(grad).permute_dims(grad, tuple(inverse))


class GetItem(Function):
    """Basic indexing (ints, slices, ``...``, ``None``); the gradient is scattered back."""

    @staticmethod
    def forward(ctx: Context, a: Any, key: Any) -> Any:
        ctx.meta = (tuple(a.shape), a.dtype, key)
        return a[key]

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        shape, dtype, key = ctx.meta
        xp = array_namespace(grad)
        out = xp.zeros(shape, dtype=dtype)
        if any(k is None for k in key):
            # The standard's __setitem__ takes no None: drop the new axes (each of size 1)
            # from the key and from the gradient.
            key = tuple(k for k in key if k is not None)
            grad = xp.reshape(grad, tuple(out[key].shape))
        out[key] = grad
        return out


class Cat(Function):
    """Concatenate along ``dim``; each input gets its slice of the gradient."""

    @staticmethod
    def forward(ctx: Context, *arrays: Any, dim: int = 0) -> Any:
        xp = array_namespace(*arrays)
        axis = dim % arrays[0].ndim
        ctx.meta = (axis, [int(a.shape[axis]) for a in arrays])
        return xp.concat(arrays, axis=axis)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, ...]:
        axis, sizes = ctx.meta
        grads = []
        start = 0
        for size, needed in zip(sizes, ctx.needs_input_grad, strict=True):
            index = (slice(None),) * axis + (slice(start, start + size), Ellipsis)
            grads.append(grad[index] if needed else None)
            start += size
        return tuple(grads)


class Stack(Function):
    """Stack along a new ``dim``; each input gets its slice of the gradient."""

    @staticmethod
    def forward(ctx: Context, *arrays: Any, dim: int = 0) -> Any:
        xp = array_namespace(*arrays)
        axis = dim % (arrays[0].ndim + 1)
        ctx.axis = axis
        return xp.stack(arrays, axis=axis)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, ...]:
        axis = ctx.axis
        grads = []
        for i, needed in enumerate(ctx.needs_input_grad):
            index = (slice(None),) * axis + (i, Ellipsis)
            grads.append(grad[index] if needed else None)
        return tuple(grads)
