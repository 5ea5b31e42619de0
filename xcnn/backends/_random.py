"""Random numbers owned by xcnn: never NumPy's or CuPy's global state.

Initial weights are drawn on the host from a seeded ``numpy.random.Generator``
and then moved to the backend, so one seed gives identical weights on every
backend. Dropout masks and shuffles take an explicit :class:`Generator`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_default: np.random.Generator = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Seed xcnn's default host generator (used for weights when no ``rng=`` is given).

    Returns the new generator. NumPy's own global state is left untouched.
    """
    global _default
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"manual_seed expects a non-negative integer, got {seed!r}")
    _default = np.random.default_rng(int(seed))
    return _default


def default_generator() -> np.random.Generator:
    """xcnn's default host generator, as last set by :func:`manual_seed`."""
    return _default


def host_rng(rng: Any = None) -> np.random.Generator:
    """Resolve ``rng=`` arguments: ``None`` -> default, ``int`` -> new seeded generator.

    A :class:`numpy.random.Generator` or an xcnn :class:`Generator` is used as given.
    """
    if rng is None:
        return _default
    if isinstance(rng, Generator):
        return rng.host
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(
        f"rng must be None, an int seed, a numpy.random.Generator or "
        f"xcnn.backends.Generator, got {type(rng).__name__}"
    )


class Generator:
    """A seeded random stream for dropout masks, shuffling and augmentation.

    Draws happen on the host (``self.host``, a ``numpy.random.Generator``),
    except on CuPy where :meth:`cupy_generator` gives a device generator seeded
    from the host stream, so masks never cross the PCIe bus.

    Parameters
    ----------
    seed : int, numpy.random.Generator or None
        ``None`` draws a seed from xcnn's default generator (see ``manual_seed``).
    """

    def __init__(self, seed: Any = None):
        if seed is None:
            seed = int(_default.integers(2**63))
        self.host = host_rng(seed) if not isinstance(seed, int) else np.random.default_rng(seed)
        self._cupy = None

    def cupy_generator(self) -> Any:
        """The device-side CuPy generator, created on first use."""
        if self._cupy is None:
            import cupy

            self._cupy = cupy.random.default_rng(int(self.host.integers(2**63)))
        return self._cupy

    def state_dict(self) -> dict:
        """JSON-serialisable state of the host stream (CuPy device state is not kept)."""
        return self.host.bit_generator.state

    def load_state_dict(self, state: dict) -> None:
        """Restore a state from :meth:`state_dict`."""
        self.host.bit_generator.state = state
        self._cupy = None
