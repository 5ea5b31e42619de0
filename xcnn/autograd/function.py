"""``Function``: how every differentiable operation is defined, and the graph node it records.

A ``Function`` is a pair of static methods on plain backend arrays::

    class Mul(Function):
        @staticmethod
        def forward(ctx, a, b):            # arrays in, array(s) out
            ctx.save_for_backward(a, b)
            return a * b

        @staticmethod
        def backward(ctx, grad):           # one gradient per output
            a, b = ctx.saved_tensors
            return grad * b, grad * a      # one gradient per input (None: not needed)

``Mul.apply(x, y)`` unwraps ``Tensor`` arguments to their arrays, runs ``forward``
and wraps the result in Tensors. When recording (grad mode on and some input
requires grad) the ``ctx`` becomes the outputs' ``grad_fn``: a node that holds the
saved arrays and an edge to each input's own node (or to the input itself, for a
leaf such as a parameter). Nodes point to their inputs only, never to their outputs,
so the graph has no reference cycles: it lives exactly as long as its root tensor.
"""

from __future__ import annotations

import itertools
import weakref
from typing import Any

from xcnn.autograd.grad_mode import is_grad_enabled
from xcnn.backends import array_namespace

__all__ = ["Context", "Function"]

# Creation order of nodes: the backward walk runs later nodes first (see engine.py).
_sequence = itertools.count()


class Context:
    """The ``ctx`` of a ``Function`` call; when recorded, also the node of the graph.

    Attributes a ``Function`` may use:

    * ``ctx.save_for_backward(*arrays)`` / ``ctx.saved_tensors``: arrays backward needs.
    * ``ctx.needs_input_grad``: a tuple of bools, one per positional input of ``apply``.
    * any attribute set in ``forward`` (``ctx.stride = stride``) is there in ``backward``.
    """

    __slots__ = (
        "__dict__",
        "_inputs",
        "_released",
        "_saved",
        "_versions",
        "function",
        "input_meta",
        "needs_input_grad",
        "next_edges",
        "output_meta",
        "sequence",
    )

    def __init__(self, function: type, needs_input_grad: tuple[bool, ...]) -> None:
        self.function = function
        self.needs_input_grad = needs_input_grad
        self.next_edges: tuple[Any, ...] = ()
        self.input_meta: tuple[Any, ...] = ()
        self.output_meta: tuple[Any, ...] = ()
        self.sequence = 0
        self._saved: tuple[Any, ...] = ()
        self._versions: tuple[Any, ...] = ()
        self._released = False
        self._inputs: tuple[Any, ...] = ()

    @property
    def name(self) -> str:
        """The Function's name, used in error messages (``"Conv2d"``, ``"Mul"``)."""
        return getattr(self.function, "name", None) or self.function.__name__

    def save_for_backward(self, *arrays: Any) -> None:
        """Keep ``arrays`` (inputs, outputs or intermediates) until backward has used them.

        Outside recording (``no_grad``, or no input requires grad) nothing is kept.
        """
        if True not in self.needs_input_grad:
            return
        self._saved = arrays
        # Remember the version of each saved array that is an input's data, so an
        # in-place write to that input before backward is caught (outputs are
        # matched in Function.apply, once they exist). One dict of the inputs' arrays
        # instead of a scan of the inputs per saved array.
        # reversed: where two inputs share an array, the first one owns it, as before.
        owners = {id(t.data): t for t in reversed(self._inputs)}
        versions = []
        for array in arrays:
            owner = owners.get(id(array))
            versions.append(None if owner is None else (weakref.ref(owner), owner._version))
        self._versions = tuple(versions)

    @property
    def saved_tensors(self) -> tuple[Any, ...]:
        """The arrays given to ``save_for_backward``, checked for in-place changes."""
        if self._released:
            raise RuntimeError(
                f"{self.name}: its saved arrays were already freed by a backward pass; "
                "backward through the same graph a second time needs "
                "retain_graph=True in the first backward()"
            )
        for index, version in enumerate(self._versions):
            if version is None:
                continue
            ref, expected = version
            tensor = ref()
            if tensor is not None and tensor._version != expected:
                raise RuntimeError(
                    f"{self.name}: saved array {index} was modified in place after the "
                    f"forward pass (version {tensor._version}, expected {expected}); its "
                    "gradient would be wrong. Write out = x + y instead of x += y, or "
                    "clone the tensor before changing it"
                )
        return self._saved

    def mark_non_differentiable(self, *arrays: Any) -> None:
        """Declare outputs (e.g. argmax indices) that never receive a gradient."""
        self.__dict__["_non_differentiable"] = {id(a) for a in arrays}

    def release(self) -> None:
        """Drop what backward needed; a later backward through this node raises."""
        self._released = True
        self._saved = ()
        self._versions = ()
        self.__dict__.clear()
        self.next_edges = ()

    def __repr__(self) -> str:
        return f"<{self.name}Backward>"


