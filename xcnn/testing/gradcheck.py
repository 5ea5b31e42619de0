"""Finite-difference gradient check for layers, forward/backward pairs and the graph.

The check projects the output onto a fixed random direction ``g`` and compares,
for every checked element ``t_i`` of the input and of each parameter::

    analytic_i = the gradient the backward pass returns (input) or accumulates (parameters)
    numeric_i  = (L(t_i + eps) - L(t_i - eps)) / (2 eps),   L = sum(forward(...) * g)

A function of Tensors (``MyFunction.apply``, or a lambda of Tensor operations) given
without ``backward=`` is checked through the graph: its inputs become Tensors that
require grad, ``out.backward(g)`` fills their ``.grad``, and that is the analytic side.

Central differences have O(eps^2) error, which float64 and ``eps = 1e-6``
bring far below the tolerances; float32 cannot, so the check requires float64.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from xcnn import backends
from xcnn.autograd import Tensor, no_grad


class GradcheckError(AssertionError):
    """The analytic and numerical gradients disagree (the message says where)."""


def gradcheck(
    fn: Any,
    inputs: Any,
    backward: Callable[..., Any] | None = None,
    *,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-7,
    max_elements: int | None = 64,
    seed: int = 0,
    check_params: bool = True,
) -> bool:
    """Compare a backward pass with central finite differences (float64 only).

    Three kinds of ``fn`` are checked:

    * an ``xcnn.nn.Module``: w.r.t. its input and every parameter (it is put in
      training mode);
    * a forward function on arrays together with its ``backward=``;
    * a function of Tensors without ``backward=`` (``MyFunction.apply``, a lambda of
      Tensor operations): each input is wrapped as ``xcnn.Tensor(x, requires_grad=True)``,
      the output is backpropagated with the random direction through the graph, and
      each input's ``.grad`` is compared with finite differences of ``fn`` (evaluated
      under ``no_grad``). An input that receives no gradient counts as zeros.

    Parameters
    ----------
    fn : Module or callable
        The Module, forward function, or function of Tensors ``fn(*inputs)``
        (returning one Tensor).
    inputs : array or sequence of arrays
        The input(s), float64 arrays of one backend (Tensors are taken by their ``.data``).
    backward : callable, optional
        For a forward function on arrays: ``backward(grad_output)`` returning the
        gradient w.r.t. each input (a tuple, or one array for a single input). Call
        ``fn`` inside it again if it needs a fresh cache. Omit it to check ``fn``
        through the graph.
    eps, rtol, atol : float
        Step and tolerances: passes where ``|a - n| <= atol + rtol * max(|a|, |n|)``
        for every checked element.
    max_elements : int or None
        Check at most this many (randomly chosen) elements per array; ``None``
        checks all of them.
    seed : int
        Seeds the projection direction and the element choice.
    check_params : bool
        Also check the parameters of a Module.

    Returns
    -------
    bool
        ``True``; a mismatch raises :class:`GradcheckError` naming the array,
        the element index, both values and what to look at.

    Examples
    --------
    A function of Tensors, checked through the graph:

    >>> import numpy as np
    >>> from xcnn.testing import gradcheck
    >>> x = np.array([[0.5, -1.0], [2.0, 0.25]])
    >>> w = np.array([1.5, -0.5])
    >>> gradcheck(lambda x, w: (x * w).exp().sum(dim=1), [x, w])
    True
    """
    rng = np.random.default_rng(seed)
    arrays = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    arrays = [a.data if isinstance(a, Tensor) else a for a in arrays]
    backend = backends.get(backends.namespace_name(arrays[0]))
    xp = backend.xp
    for i, a in enumerate(arrays):
        if backends.dtype_name(a.dtype) != "float64":
            raise TypeError(
                f"gradcheck needs float64 inputs (float32 rounding swamps finite "
                f"differences); input {i} is {a.dtype}. Cast the inputs and call "
                "module.double() first."
            )

    is_module = hasattr(fn, "named_parameters") and hasattr(fn, "backward")
    through_graph = not is_module and backward is None
    if is_module:
        module = fn
        module.train()
        params = list(module.named_parameters()) if check_params else []
        for name, p in params:
            if backends.dtype_name(p.dtype) != "float64":
                raise TypeError(f"gradcheck needs float64 parameters; {name} is {p.dtype}")

        def forward(*xs: Any) -> Any:
            return module(xs[0])
    elif through_graph:
        module, params = None, []

        def forward(*xs: Any) -> Any:
            with no_grad():
                out = fn(*(Tensor(x) for x in xs))
            if not isinstance(out, Tensor):
                raise TypeError(
                    f"gradcheck without backward= needs fn to return a Tensor, got "
                    f"{type(out).__name__}; pass backward= for a function on arrays"
                )
            return out.data
    else:
        module, params = None, []
        forward = fn

    def loss(direction: Any) -> float:
        return float(backend.to_numpy(xp.sum(forward(*arrays) * direction)))

    out = forward(*arrays)
    direction = backend.asarray(rng.standard_normal(tuple(out.shape)), dtype="float64")

    if is_module:
        for _, p in params:
            p.grad = None
        module(arrays[0])
        analytic_inputs = [module.backward(direction)]
        analytic_params = [p.grad for _, p in params]
    elif through_graph:
        leaves = [Tensor(a, requires_grad=True) for a in arrays]
        fn(*leaves).backward(direction)
        analytic_inputs = [
            xp.zeros(t.data.shape, dtype=t.data.dtype) if t.grad is None else t.grad for t in leaves
        ]
        analytic_params = []
    else:
        forward(*arrays)
        grads = backward(direction)
        analytic_inputs = list(grads) if isinstance(grads, (list, tuple)) else [grads]
        analytic_params = []
        if len(analytic_inputs) != len(arrays):
            raise TypeError(
                f"backward returned {len(analytic_inputs)} gradients for {len(arrays)} inputs"
            )

    def numeric(get: Callable[[], Any], set_: Callable[[Any], None], index: tuple) -> float:
        original = backend.to_numpy(get()).copy()
        bumped = original.copy()
        bumped[index] += eps
        set_(backend.asarray(bumped))
        up = loss(direction)
        bumped[index] -= 2 * eps
        set_(backend.asarray(bumped))
        down = loss(direction)
        set_(backend.asarray(original))
        return (up - down) / (2 * eps)

    checks: list[tuple[str, Any, Callable[[], Any], Callable[[Any], None]]] = []
    for i in range(len(arrays)):

        def get_input(i: int = i) -> Any:
            return arrays[i]

        def set_input(value: Any, i: int = i) -> None:
            arrays[i] = value

        checks.append((f"input {i}", analytic_inputs[i], get_input, set_input))
    for (name, p), grad in zip(params, analytic_params, strict=True):

        def get_param(p: Any = p) -> Any:
            return p.data

        def set_param(value: Any, p: Any = p) -> None:
            p.data = value

        checks.append((f"parameter {name!r}", grad, get_param, set_param))

    for label, analytic, get, set_ in checks:
        shape = tuple(get().shape)
        if analytic is None:
            raise GradcheckError(f"{label}: backward produced no gradient (None)")
        if type(analytic) is not type(get()):
            raise GradcheckError(
                f"{label}: the gradient is a {backends.namespace_name(analytic)} array, but "
                f"the array lives on {backends.namespace_name(get())}"
            )
        analytic_host = backend.to_numpy(analytic)
        if analytic_host.shape != shape:
            raise GradcheckError(
                f"{label}: gradient has shape {analytic_host.shape}, expected {shape}"
            )
        for index in _chosen_indices(shape, max_elements, rng):
            n = numeric(get, set_, index)
            a = float(analytic_host[index])
            if abs(a - n) > atol + rtol * max(abs(a), abs(n)):
                raise GradcheckError(
                    f"{label}, element {index}: backward gives {a:.10g} but finite "
                    f"differences give {n:.10g} (|diff| {abs(a - n):.3g} > tolerance). "
                    "Check the gradient formula for this array; if only a few elements "
                    "differ, look for a kink (ReLU at 0, max-pool ties) at that input."
                )
    if module is not None:
        for _, p in params:
            p.grad = None
    return True


def _chosen_indices(
    shape: tuple[int, ...], max_elements: int | None, rng: np.random.Generator
) -> Sequence[tuple[int, ...]]:
    total = int(np.prod(shape)) if shape else 1
    flat = np.arange(total)
    if max_elements is not None and total > max_elements:
        flat = np.sort(rng.choice(total, size=max_elements, replace=False))
    return [tuple(int(v) for v in np.unravel_index(i, shape)) for i in flat]
