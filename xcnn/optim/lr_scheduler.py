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

OneCycleLR (stepped once per *batch*, ``n`` = step) anneals between
``initial = max_lr / div_factor``, ``max_lr`` and ``min = initial / final_div_factor``
in phases ending at steps ``pct_start * total - 1`` and ``total - 1`` (three
phases: ``pct_start * total - 1``, ``2 * pct_start * total - 2``, ``total - 1``,
going initial -> max -> initial -> min)::

    lr(n) = end + (start - end) * (1 + cos(pi * pct)) / 2     anneal_strategy="cos"
    lr(n) = start + (end - start) * pct                       anneal_strategy="linear"

with ``pct = (n - phase_start) / (phase_end - phase_start)`` within the phase.
With ``cycle_momentum`` the same phases anneal SGD's momentum (Adam's beta1)
the other way: ``max_momentum -> base_momentum -> max_momentum``.

ReduceLROnPlateau is not a closed form: ``step(metric)`` multiplies each
group's rate by ``factor`` (not below ``min_lr``) once the metric has failed to
improve for more than ``patience`` steps, then waits ``cooldown`` steps.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from xcnn.optim.optimizer import Optimizer, check_real


def _per_group(name: str, value: Any, n_groups: int) -> list[Any]:
    """One value per parameter group from a scalar or a sequence of ``n_groups``."""
    if not isinstance(value, (list, tuple)):
        return [value] * n_groups
    if len(value) != n_groups:
        raise ValueError(
            f"OneCycleLR: {name} has {len(value)} value(s), the optimizer has "
            f"{n_groups} parameter group(s)"
        )
    return list(value)


