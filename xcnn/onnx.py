"""``xcnn.onnx.export``: a model's forward pass as an ONNX graph, for ONNX Runtime and others.

How it works: one eval-mode forward is *traced*. Every xcnn operation, from ``F.conv2d``
to ``t * 0.5``, is a ``Function`` whose ``apply`` receives all of its operands (see
``xcnn/autograd/function.py``), so for the trace ``Function.apply`` is wrapped to write
down each call: the Function class, its arguments (Tensors, parameters, buffers, Python
numbers, window sizes) and its output Tensors. The graph that autograd records would not
do: eval mode and ``no_grad`` record no nodes, and a node keeps only what its backward
needs (not the ``0.5`` of ``t * 0.5``, nor a tensor that needs no gradient).
``Module.__call__`` is wrapped too, so each call knows which module it ran in; that
name is in every error.

Then:

1. The calls that reach the outputs are found by walking back from them.
2. The model runs a second time, on other values and (``dynamic_batch``) another batch
   size. Both traces must agree call for call: a tensor the trace saw as a constant
   (computed outside xcnn's operations, e.g. by a comparison or on ``.data``) must not
   have changed, and a dimension that changed with the batch becomes the graph's
   ``batch`` dimension (a ``Reshape`` copies or infers it instead of fixing it).
3. Each call becomes ONNX nodes through a table keyed by the Function class
   (``_TRANSLATIONS``); parameters and buffers become initializers named by their
   ``state_dict`` keys. A call of any other Function raises
   :class:`UnsupportedOperationError`, naming the operation and the module.

``onnx`` is imported only when :func:`export` runs (``pip install 'xcnn[onnx]'``).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xcnn import backends
from xcnn._atomic import atomic_write_bytes
from xcnn.autograd import Tensor, basic, no_grad
from xcnn.autograd.function import Function
from xcnn.nn import containers
from xcnn.nn import functional as F
from xcnn.nn.module import Module
from xcnn.ops._geometry import (
    PoolGeometry,
    adaptive_bins,
    adaptive_size,
    avg_pool_divisors,
    pair,
    pool_geometry,
)

__all__ = ["DEFAULT_OPSET", "UnsupportedOperationError", "export"]

DEFAULT_OPSET = 17
# Squeeze, Unsqueeze and ReduceSum take their axes as inputs from opset 13 on; older
# opsets would need a second spelling of each.
MIN_OPSET = 13
_INT64_MAX = np.iinfo(np.int64).max
_INT64_MIN = np.iinfo(np.int64).min


class UnsupportedOperationError(NotImplementedError):
    """An operation of the model has no ONNX translation (the message names it and where)."""


def export(
    model: Module,
    example_input: Any,
    path: str | os.PathLike,
    *,
    input_names: Sequence[str] = ("input",),
    output_names: Sequence[str] = ("output",),
    dynamic_batch: bool = True,
    opset: int = DEFAULT_OPSET,
) -> Any:
    """Write ``model``'s eval-mode forward pass to ``path`` as an ONNX model.

    The model runs in eval mode (batch norm with its running statistics, dropout off)
    and is put back in its previous mode afterwards. The file is written only once
    ``onnx.checker.check_model`` accepts the graph, and atomically: on any error,
    ``path`` keeps its previous content (or stays absent).

    Parameters
    ----------
    model : Module
        Any model whose forward uses xcnn's layers, ``xcnn.nn.functional`` and Tensor
        operations (arithmetic with broadcasting, ``@``, ``xcnn.cat``/``stack``,
        indexing, ``reshape``/``permute``, ``sum``/``mean``/``max``, ``exp``/``log``/
        ``sqrt``/``abs``/``clamp``, ``float``/``double``). Every option of the conv and
        pooling layers exports: ``padding="same"``, ``ceil_mode``, ``count_include_pad``,
        ``divisor_override``, adaptive pooling to any size (the input's H and W are
        fixed in the graph).
    example_input : array or Tensor, or a tuple of them
        One batch (the model's backend and dtype); a tuple for a model with several inputs.
        An unbatched ``(C, H, W)`` example exports with ``dynamic_batch=False``.
    path : str or os.PathLike
        The ``.onnx`` file to write (parent folders are created).
    input_names, output_names : sequence of str
        Names of the graph's inputs and outputs, one per input and per output of forward
        (a forward that returns a tuple gets ``output_0, output_1, ...`` by default).
    dynamic_batch : bool, default True
        Make dimension 0 of the inputs (and every dimension that follows it) a symbolic
        ``batch``, so the file runs on any batch size. The model is traced at the
        example's batch size and at one more to find those dimensions.
    opset : int, default 17
        The ONNX operator set, from 13 to the newest the installed ``onnx`` knows.

    Returns
    -------
    onnx.ModelProto
        The model that was written.

    Raises
    ------
    UnsupportedOperationError
        An operation with no ONNX translation reaches an output (e.g. a loss, dropout in
        training, a user's own ``Function``, a module with a hand-written backward).
    ValueError
        Bad names or opset; a value computed outside xcnn's operations that changes with
        the input; a shape that depends on the batch in a way ONNX cannot express; a
        forward that fails on an input with one more row (``dynamic_batch`` with an
        input that has no batch dimension).
    ImportError
        ``onnx`` is not installed.

    Notes
    -----
    ``Function.apply`` and ``Module.__call__`` are replaced for the two traced forward
    passes and restored afterwards, even when the model raises: do not run other models
    in other threads meanwhile. Eval mode drops pending layer-wise calls (see
    ``Module.eval``). A tensor made in ``forward`` from fixed values (``xcnn.tensor(...)``)
    becomes a constant of the graph; one computed from the input outside xcnn's
    operations (a comparison, ``argmax``, NumPy on ``.data``) is refused.

    Examples
    --------
    >>> import tempfile, numpy as np, xcnn
    >>> model = xcnn.models.lenet5(rng=0)
    >>> x = np.zeros((2, 1, 28, 28), dtype=np.float32)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     proto = xcnn.onnx.export(model, x, f"{folder}/lenet5.onnx")
    >>> [node.op_type for node in proto.graph.node][:4]
    ['Conv', 'MaxPool', 'Relu', 'Conv']
    >>> proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    'batch'
    """
    onnx = _import_onnx()
    if not isinstance(model, Module):
        raise TypeError(f"export: model must be an xcnn.nn.Module, got {type(model).__name__}")
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ValueError(
            f"export: opset must be an int from {MIN_OPSET} to {newest} (the newest the "
            f"installed onnx {onnx.__version__} knows), got {opset!r}"
        )
    inputs = list(example_input) if isinstance(example_input, (tuple, list)) else [example_input]
    inputs = [x.data if isinstance(x, Tensor) else x for x in inputs]
    for x in inputs:
        if not hasattr(x, "shape") or len(x.shape) < 1:
            raise ValueError(
                "export: example_input must be an array or Tensor with a batch dimension "
                f"(or a tuple of them), got {type(x).__name__} of shape {getattr(x, 'shape', None)}"
            )
    input_names = _names(input_names, len(inputs), "input_names", "input")

    names = _state_names(model)
    first = _trace(model, inputs, names)
    if tuple(output_names) == ("output",) and len(first.outputs) > 1:
        output_names = [f"output_{k}" for k in range(len(first.outputs))]
    output_names = _names(output_names, len(first.outputs), "output_names", "output of forward")
    if set(input_names) & set(output_names):
        raise ValueError(
            f"export: input_names {input_names} and output_names {output_names} must not "
            "share a name"
        )
    needed = first.needed()
    for index in sorted(needed):
        call = first.calls[index]
        if call.function not in _TRANSLATIONS:
            raise UnsupportedOperationError(
                f"export: operation {_op_name(call.function)!r} "
                f"({call.function.__module__}.{call.function.__qualname__}), called in "
                f"{call.where}, has no ONNX translation; supported: {_supported()}"
            )
    others = [_other_input(x, dynamic_batch) for x in inputs]
    try:
        second = _trace(model, others, names)
    except (ValueError, TypeError, IndexError) as error:
        if not dynamic_batch:
            raise
        # The usual cause: dimension 0 is not a batch, e.g. an unbatched (C, H, W) image
        # whose channels grew by one.
        raise ValueError(
            "export: the model's forward failed on a second input with one more row in "
            f"dimension 0 (shape {tuple(others[0].shape)}, the example's is "
            f"{tuple(inputs[0].shape)}), traced to find the batch dimension: {error}. If "
            "dimension 0 of the input is not a batch (an unbatched (C, H, W) image), pass "
            "dynamic_batch=False"
        ) from error
    _compare(first, second, needed)

    graph = _Graph(onnx, opset, names.arrays)
    proto = graph.build(type(model).__name__, first, second, needed, input_names, output_names)
    onnx.checker.check_model(proto, full_check=True)
    atomic_write_bytes(Path(path), proto.SerializeToString())
    return proto


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError(
            "xcnn.onnx.export needs the onnx package: pip install 'xcnn[onnx]' "
            "(and onnxruntime to run the exported file)"
        ) from None
    return onnx


def _names(names: Sequence[str], count: int, what: str, each: str) -> list[str]:
    names = [names] if isinstance(names, str) else list(names)
    if len(names) != count or not all(isinstance(n, str) and n for n in names):
        raise ValueError(
            f"export: {what} must be {count} non-empty string(s), one per {each}, got {names!r}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"export: {what} must be distinct, got {names!r}")
    return names


@dataclass
class _StateNames:
    """``state_dict`` keys of the model's parameters (by Tensor) and arrays (by array)."""

    tensors: dict[int, str]
    arrays: dict[int, tuple[str, Any]]


def _state_names(model: Module) -> _StateNames:
    tensors: dict[int, str] = {}
    arrays: dict[int, tuple[str, Any]] = {}
    for name, param in model.named_parameters():
        tensors[id(param)] = name
        arrays[id(param.data)] = (name, param.data)
    for name, buffer in model.named_buffers():
        if buffer is not None:
            arrays.setdefault(id(buffer), (name, buffer))
    return _StateNames(tensors, arrays)


# -- tracing -------------------------------------------------------------------------------


@dataclass
class _Call:
    function: type
    bound: dict[str, Any]  # forward's parameters (without ctx), resolved (see _Trace.resolve)
    outputs: tuple[Tensor, ...]
    where: str


class _Trace:
    """The recorded calls of one forward, their operands resolved to references:
    ``("v", ref)`` a traced value (``ref`` is ``("in", k)`` or ``(call, output)``),
    ``("init", key)`` a parameter or buffer, ``("const", array)`` any other tensor,
    ``("py", value)`` anything else (numbers, window sizes, None)."""

    def __init__(self, names: _StateNames, inputs: list[Tensor]) -> None:
        self.names = names
        self.inputs = inputs
        self.calls: list[_Call] = []
        self.outputs: list[Any] = []
        self.values: dict[int, Any] = {}  # id(Tensor) -> ref
        self.arrays: dict[int, Any] = {}  # id(array) -> ref: a Tensor re-wrapped (detach)
        self.tensors: dict[Any, Tensor] = {}
        for k, x in enumerate(inputs):
            self._add(("in", k), x)

    def _add(self, ref: Any, tensor: Tensor) -> None:
        self.values[id(tensor)] = ref
        self.arrays[id(tensor.data)] = ref
        self.tensors[ref] = tensor

    def tensor(self, ref: Any) -> Tensor:
        return self.tensors[ref]

    def resolve(self, obj: Any) -> tuple[str, Any]:
        if isinstance(obj, Tensor):
            ref = self.values.get(id(obj), self.arrays.get(id(obj.data)))
            if ref is not None:
                return ("v", ref)
            if id(obj) in self.names.tensors:
                return ("init", self.names.tensors[id(obj)])
            obj = obj.data
        if hasattr(obj, "shape") and hasattr(obj, "dtype"):
            ref = self.arrays.get(id(obj))
            if ref is not None:
                return ("v", ref)
            if id(obj) in self.names.arrays:
                return ("init", self.names.arrays[id(obj)][0])
            return ("const", backends.to_host(obj))
        if isinstance(obj, tuple) and any(hasattr(o, "shape") for o in obj):
            return ("tuple", tuple(self.resolve(o) for o in obj))
        return ("py", obj)

    def record(self, function: type, args: tuple, params: dict, out: Any, where: str) -> None:
        outputs = out if isinstance(out, tuple) else (out,)
        signature = _signature(function)
        try:
            bound = signature.bind(None, *args, **params)
        except TypeError:
            bound = None
        resolved = {}
        if bound is not None:
            bound.apply_defaults()
            resolved = {k: self.resolve(v) for k, v in list(bound.arguments.items())[1:]}
        index = len(self.calls)
        self.calls.append(_Call(function, resolved, outputs, where))
        for k, t in enumerate(outputs):
            if isinstance(t, Tensor):
                self._add((index, k), t)

    def finish(self, out: Any) -> None:
        outputs = out if isinstance(out, (tuple, list)) else (out,)
        for k, t in enumerate(outputs):
            kind, ref = self.resolve(t)
            if kind != "v":
                raise ValueError(
                    f"export: output {k} of the model's forward is not computed from its "
                    f"input by xcnn operations (got {type(t).__name__}); return Tensors"
                )
            self.outputs.append(ref)

    def needed(self) -> set[int]:
        """The calls that the outputs depend on."""
        needed = {ref[0] for ref in self.outputs if ref[0] != "in"}
        for index in range(len(self.calls) - 1, -1, -1):
            if index in needed:
                for ref in _value_refs(self.calls[index].bound.values()):
                    if ref[0] != "in":
                        needed.add(ref[0])
        return needed


def _value_refs(resolved: Any) -> list[Any]:
    refs = []
    for kind, value in resolved:
        if kind == "v":
            refs.append(value)
        elif kind == "tuple":
            refs += _value_refs(value)
    return refs


_SIGNATURES: dict[type, inspect.Signature] = {}


def _signature(function: type) -> inspect.Signature:
    signature = _SIGNATURES.get(function)
    if signature is None:
        signature = _SIGNATURES[function] = inspect.signature(function.forward)
    return signature


def _where(module: Module, paths: dict[int, str]) -> str:
    path = paths.get(id(module))
    if path is None:
        return f"a {type(module).__name__} module outside the model's tree"
    if path == "":
        return f"the forward of the model ({type(module).__name__})"
    return f"module {path!r} ({type(module).__name__})"


def _trace(model: Module, arrays: list[Any], names: _StateNames) -> _Trace:
    """Run ``model`` once in eval mode and record every Function call."""
    inputs = [Tensor(x) for x in arrays]
    trace = _Trace(names, inputs)
    paths = {}
    for path, module in model.named_modules():
        paths.setdefault(id(module), path)
    stack = [_where(model, paths)]
    depth = [0]  # a Function whose forward calls other Functions is recorded once
    original_apply = Function.__dict__["apply"]
    original_call = Module.__call__
    original_fused = containers._WithReLU.__call__

    def traced_apply(cls: type, *args: Any, **params: Any) -> Any:
        depth[0] += 1
        try:
            out = original_apply.__func__(cls, *args, **params)
        finally:
            depth[0] -= 1
        if depth[0] == 0:
            trace.record(cls, args, params, out, stack[-1])
        return out

    def traced_call(self: Module, *args: Any, **kwargs: Any) -> Any:
        where = _where(self, paths)
        if type(self).backward is not Module.backward:
            raise UnsupportedOperationError(
                f"export: {where} defines its own backward on arrays, so its forward runs "
                "outside xcnn's recorded operations and cannot be traced; write its "
                "forward with xcnn.nn.functional and Tensor operations instead"
            )
        stack.append(where)
        try:
            return original_call(self, *args, **kwargs)
        finally:
            stack.pop()

    def traced_fused(self: Any, x: Any) -> Any:
        stack.append(_where(self.layer, paths))
        try:
            return original_fused(self, x)
        finally:
            stack.pop()

    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        Function.apply = classmethod(traced_apply)  # type: ignore[method-assign,assignment]
        Module.__call__ = traced_call  # type: ignore[method-assign]
        containers._WithReLU.__call__ = traced_fused  # type: ignore[method-assign]
        # Each convolution and its batch norm stay two nodes, so that every weight is an
        # initializer named by its state_dict key; ONNX runtimes fold the pair themselves.
        with no_grad(), containers.unfolded():
            out = model(*inputs)
    finally:
        Function.apply = original_apply  # type: ignore[method-assign]
        Module.__call__ = original_call  # type: ignore[method-assign]
        containers._WithReLU.__call__ = original_fused  # type: ignore[method-assign]
        for module, training in modes:
            object.__setattr__(module, "training", training)
    trace.finish(out)
    return trace


def _other_input(x: Any, dynamic_batch: bool) -> Any:
    """Values unlike ``x``'s (same statistics), with one more row if the batch is dynamic."""
    host = backends.to_host(x)
    shape = (host.shape[0] + int(dynamic_batch), *host.shape[1:])
    rng = np.random.default_rng(12345)
    if np.issubdtype(host.dtype, np.floating):
        scale = float(host.std()) if host.size else 1.0
        values = rng.standard_normal(shape) * (scale or 1.0) + float(
            host.mean() if host.size else 0
        )
    else:
        low, high = (int(host.min()), int(host.max())) if host.size else (0, 1)
        values = rng.integers(low, high + 1, size=shape)
    backend = backends.get(backends.namespace_name(x))
    return backend.asarray(values.astype(host.dtype), dtype=backends.dtype_name(host.dtype))


def _compare(first: _Trace, second: _Trace, needed: set[int]) -> None:
    """Both traces took the same path, with the same constants and attributes."""
    different = (
        len(first.calls) != len(second.calls)
        or any(
            a.function is not b.function for a, b in zip(first.calls, second.calls, strict=False)
        )
        or first.outputs != second.outputs
    )
    if different:
        raise ValueError(
            "export: the model's forward ran different operations on a second input of "
            f"batch size {second.inputs[0].shape[0]} (the example's is "
            f"{first.inputs[0].shape[0]}): control flow that depends on the values or the "
            "batch size cannot be traced once; pass dynamic_batch=False, or make the "
            "forward take the same path for every input"
        )
    for index in sorted(needed):
        a, b = first.calls[index], second.calls[index]
        for name, value in a.bound.items():
            if not _same(value, b.bound[name]) and not (
                a.function is basic.Reshape and name == "shape"
            ):
                kind = value[0]
                what = (
                    "a tensor operand changed with the input: it is computed outside "
                    "xcnn's operations (a comparison, argmax, NumPy on .data, or "
                    "xcnn.tensor built from the input or its shape), so it cannot be a "
                    "constant of the graph; compute it with Tensor operations"
                    if kind == "const"
                    else "its arguments differ between a batch of "
                    f"{first.inputs[0].shape[0]} and one of {second.inputs[0].shape[0]}; "
                    "pass dynamic_batch=False to fix the batch size"
                )
                raise ValueError(
                    f"export: argument {name!r} of {_op_name(a.function)!r} in {a.where}: {what}"
                )


def _same(a: Any, b: Any) -> bool:
    if a[0] != b[0]:
        return False
    if a[0] == "const":
        x, y = a[1], b[1]
        return x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True)
    if a[0] == "tuple":
        return len(a[1]) == len(b[1]) and all(_same(u, v) for u, v in zip(a[1], b[1], strict=True))
    try:
        return bool(a[1] == b[1])
    except (TypeError, ValueError):
        return a[1] is b[1]


def _op_name(function: type) -> str:
    return getattr(function, "name", None) or function.__name__


# -- the ONNX graph ----------------------------------------------------------------------------


def _value_info(onnx: Any, name: str, first: Tensor, second: Tensor, batch: tuple) -> Any:
    """Type and shape of a graph input or output; a dimension that followed the batch
    between the two traces is ``batch``, one that changed otherwise is left unnamed."""
    dims: list[Any] = []
    for d1, d2 in zip(first.shape, second.shape, strict=True):
        if d1 == d2:
            dims.append(int(d1))
        else:
            dims.append("batch" if (d1, d2) == batch else None)
    dtype = onnx.helper.np_dtype_to_tensor_dtype(backends.host_dtype(first.dtype))
    return onnx.helper.make_tensor_value_info(name, dtype, dims)


class _Graph:
    """Nodes, initializers and the names of values, as the translation builds them."""

    def __init__(self, onnx: Any, opset: int, arrays: dict[int, tuple[str, Any]]) -> None:
        self.onnx = onnx
        self.opset = opset
        self.nodes: list[Any] = []
        self.inputs: list[Any] = []
        self.initializers: list[Any] = []
        self.value_names: dict[Any, str] = {}
        self.state = {name: array for name, array in arrays.values()}
        self._written: set[str] = set()  # state_dict keys already initializers
        self._used: set[str] = set(self.state)
        self.where = ""

    def build(
        self,
        title: str,
        first: _Trace,
        second: _Trace,
        needed: set[int],
        input_names: list[str],
        output_names: list[str],
    ) -> Any:
        """The model: inputs, the translation of each needed call in order, outputs."""
        batch = (int(first.inputs[0].shape[0]), int(second.inputs[0].shape[0]))
        for k, name in enumerate(input_names):
            self.reserve(name)
            self.value_names[("in", k)] = name
            self.inputs.append(
                _value_info(self.onnx, name, first.inputs[k], second.inputs[k], batch)
            )
        for ref, name in zip(first.outputs, output_names, strict=True):
            # Outputs take the names asked for; an input, or a value returned twice,
            # goes out through an Identity node.
            if ref[0] != "in" and ref not in self.value_names:
                self.reserve(name)
                self.value_names[ref] = name
        for index in sorted(needed):
            _TRANSLATIONS[first.calls[index].function](_Node(self, first, second, index))
        outputs = []
        for ref, name in zip(first.outputs, output_names, strict=True):
            if self.value_names[ref] != name:
                self.reserve(name)
                self.node("Identity", [self.value_names[ref]], [name])
            outputs.append(
                _value_info(self.onnx, name, first.tensor(ref), second.tensor(ref), batch)
            )
        helper = self.onnx.helper
        return helper.make_model_gen_version(
            helper.make_graph(self.nodes, title, self.inputs, outputs, self.initializers),
            opset_imports=[helper.make_opsetid("", self.opset)],
            producer_name="xcnn",
        )

    def reserve(self, name: str) -> None:
        if name in self.state:
            raise ValueError(
                f"export: the name {name!r} is also a parameter or buffer of the model; "
                "choose other input_names/output_names"
            )
        self._used.add(name)

    def fresh(self, hint: str) -> str:
        name, k = hint, 1
        while name in self._used:
            k += 1
            name = f"{hint}_{k}"
        self._used.add(name)
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str] | None = None, **attrs: Any):
        outputs = outputs or [self.fresh(f"{op}_out")]
        self.nodes.append(
            self.onnx.helper.make_node(
                op, inputs, outputs, name=self.fresh(op), doc_string=self.where, **attrs
            )
        )
        return outputs[0] if len(outputs) == 1 else outputs

    def constant(self, array: Any, hint: str = "const") -> str:
        name = self.fresh(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def ints(self, values: Sequence[int]) -> str:
        return self.constant(np.asarray(list(values), dtype=np.int64), "ints")

    def state_dict_entry(self, key: str) -> str:
        if key not in self._written:
            array = backends.to_host(self.state[key])
            self.initializers.append(self.onnx.numpy_helper.from_array(array, key))
            self._written.add(key)
        return key

    def reduce(self, op: str, x: str, axes: Sequence[int], keepdims: bool, out: str | None = None):
        outs = [out] if out else None
        if not axes:  # 0-d input: nothing to reduce over
            return self.node(op, [x], outs, keepdims=int(keepdims))
        if op == "ReduceSum" or self.opset >= 18:
            return self.node(op, [x, self.ints(axes)], outs, keepdims=int(keepdims))
        return self.node(op, [x], outs, axes=list(axes), keepdims=int(keepdims))


class _Node:
    """One traced call as the translations see it: operand names, shapes, attributes."""

    def __init__(self, graph: _Graph, first: _Trace, second: _Trace, index: int) -> None:
        self.graph = graph
        self.first = first
        self.second = second
        self.index = index
        self.call = first.calls[index]
        graph.where = self.call.where
        self.outputs = []
        for k in range(len(self.call.outputs)):
            name = graph.value_names.get((index, k))
            if name is None:
                name = graph.value_names[(index, k)] = graph.fresh(
                    f"{_op_name(self.call.function)}_{index}" + (f"_{k}" if k else "")
                )
            self.outputs.append(name)
        self.out = self.outputs[0]
        self.dtype = backends.host_dtype(self.call.outputs[0].dtype)

    def get(self, name: str) -> Any:
        """The Python value of a non-tensor argument."""
        kind, value = self.call.bound[name]
        return value if kind == "py" else None

    def other(self, name: str) -> Any:
        """The same argument in the second trace."""
        return self.second.calls[self.index].bound[name][1]

    def is_none(self, name: str) -> bool:
        return self.call.bound[name] == ("py", None)

    def name(self, name: str | tuple, dtype: Any = None) -> str:
        """The ONNX name of an operand (by argument name, or a resolved reference);
        a Python number becomes a scalar constant of ``dtype`` (default: the output's)."""
        kind, value = self.call.bound[name] if isinstance(name, str) else name
        if kind == "v":
            return self.graph.value_names[value]
        if kind == "init":
            return self.graph.state_dict_entry(value)
        if kind == "const":
            return self.graph.constant(value)
        if isinstance(value, (bool, int, float)):
            return self.graph.constant(np.asarray(value, dtype=dtype or self.dtype), "scalar")
        raise ValueError(
            f"export: operand {name!r} of {_op_name(self.call.function)!r} in "
            f"{self.call.where} is a {type(value).__name__}, not a tensor or a number"
        )

    def shape(self, name: str | tuple, trace: int = 0) -> tuple[int, ...]:
        kind, value = self.call.bound[name] if isinstance(name, str) else name
        source = self.first if trace == 0 else self.second
        if kind == "v":
            return tuple(source.tensor(value).shape)
        if kind == "init":
            return tuple(self.graph.state[value].shape)
        if kind == "const":
            return tuple(value.shape)
        return ()

    def dtype_of(self, name: str | tuple) -> np.dtype:
        kind, value = self.call.bound[name] if isinstance(name, str) else name
        if kind == "v":
            return backends.host_dtype(self.first.tensor(value).dtype)
        if kind == "init":
            return backends.host_dtype(self.graph.state[value].dtype)
        if kind == "const":
            return value.dtype
        return self.dtype

    def cast_to_output(self, name: str) -> str:
        """The operand in the output's dtype (NumPy promotes, ONNX does not)."""
        onnx_name = self.name(name)
        if self.call.bound[name][0] != "py" and self.dtype_of(name) != self.dtype:
            return self.graph.node("Cast", [onnx_name], to=self._onnx_dtype(self.dtype))
        return onnx_name

    def _onnx_dtype(self, dtype: Any) -> int:
        return self.graph.onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))

    def emit(self, op: str, inputs: list[str], **attrs: Any) -> None:
        self.graph.node(op, inputs, self.outputs, **attrs)


