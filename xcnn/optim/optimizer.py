"""``Optimizer``: the base class of SGD, Adam and AdamW.

It holds parameter groups (lists of :class:`xcnn.nn.Parameter` that share
hyperparameters), the per-parameter state (momentum buffers, Adam moments,
step counts) and the plumbing every optimizer needs: ``step`` / ``zero_grad``
and a pickle-free ``state_dict`` / ``load_state_dict``.

Subclasses implement only ``_update(param, grad, state, group, xp)``, which
updates ``param.data`` in place from ``grad`` using the arrays in ``state``, or
``_update_group(group, params, grads, states)``, the same for all the parameters of
a group at once (SGD: hyperparameters read once a step, not once a parameter).

Why state is created lazily: an optimizer is usually built right after the
model, and the model may then be moved with ``model.to("cupy")``. State is
therefore made at the first ``step()`` from each parameter's own namespace
(``array_namespace(param.data)``), never at construction.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

from xcnn import backends
from xcnn.autograd import Tensor
from xcnn.backends import array_namespace
from xcnn.nn.module import Parameter

__all__ = ["Optimizer"]

#: Flags of ``torch.optim`` state dicts that change the update rule; xcnn implements
#: only their default (falsy) behaviour, so a torch state dict that sets one is refused.
_TORCH_UNSUPPORTED_FLAGS = ("maximize", "amsgrad", "capturable", "differentiable")
#: Keys of ``torch.optim`` param groups that select an implementation, not a rule.
_TORCH_IGNORED_KEYS = ("foreach", "fused", "decoupled_weight_decay", "initial_lr")


class Optimizer:
    """Base class of all optimizers.

    Parameters
    ----------
    params : iterable of Parameter, or iterable of dict
        The parameters to optimize (e.g. ``model.parameters()``), or parameter
        groups: dicts with a ``"params"`` entry and optional hyperparameters
        that override ``defaults`` for that group, as in PyTorch.
    defaults : dict
        Hyperparameters of every group that does not set its own.

    Attributes
    ----------
    param_groups : list of dict
        One dict per group: ``"params"`` (list of Parameter) plus the
        hyperparameters. Learning-rate schedulers change ``group["lr"]``.
    state : dict
        ``Parameter -> dict`` of that parameter's state (momentum buffer, moments,
        step count); a parameter has no entry until its first update creates
        state, and plain SGD creates none.
    defaults : dict
    """

    #: Names of the per-parameter state arrays that have the parameter's shape.
    _array_state: tuple[str, ...] = ()
    #: Names of the per-parameter scalar state entries (e.g. Adam's ``"step"``).
    _scalar_state: tuple[str, ...] = ()

    def __init__(self, params: Iterable[Parameter] | Iterable[dict], defaults: dict[str, Any]):
        self.defaults = dict(defaults)
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[Parameter, dict[str, Any]] = {}
        if isinstance(params, Tensor):
            raise TypeError(
                f"{self._name()}: params must be an iterable of Parameters or of "
                "parameter-group dicts, got a single Parameter; pass [param]"
            )
        if isinstance(params, dict):
            raise TypeError(
                f"{self._name()}: params must be an iterable of Parameters or of "
                "parameter-group dicts, got one dict; pass [group]"
            )
        groups = list(params)
        if not groups:
            raise ValueError(f"{self._name()}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # -- construction -------------------------------------------------------------

    def add_param_group(self, group: dict[str, Any]) -> None:
        """Add a group of parameters, with its own hyperparameters, to optimize.

        Parameters
        ----------
        group : dict
            ``{"params": [...], "lr": ..., ...}``; missing hyperparameters are
            taken from ``defaults``.

        Raises
        ------
        TypeError
            ``group`` is not a dict, or an entry of ``"params"`` is not a Parameter.
        ValueError
            ``"params"`` is missing or empty, a parameter already belongs to
            another group, or a hyperparameter is invalid.
        """
        if not isinstance(group, dict):
            raise TypeError(
                f"{self._name()}: a parameter group must be a dict with a 'params' entry, "
                f"got {type(group).__name__}"
            )
        if "params" not in group:
            raise ValueError(
                f"{self._name()}: parameter group {len(self.param_groups)} has no 'params' "
                f"entry (keys: {sorted(group)})"
            )
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        if not params:
            raise ValueError(
                f"{self._name()}: parameter group {len(self.param_groups)} has no parameters"
            )
        for i, param in enumerate(params):
            # Any leaf Tensor can be optimized, as in PyTorch (a Parameter is one).
            if not isinstance(param, Tensor) or param.grad_fn is not None:
                what = "a non-leaf Tensor" if isinstance(param, Tensor) else type(param).__name__
                raise TypeError(
                    f"{self._name()}: parameter group {len(self.param_groups)}, entry {i}: "
                    f"expected an xcnn.nn.Parameter (or a leaf xcnn.Tensor), got {what}; pass "
                    "model.parameters() or wrap arrays with xcnn.nn.Parameter(array)"
                )
        known = {id(p) for g in self.param_groups for p in g["params"]}
        seen: set[int] = set()
        for param in params:
            if id(param) in known or id(param) in seen:
                raise ValueError(
                    f"{self._name()}: {param!r} appears more than once among the parameter "
                    "groups; each parameter may belong to only one group"
                )
            seen.add(id(param))
        new_group = {**self.defaults, **group, "params": params}
        self._validate(new_group)
        self.param_groups.append(new_group)

    def _validate(self, group: dict[str, Any]) -> None:
        """Raise ``ValueError``/``TypeError`` for invalid hyperparameters (subclasses)."""

    # -- the update ---------------------------------------------------------------

    def zero_grad(self) -> None:
        """Set the gradient of every parameter to ``None``."""
        for group in self.param_groups:
            for param in group["params"]:
                param.grad = None

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; parameters with ``grad=None`` are skipped.

        State is created here, at a parameter's first update, in that
        parameter's namespace and dtype. If a parameter was moved to another
        backend (``model.to(...)``) or dtype after some steps, its state is
        moved to the parameter's backend and dtype before the update.

        Parameters
        ----------
        closure : callable, optional
            Called first (e.g. to run forward and backward); its result is returned.

        Returns
        -------
        The closure's result, or ``None``.

        Raises
        ------
        TypeError
            A gradient lives on another backend, or has another dtype, than its parameter.
        ValueError
            A gradient's shape differs from its parameter's.
        """
        loss = closure() if closure is not None else None
        # Check every gradient first, so a bad one leaves no parameter half-updated.
        index = 0
        for group in self.param_groups:
            for param in group["params"]:
                grad, data = param.grad, param.data
                # The usual gradient passes three identity/equality tests; the full
                # check (and its messages) runs only when one fails.
                if grad is not None and not (
                    type(grad) is type(data)
                    and grad.dtype == data.dtype
                    and grad.shape == data.shape
                ):
                    self._check_grad(param, index)
                index += 1
        for group in self.param_groups:
            params, grads, states = [], [], []
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state.get(param)
                if state is None:
                    state = {}
                else:
                    _match_state(state, param.data)
                params.append(param)
                grads.append(param.grad)
                states.append(state)
            if not params:
                continue
            self._update_group(group, params, grads, states)
            for param, state in zip(params, states, strict=True):
                if state:  # plain SGD keeps none, as in PyTorch
                    self.state[param] = state
        return loss

    def _update_group(
        self,
        group: dict[str, Any],
        params: list[Parameter],
        grads: list[Any],
        states: list[dict[str, Any]],
    ) -> None:
        """Update the parameters of one group that have a gradient (``_update`` on each).

        Subclasses may override it instead of ``_update``, to read the group's
        hyperparameters once for all its parameters.
        """
        for param, grad, state in zip(params, grads, states, strict=True):
            self._update(param, grad, state, group, array_namespace(param.data))

    def _update(
        self, param: Parameter, grad: Any, state: dict[str, Any], group: dict[str, Any], xp: Any
    ) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement _update()")

    def _check_grad(self, param: Parameter, index: int) -> None:
        grad, data = param.grad, param.data
        have, want = backends.namespace_name(grad), backends.namespace_name(data)
        if have != want:
            raise TypeError(
                f"{self._name()}: parameter {index} {tuple(data.shape)} lives on {want} but "
                f"its grad is a {have} array; gradients must live where the parameter does"
            )
        if grad.dtype != data.dtype:
            raise TypeError(
                f"{self._name()}: parameter {index} has dtype {_dtype_name(data.dtype)} but "
                f"its grad has dtype {_dtype_name(grad.dtype)}"
            )
        if tuple(grad.shape) != tuple(data.shape):
            raise ValueError(
                f"{self._name()}: parameter {index} has shape {tuple(data.shape)} but its "
                f"grad has shape {tuple(grad.shape)}"
            )

    # -- state --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state as host data that can be saved without pickle.

        The layout is PyTorch's, with string keys so that everything but the
        arrays is JSON-able::

            {"state": {"0": {"momentum_buffer": ndarray}, ...},
             "param_groups": [{"lr": 0.1, "momentum": 0.9, ..., "params": [0, 1]}, ...]}

        Parameters are numbered across groups in order; a parameter that has
        not been updated yet has no entry in ``"state"``. Every leaf is a
        NumPy array (a copy) or a Python int, float, bool or list.

        Returns
        -------
        dict
        """
        index_of = self._index_of()
        state: dict[str, dict[str, Any]] = {}
        for param, entries in self.state.items():
            state[str(index_of[id(param)])] = {
                key: backends.to_host(value) if key in self._array_state else value
                for key, value in entries.items()
            }
        groups = []
        for group in self.param_groups:
            saved = {k: _jsonable(v) for k, v in group.items() if k != "params"}
            saved["params"] = [index_of[id(p)] for p in group["params"]]
            groups.append(saved)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyperparameters and state saved by :meth:`state_dict`.

        Arrays may be NumPy, any backend's or CPU ``torch.Tensor`` (so a
        ``torch.optim`` state dict of the same optimizer loads too); they are
        copied to each parameter's backend and dtype. Nothing changes unless
        the whole dict is valid.

        Raises
        ------
        KeyError
            ``"state"`` or ``"param_groups"`` is missing.
        ValueError
            The number of groups or of parameters per group differs, a state
            index is out of range, a state entry is unknown, or a state array's
            shape differs from its parameter's.
        """
        name = f"{self._name()}.load_state_dict"
        missing = [k for k in ("state", "param_groups") if k not in state_dict]
        if missing:
            raise KeyError(
                f"{name}: expected a dict with keys 'state' and 'param_groups', missing {missing}"
            )
        saved_groups = list(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"{name}: the optimizer has {len(self.param_groups)} parameter group(s), "
                f"the state dict has {len(saved_groups)}"
            )
        for g, (group, saved) in enumerate(zip(self.param_groups, saved_groups, strict=True)):
            n_saved = len(saved.get("params", ()))
            if n_saved != len(group["params"]):
                raise ValueError(
                    f"{name}: parameter group {g} has {len(group['params'])} parameters, "
                    f"the state dict's has {n_saved}"
                )
        # Saved indices may be numbered differently (e.g. torch numbers by first
        # appearance); map them to our parameters group by group, position by position.
        params: dict[int, Parameter] = {}
        for group, saved in zip(self.param_groups, saved_groups, strict=True):
            for saved_index, param in zip(saved["params"], group["params"], strict=True):
                params[int(saved_index)] = param

        new_groups = [self._load_group(name, g, saved) for g, saved in enumerate(saved_groups)]
        new_state: dict[Parameter, dict[str, Any]] = {}
        for key, entries in state_dict["state"].items():
            if int(key) not in params:
                raise ValueError(
                    f"{name}: state entry {key!r} names no parameter; the state dict's "
                    f"groups hold indices {sorted(params)}"
                )
            param = params[int(key)]
            loaded = self._load_entries(name, str(key), param, entries)
            if loaded:
                new_state[param] = loaded

        for group, hyper in zip(self.param_groups, new_groups, strict=True):
            group.update(hyper)
        self.state = new_state

    def _load_group(self, name: str, g: int, saved: dict[str, Any]) -> dict[str, Any]:
        """Validated hyperparameters of saved group ``g`` (without ``"params"``)."""
        for flag in _TORCH_UNSUPPORTED_FLAGS:
            if saved.get(flag):
                raise ValueError(
                    f"{name}: parameter group {g} sets {flag}={saved[flag]!r}, which "
                    f"{type(self).__name__} does not support"
                )
        decoupled = bool(getattr(self, "_decoupled", False))
        if "decoupled_weight_decay" in saved and bool(saved["decoupled_weight_decay"]) != decoupled:
            raise ValueError(
                f"{name}: parameter group {g} was saved with decoupled_weight_decay="
                f"{saved['decoupled_weight_decay']!r} but {type(self).__name__} uses "
                f"{decoupled} (AdamW decouples the decay, Adam does not)"
            )
        hyper = {}
        for key, value in saved.items():
            if key == "params" or key in _TORCH_UNSUPPORTED_FLAGS or key in _TORCH_IGNORED_KEYS:
                continue
            hyper[key] = tuple(value) if isinstance(value, list) else value
        candidate = {**self.param_groups[g], **hyper}
        self._validate(candidate)
        return hyper

    def _load_entries(
        self, name: str, key: str, param: Parameter, entries: dict[str, Any]
    ) -> dict[str, Any]:
        """The state of one parameter, moved to its backend and dtype."""
        known = self._array_state + self._scalar_state
        unknown = [k for k in entries if k not in known]
        if unknown:
            raise ValueError(
                f"{name}: state of parameter {key} has unexpected entries {unknown}; "
                f"{type(self).__name__} keeps {list(known)}"
            )
        backend = backends.get(backends.namespace_name(param.data))
        loaded: dict[str, Any] = {}
        for entry, value in entries.items():
            if value is None:  # torch writes momentum_buffer=None when momentum is 0
                continue
            host = backends.to_host(value)
            if entry in self._scalar_state:  # counts, e.g. Adam's step (a float tensor in torch)
                loaded[entry] = int(host)
                continue
            if tuple(host.shape) != param.shape:
                raise ValueError(
                    f"{name}: state {entry!r} of parameter {key} has shape "
                    f"{tuple(host.shape)}, expected the parameter's shape {param.shape}"
                )
            loaded[entry] = backend.asarray(host, dtype=param.data.dtype)
        if loaded and set(loaded) != set(known):
            raise ValueError(
                f"{name}: state of parameter {key} is incomplete: has {sorted(loaded)}, "
                f"{type(self).__name__} needs {sorted(known)}"
            )
        return loaded

    def _index_of(self) -> dict[int, int]:
        return {id(p): i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}

    # -- names --------------------------------------------------------------------

    def _name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for g, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {g}")
            lines.extend(f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params")
        lines.append(")")
        return "\n".join(lines)


# -- helpers for subclasses -----------------------------------------------------------


def check_real(owner: str, name: str, value: Any, low: float = 0.0) -> None:
    """Raise unless ``value`` is a finite real number ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a real number, got {value!r}")
    if not math.isfinite(value) or value < low:
        raise ValueError(f"{owner}: {name} must be a finite number >= {low}, got {value!r}")


def _match_state(state: dict[str, Any], data: Any) -> None:
    """Move state arrays to ``data``'s backend and dtype where they differ.

    This is what makes ``model.to("cupy")`` (or a dtype change) after some
    steps safe: the state follows its parameter, explicitly, once.
    """
    kind, dtype = type(data), data.dtype
    want = None
    for key, value in state.items():
        if not hasattr(value, "shape") or (type(value) is kind and value.dtype == dtype):
            continue
        want = want or backends.namespace_name(data)
        if backends.namespace_name(value) != want or value.dtype != data.dtype:
            host = backends.to_host(value)
            state[key] = backends.get(want).asarray(host, dtype=data.dtype)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def _dtype_name(dtype: Any) -> str:
    """``float32`` for NumPy/CuPy dtypes and ``array_api_strict.float32`` alike."""
    return str(dtype).rsplit(".", 1)[-1]