def _check_int(owner: str, name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}: {name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{owner}: {name} must be >= {low}, got {value!r}")


__all__ = ["CosineAnnealingLR", "LRScheduler", "OneCycleLR", "ReduceLROnPlateau", "StepLR"]


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
        self._require(name, state_dict, ("last_epoch", "base_lrs", *self._hyperparameters))
        base_lrs = self._rates(name, state_dict, "base_lrs", "base learning rate(s)")
        last_epoch = state_dict["last_epoch"]
        if isinstance(last_epoch, bool) or not isinstance(last_epoch, numbers.Integral):
            raise ValueError(f"{name}: last_epoch must be an int, got {last_epoch!r}")
        self._load_hyperparameters(state_dict)
        self.base_lrs = base_lrs
        self.last_epoch = int(last_epoch)
        self._apply()

    @staticmethod
    def _require(name: str, state_dict: dict[str, Any], needed: tuple[str, ...]) -> None:
        """Raise a KeyError naming every entry of ``needed`` that ``state_dict`` lacks."""
        missing = [key for key in needed if key not in state_dict]
        if missing:
            raise KeyError(f"{name}: missing entries {missing} (expected {list(needed)})")

    def _rates(self, name: str, state_dict: dict[str, Any], key: str, what: str) -> list[float]:
        """``state_dict[key]`` as floats, one per parameter group (else a ValueError)."""
        rates = [float(lr) for lr in state_dict[key]]
        if len(rates) != len(self.optimizer.param_groups):
            raise ValueError(
                f"{name}: the optimizer has {len(self.optimizer.param_groups)} parameter "
                f"group(s), the state dict has {len(rates)} {what}"
            )
        return rates

    def _load_hyperparameters(self, state_dict: dict[str, Any]) -> None:
        """Validate the hyperparameters of ``state_dict``, then set them."""
        values = {key: state_dict[key] for key in self._hyperparameters}
        self._validate(values)
        for key, value in values.items():
            setattr(self, key, value)


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


class OneCycleLR(LRScheduler):
    """The 1cycle policy: warm up to ``max_lr``, then anneal far below the start.

    Step it once per batch; ``total_steps`` steps are allowed, one more raises
    (as in PyTorch). Formulas in the module docstring.

    Parameters
    ----------
    optimizer : Optimizer
    max_lr : float or list of float
        Peak learning rate, one for all groups or one per group, ``> 0``.
    total_steps : int, optional
        Length of the cycle, ``>= 1``. If omitted, ``epochs * steps_per_epoch``.
    epochs, steps_per_epoch : int, optional
        Used when ``total_steps`` is omitted, both ``>= 1``.
    pct_start : float, default 0.3
        Fraction of the cycle spent rising, in ``[0, 1]``.
    anneal_strategy : {"cos", "linear"}, default "cos"
    div_factor : float, default 25.0
        ``initial_lr = max_lr / div_factor``, ``> 0``.
    final_div_factor : float, default 1e4
        ``min_lr = initial_lr / final_div_factor``, ``> 0``.
    three_phase : bool, default False
        Fall back to ``initial_lr`` symmetrically before annealing to ``min_lr``.
    cycle_momentum : bool, default False
        Also anneal SGD's ``momentum`` (or Adam's ``beta1``) inversely to the
        rate, between ``max_momentum`` and ``base_momentum``, with the same
        phases. Off by default, unlike PyTorch, so an optimizer's momentum is
        never replaced unless asked for.
    base_momentum, max_momentum : float or list of float, default 0.85, 0.95
        Used with ``cycle_momentum``, in ``[0, 1)``, one for all groups or one per group.

    Examples
    --------
    >>> import xcnn
    >>> p = xcnn.nn.Parameter(xcnn.backends.current().asarray([1.0]))
    >>> opt = xcnn.optim.SGD([p], lr=1.0)
    >>> sched = xcnn.optim.lr_scheduler.OneCycleLR(
    ...     opt, max_lr=1.0, total_steps=5, pct_start=0.4, anneal_strategy="linear"
    ... )
    >>> lrs = []
    >>> for batch in range(5):
    ...     lrs.append(round(sched.get_last_lr()[0], 4))
    ...     sched.step()
    >>> lrs
    [0.04, 1.0, 0.6667, 0.3333, 0.0]
    """

    _hyperparameters = (
        "max_lr",
        "total_steps",
        "pct_start",
        "anneal_strategy",
        "div_factor",
        "final_div_factor",
        "three_phase",
        "cycle_momentum",
        "base_momentum",
        "max_momentum",
    )

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float | list[float],
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        cycle_momentum: bool = False,
        base_momentum: float | list[float] = 0.85,
        max_momentum: float | list[float] = 0.95,
    ):
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError(
                    "OneCycleLR: give either total_steps or both epochs and steps_per_epoch"
                )
            _check_int("OneCycleLR", "epochs", epochs, 1)
            _check_int("OneCycleLR", "steps_per_epoch", steps_per_epoch, 1)
            total_steps = epochs * steps_per_epoch
        n_groups = len(optimizer.param_groups) if isinstance(optimizer, Optimizer) else 1
        values = {
            "max_lr": _per_group("max_lr", max_lr, n_groups),
            "total_steps": total_steps,
            "pct_start": pct_start,
            "anneal_strategy": anneal_strategy,
            "div_factor": div_factor,
            "final_div_factor": final_div_factor,
            "three_phase": three_phase,
            "cycle_momentum": cycle_momentum,
            "base_momentum": _per_group("base_momentum", base_momentum, n_groups),
            "max_momentum": _per_group("max_momentum", max_momentum, n_groups),
        }
        self._validate(values)
        if cycle_momentum and not {"momentum", "betas"} & optimizer.defaults.keys():
            raise ValueError(
                f"OneCycleLR: cycle_momentum=True needs an optimizer with momentum or betas, "
                f"got {type(optimizer).__name__}"
            )
        for key, value in values.items():
            setattr(self, key, value)
        super().__init__(optimizer)

    def _validate(self, values: dict[str, Any]) -> None:
        for key in ("max_lr", "base_momentum", "max_momentum"):
            per_group = values[key]
            if not isinstance(per_group, list):
                raise TypeError(f"OneCycleLR: {key} must be a list in a state dict")
            if hasattr(self, "optimizer"):
                _per_group(key, per_group, len(self.optimizer.param_groups))
            for value in per_group:
                check_real("OneCycleLR", key, value)
                if key == "max_lr" and value == 0:
                    raise ValueError("OneCycleLR: max_lr must be > 0, got 0")
                if key != "max_lr" and value >= 1:
                    raise ValueError(f"OneCycleLR: {key} must be in [0, 1), got {value!r}")
        _check_int("OneCycleLR", "total_steps", values["total_steps"], 1)
        pct = values["pct_start"]
        check_real("OneCycleLR", "pct_start", pct)
        if pct > 1:
            raise ValueError(f"OneCycleLR: pct_start must be in [0, 1], got {pct!r}")
        if values["anneal_strategy"] not in ("cos", "linear"):
            raise ValueError(
                "OneCycleLR: anneal_strategy must be 'cos' or 'linear', got "
                f"{values['anneal_strategy']!r}"
            )
        for key in ("div_factor", "final_div_factor"):
            check_real("OneCycleLR", key, values[key])
            if values[key] == 0:
                raise ValueError(f"OneCycleLR: {key} must be > 0, got 0")
        for key in ("three_phase", "cycle_momentum"):
            if not isinstance(values[key], bool):
                raise TypeError(f"OneCycleLR: {key} must be a bool, got {values[key]!r}")

    def _phases(self, peak: float, low: float, high: float) -> list[tuple[float, ...]]:
        """``(end_step, start_lr, end_lr, start_momentum, end_momentum)`` per phase, as torch's.

        ``peak`` is the group's max_lr; ``low``/``high`` its base/max momentum.
        """
        initial = peak / float(self.div_factor)
        final = initial / float(self.final_div_factor)
        total, pct = self.total_steps, float(self.pct_start)
        if self.three_phase:
            return [
                (float(pct * total) - 1, initial, peak, high, low),
                (float(2 * pct * total) - 2, peak, initial, low, high),
                (total - 1, initial, final, high, high),
            ]
        return [
            (float(pct * total) - 1, initial, peak, high, low),
            (total - 1, peak, final, low, high),
        ]

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _at(self, group: int, step: int) -> tuple[float, float]:
        """The learning rate and momentum of parameter group ``group`` at ``step``."""
        if step > self.total_steps:
            raise ValueError(
                f"OneCycleLR: tried to step {step} times, but total_steps is "
                f"{self.total_steps}; build a new scheduler for another cycle"
            )
        phases = self._phases(
            float(self.max_lr[group]),
            float(self.base_momentum[group]),
            float(self.max_momentum[group]),
        )
        start_step = 0.0
        for i, (end_step, start_lr, end_lr, start_m, end_m) in enumerate(phases):
            if step <= end_step or i == len(phases) - 1:
                pct = (step - start_step) / (end_step - start_step)
                return self._anneal(start_lr, end_lr, pct), self._anneal(start_m, end_m, pct)
            start_step = end_step
        raise AssertionError("unreachable: the last phase always matches")

    def get_lr(self) -> list[float]:
        """The learning rate of every group at step ``last_epoch``."""
        return [self._at(i, self.last_epoch)[0] for i in range(len(self.max_lr))]

    def _apply(self) -> None:
        super()._apply()
        if not self.cycle_momentum:
            return
        for i, group in enumerate(self.optimizer.param_groups):
            momentum = self._at(i, self.last_epoch)[1]
            if "betas" in group:
                group["betas"] = (momentum, *group["betas"][1:])
            else:
                group["momentum"] = momentum


