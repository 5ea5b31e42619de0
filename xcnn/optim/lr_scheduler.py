"""Learning-rate schedules, stepped once per epoch as in PyTorch.

Each scheduler computes the learning rate of epoch ``e`` in closed form from
the base learning rates (the groups' ``lr`` when the scheduler is built) and
writes it into ``optimizer.param_groups[i]["lr"]``; building the scheduler
sets epoch 0. Per group with base rate ``base``:

StepLR::

    lr(e) = base * gamma ** (e // step_size)

CosineAnnealingLR, with ``W = warmup_epochs`` (``W = 0``: PyTorch's closed form)::

    lr(e) = base * (s + (1 - s) * e / W)                                  e < W
    lr(e) = eta_min + (base - eta_min) * (1 + cos(pi * (e - W) / (T_max - W))) / 2    e >= W

where ``s = warmup_start_factor``. The warmup rises linearly from ``s * base``
to ``base`` at epoch ``W``; the cosine then reaches ``eta_min`` at ``T_max``
(so ``T_max`` counts the warmup epochs too) and, like PyTorch's, rises again
after it.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from xcnn.optim.optimizer import Optimizer, check_real

__all__ = ["CosineAnnealingLR", "LRScheduler", "StepLR"]


class LRScheduler:
    """Base class: sets each group's ``lr`` to ``_lr_at(base_lr, last_epoch)``.

    Parameters
    ----------
    optimizer : Optimizer
        Whose ``param_groups[i]["lr"]`` the scheduler drives.

    Attributes
    ----------
    optimizer : Optimizer
    base_lrs : list of float
        The groups' learning rates when the scheduler was built.
    last_epoch : int
        The epoch whose learning rate is set (0 right after construction).
    """

    #: Names of the hyperparameters saved by :meth:`state_dict` (subclasses).
    _hyperparameters: tuple[str, ...] = ()

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"{type(self).__name__}: expected an xcnn.optim.Optimizer, "
                f"got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        self.base_lrs = [float(group["lr"]) for group in optimizer.param_groups]
        self.last_epoch = -1
        self._last_lr: list[float] = []
        self.step()

    def _lr_at(self, base_lr: float, epoch: int) -> float:
        raise NotImplementedError(f"{type(self).__name__} does not implement _lr_at()")

    def _validate(self, values: dict[str, Any]) -> None:
        """Raise for invalid hyperparameters (subclasses)."""

    def get_lr(self) -> list[float]:
        """The learning rate of every group at ``last_epoch``."""
        return [self._lr_at(base, self.last_epoch) for base in self.base_lrs]

    def get_last_lr(self) -> list[float]:
        """The learning rates most recently set, one per parameter group."""
        return list(self._last_lr)

    def step(self) -> None:
        """Advance one epoch and set the groups' learning rates for it."""
        self.last_epoch += 1
        self._apply()

    def _apply(self) -> None:
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        self._last_lr = lrs

    def state_dict(self) -> dict[str, Any]:
        """The schedule's position and settings, as a JSON-able dict."""
        state = {name: getattr(self, name) for name in self._hyperparameters}
        state.update(
            last_epoch=self.last_epoch, base_lrs=list(self.base_lrs), last_lr=self.get_last_lr()
        )
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` and set the groups' learning rates for its epoch.

        Raises
        ------
        KeyError
            A needed entry is missing.
        ValueError
            The number of base learning rates differs from the number of
            parameter groups, or a value is invalid.
        """
        name = f"{type(self).__name__}.load_state_dict"
        needed = ("last_epoch", "base_lrs", *self._hyperparameters)
        missing = [key for key in needed if key not in state_dict]
        if missing:
            raise KeyError(f"{name}: missing entries {missing} (expected {list(needed)})")
        base_lrs = [float(lr) for lr in state_dict["base_lrs"]]
        if len(base_lrs) != len(self.optimizer.param_groups):
            raise ValueError(
                f"{name}: the optimizer has {len(self.optimizer.param_groups)} parameter "
                f"group(s), the state dict has {len(base_lrs)} base learning rate(s)"
            )
        last_epoch = state_dict["last_epoch"]
        if isinstance(last_epoch, bool) or not isinstance(last_epoch, numbers.Integral):
            raise ValueError(f"{name}: last_epoch must be an int, got {last_epoch!r}")
        values = {key: state_dict[key] for key in self._hyperparameters}
        self._validate(values)
        for key, value in values.items():
            setattr(self, key, value)
        self.base_lrs = base_lrs
        self.last_epoch = int(last_epoch)
        self._apply()


class StepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs.

    Parameters
    ----------
    optimizer : Optimizer
    step_size : int
        Epochs between decays, ``>= 1``.
    gamma : float, default 0.1
        Decay factor, ``> 0``.

    Examples
    --------
    >>> import xcnn
    >>> p = xcnn.nn.Parameter(xcnn.backends.current().asarray([1.0]))
    >>> opt = xcnn.optim.SGD([p], lr=1.0)
    >>> sched = xcnn.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    >>> lrs = []
    >>> for epoch in range(5):
    ...     lrs.append(sched.get_last_lr()[0])
    ...     sched.step()
    >>> lrs
    [1.0, 1.0, 0.5, 0.5, 0.25]
    """

    _hyperparameters = ("step_size", "gamma")

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        self._validate({"step_size": step_size, "gamma": gamma})
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer)

    def _validate(self, values: dict[str, Any]) -> None:
        step_size = values["step_size"]
        if isinstance(step_size, bool) or not isinstance(step_size, numbers.Integral):
            raise TypeError(f"StepLR: step_size must be an int, got {step_size!r}")
        if step_size < 1:
            raise ValueError(f"StepLR: step_size must be >= 1, got {step_size!r}")
        check_real("StepLR", "gamma", values["gamma"])
        if values["gamma"] == 0:
            raise ValueError("StepLR: gamma must be > 0, got 0")

    def _lr_at(self, base_lr: float, epoch: int) -> float:
        return base_lr * float(self.gamma) ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from the base rate to ``eta_min`` over ``T_max`` epochs.

    With ``warmup_epochs = W > 0`` the first ``W`` epochs rise linearly from
    ``warmup_start_factor * base`` to the base rate, and the cosine covers the
    remaining ``T_max - W`` epochs (formulas in the module docstring).

    Parameters
    ----------
    optimizer : Optimizer
    T_max : int
        Epoch at which the rate reaches ``eta_min`` (warmup included), ``>= 1``.
    eta_min : float, default 0.0
        Minimum learning rate, ``>= 0``.
    warmup_epochs : int, default 0
        Length of the linear warmup, ``0 <= warmup_epochs < T_max``.
    warmup_start_factor : float, default 0.1
        Fraction of the base rate at epoch 0 of the warmup, in ``(0, 1]``.

    Examples
    --------
    >>> import xcnn
    >>> p = xcnn.nn.Parameter(xcnn.backends.current().asarray([1.0]))
    >>> opt = xcnn.optim.SGD([p], lr=1.0)
    >>> sched = xcnn.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4, warmup_epochs=2)
    >>> lrs = []
    >>> for epoch in range(5):
    ...     lrs.append(round(sched.get_last_lr()[0], 4))
    ...     sched.step()
    >>> lrs
    [0.1, 0.55, 1.0, 0.5, 0.0]
    """

    _hyperparameters = ("T_max", "eta_min", "warmup_epochs", "warmup_start_factor")

    def __init__(
        self,
        optimizer: Optimizer,
        T_max: int,
        eta_min: float = 0.0,
        warmup_epochs: int = 0,
        warmup_start_factor: float = 0.1,
    ):
        self._validate(
            {
                "T_max": T_max,
                "eta_min": eta_min,
                "warmup_epochs": warmup_epochs,
                "warmup_start_factor": warmup_start_factor,
            }
        )
        self.T_max = T_max
        self.eta_min = eta_min
        self.warmup_epochs = warmup_epochs
        self.warmup_start_factor = warmup_start_factor
        super().__init__(optimizer)

    def _validate(self, values: dict[str, Any]) -> None:
        for key in ("T_max", "warmup_epochs"):
            value = values[key]
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"CosineAnnealingLR: {key} must be an int, got {value!r}")
        if values["T_max"] < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be >= 1, got {values['T_max']!r}")
        if not 0 <= values["warmup_epochs"] < values["T_max"]:
            raise ValueError(
                "CosineAnnealingLR: warmup_epochs must be in [0, T_max), got "
                f"warmup_epochs={values['warmup_epochs']!r} with T_max={values['T_max']!r}"
            )
        check_real("CosineAnnealingLR", "eta_min", values["eta_min"])
        factor = values["warmup_start_factor"]
        check_real("CosineAnnealingLR", "warmup_start_factor", factor)
        if not 0 < factor <= 1:
            raise ValueError(
                f"CosineAnnealingLR: warmup_start_factor must be in (0, 1], got {factor!r}"
            )

    def _lr_at(self, base_lr: float, epoch: int) -> float:
        warmup = self.warmup_epochs
        if epoch < warmup:
            start = float(self.warmup_start_factor)
            return base_lr * (start + (1.0 - start) * epoch / warmup)
        eta_min = float(self.eta_min)
        # Same expression as torch's closed form, so warmup_epochs=0 matches it exactly.
        return (
            eta_min
            + (base_lr - eta_min)
            * (1 + math.cos(math.pi * (epoch - warmup) / (self.T_max - warmup)))
            / 2
        )
