"""``Tensor``: a backend array that remembers how it was computed.

``t.data`` is a plain array of the active backend (NumPy or CuPy); the Tensor adds
``requires_grad``, ``grad`` (a plain array too, like ``Parameter.grad``) and
``grad_fn``, the graph node of the ``Function`` call that produced it. Every
operator and method below is a ``Function`` (``xcnn/autograd/basic.py``), so
anything written with them can call ``.backward()``.
"""

from __future__ import annotations

import math
from collections import namedtuple
from typing import Any

import numpy as np

from xcnn import backends
from xcnn.autograd import basic
from xcnn.autograd.engine import run_backward
from xcnn.autograd.grad_mode import is_grad_enabled

__all__ = ["Tensor", "as_array", "cat", "flatten", "stack", "tensor"]

MaxResult = namedtuple("MaxResult", ["values", "indices"])
_BACKEND_NAMES = ("numpy", "cupy", "array_api_strict")


class Tensor:
    """An array of the active backend with a gradient and a place in the graph.

    Create one with :func:`xcnn.tensor`; layers and ``xcnn.nn.functional`` return
    them when given them.

    Attributes
    ----------
    data : array
        The values (``numpy.ndarray`` or ``cupy.ndarray``).
    grad : array or None
        After ``backward``, the gradient of the root with respect to this tensor,
        summed over backward calls until reset (leaf tensors only, as in PyTorch).
    requires_grad : bool
        Whether operations on this tensor are recorded.
    grad_fn : Context or None
        The node that produced this tensor (``None`` for a leaf).
    """

    __slots__ = (
        "__weakref__",
        "_output_nr",
        "_requires_grad",
        "_version",
        "data",
        "grad",
        "grad_fn",
    )

    # NumPy scalars and arrays defer to Tensor's reflected operators instead of
    # converting the Tensor: np.float32(2) * t stays a recorded Tensor.
    __array_ufunc__ = None

    def __init__(self, data: Any, requires_grad: bool = False) -> None:
        self.data = np.asarray(data) if isinstance(data, np.generic) else data
        self.grad = None
        self.grad_fn = None
        self._output_nr = 0
        self._version = 0
        self._requires_grad = False
        if requires_grad:
            self.requires_grad = True

    @classmethod
    def _wrap(cls, data: Any, grad_fn: Any = None, output_nr: int = 0) -> Tensor:
        """A Function's output: no checks, the fast path of every operation."""
        t = cls.__new__(cls)
        # NumPy reductions and 0-d arithmetic give scalars: .data is always an array.
        t.data = np.asarray(data) if isinstance(data, np.generic) else data
        t.grad = None
        t.grad_fn = grad_fn
        t._output_nr = output_nr
        t._version = 0
        t._requires_grad = grad_fn is not None
        return t

    # -- the gradient -------------------------------------------------------------

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if value and not _is_floating(self.data):
            raise TypeError(
                f"only floating-point tensors can require gradients; this tensor has dtype "
                f"{backends.dtype_name(self.data.dtype)} (use xcnn.tensor(..., dtype='float32'))"
            )
        if not value and self.grad_fn is not None:
            raise RuntimeError(
                "requires_grad can only be turned off on a leaf tensor; use t.detach() "
                "to get a tensor outside the graph"
            )
        self._requires_grad = bool(value)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Set ``requires_grad`` in place; returns ``self``."""
        self.requires_grad = requires_grad
        return self

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    def backward(self, grad: Any = None, retain_graph: bool = False) -> None:
        """Accumulate the gradient of this tensor into every leaf that requires grad.

        Parameters
        ----------
        grad : array, Tensor or number, optional
            ``d(something)/d(self)``, of ``self``'s shape. May be omitted only for a
            single-element tensor (a loss), where it is 1.
        retain_graph : bool, default False
            Keep the saved arrays so that the graph can be walked again; by default
            each node frees them as soon as its backward ran.
        """
        if not self._requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad and has no grad_fn: "
                "nothing upstream of it requires grad (create leaves with "
                "requires_grad=True, and do not compute it under no_grad())"
            )
        xp = backends.array_namespace(self.data)
        shape = tuple(self.data.shape)
        if grad is None:
            if math.prod(shape) != 1:
                raise RuntimeError(
                    f"backward() without grad works only on a single-element tensor (a loss); "
                    f"this one has shape {shape}. Pass grad= of that shape, or reduce it "
                    "first (e.g. y.sum().backward())"
                )
            grad = xp.ones(shape, dtype=self.data.dtype)
        else:
            if isinstance(grad, Tensor):
                grad = grad.data
            if isinstance(grad, (int, float)):
                grad = xp.full(shape, float(grad), dtype=self.data.dtype)
            elif type(grad) is not type(self.data):
                kind = backends.namespace_name(grad)
                got = f"a {kind} array" if kind in _BACKEND_NAMES else type(grad).__name__
                raise TypeError(
                    f"backward(): grad is {got} but the tensor lives on "
                    f"{backends.namespace_name(self.data)}; pass an array of that backend, "
                    "a Tensor or a number"
                )
            if tuple(grad.shape) != shape:
                raise ValueError(
                    f"backward(): grad has shape {tuple(grad.shape)} but the tensor has "
                    f"shape {shape}"
                )
            if grad.dtype != self.data.dtype:
                raise TypeError(
                    f"backward(): grad has dtype {backends.dtype_name(grad.dtype)} but the "
                    f"tensor has dtype {backends.dtype_name(self.data.dtype)}"
                )
        run_backward(self, grad, retain_graph)

    def detach(self) -> Tensor:
        """The same values, outside the graph (shares ``data``)."""
        return Tensor(self.data)

    # -- values -------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> Any:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def device(self) -> Any:
        return self.data.device

    def size(self, dim: int | None = None) -> Any:
        """The shape, or its ``dim``-th entry (PyTorch's ``size``)."""
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return math.prod(self.shape)

    def dim(self) -> int:
        return self.ndim

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def item(self) -> float | int | bool:
        """The single value as a Python number (a host copy on CuPy)."""
        if self.numel() != 1:
            raise ValueError(
                f"item(): only a single-element tensor converts to a Python number; "
                f"this one has shape {self.shape}"
            )
        return backends.to_host(self.data).reshape(()).item()

    def numpy(self) -> np.ndarray:
        """The values as a NumPy array (a host copy on CuPy)."""
        return backends.to_host(self.data) if not isinstance(self.data, np.ndarray) else self.data

    def tolist(self) -> Any:
        return backends.to_host(self.data).tolist()

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if not isinstance(self.data, np.ndarray):
            raise TypeError(
                f"a {backends.namespace_name(self.data)} tensor does not convert to NumPy "
                "implicitly; call t.numpy() for an explicit host copy"
            )
        return self.data if dtype is None else self.data.astype(dtype)

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __bool__(self) -> bool:
        return bool(self.item())

    def __repr__(self) -> str:
        body = repr(backends.to_host(self.data)).replace("array(", "tensor(", 1)
        if self.grad_fn is not None:
            return f"{body[:-1]}, grad_fn={self.grad_fn!r})"
        if self._requires_grad:
            return f"{body[:-1]}, requires_grad=True)"
        return body

    __hash__ = object.__hash__

    # -- arithmetic (each a Function, so each records) ----------------------------

    def __add__(self, other: Any) -> Tensor:
        return basic.Add.apply(self, _operand(other, self))

    def __radd__(self, other: Any) -> Tensor:
        return basic.Add.apply(_operand(other, self), self)

    def __sub__(self, other: Any) -> Tensor:
        return basic.Sub.apply(self, _operand(other, self))

    def __rsub__(self, other: Any) -> Tensor:
        return basic.Sub.apply(_operand(other, self), self)

    def __mul__(self, other: Any) -> Tensor:
        return basic.Mul.apply(self, _operand(other, self))

    def __rmul__(self, other: Any) -> Tensor:
        return basic.Mul.apply(_operand(other, self), self)

    def __truediv__(self, other: Any) -> Tensor:
        return basic.Div.apply(self, _operand(other, self))

    def __rtruediv__(self, other: Any) -> Tensor:
        return basic.Div.apply(_operand(other, self), self)

    def __matmul__(self, other: Any) -> Tensor:
        return basic.MatMul.apply(self, _operand(other, self))

    def __rmatmul__(self, other: Any) -> Tensor:
        return basic.MatMul.apply(_operand(other, self), self)

    def __pow__(self, other: Any) -> Tensor:
        return basic.Pow.apply(self, _operand(other, self))

    def __rpow__(self, other: Any) -> Tensor:
        return basic.Pow.apply(_operand(other, self), self)

    def __neg__(self) -> Tensor:
        return basic.Neg.apply(self)

    def __pos__(self) -> Tensor:
        return self

    # -- comparisons: no gradient, a boolean tensor --------------------------------

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return Tensor(self.data == _value(other, self))

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return Tensor(self.data != _value(other, self))

    def __lt__(self, other: Any) -> Tensor:
        return Tensor(self.data < _value(other, self))

    def __le__(self, other: Any) -> Tensor:
        return Tensor(self.data <= _value(other, self))

    def __gt__(self, other: Any) -> Tensor:
        return Tensor(self.data > _value(other, self))

    def __ge__(self, other: Any) -> Tensor:
        return Tensor(self.data >= _value(other, self))

    # -- in place: values change, the version counter records it -------------------

    def _check_in_place(self, op: str) -> None:
        if self._requires_grad and is_grad_enabled():
            kind = "a leaf tensor" if self.grad_fn is None else "a tensor"
            raise RuntimeError(
                f"{op}: in-place change of {kind} that requires grad is not recorded; "
                "write y = x + ... instead, or change it under xcnn.no_grad()"
            )

    def _in_place(self, op: str, value: Any) -> Tensor:
        self._check_in_place(op)
        other = _value(value, self)
        if op == "add_":
            self.data += other
        elif op == "sub_":
            self.data -= other
        elif op == "mul_":
            self.data *= other
        else:
            self.data /= other
        self._version += 1
        return self

    def __iadd__(self, other: Any) -> Tensor:
        return self._in_place("add_", other)

    def __isub__(self, other: Any) -> Tensor:
        return self._in_place("sub_", other)

    def __imul__(self, other: Any) -> Tensor:
        return self._in_place("mul_", other)

    def __itruediv__(self, other: Any) -> Tensor:
        return self._in_place("div_", other)

    def add_(self, other: Any) -> Tensor:
        return self._in_place("add_", other)

    def sub_(self, other: Any) -> Tensor:
        return self._in_place("sub_", other)

    def mul_(self, other: Any) -> Tensor:
        return self._in_place("mul_", other)

    def div_(self, other: Any) -> Tensor:
        return self._in_place("div_", other)

    def zero_(self) -> Tensor:
        return self._in_place("mul_", 0.0)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._check_in_place("__setitem__")
        self.data[_index(key, self.ndim)] = _value(value, self)
        self._version += 1

    # -- dtype -----------------------------------------------------------------------

    def float(self) -> Tensor:
        """The values as float32 (recorded: the gradient comes back as this tensor's dtype)."""
        return self._cast("float32")

    def double(self) -> Tensor:
        """The values as float64 (recorded: the gradient comes back as this tensor's dtype)."""
        return self._cast("float64")

    def _cast(self, name: str) -> Tensor:
        if backends.dtype_name(self.data.dtype) == name:
            return self
        if not _is_floating(self.data):
            xp = backends.array_namespace(self.data)
            return Tensor(xp.astype(self.data, getattr(xp, name)))
        return basic.Cast.apply(self, dtype=name)

    # -- indexing and shapes ----------------------------------------------------------

    def __getitem__(self, key: Any) -> Tensor:
        if isinstance(key, Tensor):
            raise TypeError(
                "indexing a Tensor with a Tensor is not supported; index with ints, "
                "slices, ... and None"
            )
        return basic.GetItem.apply(self, key=_index(key, self.ndim))

    def reshape(self, *shape: Any) -> Tensor:
        """The same values in ``shape`` (one entry may be -1)."""
        return basic.Reshape.apply(self, shape=_shape_args(shape))

    def view(self, *shape: Any) -> Tensor:
        """``reshape`` (xcnn does not distinguish views)."""
        return self.reshape(*shape)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        """Merge dimensions ``start_dim..end_dim`` into one (PyTorch's ``flatten``)."""
        return flatten(self, start_dim, end_dim)

    def permute(self, *dims: Any) -> Tensor:
        dims = _shape_args(dims)
        if sorted(d % max(self.ndim, 1) for d in dims) != list(range(self.ndim)):
            raise ValueError(
                f"permute: {dims} is not a permutation of the {self.ndim} dimensions of a "
                f"tensor of shape {self.shape}"
            )
        return basic.Permute.apply(self, dims=tuple(d % self.ndim for d in dims))

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        """Swap two dimensions."""
        dims = list(range(self.ndim))
        a, b = dim0 % self.ndim, dim1 % self.ndim
        dims[a], dims[b] = dims[b], dims[a]
        return basic.Permute.apply(self, dims=tuple(dims))

    @property
    def T(self) -> Tensor:
        return basic.Permute.apply(self, dims=tuple(reversed(range(self.ndim))))

    # -- reductions and elementwise functions -------------------------------------------

    def sum(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return basic.Sum.apply(self, dim=dim, keepdim=keepdim)

    def mean(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return basic.Mean.apply(self, dim=dim, keepdim=keepdim)

    def max(self, dim: int | None = None, keepdim: bool = False) -> Any:
        """The largest value; with ``dim``, ``(values, indices)`` along it, as PyTorch."""
        if dim is None:
            return basic.Max.apply(self)
        values, indices = basic.Max.apply(self, dim=dim, keepdim=keepdim)
        return MaxResult(values, indices)

    def argmax(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        xp = backends.array_namespace(self.data)
        if dim is None:
            return Tensor(xp.argmax(xp.reshape(self.data, (-1,))))
        return Tensor(xp.argmax(self.data, axis=dim, keepdims=keepdim))

    def exp(self) -> Tensor:
        return basic.Exp.apply(self)

    def log(self) -> Tensor:
        return basic.Log.apply(self)

    def sqrt(self) -> Tensor:
        return basic.Sqrt.apply(self)

    def abs(self) -> Tensor:
        return basic.Abs.apply(self)

    def __abs__(self) -> Tensor:
        return basic.Abs.apply(self)

    def clamp(self, min: float | None = None, max: float | None = None) -> Tensor:
        if min is None and max is None:
            raise ValueError("clamp: give at least one of min and max")
        return basic.Clamp.apply(self, low=min, high=max)

    def relu(self) -> Tensor:
        from xcnn.nn import functional

        return functional.relu(self)


def as_array(value: Any) -> Any:
    """A Tensor's array; anything else as it is (for code that takes either)."""
    return value.data if isinstance(value, Tensor) else value


def _is_floating(array: Any) -> bool:
    xp = backends.array_namespace(array)
    return xp.isdtype(array.dtype, "real floating")


def _operand(other: Any, like: Tensor) -> Any:
    """A Tensor, or a Python number kept as a number (so it takes ``like``'s dtype)."""
    if isinstance(other, Tensor):
        return other
    if isinstance(other, np.generic):
        # A NumPy scalar would promote float32 to its own dtype: use its Python value.
        # Checked first: np.float64 is also a Python float.
        return other.item()
    if isinstance(other, (bool, int, float)):
        return other
    if type(other) is type(like.data):
        return Tensor(other)
    raise TypeError(
        f"cannot combine a Tensor with a {type(other).__name__}; use a Tensor of the same "
        f"backend ({backends.namespace_name(like.data)}) or a Python number"
    )


def _value(other: Any, like: Tensor) -> Any:
    """The raw operand of a comparison or an in-place update."""
    if isinstance(other, Tensor):
        return other.data
    if isinstance(other, np.generic):
        return other.item()
    return other


def _index(key: Any, ndim: int) -> Any:
    """``key`` as a tuple that names every axis: ``t[0]`` on a matrix becomes ``t[0, ...]``
    (array_api_strict accepts partial integer keys only with an explicit ellipsis)."""
    key = key if isinstance(key, tuple) else (key,)
    for k in key:
        if not (k is None or k is Ellipsis or isinstance(k, (int, slice))) or isinstance(k, bool):
            raise TypeError(
                f"Tensor indices must be ints, slices, ... or None, got {type(k).__name__}"
            )
    if Ellipsis not in key:
        key = (*key, Ellipsis)
    return key


def _shape_args(args: tuple[Any, ...]) -> tuple[int, ...]:
    """Accept ``reshape(2, 3)`` and ``reshape((2, 3))`` alike."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return tuple(int(n) for n in args[0])
    return tuple(int(n) for n in args)


def tensor(data: Any, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    """A new leaf Tensor on the active backend.

    Parameters
    ----------
    data : array, Tensor, list or number
        Arrays of the active backend are used as they are; host data is copied onto the
        backend. Python floats become float32 and ints int64, as in PyTorch; NumPy arrays
        keep their dtype.
    requires_grad : bool
        Record operations on it (floating dtypes only).
    dtype : str, optional
        E.g. ``"float64"``.

    Examples
    --------
    >>> import xcnn
    >>> x = xcnn.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    >>> (x * x).sum().backward()
    >>> x.grad
    array([[2., 4.],
           [6., 8.]], dtype=float32)
    """
    if isinstance(data, Tensor):
        data = data.data
    if backends.namespace_name(data) in ("cupy", "array_api_strict") or (
        isinstance(data, np.ndarray) and backends.current().name == "numpy"
    ):
        # Already an array of a backend: used as it is (cast when dtype says so).
        xp = backends.array_namespace(data)
        array = data if dtype is None else xp.astype(data, getattr(xp, backends.dtype_name(dtype)))
    else:
        host = np.asarray(data)
        if dtype is None and not isinstance(data, np.ndarray) and host.dtype == np.float64:
            host = host.astype(np.float32)
        name = None if dtype is None else backends.dtype_name(dtype)
        array = backends.current().asarray(host, dtype=name)
    return Tensor(array, requires_grad=requires_grad)


def flatten(t: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge dimensions ``start_dim..end_dim`` of ``t`` into one.

    ``xcnn.flatten(t, 1)`` turns ``(N, C, H, W)`` into ``(N, C*H*W)``, as ``torch.flatten``.
    """
    shape = t.shape
    if not shape:
        return basic.Reshape.apply(t, shape=(1,))
    start, end = start_dim % len(shape), end_dim % len(shape)
    if start > end:
        raise ValueError(
            f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for a tensor of "
            f"shape {shape}"
        )
    new = (*shape[:start], math.prod(shape[start : end + 1]), *shape[end + 1 :])
    return basic.Reshape.apply(t, shape=new)


def cat(tensors: Any, dim: int = 0) -> Tensor:
    """Concatenate tensors of equal shapes except along ``dim`` (``torch.cat``)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty sequence of tensors")
    return basic.Cat.apply(*tensors, dim=dim)


def stack(tensors: Any, dim: int = 0) -> Tensor:
    """Stack tensors of one shape along a new dimension ``dim`` (``torch.stack``)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: expected a non-empty sequence of tensors")
    return basic.Stack.apply(*tensors, dim=dim)
