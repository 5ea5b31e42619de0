"""Adam and AdamW: adaptive moment estimation, with L2 or decoupled weight decay.

PyTorch's update rule (``torch.optim.Adam`` / ``torch.optim.AdamW``), per
parameter ``p`` with gradient ``g`` at step ``t = 1, 2, ...``; ``m`` and ``v``
start at zero and have ``p``'s shape and dtype::

    g = g + weight_decay * p                (Adam: L2 penalty in the gradient)
    p = p - lr * weight_decay * p           (AdamW: decoupled decay, before the step)
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from xcnn.nn.module import Parameter
from xcnn.optim.optimizer import Optimizer, check_real

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """Adam, with the L2 penalty added to the gradient.

    Parameters
    ----------
    params : iterable of Parameter, or iterable of dict
        Parameters to optimize, or parameter groups (see :class:`Optimizer`).
    lr : float, default 1e-3
        Learning rate, ``>= 0``.
    betas : (float, float), default (0.9, 0.999)
        Decay rates of the first and second moment estimates, each in ``[0, 1)``.
    eps : float, default 1e-8
        Added to the denominator for numerical stability, ``>= 0``.
    weight_decay : float, default 0.0
        L2 penalty, added to the gradient as ``weight_decay * p``.

    Notes
    -----
    State per parameter, made at its first update: ``"step"`` (int),
    ``"exp_avg"`` and ``"exp_avg_sq"`` (shape of the parameter).

    Examples
    --------
    >>> import xcnn
    >>> b = xcnn.backends.current()
    >>> p = xcnn.nn.Parameter(b.asarray([1.0, 2.0], dtype="float32"))
    >>> opt = xcnn.optim.Adam([p], lr=0.1)
    >>> p.grad = b.asarray([3.0, -0.5], dtype="float32")
    >>> opt.step()
    >>> p.data
    array([0.9, 2.1], dtype=float32)
    """

    _array_state = ("exp_avg", "exp_avg_sq")
    _scalar_state = ("step",)
    #: AdamW decays the weights directly instead of adding the decay to the gradient.
    _decoupled = False

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict],
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    def _validate(self, group: dict[str, Any]) -> None:
        name = type(self).__name__
        check_real(name, "lr", group["lr"])
        check_real(name, "eps", group["eps"])
        check_real(name, "weight_decay", group["weight_decay"])
        betas = group["betas"]
        if isinstance(betas, str) or not isinstance(betas, Sequence) or len(betas) != 2:
            raise TypeError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
        for i, beta in enumerate(betas):
            check_real(name, f"betas[{i}]", beta)
            if beta >= 1:
                raise ValueError(f"{name}: betas[{i}] must be in [0, 1), got {beta!r}")

    def _update(
        self, param: Parameter, grad: Any, state: dict[str, Any], group: dict[str, Any], xp: Any
    ) -> None:
        # float() keeps a NumPy float64 hyperparameter from promoting float32 arrays.
        lr = float(group["lr"])
        beta1, beta2 = (float(b) for b in group["betas"])
        eps = float(group["eps"])
        weight_decay = float(group["weight_decay"])

        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(param.data)
            state["exp_avg_sq"] = xp.zeros_like(param.data)
        state["step"] += 1
        step = state["step"]

        if weight_decay != 0:
            if self._decoupled:
                param.data *= 1.0 - lr * weight_decay
            else:
                grad = grad + weight_decay * param.data  # a new array: param.grad stays untouched

        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg *= beta1
        exp_avg += (1.0 - beta1) * grad
        exp_avg_sq *= beta2
        exp_avg_sq += (1.0 - beta2) * (grad * grad)
        state["exp_avg"], state["exp_avg_sq"] = exp_avg, exp_avg_sq

        bias_correction1 = 1.0 - beta1**step
        bias_correction2 = 1.0 - beta2**step
        denom = xp.sqrt(exp_avg_sq) / math.sqrt(bias_correction2) + eps
        param.data -= (lr / bias_correction1) * (exp_avg / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter).

    Same parameters as :class:`Adam`, except that ``weight_decay`` (default
    ``0.01``) shrinks the weights directly, ``p -= lr * weight_decay * p``,
    before the Adam step, instead of entering the gradient.

    Examples
    --------
    >>> import xcnn
    >>> b = xcnn.backends.current()
    >>> p = xcnn.nn.Parameter(b.asarray([1.0], dtype="float32"))
    >>> opt = xcnn.optim.AdamW([p], lr=0.1, weight_decay=0.5)
    >>> p.grad = b.asarray([3.0], dtype="float32")
    >>> opt.step()
    >>> p.data
    array([0.85], dtype=float32)
    """

    _decoupled = True

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict],
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