class Function:
    """Base class of every differentiable operation (xcnn's own and users').

    Subclasses define two static methods on plain backend arrays:

    ``forward(ctx, *inputs, **params)``
        Compute the output(s) (an array or a tuple of arrays) with the array API,
        calling ``ctx.save_for_backward`` for what backward needs.
    ``backward(ctx, *grad_outputs)``
        Return one gradient per positional input of ``forward`` (a tuple, or one
        array for a single input), each of that input's shape, or ``None`` where
        ``ctx.needs_input_grad`` is ``False`` or the input is not differentiable.

    Call it with ``MyFunction.apply(*inputs, **params)``; ``Tensor`` inputs make the
    call recordable, anything else (arrays, numbers, ``None``) is passed through.
    Check a new Function with ``xcnn.testing.gradcheck(MyFunction.apply, inputs)``.

    Examples
    --------
    >>> import xcnn
    >>> class Square(xcnn.autograd.Function):
    ...     @staticmethod
    ...     def forward(ctx, x):
    ...         ctx.save_for_backward(x)
    ...         return x * x
    ...     @staticmethod
    ...     def backward(ctx, grad):
    ...         (x,) = ctx.saved_tensors
    ...         return 2.0 * x * grad
    >>> t = xcnn.tensor([3.0], requires_grad=True)
    >>> Square.apply(t).sum().backward()
    >>> t.grad
    array([6.], dtype=float32)
    """

    @staticmethod
    def forward(ctx: Context, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("a Function subclass must define forward(ctx, ...)")

    @staticmethod
    def backward(ctx: Context, *grad_outputs: Any) -> Any:
        raise NotImplementedError("a Function subclass must define backward(ctx, ...)")

    @classmethod
    def apply(cls, *args: Any, **params: Any) -> Any:
        """Run ``forward`` on the arrays of ``args``; record the call when a gradient is needed."""
        Tensor = _TENSOR[0] or _tensor_class()
        recording = is_grad_enabled()
        arrays = []
        needs = []
        tensors = []
        record = False
        for arg in args:
            if isinstance(arg, Tensor):
                arrays.append(arg.data)
                need = recording and arg._requires_grad
                record = record or need
                needs.append(need)
                tensors.append(arg)
            else:
                arrays.append(arg)
                needs.append(False)
        if len(tensors) > 1:
            _check_same_kind(cls, tensors)
        ctx = Context(cls, tuple(needs))
        if not record:
            # Nothing to record: no graph node, no saved arrays (save_for_backward
            # keeps nothing when no input needs a gradient).
            out = cls.forward(ctx, *arrays, **params)
            if isinstance(out, tuple):
                return tuple(Tensor._wrap(o) for o in out)
            return Tensor._wrap(out)

        ctx._inputs = tensors
        out = cls.forward(ctx, *arrays, **params)
        ctx._inputs = ()
        single = not isinstance(out, tuple)
        xp = _namespace(out if single else out[0])
        if single and "_non_differentiable" not in ctx.__dict__:
            # One differentiable output, the usual case, without the loops below.
            wrapped = (Tensor._wrap(out, ctx, 0),)
            ctx.output_meta = ((tuple(out.shape), out.dtype, xp),)
        else:
            outputs = (out,) if single else out
            skip = ctx.__dict__.get("_non_differentiable", ())
            wrapped = tuple(
                Tensor._wrap(o) if id(o) in skip else Tensor._wrap(o, ctx, i)
                for i, o in enumerate(outputs)
            )
            ctx.output_meta = tuple((tuple(o.shape), o.dtype, xp) for o in outputs)
        ctx.sequence = next(_sequence)
        edges = []
        meta = []
        for arg, need in zip(args, needs, strict=True):
            if not need:
                edges.append(None)
                meta.append(None)
                continue
            node = arg.grad_fn
            # A leaf's gradient accumulates into arg.grad; any other goes to its node.
            edges.append((arg, 0) if node is None else (node, arg._output_nr))
            data = arg.data
            meta.append((tuple(data.shape), data.dtype, type(data)))
        ctx.next_edges = tuple(edges)
        ctx.input_meta = tuple(meta)
        if ctx._saved:
            _match_saved_outputs(ctx, wrapped)
        return wrapped[0] if single else wrapped


# tensor.py imports this module, so the Tensor class is looked up on first use.
_TENSOR: list[Any] = [None]
_NAMESPACES: dict[type, Any] = {}


def _tensor_class() -> type:
    from xcnn.autograd.tensor import Tensor

    _TENSOR[0] = Tensor
    return Tensor


def _namespace(array: Any) -> Any:
    """The array API namespace of ``array``'s type, found once per type (every recorded op
    keeps it to make zeros for an output that does not reach the loss)."""
    xp = _NAMESPACES.get(type(array))
    if xp is None:
        xp = _NAMESPACES[type(array)] = array_namespace(array)
    return xp


def _check_same_kind(function: type, tensors: list[Any]) -> None:
    """All Tensor inputs on one backend, and all floating ones of one dtype."""
    first = tensors[0].data
    kind, dtype = type(first), first.dtype
    # The common case, every input of one array type and dtype, in one pass.
    for t in tensors:
        if type(t.data) is not kind or t.data.dtype != dtype:
            break
    else:
        return
    for t in tensors[1:]:
        if type(t.data) is not kind:
            from xcnn import backends

            names = ", ".join(backends.namespace_name(u.data) for u in tensors)
            raise TypeError(
                f"{_name(function)}: all inputs must live on one backend, got {names} "
                "arrays; move them with xcnn.tensor(x.numpy()) or model.to(...)"
            )
    floating = [t.data.dtype for t in tensors if _is_floating(t.data)]
    if any(d != floating[0] for d in floating[1:]):
        from xcnn import backends

        names = ", ".join(backends.dtype_name(d) for d in floating)
        raise TypeError(
            f"{_name(function)}: floating-point inputs of different dtypes ({names}); "
            "cast them to one dtype first (model.double(), or t.double() / t.float())"
        )


def _is_floating(array: Any) -> bool:
    kind = getattr(array.dtype, "kind", None)
    if kind is not None:
        return kind == "f"
    return array_namespace(array).isdtype(array.dtype, "real floating")


def _name(function: type) -> str:
    return getattr(function, "name", None) or function.__name__


def _match_saved_outputs(ctx: Context, outputs: tuple[Any, ...]) -> None:
    """Track the version of every saved array that is one of this call's outputs."""
    versions = list(ctx._versions)
    owners = None
    for index, array in enumerate(ctx._saved):
        if versions[index] is not None or array is None:
            continue
        if owners is None:
            owners = {id(t.data): t for t in reversed(outputs)}
        owner = owners.get(id(array))
        if owner is not None:
            # A weak reference: a strong one would make output -> node -> output a cycle.
            versions[index] = (weakref.ref(owner), owner._version)
    ctx._versions = tuple(versions)
