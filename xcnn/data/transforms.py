"""Batch transforms applied by :class:`xcnn.data.DataLoader` on the active backend.

Each transform maps a float batch ``x: (N, C, H, W)`` to a new batch and uses
only array-API-standard functions, so it runs where the batch lives (NumPy,
CuPy, array_api_strict). Random transforms draw their per-image choices
(offsets, flip masks) from their own :class:`xcnn.backends.Generator` on the
host: a handful of integers per batch, so one seed gives the same
augmentation on every backend, and ``state_dict()`` makes it resumable.

- ``Normalize``:            ``y[:, c] = (x[:, c] - mean[c]) / std[c]``
- ``RandomCrop``:           zero-pad by ``padding`` on each side, then take an
                            ``(h, w)`` window at a random offset per image:
                            ``y[n, :, i, j] = pad(x)[n, :, oy[n] + i, ox[n] + j]``
- ``RandomHorizontalFlip``: ``y[n] = x[n, :, :, ::-1]`` with probability ``p``, else ``x[n]``
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from array_api_compat import device

from xcnn.backends import Generator, array_namespace

__all__ = ["Compose", "Normalize", "RandomCrop", "RandomHorizontalFlip"]


def _generator(rng: Any) -> Generator:
    # Generator() accepts None, an int seed or a numpy Generator and rejects the rest.
    return rng if isinstance(rng, Generator) else Generator(rng)


def _check_batch(x: Any, who: str) -> None:
    if len(x.shape) != 4:
        raise ValueError(f"{who}: expected a batch of shape (N, C, H, W), got shape {x.shape}")


class Compose:
    """Apply transforms in order: ``Compose([RandomCrop(28, 2), Normalize(...)])``.

    Parameters
    ----------
    transforms : iterable of callables
        Each maps a batch ``(N, C, H, W)`` to a batch.
    """

    def __init__(self, transforms: Iterable[Callable[[Any], Any]]):
        self.transforms = list(transforms)

    def __call__(self, x: Any) -> Any:
        for transform in self.transforms:
            x = transform(x)
        return x

    def state_dict(self) -> dict:
        """RNG states of the random members, keyed by their position."""
        return {
            str(i): t.state_dict()
            for i, t in enumerate(self.transforms)
            if hasattr(t, "state_dict")
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore states from :meth:`state_dict`."""
        for i, transform in enumerate(self.transforms):
            if str(i) in state:
                transform.load_state_dict(state[str(i)])

    def __repr__(self) -> str:
        return f"Compose([{', '.join(repr(t) for t in self.transforms)}])"


class Normalize:
    """Per-channel standardisation: ``(x - mean[c]) / std[c]``.

    Parameters
    ----------
    mean, std : sequence of float (one per channel) or float
        ``std`` must be positive. A single value applies to every channel.

    Examples
    --------
    >>> import numpy as np
    >>> Normalize([0.5], [0.25])(np.ones((1, 1, 2, 2), np.float32))[0, 0, 0, 0]
    np.float32(2.0)
    """

    def __init__(self, mean: Sequence[float] | float, std: Sequence[float] | float):
        self.mean = tuple(float(m) for m in (mean if isinstance(mean, Sequence) else [mean]))
        self.std = tuple(float(s) for s in (std if isinstance(std, Sequence) else [std]))
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(
                f"Normalize: mean and std need one value per channel, got "
                f"{len(self.mean)} means and {len(self.std)} stds"
            )
        if any(not s > 0 for s in self.std):
            raise ValueError(f"Normalize: std must be positive, got {self.std}")

    def __call__(self, x: Any) -> Any:
        _check_batch(x, repr(self))
        xp = array_namespace(x)
        channels = x.shape[1]
        if len(self.mean) not in (1, channels):
            raise ValueError(
                f"{self!r}: expected a batch with {len(self.mean)} channels, got shape {x.shape}"
            )
        mean = xp.asarray(self.mean, dtype=x.dtype, device=device(x))
        std = xp.asarray(self.std, dtype=x.dtype, device=device(x))
        shape = (1, len(self.mean), 1, 1)
        return (x - xp.reshape(mean, shape)) / xp.reshape(std, shape)

    def __repr__(self) -> str:
        return f"Normalize(mean={list(self.mean)}, std={list(self.std)})"