# -- translations, one per Function ---------------------------------------------------------------


def _elementwise(op: str, arg: str = "a") -> Callable[[_Node], None]:
    def translate(n: _Node) -> None:
        n.emit(op, [n.name(arg)])

    return translate


def _binary(op: str) -> Callable[[_Node], None]:
    def translate(n: _Node) -> None:
        n.emit(op, [n.cast_to_output("a"), n.cast_to_output("b")])

    return translate


def _conv2d(n: _Node) -> None:
    inputs = [n.name("x"), n.name("weight")]
    if not n.is_none("bias"):
        inputs.append(n.name("bias"))
    ph, pw = pair(n.get("padding"), "padding")
    n.emit(
        "Conv",
        inputs,
        kernel_shape=list(n.shape("weight")[2:]),
        strides=list(pair(n.get("stride"), "stride")),
        pads=[ph, pw, ph, pw],
        dilations=list(pair(n.get("dilation"), "dilation")),
        group=int(n.get("groups")),
    )


def _linear(n: _Node) -> None:
    relu = bool(n.get("relu"))
    out = n.graph.fresh("linear") if relu else n.out
    x, w = n.name("x"), n.name("weight")
    bias = None if n.is_none("bias") else n.name("bias")
    if len(n.shape("x")) == 2:
        n.graph.node("Gemm", [x, w] + ([bias] if bias else []), [out], transB=1)
    else:
        wt = n.graph.node("Transpose", [w], perm=[1, 0])
        if bias:
            y = n.graph.node("MatMul", [x, wt])
            n.graph.node("Add", [y, bias], [out])
        else:
            n.graph.node("MatMul", [x, wt], [out])
    if relu:  # the ReLU that Sequential fused into the layer
        n.emit("Relu", [out])


