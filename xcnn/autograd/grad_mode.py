"""Whether operations record the graph: ``no_grad``, ``enable_grad``, ``set_grad_enabled``.

The switch is per thread, as in PyTorch: a helper thread that runs inference under
``no_grad`` does not stop the main thread's training step from recording.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["enable_grad", "is_grad_enabled", "no_grad", "set_grad_enabled"]

F = TypeVar("F", bound=Callable[..., Any])

_state = threading.local()


def is_grad_enabled() -> bool:
    """``True`` unless this thread is inside ``no_grad()`` (or ``set_grad_enabled(False)``)."""
    return getattr(_state, "enabled", True)


def _set(mode: bool) -> None:
    _state.enabled = mode


class set_grad_enabled:
    """Turn recording on or off: as a call, for the rest of the thread; as a ``with``, inside it.

    Examples
    --------
    >>> import xcnn
    >>> with xcnn.set_grad_enabled(False):
    ...     xcnn.is_grad_enabled()
    False
    >>> xcnn.is_grad_enabled()
    True
    """

    def __init__(self, mode: bool) -> None:
        self._previous = is_grad_enabled()
        self._mode = bool(mode)
        _set(self._mode)

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        _set(self._previous)


class _Mode:
    """A context manager and decorator that runs its body with recording set to ``_mode``."""

    _mode = True

    def __enter__(self) -> None:
        self._previous = is_grad_enabled()
        _set(self._mode)

    def __exit__(self, *exc: object) -> None:
        _set(self._previous)

    def __call__(self, fn: F) -> F:
        mode = self._mode

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            previous = is_grad_enabled()
            _set(mode)
            try:
                return fn(*args, **kwargs)
            finally:
                _set(previous)

        return wrapper  # type: ignore[return-value]


class no_grad(_Mode):
    """Record nothing and keep nothing for backward: inference, metrics, weight updates.

    Usable as ``with xcnn.no_grad(): ...`` or as a decorator ``@xcnn.no_grad()``.

    Examples
    --------
    >>> import xcnn
    >>> w = xcnn.tensor([1.0, 2.0], requires_grad=True)
    >>> with xcnn.no_grad():
    ...     y = w * 2
    >>> y.requires_grad, y.grad_fn
    (False, None)
    """

    _mode = False


class enable_grad(_Mode):
    """Record again inside a ``no_grad`` block (context manager or decorator)."""

    _mode = True