class RandomCrop:
    """Zero-pad each image by ``padding`` pixels, then crop a random ``size`` window.

    Parameters
    ----------
    size : int or (int, int)
        Output height and width.
    padding : int
        Zeros added on every side before cropping (4 is usual for CIFAR-10).
    rng : int, xcnn.backends.Generator or numpy.random.Generator, optional
        Source of the offsets; default a new generator seeded from xcnn's
        default stream (see :func:`xcnn.manual_seed`). Kept as ``self.generator``.

    Shapes
    ------
    ``(N, C, H, W) -> (N, C, size_h, size_w)``; needs ``size <= H + 2*padding``.
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        padding: int = 0,
        rng: Generator | int | None = None,
    ):
        self.size = (int(size), int(size)) if isinstance(size, int) else tuple(map(int, size))
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"RandomCrop: size must be a positive int or (h, w), got {size!r}")
        if int(padding) < 0:
            raise ValueError(f"RandomCrop: padding must be >= 0, got {padding!r}")
        self.padding = int(padding)
        self.generator = _generator(rng)

    def __call__(self, x: Any) -> Any:
        _check_batch(x, repr(self))
        xp = array_namespace(x)
        dev = device(x)
        n, c, h, w = x.shape
        p = self.padding
        ph, pw = h + 2 * p, w + 2 * p
        sh, sw = self.size
        if sh > ph or sw > pw:
            raise ValueError(
                f"{self!r}: a {sh}x{sw} crop does not fit a batch of shape {x.shape} "
                f"padded to {ph}x{pw}"
            )
        if p:
            padded = xp.zeros((n, c, ph, pw), dtype=x.dtype, device=dev)
            padded[:, :, p : p + h, p : p + w] = x
        else:
            padded = x
        host = self.generator.host
        oy = xp.asarray(host.integers(0, ph - sh + 1, size=n).tolist(), dtype=xp.int64, device=dev)
        ox = xp.asarray(host.integers(0, pw - sw + 1, size=n).tolist(), dtype=xp.int64, device=dev)
        # Two gathers (rows, then columns) crop every image at its own offset at once.
        rows = xp.reshape(oy, (n, 1)) + xp.reshape(
            xp.arange(sh, dtype=xp.int64, device=dev), (1, sh)
        )
        rows = xp.broadcast_to(xp.reshape(rows, (n, 1, sh, 1)), (n, c, sh, pw))
        out = xp.take_along_axis(padded, rows, axis=2)
        cols = xp.reshape(ox, (n, 1)) + xp.reshape(
            xp.arange(sw, dtype=xp.int64, device=dev), (1, sw)
        )
        cols = xp.broadcast_to(xp.reshape(cols, (n, 1, 1, sw)), (n, c, sh, sw))
        return xp.take_along_axis(out, cols, axis=3)

    def state_dict(self) -> dict:
        """The generator's state."""
        return {"generator": self.generator.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the generator's state from :meth:`state_dict`."""
        self.generator.load_state_dict(state["generator"])

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror each image left-right with probability ``p``.

    Parameters
    ----------
    p : float
        Flip probability, in ``[0, 1]``.
    rng : int, xcnn.backends.Generator or numpy.random.Generator, optional
        Source of the per-image coin flips (see :class:`RandomCrop`).

    Shapes
    ------
    ``(N, C, H, W) -> (N, C, H, W)``.
    """

    def __init__(self, p: float = 0.5, rng: Generator | int | None = None):
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must lie in [0, 1], got {p!r}")
        self.p = float(p)
        self.generator = _generator(rng)

    def __call__(self, x: Any) -> Any:
        _check_batch(x, repr(self))
        xp = array_namespace(x)
        n = x.shape[0]
        flips = (self.generator.host.random(n) < self.p).tolist()
        mask = xp.reshape(xp.asarray(flips, dtype=xp.bool, device=device(x)), (n, 1, 1, 1))
        return xp.where(mask, xp.flip(x, axis=3), x)

    def state_dict(self) -> dict:
        """The generator's state."""
        return {"generator": self.generator.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the generator's state from :meth:`state_dict`."""
        self.generator.load_state_dict(state["generator"])

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"