class ReduceLROnPlateau(LRScheduler):
    """Divide the learning rate when a metric stops improving.

    ``step(metric)`` after each evaluation. The metric improves when
    ``metric < best * (1 - threshold)`` (mode "min", threshold_mode "rel"),
    ``metric < best - threshold`` ("min", "abs"), ``metric > best * (1 +
    threshold)`` ("max", "rel") or ``metric > best + threshold`` ("max", "abs").
    After more than ``patience`` steps without improvement each group's rate
    becomes ``max(lr * factor, min_lr)`` (unchanged if that moves it by no more
    than ``eps``), and the next ``cooldown`` steps count no bad epochs.

    Parameters
    ----------
    optimizer : Optimizer
    mode : {"min", "max"}, default "min"
    factor : float, default 0.1
        In ``[0, 1)``.
    patience : int, default 10
        ``>= 0``.
    threshold : float, default 1e-4
        ``>= 0``.
    threshold_mode : {"rel", "abs"}, default "rel"
    cooldown : int, default 0
        ``>= 0``.
    min_lr : float or list of float, default 0
        Lower bound on the rate, one for all groups or one per group, ``>= 0``.
    eps : float, default 1e-8
        Smallest change of rate that is applied, ``>= 0``.

    Examples
    --------
    >>> import xcnn
    >>> p = xcnn.nn.Parameter(xcnn.backends.current().asarray([1.0]))
    >>> opt = xcnn.optim.SGD([p], lr=1.0)
    >>> sched = xcnn.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=1)
    >>> lrs = []
    >>> for loss in [3.0, 2.0, 2.0, 2.0, 2.0, 2.0]:
    ...     sched.step(loss)
    ...     lrs.append(sched.get_last_lr()[0])
    >>> lrs
    [1.0, 1.0, 1.0, 0.5, 0.5, 0.25]
    """

    _hyperparameters = (
        "mode",
        "factor",
        "patience",
        "threshold",
        "threshold_mode",
        "cooldown",
        "min_lrs",
        "eps",
    )
    #: The counters that :meth:`step` advances, saved with the settings.
    _counters = ("best", "num_bad_epochs", "cooldown_counter")

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float | list[float] = 0,
        eps: float = 1e-8,
    ):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                "ReduceLROnPlateau: expected an xcnn.optim.Optimizer, "
                f"got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        if isinstance(min_lr, (list, tuple)):
            min_lrs = list(min_lr)
        else:
            min_lrs = [min_lr] * len(optimizer.param_groups)
        values = {
            "mode": mode,
            "factor": factor,
            "patience": patience,
            "threshold": threshold,
            "threshold_mode": threshold_mode,
            "cooldown": cooldown,
            "min_lrs": min_lrs,
            "eps": eps,
        }
        self._validate(values)
        for key, value in values.items():
            setattr(self, key, value)
        self.base_lrs = [float(group["lr"]) for group in optimizer.param_groups]
        self.last_epoch = 0
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self._last_lr = list(self.base_lrs)

    def _validate(self, values: dict[str, Any]) -> None:
        name = "ReduceLROnPlateau"
        if values["mode"] not in ("min", "max"):
            raise ValueError(f"{name}: mode must be 'min' or 'max', got {values['mode']!r}")
        if values["threshold_mode"] not in ("rel", "abs"):
            raise ValueError(
                f"{name}: threshold_mode must be 'rel' or 'abs', got {values['threshold_mode']!r}"
            )
        check_real(name, "factor", values["factor"])
        if values["factor"] >= 1:
            raise ValueError(f"{name}: factor must be < 1, got {values['factor']!r}")
        _check_int(name, "patience", values["patience"], 0)
        _check_int(name, "cooldown", values["cooldown"], 0)
        check_real(name, "threshold", values["threshold"])
        check_real(name, "eps", values["eps"])
        min_lrs = values["min_lrs"]
        if not isinstance(min_lrs, list) or len(min_lrs) != len(self.optimizer.param_groups):
            raise ValueError(
                f"{name}: min_lr must be one number or one per parameter group "
                f"({len(self.optimizer.param_groups)}), got {min_lrs!r}"
            )
        for lr in min_lrs:
            check_real(name, "min_lr", lr)

    def _is_better(self, metric: float) -> bool:
        threshold, best = float(self.threshold), self.best
        if self.mode == "min":
            return metric < (
                best * (1 - threshold) if self.threshold_mode == "rel" else best - threshold
            )
        return metric > (
            best * (threshold + 1) if self.threshold_mode == "rel" else best + threshold
        )

    def step(self, metric: float) -> None:  # type: ignore[override]
        """Record one evaluation of the metric and reduce the rates if it has plateaued."""
        current = float(metric)
        self.last_epoch += 1
        if self._is_better(current):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs during the cooldown do not count
        if self.num_bad_epochs > self.patience:
            for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs, strict=True):
                old_lr = float(group["lr"])
                new_lr = max(old_lr * float(self.factor), float(min_lr))
                if old_lr - new_lr > float(self.eps):
                    group["lr"] = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [float(group["lr"]) for group in self.optimizer.param_groups]

    def get_lr(self) -> list[float]:
        """The groups' current learning rates (this schedule has no closed form)."""
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """Settings, counters and the groups' current rates; ``best`` may be +-inf."""
        state = super().state_dict()
        state.update({key: getattr(self, key) for key in self._counters})
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`, including the groups' learning rates (``last_lr``).

        Raises
        ------
        KeyError
            A needed entry is missing.
        ValueError
            The number of rates differs from the number of parameter groups,
            or a value is invalid.
        """
        name = "ReduceLROnPlateau.load_state_dict"
        needed = ("last_epoch", "last_lr", *self._hyperparameters, *self._counters)
        self._require(name, state_dict, needed)
        last_lr = self._rates(name, state_dict, "last_lr", "learning rate(s)")
        self._load_hyperparameters(state_dict)
        self.last_epoch = int(state_dict["last_epoch"])
        self.best = float(state_dict["best"])
        self.num_bad_epochs = int(state_dict["num_bad_epochs"])
        self.cooldown_counter = int(state_dict["cooldown_counter"])
        if "base_lrs" in state_dict:
            self.base_lrs = [float(lr) for lr in state_dict["base_lrs"]]
        for group, lr in zip(self.optimizer.param_groups, last_lr, strict=True):
            group["lr"] = lr
        self._last_lr = last_lr
