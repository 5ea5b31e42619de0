"""``Module`` and ``Parameter``: the stateful half of xcnn.

A module holds parameters (learned tensors with a ``.grad``), buffers (state
that is saved but not learned, e.g. batch-norm running statistics) and child
modules, registered simply by assigning them as attributes, as in PyTorch.
A subclass writes only ``forward``, with ``xcnn.nn.functional`` and Tensor
operations; backward comes from the graph those record.

Two ways to call a module:

* **Graph:** ``y = m(x)`` with an ``xcnn.Tensor`` returns a Tensor; ``loss.backward()``
  adds every parameter's gradient into ``Parameter.grad``.
* **Layer-wise:** ``y = m(x)`` with a plain array returns a plain array, and
  ``gx = m.backward(gy)`` returns the gradient with respect to ``x`` and ADDS the
  parameter gradients into ``Parameter.grad``. Each training-mode call records its
  own small graph (the call's state lives there, not on the module); ``backward``
  walks the most recent one not yet used, so a module called twice in one step
  receives the sum of both gradients after two backward calls. Up to
  ``MAX_PENDING_CALLS`` calls wait for their backward; an older one is dropped.

Eval mode and ``xcnn.no_grad()`` record nothing and keep nothing (unless the
input itself requires grad, e.g. to compute a saliency map).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from xcnn import backends
from xcnn.autograd import Function, Tensor
from xcnn.autograd.grad_mode import is_grad_enabled, no_grad
from xcnn.autograd.tensor import as_array

# How many layer-wise forward calls a module keeps waiting for their backward. A
# training-mode call that is never followed by backward (e.g. metrics computed in
# training mode) must not hold its activations forever; the oldest is dropped.
MAX_PENDING_CALLS = 4


class Parameter(Tensor):
    """A learned tensor: a leaf that requires grad.

    Parameters
    ----------
    data : array
        The values, an array of the active backend.
    requires_grad : bool, default True

    Attributes
    ----------
    data : array
        The raw array, which optimizers update and ``state_dict`` copies.
    grad : array or None
        Sum of the gradients since the last ``zero_grad`` (``None`` if none yet), a
        raw array too.
    """

    __slots__ = ()

    def __init__(self, data: Any, requires_grad: bool = True):
        super().__init__(data, requires_grad=requires_grad)

    def accumulate(self, grad: Any) -> None:
        """Add ``grad`` into ``self.grad`` (the first call stores it as is)."""
        if self.grad is None:
            self.grad = grad
        else:
            self.grad = self.grad + grad

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


class Module:
    """Base class of every layer, container and model.

    Subclasses implement ``forward(x)`` and ``backward(grad_output)``, and
    may override ``extra_repr()`` to name themselves in error messages.
    """

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    # -- registration -----------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise RuntimeError(
                f"{type(self).__name__}: call super().__init__() before assigning attributes"
            )
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, value: Any) -> None:
        """Register saved, non-learned state (e.g. ``running_mean``) under ``name``."""
        self.__setattr__(name, value)
        self._buffers[name] = value

    def _set_buffer(self, name: str, value: Any) -> None:
        """Replace a buffer's array (keeps it registered)."""
        object.__setattr__(self, name, value)
        self._buffers[name] = value

    # -- calling ----------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if type(self).backward is not Module.backward:
            return self._call_hand_written(*args, **kwargs)
        if args and not isinstance(args[0], Tensor) and hasattr(args[0], "shape"):
            return self._call_layerwise(*args, **kwargs)
        if not self.training and is_grad_enabled() and not _any_requires_grad(args):
            with no_grad():
                return self.forward(*args, **kwargs)
        return self.forward(*args, **kwargs)

    def _call_hand_written(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """A module that defines its own ``backward`` on arrays, the classic way: called
        with an array it runs as written; called with a Tensor it becomes one node of
        the graph, whose backward is the module's (which accumulates its parameters'
        gradients itself)."""
        if not isinstance(x, Tensor):
            return self.forward(x, *args, **kwargs)
        if not self.training or not is_grad_enabled():
            with no_grad():
                return Tensor(self.forward(x.data, *args, **kwargs))
        return _HandWritten.apply(x, *self.parameters(), module=self, args=(args, kwargs))

    def _call_layerwise(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """``y = m(array)``: run forward on the graph, return the output's array, and
        keep the call's graph for :meth:`backward` (training mode only)."""
        if not self.training or not is_grad_enabled():
            with no_grad():
                return _unwrap(self.forward(Tensor(x), *args, **kwargs))
        inp = Tensor(x)
        inp._requires_grad = _is_floating(x)
        out = self.forward(inp, *args, **kwargs)
        if not isinstance(out, Tensor):
            raise TypeError(
                f"{self._label()}: layer-wise backward needs forward() to return one Tensor, "
                f"got {type(out).__name__}"
            )
        calls = self.__dict__.get("_calls")
        if calls is None:
            calls = []
            object.__setattr__(self, "_calls", calls)
        calls.append((inp, out))
        if len(calls) > MAX_PENDING_CALLS:
            del calls[0]
        return out.data

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def backward(self, grad_output: Any) -> Any:
        """Layer-wise backward of the latest ``y = m(array)`` call in training mode.

        Adds the parameter gradients into ``Parameter.grad`` and returns the gradient
        with respect to that call's input (``None`` when no gradient flows back to
        it, e.g. through a first convolution with ``needs_input_grad = False``).
        """
        calls = self.__dict__.get("_calls")
        if not calls:
            raise RuntimeError(
                f"{self._label()}: backward() called without a preceding forward() in "
                "training mode (eval-mode forward caches nothing; call model.train(); "
                "each forward allows one backward)"
            )
        inp, out = calls.pop()
        if isinstance(grad_output, Tensor):
            grad_output = grad_output.data
        if hasattr(grad_output, "shape") and tuple(grad_output.shape) != out.shape:
            raise ValueError(
                f"{self._label()}: expected a gradient of the output's shape {out.shape}, "
                f"got shape {tuple(grad_output.shape)}"
            )
        if out.requires_grad:
            out.backward(grad_output)
        return inp.grad

    # -- traversal ----------------------------------------------------------------

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """Yield ``(dotted_name, module)`` for this module and all descendants."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def children(self) -> Iterator[Module]:
        yield from self._modules.values()

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Yield ``("0.weight", Parameter)`` pairs in registration order."""
        seen: set[int] = set()
        for module_name, module in self.named_modules(prefix):
            for name, param in module._parameters.items():
                if id(param) in seen:  # a shared parameter is listed once
                    continue
                seen.add(id(param))
                yield (f"{module_name}.{name}" if module_name else name), param

    def parameters(self) -> Iterator[Parameter]:
        for _, param in self.named_parameters():
            yield param

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        for module_name, module in self.named_modules(prefix):
            for name, value in module._buffers.items():
                yield (f"{module_name}.{name}" if module_name else name), value

    # -- modes and gradients ------------------------------------------------------

    def train(self, mode: bool = True) -> Module:
        """Set training mode (``mode=False`` is eval mode); returns ``self``."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
            if not mode:
                module._clear_cache()
        return self

    def eval(self) -> Module:
        """Set eval mode: running statistics, no dropout, nothing cached; returns ``self``."""
        return self.train(False)

    def _clear_cache(self) -> None:
        """Drop the layer-wise calls still waiting for backward."""
        if self.__dict__.get("_calls"):
            object.__setattr__(self, "_calls", [])
        if "_cache" in self.__dict__:  # a hand-written layer's own cache
            object.__setattr__(self, "_cache", None)

    def _pending(self) -> int:
        """How many layer-wise forward calls still wait for their backward."""
        return len(self.__dict__.get("_calls") or ())

    def zero_grad(self) -> None:
        """Reset every parameter's gradient to ``None``."""
        for param in self.parameters():
            param.grad = None

    # -- state --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Host (NumPy) copies of all parameters and buffers, keyed like PyTorch."""
        state: dict[str, Any] = {}
        for name, param in self.named_parameters():
            state[name] = backends.to_host(param.data)
        for name, buffer in self.named_buffers():
            state[name] = backends.to_host(buffer)
        return state

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        """Copy values from ``state_dict`` into this module's parameters and buffers.

        Accepts NumPy arrays, arrays of any backend, or anything with a
        ``.numpy()`` method (e.g. CPU ``torch.Tensor``). Values keep this
        module's dtype and backend: a float64 value is cast into a float32
        parameter and back, but values of another kind (an integer or bool
        value for a floating parameter, a floating value for an integer
        buffer) are refused rather than cast. Every key, shape and dtype is
        checked before any value is copied.

        Raises
        ------
        KeyError
            Keys missing or unexpected (``strict=True``), listed by name.
        ValueError
            Shapes that disagree, listed with the expected and given shape.
        TypeError
            dtypes of another kind (bool, integer, floating, complex), listed
            with the expected and given dtype.
        """
        targets: dict[str, tuple[Module, str, bool]] = {}
        for module_name, module in self.named_modules():
            for name in module._parameters:
                targets[f"{module_name}.{name}" if module_name else name] = (module, name, True)
            for name in module._buffers:
                targets[f"{module_name}.{name}" if module_name else name] = (module, name, False)

        host = {key: backends.to_host(value) for key, value in state_dict.items()}
        missing = [k for k in targets if k not in host]
        unexpected = [k for k in host if k not in targets]
        # Values are cast within a kind only (float64 -> float32, int32 -> int64).
        kinds = {"b": "bool", "i": "integer", "u": "integer", "f": "floating", "c": "complex"}
        mismatched, retyped = [], []
        for key, (module, name, is_param) in targets.items():
            if key not in host:
                continue
            current = module._parameters[name].data if is_param else module._buffers[name]
            if tuple(current.shape) != tuple(host[key].shape):
                mismatched.append(
                    f"{key}: expected {tuple(current.shape)}, got {tuple(host[key].shape)}"
                )
            # Casting across kinds is never what a checkpoint meant: bools and integers
            # would silently become weights, fractional statistics would be truncated.
            want = backends.host_dtype(current.dtype)
            given = host[key].dtype
            if kinds[want.kind] != kinds.get(given.kind, given.kind):
                retyped.append(f"{key}: expected {want.name}, got {given.name}")
        if mismatched:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: shape mismatch for "
                + "; ".join(mismatched)
            )
        if retyped:
            raise TypeError(
                f"{type(self).__name__}.load_state_dict: dtype of another kind for "
                + "; ".join(retyped)
                + " (values are cast only within a kind, e.g. float64 -> float32)"
            )
        if strict and (missing or unexpected):
            raise KeyError(
                f"{type(self).__name__}.load_state_dict: missing keys {missing}, "
                f"unexpected keys {unexpected}"
            )
        for key, (module, name, is_param) in targets.items():
            if key not in host:
                continue
            current = module._parameters[name].data if is_param else module._buffers[name]
            backend = backends.get(backends.namespace_name(current))
            value = backend.asarray(host[key], dtype=current.dtype)
            if is_param:
                module._parameters[name].data = value
            else:
                module._set_buffer(name, value)

    def to(self, target: str | backends.Backend) -> Module:
        """Move to a backend (``"numpy"``, ``"cupy"``) or cast to a dtype (``"float64"``).

        Parameters, gradients and buffers all follow; any forward cache is
        dropped. Returns ``self``.
        """
        if isinstance(target, backends.Backend):
            return self._apply(lambda value: _move(value, target))
        if str(target).lower() in backends.NAMES + backends.TEST_NAMES:
            backend = backends.get(target)
            return self._apply(lambda value: _move(value, backend))
        try:
            name = backends.dtype_name(target)
        except TypeError:
            name = None
        if name not in ("float32", "float64"):
            raise ValueError(
                f"{type(self).__name__}.to: expected a backend name "
                f"({', '.join(backends.NAMES)}) or a float dtype (float32, float64), "
                f"got {target!r}"
            )
        return self._apply(lambda value: _cast(value, name))

    def double(self) -> Module:
        """Cast parameters and buffers to float64 (for gradient checks); returns ``self``."""
        return self.to("float64")

    def float(self) -> Module:
        """Cast parameters and buffers to float32; returns ``self``."""
        return self.to("float32")

    def _apply(self, convert: Any) -> Module:
        for module in self.modules():
            for param in module._parameters.values():
                param.data = convert(param.data)
                if param.grad is not None:
                    param.grad = convert(param.grad)
            for name, buffer in list(module._buffers.items()):
                module._set_buffer(name, convert(buffer))
            module._clear_cache()
        return self

    # -- names --------------------------------------------------------------------

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, child in self._modules.items():
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        lines.append(")")
        return "\n".join(lines)

    def _label(self) -> str:
        """Short name used at the start of error messages, e.g. ``Conv2d(3->16)``."""
        return f"{type(self).__name__}({self.extra_repr()})"

    def _check_backend(self, x: Any) -> None:
        """Raise if ``x`` lives on another backend than this module's parameters."""
        x = x.data if isinstance(x, Tensor) else x
        for param in self._parameters.values():
            if param is None:
                continue
            have, want = backends.namespace_name(x), backends.namespace_name(param.data)
            if have != want:
                raise TypeError(
                    f"{self._label()}: input is a {have} array but the parameters live on "
                    f"{want}; move the input with xcnn.backends.get({want!r}).asarray(...) "
                    f"or the model with model.to({have!r})"
                )
            return

    def _require_cache(self) -> Any:
        """For hand-written layers: their forward cache, or a message saying why none."""
        cache = self.__dict__.get("_cache")
        if cache is None:
            raise RuntimeError(
                f"{self._label()}: backward() called without a preceding forward() in "
                "training mode (eval-mode forward caches nothing; call model.train())"
            )
        return cache


class _HandWritten(Function):
    """A module with its own array ``backward`` as one node of the graph. Its parameters
    are inputs only so that the call is recorded when they alone require grad."""

    @staticmethod
    def forward(ctx: Any, x: Any, *params: Any, module: Module, args: Any) -> Any:
        ctx.module = module
        ctx.count = len(params)
        return module.forward(x, *args[0], **args[1])

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, ...]:
        return (ctx.module.backward(grad),) + (None,) * ctx.count


def _any_requires_grad(args: tuple[Any, ...]) -> bool:
    return any(isinstance(a, Tensor) and a.requires_grad for a in args)


def _is_floating(x: Any) -> bool:
    return backends.array_namespace(x).isdtype(x.dtype, "real floating")


def _unwrap(value: Any) -> Any:
    """Tensors to their arrays (also inside a tuple), for the layer-wise API."""
    if isinstance(value, tuple):
        return tuple(_unwrap(v) for v in value)
    return as_array(value)


def _cast(value: Any, dtype_name: str) -> Any:
    """Cast floating arrays to ``dtype_name``; integer buffers keep their dtype."""
    xp = backends.get(backends.namespace_name(value)).xp
    if not xp.isdtype(value.dtype, "real floating"):
        return value
    return xp.astype(value, getattr(xp, dtype_name))


def _move(value: Any, target: backends.Backend) -> Any:
    if backends.namespace_name(value) == target.name:
        return value
    return target.asarray(backends.to_host(value), dtype=value.dtype)