def _pad2d(n: _Node) -> None:
    """``F.Pad2d`` (the extra bottom/right row or column of ``padding="same"``): a constant
    Pad of the last two axes."""
    rank = len(n.shape("x"))
    (top, left), (bottom, right) = (pair(n.get(s), s) for s in ("before", "after"))
    pads = [0] * (rank - 2) + [top, left] + [0] * (rank - 2) + [bottom, right]
    value = n.graph.constant(np.asarray(float(n.get("value")), dtype=n.dtype), "pad_value")
    n.emit("Pad", [n.name("x"), n.graph.ints(pads), value], mode="constant")


def _pool_attrs(n: _Node, geometry: PoolGeometry) -> dict[str, Any]:
    """Kernel, strides and pads of a pooling window. ``ceil_mode`` is spelt as extra
    bottom/right padding (``eh``/``ew``, which reach just the last window) with ONNX's
    floor rule, not as ONNX's ``ceil_mode``: ONNX Runtime (1.32) drops a last window that
    would start in the right padding, as PyTorch and the ONNX spec do, but onnx's shape
    inference (1.23) keeps it, so ``check_model`` would refuse the graph."""
    g = geometry
    return {
        "kernel_shape": [g.kh, g.kw],
        "strides": [g.sh, g.sw],
        "pads": [g.ph, g.pw, g.ph + g.eh, g.pw + g.ew],
    }


