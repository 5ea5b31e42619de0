"""Which array library new arrays live in: NumPy (CPU) or CuPy (CUDA GPU).

This package is the only place in xcnn that imports NumPy or CuPy for array
math. Everything else receives an array-API namespace (``xp``) and uses only
the functions of the standard.

The backend is chosen, in order of precedence, by

1. :func:`use` (a scoped override, or a plain call that switches for good);
2. the ``XCNN_BACKEND`` environment variable, read at each call to
   :func:`current` (so setting it after ``import xcnn`` works);
3. the default, ``"numpy"``.

Examples
--------
>>> import xcnn
>>> b = xcnn.backends.current()
>>> b.name
'numpy'
>>> x = b.asarray([[1.0, 2.0]], dtype="float32")
>>> b.to_numpy(b.xp.sum(x))
array(3., dtype=float32)
"""

from __future__ import annotations

import contextvars
import importlib.util
import os
from types import ModuleType
from typing import Any

import numpy as np

from xcnn.backends._random import Generator, default_generator, host_rng, manual_seed

__all__ = [
    "Backend",
    "Generator",
    "array_namespace",
    "available",
    "current",
    "default_generator",
    "dtype_name",
    "host_dtype",
    "get",
    "host_rng",
    "manual_seed",
    "namespace_name",
    "to_host",
    "use",
]

#: Backends a user picks. ``array_api_strict`` is accepted too, for tests only:
#: it proves that generic code uses nothing outside the array API standard.
NAMES = ("numpy", "cupy")
TEST_NAMES = ("array_api_strict",)

_override: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "xcnn_backend_override", default=None
)
_instances: dict[str, Backend] = {}
_cupy_probe: tuple[bool, str] | None = None


class Backend:
    """One array library: its array-API namespace plus host<->device moves.

    Parameters
    ----------
    name : str
        ``"numpy"``, ``"cupy"`` or (tests only) ``"array_api_strict"``.
    """

    def __init__(self, name: str, xp: ModuleType, module: ModuleType):
        self.name = name
        self.xp = xp
        self._module = module

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"

    def asarray(self, host_array: Any, dtype: Any = None) -> Any:
        """Copy a host array (or nested list) onto this backend.

        Parameters
        ----------
        host_array : array_like
            NumPy array, Python scalar or nested sequence.
        dtype : str or dtype, optional
            Result dtype by name (``"float32"``) or as a NumPy/backend dtype.
        """
        np_dtype = None if dtype is None else _numpy_dtype(dtype)
        if self.name == "numpy":
            # Always a new array, as on the GPU: in-place updates must not reach the caller's.
            return np.array(host_array, dtype=np_dtype, copy=True)
        host = np.asarray(host_array, dtype=np_dtype)
        if self.name == "cupy":
            return self._module.asarray(host)
        # A copy, as above; ascontiguousarray would turn 0-d arrays into shape (1,).
        return self.xp.asarray(np.array(host, order="C", copy=True))

    def to_numpy(self, x: Any) -> np.ndarray:
        """Copy an array of this backend to a NumPy array (for I/O and metrics)."""
        if self.name == "cupy" and namespace_name(x) == "cupy":
            return x.get()
        return np.asarray(x)

    def synchronize(self) -> None:
        """Wait until queued device work is done (a no-op on the CPU)."""
        if self.name == "cupy":
            self._module.cuda.get_current_stream().synchronize()

    def uniform(self, generator: Generator, shape: tuple[int, ...], dtype: Any) -> Any:
        """Draw ``U[0, 1)`` samples of ``shape`` and ``dtype`` on this backend.

        On CuPy the numbers are drawn on the device by a generator seeded from
        ``generator``; elsewhere they are drawn on the host and moved.
        """
        name = _numpy_dtype(dtype).name
        if self.name == "cupy":
            return generator.cupy_generator().random(shape, dtype=name)
        return self.asarray(generator.host.random(shape, dtype=name))


def _numpy_dtype(dtype: Any) -> np.dtype:
    """Map a dtype given by name, NumPy dtype or backend dtype to a NumPy dtype."""
    try:
        return np.dtype(dtype)
    except TypeError:
        # Backend dtype objects (array_api_strict.float32, ...) print as "...float32".
        return np.dtype(str(dtype).rsplit(".", 1)[-1])


def host_dtype(dtype: Any) -> np.dtype:
    """The NumPy dtype matching a dtype given by name, NumPy dtype or backend dtype."""
    return _numpy_dtype(dtype)


