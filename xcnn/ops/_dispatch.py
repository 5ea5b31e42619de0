"""One switch for every fast path: which backend-specific code an op may use.

Each op that has a fast path (strided views on NumPy, CUDA kernels on CuPy)
asks :func:`fast_path` which one applies to its namespace. The standard-only
twin runs when it answers ``None``: on array_api_strict, on any other
namespace, and inside :func:`standard_only`, which the parity tests use to
compare each fast path with its twin on the same input.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from types import ModuleType

from array_api_compat import is_cupy_namespace, is_numpy_namespace

_fast_paths_enabled: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "xcnn_fast_paths", default=True
)


def fast_path(xp: ModuleType) -> str | None:
    """``"numpy"`` or ``"cupy"`` when that backend's fast path may run, else ``None``."""
    if not _fast_paths_enabled.get():
        return None
    if is_numpy_namespace(xp):
        return "numpy"
    if is_cupy_namespace(xp):
        return "cupy"
    return None


@contextlib.contextmanager
def standard_only() -> Iterator[None]:
    """Run the enclosed ops with their standard-only implementations."""
    token = _fast_paths_enabled.set(False)
    try:
        yield
    finally:
        _fast_paths_enabled.reset(token)