def _pool_geometry(n: _Node) -> PoolGeometry:
    return pool_geometry(
        _op_name(n.call.function),
        n.shape("x"),
        n.get("kernel_size"),
        n.get("stride"),
        n.get("padding"),
        bool(n.get("ceil_mode")),
    )


def _max_pool2d(n: _Node) -> None:
    # MaxPool ignores padded values however many there are, so ceil_mode's extra is exact.
    attrs = _pool_attrs(n, _pool_geometry(n))
    if n.get("relu"):  # the ReLU that Sequential fused into the layer
        pooled = n.graph.node("MaxPool", [n.name("x")], **attrs)
        n.emit("Relu", [pooled])
    else:
        n.emit("MaxPool", [n.name("x")], **attrs)


def _avg_pool2d(n: _Node) -> None:
    """AveragePool where its divisor is PyTorch's; otherwise the window sums (an
    AveragePool counting the padding, times the kernel area) over each window's divisor.

    ``count_include_pad=False`` excludes all padding, ceil_mode's extra included, as
    PyTorch does. ``count_include_pad=True`` counts the padding but, in PyTorch, not what
    a ceil_mode window hangs past it, and ``divisor_override`` replaces the divisor: both
    take the sums, scaled by a constant (one number, or one per output position).
    """
    g = _pool_geometry(n)
    attrs = _pool_attrs(n, g)
    count_include_pad, divisor = bool(n.get("count_include_pad")), n.get("divisor_override")
    if divisor is None and (not count_include_pad or not (g.eh or g.ew)):
        n.emit("AveragePool", [n.name("x")], count_include_pad=int(count_include_pad), **attrs)
        return
    area = g.kh * g.kw
    if divisor is not None:
        scale = np.asarray(area / divisor, dtype=n.dtype)
    else:
        h, w = n.shape("x")[2:]
        rows = avg_pool_divisors(h, g.kh, g.sh, g.ph, g.oh, True)
        cols = avg_pool_divisors(w, g.kw, g.sw, g.pw, g.ow, True)
        scale = (area / np.outer(rows, cols)).astype(n.dtype)
    mean = n.graph.node("AveragePool", [n.name("x")], count_include_pad=1, **attrs)
    n.emit("Mul", [mean, n.graph.constant(scale, "avg_pool_scale")])


