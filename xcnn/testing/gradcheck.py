"""Finite-difference gradient check for layers and forward/backward pairs.

The check projects the output onto a fixed random direction ``g`` and compares,
for every checked element ``t_i`` of the input and of each parameter::

    analytic_i = the gradient the backward pass returns (input) or accumulates (parameters)
    numeric_i  = (L(t_i + eps) - L(t_i - eps)) / (2 eps),   L = sum(forward(...) * g)

Central differences have O(eps^2) error, which float64 and ``eps = 1e-6``
bring far below the tolerances; float32 cannot, so the check requires float64.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from xcnn import backends


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

    Parameters
    ----------
    fn : Module or callable
        An ``xcnn.nn.Module`` (checked w.r.t. its input and every parameter;
        it is put in training mode), or a forward function ``fn(*inputs)``.
    inputs : array or sequence of arrays
        The input(s), float64 arrays of one backend.
    backward : callable, optional
        For a plain function: ``backward(grad_output)`` returning the gradient
        w.r.t. each input (a tuple, or one array for a single input). Call
        ``fn`` inside it again if it needs a fresh cache.
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
    """
    rng = np.random.default_rng(seed)
    arrays = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
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
    if is_module:
        module = fn
        module.train()
        params = list(module.named_parameters()) if check_params else []
        for name, p in params:
            if backends.dtype_name(p.dtype) != "float64":
                raise TypeError(f"gradcheck needs float64 parameters; {name} is {p.dtype}")

        def forward(*xs: Any) -> Any:
            return module(xs[0])
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
    else:
        if backward is None:
            raise TypeError("gradcheck of a plain function needs its backward= function")
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
