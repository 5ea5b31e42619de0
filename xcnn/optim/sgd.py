"""Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay.

PyTorch's update rule (``torch.optim.SGD``), per parameter ``p`` with gradient ``g``,
all arrays of ``p``'s shape and dtype::

    g = g + weight_decay * p                       (if weight_decay != 0)
    b = g                                          (first step: the buffer IS the gradient)
    b = momentum * b + (1 - dampening) * g         (later steps)
    g = g + momentum * b   if nesterov   else   g = b      (if momentum != 0)
    p = p - lr * g
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from xcnn.backends import array_namespace
from xcnn.nn.module import Parameter
from xcnn.optim.optimizer import Optimizer, check_real

__all__ = ["SGD"]


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum.

    Parameters
    ----------
    params : iterable of Parameter, or iterable of dict
        Parameters to optimize, or parameter groups (see :class:`Optimizer`).
    lr : float
        Learning rate, ``>= 0``.
    momentum : float, default 0.0
        Momentum factor, ``>= 0``.
    nesterov : bool, default False
        Use Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
    weight_decay : float, default 0.0
        L2 penalty, added to the gradient as ``weight_decay * p``.
    dampening : float, default 0.0
        Dampening of the momentum, in ``[0, 1]``.

    Notes
    -----
    State per parameter: ``"momentum_buffer"`` (shape of the parameter), made
    at the parameter's first update and only when ``momentum != 0``.

    Examples
    --------
    >>> import xcnn
    >>> p = xcnn.nn.Parameter(xcnn.backends.current().asarray([1.0, 2.0], dtype="float32"))
    >>> opt = xcnn.optim.SGD([p], lr=0.5, momentum=0.9)
    >>> p.grad = xcnn.backends.current().asarray([1.0, -1.0], dtype="float32")
    >>> opt.step()
    >>> p.data
    array([0.5, 2.5], dtype=float32)
    """

    _array_state = ("momentum_buffer",)

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict],
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        dampening: float = 0.0,
    ):
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
        }
        super().__init__(params, defaults)

    def _validate(self, group: dict[str, Any]) -> None:
        check_real("SGD", "lr", group["lr"])
        check_real("SGD", "momentum", group["momentum"])
        check_real("SGD", "weight_decay", group["weight_decay"])
        check_real("SGD", "dampening", group["dampening"])
        if group["dampening"] > 1:
            raise ValueError(f"SGD: dampening must be in [0, 1], got {group['dampening']!r}")
        if not isinstance(group["nesterov"], bool):
            raise TypeError(f"SGD: nesterov must be True or False, got {group['nesterov']!r}")
        if group["nesterov"] and (group["momentum"] == 0 or group["dampening"] != 0):
            raise ValueError(
                "SGD: nesterov=True needs momentum > 0 and dampening == 0, got "
                f"momentum={group['momentum']!r}, dampening={group['dampening']!r}"
            )

    def _update_group(
        self,
        group: dict[str, Any],
        params: list[Parameter],
        grads: list[Any],
        states: list[dict[str, Any]],
    ) -> None:
        # The group's hyperparameters read once for all its parameters.
        # float() keeps a NumPy float64 hyperparameter from promoting float32 arrays.
        lr = float(group["lr"])
        momentum = float(group["momentum"])
        dampening = float(group["dampening"])
        weight_decay = float(group["weight_decay"])
        nesterov = group["nesterov"]
        namespaces: dict[type, Any] = {}
        for param, grad, state in zip(params, grads, states, strict=True):
            data = param.data
            if weight_decay != 0:
                grad = grad + weight_decay * data  # a new array: param.grad stays untouched
            if momentum != 0:
                buf = state.get("momentum_buffer")
                if buf is None:
                    xp = namespaces.get(type(data))
                    if xp is None:
                        xp = namespaces[type(data)] = array_namespace(data)
                    buf = xp.asarray(grad, copy=True)  # a copy: updates never alias .grad
                else:
                    buf *= momentum
                    # 1.0 * grad is grad exactly: skipping it saves a pass and an array.
                    buf += grad if dampening == 0 else (1.0 - dampening) * grad
                state["momentum_buffer"] = buf
                grad = grad + momentum * buf if nesterov else buf
            param.data -= lr * grad