def _adaptive_avg_pool2d(n: _Node) -> None:
    """GlobalAveragePool to 1x1; AveragePool when the output size divides the input's
    (equal bins, no overlap); otherwise PyTorch's bins as constant averaging matrices,
    ``y = A_h @ x @ A_w^T`` (the input's H and W are fixed in the graph, so are they)."""
    _, _, h, w = n.shape("x")
    oh, ow = adaptive_size(_op_name(n.call.function), n.get("output_size"))
    oh, ow = (h if oh is None else oh), (w if ow is None else ow)  # None keeps the input's
    x = n.name("x")
    if (oh, ow) == (1, 1):
        n.emit("GlobalAveragePool", [x])
    elif h % oh == 0 and w % ow == 0:
        kernel = [h // oh, w // ow]
        n.emit("AveragePool", [x], kernel_shape=kernel, strides=kernel)
    else:
        rows = n.graph.constant(_averaging_matrix(h, oh, n.dtype), "adaptive_rows")
        cols = n.graph.constant(_averaging_matrix(w, ow, n.dtype).T, "adaptive_cols")
        n.emit("MatMul", [rows, n.graph.node("MatMul", [x, cols])])


def _averaging_matrix(size: int, out: int, dtype: Any) -> np.ndarray:
    """``A (out, size)``: row ``i`` is ``1/len`` on adaptive bin ``i``, 0 elsewhere."""
    matrix = np.zeros((out, size), dtype=dtype)
    for i, (start, end) in enumerate(adaptive_bins(size, out)):
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def _channel_parameter(n: _Node, name: str, fill: float) -> str:
    if not n.is_none(name):
        return n.name(name)
    channels = n.shape("x")[1]
    return n.graph.constant(np.full((channels,), fill, dtype=n.dtype), f"batch_norm_{name}")


def _batch_norm_eval(n: _Node) -> None:
    n.emit(
        "BatchNormalization",
        [
            n.name("x"),
            _channel_parameter(n, "weight", 1.0),
            _channel_parameter(n, "bias", 0.0),
            n.name("running_mean"),
            n.name("running_var"),
        ],
        epsilon=float(n.get("eps")),
    )


def _batch_norm_train(n: _Node) -> None:
    """Batch statistics (a BatchNorm without running statistics, in eval mode too)."""
    g = n.graph
    rank = len(n.shape("x"))
    axes = [0, *range(2, rank)]
    x = n.name("x")
    mean = g.reduce("ReduceMean", x, axes, True)
    centred = g.node("Sub", [x, mean])
    var = g.reduce("ReduceMean", g.node("Mul", [centred, centred]), axes, True)
    eps = g.constant(np.asarray(float(n.get("eps")), dtype=n.dtype), "eps")
    y = g.node("Div", [centred, g.node("Sqrt", [g.node("Add", [var, eps])])])
    per_channel = g.ints([1, -1] + [1] * (rank - 2))
    weight = g.node("Reshape", [_channel_parameter(n, "weight", 1.0), per_channel])
    bias = g.node("Reshape", [_channel_parameter(n, "bias", 0.0), per_channel])
    n.emit("Add", [g.node("Mul", [y, weight]), bias])


def _softmax(op: str) -> Callable[[_Node], None]:
    def translate(n: _Node) -> None:
        n.emit(op, [n.name("x")], axis=int(n.get("dim")))

    return translate


def _leaky_relu(n: _Node) -> None:
    n.emit("LeakyRelu", [n.name("x")], alpha=float(n.get("negative_slope")))


def _clamp(n: _Node) -> None:
    bounds = ["" if n.is_none(b) else n.name(b, n.dtype) for b in ("low", "high")]
    while bounds and bounds[-1] == "":
        bounds.pop()
    n.emit("Clip", [n.name("a"), *bounds])


def _reduction(op: str) -> Callable[[_Node], None]:
    def translate(n: _Node) -> None:
        axes = basic._axes(n.get("dim"), len(n.shape("a")))
        n.graph.reduce(op, n.name("a"), axes, bool(n.get("keepdim")), n.out)

    return translate


def _max(n: _Node) -> None:
    x, ndim = n.name("a"), len(n.shape("a"))
    if n.get("dim") is None:
        n.graph.reduce("ReduceMax", x, tuple(range(ndim)), False, n.out)
        return
    (axis,) = basic._axes(n.get("dim"), ndim)
    keep = int(bool(n.get("keepdim")))
    n.graph.reduce("ReduceMax", x, (axis,), bool(keep), n.outputs[0])
    index_dtype = backends.host_dtype(n.call.outputs[1].dtype)
    if index_dtype == np.int64:
        n.graph.node("ArgMax", [x], [n.outputs[1]], axis=axis, keepdims=keep)
    else:
        index = n.graph.node("ArgMax", [x], axis=axis, keepdims=keep)
        n.graph.node("Cast", [index], [n.outputs[1]], to=n._onnx_dtype(index_dtype))


def _cast(n: _Node) -> None:
    n.emit("Cast", [n.name("a")], to=n._onnx_dtype(n.dtype))


def _reshape(n: _Node) -> None:
    """The target shape, with each dimension that followed the batch copied from the
    input (0) or inferred (-1), so the graph runs at any batch size."""
    shape, other = list(n.get("shape")), list(n.other("shape"))
    before, after = n.shape("a"), n.shape("a", trace=1)
    unknown = [i for i, (s, t) in enumerate(zip(shape, other, strict=True)) if s != t]
    for i in list(unknown):
        if i < len(before) and i < len(after) and before[i] == shape[i] and after[i] == other[i]:
            shape[i] = 0
            unknown.remove(i)
    if len(unknown) > 1 or (unknown and -1 in shape):
        raise ValueError(
            f"export: reshape to {tuple(n.get('shape'))} in {n.call.where} changes more than "
            f"one dimension with the batch size (to {tuple(other)} at batch "
            f"{n.second.inputs[0].shape[0]}), which an ONNX Reshape cannot express; keep the "
            "batch as its own dimension, or pass dynamic_batch=False"
        )
    for i in unknown:
        shape[i] = -1
    n.emit("Reshape", [n.name("a"), n.graph.ints(shape)])


def _permute(n: _Node) -> None:
    n.emit("Transpose", [n.name("a")], perm=[int(d) for d in n.get("dims")])


def _get_item(n: _Node) -> None:
    """Basic indexing: one Slice over the sliced axes, Squeeze for the integer indices,
    Unsqueeze for the new (None) axes."""
    key, ndim = n.get("key"), len(n.shape("a"))
    consumed = sum(1 for k in key if k is not None and k is not Ellipsis)
    expanded: list[Any] = []
    for k in key:
        if k is Ellipsis:
            expanded += [slice(None)] * (ndim - consumed)
        else:
            expanded.append(k)
    starts, ends, axes, steps, squeeze, unsqueeze = [], [], [], [], [], []
    axis = position = 0
    for k in expanded:
        if k is None:
            unsqueeze.append(position)
            position += 1
            continue
        if isinstance(k, int):
            starts.append(k)
            ends.append(k + 1 if k != -1 else _INT64_MAX)
            axes.append(axis)
            steps.append(1)
            squeeze.append(axis)
        elif k != slice(None):
            step = 1 if k.step is None else k.step
            starts.append(k.start if k.start is not None else (0 if step > 0 else _INT64_MAX))
            stop = k.stop if k.stop is not None else (_INT64_MAX if step > 0 else _INT64_MIN)
            ends.append(stop)
            axes.append(axis)
            steps.append(step)
            position += 1
        else:
            position += 1
        axis += 1
    g, y = n.graph, n.name("a")
    if axes:
        y = g.node("Slice", [y, g.ints(starts), g.ints(ends), g.ints(axes), g.ints(steps)])
    if squeeze:
        y = g.node("Squeeze", [y, g.ints(squeeze)])
    if unsqueeze:
        y = g.node("Unsqueeze", [y, g.ints(unsqueeze)])
    n.emit("Identity", [y])


def _cat(n: _Node) -> None:
    arrays = n.call.bound["arrays"][1]
    axis = int(n.get("dim")) % len(n.shape(arrays[0]))
    n.emit("Concat", [n.name(a) for a in arrays], axis=axis)


def _stack(n: _Node) -> None:
    arrays = n.call.bound["arrays"][1]
    axis = int(n.get("dim")) % (len(n.shape(arrays[0])) + 1)
    axes = n.graph.ints([axis])
    parts = [n.graph.node("Unsqueeze", [n.name(a), axes]) for a in arrays]
    n.emit("Concat", parts, axis=axis)


_TRANSLATIONS: dict[type, Callable[[_Node], None]] = {
    F.Conv2d: _conv2d,
    F.Pad2d: _pad2d,
    F.Linear: _linear,
    F.ReLU: _elementwise("Relu", "x"),
    F.Sigmoid: _elementwise("Sigmoid", "x"),
    F.Tanh: _elementwise("Tanh", "x"),
    F.LeakyReLU: _leaky_relu,
    F.Softmax: _softmax("Softmax"),
    F.LogSoftmax: _softmax("LogSoftmax"),
    F.MaxPool2d: _max_pool2d,
    F.AvgPool2d: _avg_pool2d,
    F.AdaptiveAvgPool2d: _adaptive_avg_pool2d,
    F.BatchNormEval: _batch_norm_eval,
    F.BatchNormTrain: _batch_norm_train,
    basic.Add: _binary("Add"),
    basic.Sub: _binary("Sub"),
    basic.Mul: _binary("Mul"),
    basic.Div: _binary("Div"),
    basic.Pow: _binary("Pow"),
    basic.MatMul: _binary("MatMul"),
    basic.Neg: _elementwise("Neg"),
    basic.Exp: _elementwise("Exp"),
    basic.Log: _elementwise("Log"),
    basic.Sqrt: _elementwise("Sqrt"),
    basic.Abs: _elementwise("Abs"),
    basic.Clamp: _clamp,
    basic.Sum: _reduction("ReduceSum"),
    basic.Mean: _reduction("ReduceMean"),
    basic.Max: _max,
    basic.Cast: _cast,
    basic.Reshape: _reshape,
    basic.Permute: _permute,
    basic.GetItem: _get_item,
    basic.Cat: _cat,
    basic.Stack: _stack,
}


def _supported() -> str:
    return ", ".join(sorted({_op_name(f) for f in _TRANSLATIONS}))