def to_host(value: Any) -> np.ndarray:
    """A new NumPy array holding ``value``: any backend's array, a CPU ``torch.Tensor``,
    a NumPy array or scalar. For I/O (state dicts, checkpoints), never inside math."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # CPU torch.Tensor
        return np.array(value.detach().numpy())
    if namespace_name(value) == "cupy":
        return value.get()
    return np.array(value)


def dtype_name(dtype: Any) -> str:
    """``"float32"`` for a dtype given by name, NumPy dtype or backend dtype."""
    return _numpy_dtype(dtype).name


def _probe_cupy() -> tuple[bool, str]:
    """Return ``(usable, reason)`` for CuPy; the probe runs once per process."""
    global _cupy_probe
    if _cupy_probe is not None:
        return _cupy_probe
    if importlib.util.find_spec("cupy") is None:
        _cupy_probe = (
            False,
            "CuPy is not installed. Install the build matching your CUDA toolkit, "
            "e.g. pip install 'xcnn[cuda12x]' or pip install 'xcnn[cuda13x]'.",
        )
        return _cupy_probe
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CUDA raises its own error types; any means "no GPU"
        _cupy_probe = (
            False,
            f"CuPy is installed but no usable CUDA device was found ({error}). "
            "Check the NVIDIA driver with nvidia-smi, or use XCNN_BACKEND=numpy.",
        )
        return _cupy_probe
    if count < 1:
        _cupy_probe = (
            False,
            "CuPy is installed but CUDA reports 0 devices. "
            "Check the NVIDIA driver with nvidia-smi, or use XCNN_BACKEND=numpy.",
        )
        return _cupy_probe
    _cupy_probe = (True, "")
    return _cupy_probe


def available() -> list[str]:
    """Backends usable on this machine, in order: ``["numpy"]`` or ``["numpy", "cupy"]``."""
    return ["numpy", "cupy"] if _probe_cupy()[0] else ["numpy"]


def _normalize(name: str, source: str) -> str:
    key = str(name).strip().lower()
    if key not in NAMES + TEST_NAMES:
        raise ValueError(
            f"unknown xcnn backend {name!r} (from {source}); "
            f"valid choices are {', '.join(repr(n) for n in NAMES)} "
            f"(and {TEST_NAMES[0]!r} for testing)"
        )
    return key


def get(name: str) -> Backend:
    """Return the :class:`Backend` called ``name``, checking that it is usable.

    Raises
    ------
    ValueError
        ``name`` is not a known backend.
    RuntimeError
        ``"cupy"`` was asked for but CuPy or a CUDA device is missing.
    """
    key = _normalize(name, "the backend name")
    if key in _instances:
        return _instances[key]
    if key == "numpy":
        import array_api_compat.numpy as xp

        backend = Backend("numpy", xp, np)
    elif key == "cupy":
        usable, reason = _probe_cupy()
        if not usable:
            raise RuntimeError(f"the 'cupy' backend cannot be used: {reason}")
        import array_api_compat.cupy as xp
        import cupy

        backend = Backend("cupy", xp, cupy)
    else:
        import array_api_strict as xp

        backend = Backend("array_api_strict", xp, xp)
    _instances[key] = backend
    return backend


def current() -> Backend:
    """The active backend: the innermost :func:`use`, else ``$XCNN_BACKEND``, else NumPy."""
    name = _override.get()
    if name is not None:
        return get(name)
    env = os.environ.get("XCNN_BACKEND", "").strip()
    if not env:
        return get("numpy")
    return get(_normalize(env, "the XCNN_BACKEND environment variable"))


class use:
    """Switch the active backend, for a ``with`` block or (as a plain call) for good.

    Examples
    --------
    >>> import xcnn
    >>> with xcnn.backends.use("numpy") as b:
    ...     b.name
    'numpy'
    """

    def __init__(self, name: str):
        self.backend = get(name)
        self._token = _override.set(self.backend.name)

    def __enter__(self) -> Backend:
        return self.backend

    def __exit__(self, *exc: object) -> None:
        _override.reset(self._token)


def array_namespace(*arrays: Any) -> ModuleType:
    """``array_api_compat.array_namespace``, with a shortcut for plain NumPy arrays.

    Every op asks for its arrays' namespace; for NumPy arrays, the common case, the
    answer is always ``array_api_compat.numpy``, found here in well under a
    microsecond instead of several (a training step asks about 50 times).
    """
    if all(type(a) is np.ndarray for a in arrays):
        import array_api_compat.numpy

        return array_api_compat.numpy
    import array_api_compat

    return array_api_compat.array_namespace(*arrays)


def namespace_name(x: Any) -> str:
    """Name of the backend an array belongs to: ``"numpy"``, ``"cupy"``, ``"array_api_strict"``.

    Any other object gives its type's module name, for error messages.
    """
    module = type(x).__module__.split(".", 1)[0]
    return {"numpy": "numpy", "cupy": "cupy", "array_api_strict": "array_api_strict"}.get(
        module, module
    )
