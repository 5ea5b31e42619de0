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
- ``RandomRotation``, ``RandomAffine``: :func:`affine` with a random angle
                            (scale, integer translation) per image; bilinear,
                            pixels from outside the image take ``fill``
- ``ColorJitter``:          brightness, contrast, saturation by a random factor
                            per image, in a random order per image

Batch transforms of images *and* labels, for ``DataLoader(batch_transform=...)``;
they turn class indices ``y: (N,)`` into class probabilities ``(N, K)``, which
``CrossEntropyLoss`` takes as targets (``roll`` pairs image n with image n - 1):

- ``MixUp``:   ``x' = lam x + (1 - lam) roll(x)``,
               ``y' = lam onehot(y) + (1 - lam) roll(onehot(y))``
- ``CutMix``:  a box of ``roll(x)`` pasted into ``x``; ``lam`` = the area fraction kept
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from numbers import Real
from typing import Any

import numpy as np
from array_api_compat import device

from xcnn.backends import Generator, array_namespace

__all__ = [
    "ColorJitter",
    "Compose",
    "CutMix",
    "MixUp",
    "Normalize",
    "RandomAffine",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomRotation",
    "affine",
    "rotate",
]


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


class _Seeded:
    """A transform drawing its random choices from ``self.generator``; resumable."""

    generator: Generator

    def state_dict(self) -> dict:
        """The generator's state."""
        return {"generator": self.generator.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the generator's state from :meth:`state_dict`."""
        self.generator.load_state_dict(state["generator"])


def _working_dtype(x: Any, who: str) -> Any:
    """The float dtype arithmetic on ``x`` runs in: its own, or float32 for uint8 images."""
    xp = array_namespace(x)
    if xp.isdtype(x.dtype, "real floating"):
        return x.dtype
    if x.dtype == xp.uint8:
        return xp.float32
    raise TypeError(f"{who}: expected uint8 or floating images, got dtype {x.dtype}")


def _back_to(out: Any, dtype: Any) -> Any:
    """``out`` (float) in ``dtype``: uint8 rounds half to even, as torch.round, and saturates."""
    xp = array_namespace(out)
    if out.dtype == dtype:
        return out
    return xp.astype(xp.clip(xp.round(out), 0, 255), dtype)


def _real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _range(value: Any, name: str, who: str, symmetric_about: float = 0.0) -> tuple[float, float]:
    """``(lo, hi)`` from a pair, or from one number ``v >= 0`` as ``centre -/+ v``."""
    if _real(value):
        if value < 0:
            raise ValueError(f"{who}: {name} must be >= 0 when it is one number, got {value!r}")
        return symmetric_about - float(value), symmetric_about + float(value)
    if (
        isinstance(value, Sequence)
        and len(value) == 2
        and all(_real(v) for v in value)
        and value[0] <= value[1]
    ):
        return float(value[0]), float(value[1])
    raise ValueError(f"{who}: {name} must be a number >= 0 or a pair (min, max), got {value!r}")


def _fill(fill: Any, who: str) -> tuple[float, ...]:
    values = tuple(fill) if isinstance(fill, Sequence) else (fill,)
    if not values or not all(_real(v) for v in values):
        raise ValueError(f"{who}: fill must be a number or one number per channel, got {fill!r}")
    return tuple(float(v) for v in values)


def _per_image(value: Any, shape: tuple[int, ...], name: str, who: str) -> np.ndarray:
    """``value``, one for every image or one per image, as a float64 host array of ``shape``."""
    try:
        array = np.broadcast_to(np.asarray(value, dtype=np.float64), shape)
    except (TypeError, ValueError):
        raise ValueError(
            f"{who}: {name} must be one value for all images or one per image (shape {shape}), "
            f"got {value!r}"
        ) from None
    if not np.isfinite(array).all():
        raise ValueError(f"{who}: {name} must be finite, got {value!r}")
    return array


# -- geometry: affine warps with bilinear interpolation ------------------------------------


def affine(
    x: Any,
    angle: float | Sequence[float],
    translate: Sequence[float] = (0.0, 0.0),
    scale: float | Sequence[float] = 1.0,
    fill: float | Sequence[float] = 0.0,
) -> Any:
    """Rotate, scale and translate each image about its centre, as torchvision's ``F.affine``.

    Output pixel ``(i, j)``, at ``(xc, yc) = (j - (W-1)/2, i - (H-1)/2)`` from
    the centre, reads the input at column ``u`` and row ``v``::

        u = ( cos(a) (xc - tx) + sin(a) (yc - ty)) / s + (W-1)/2
        v = (-sin(a) (xc - tx) + cos(a) (yc - ty)) / s + (H-1)/2

    interpolated bilinearly between the four nearest pixels; neighbours that
    fall outside the image count as ``fill``. Rows point down, so a positive
    ``angle`` turns the content clockwise on screen, as in ``F.affine``
    (:func:`rotate` turns counter-clockwise, as ``F.rotate``).

    With ``fill=0`` this is torchvision's ``F.affine(img, angle, translate,
    scale, shear=0, interpolation=BILINEAR)`` on a float tensor (torch's
    ``grid_sample``, ``align_corners=False``, zero padding), and for any
    ``fill`` it is ``scipy.ndimage.affine_transform(order=1,
    mode="grid-constant", cval=fill)``. (torchvision given a ``fill`` list
    instead blends ``fill`` in by the interpolated coverage, which differs
    within a pixel of the border.)

    Parameters
    ----------
    x : array
        ``(N, C, H, W)``, uint8 or floating.
    angle : float or sequence of N floats
        Degrees, one for all images or one per image.
    translate : (tx, ty) or N such pairs
        Shift in pixels after rotating and scaling (right and down).
    scale : float or sequence of N floats
        Zoom factor, > 0.
    fill : float or one per channel
        Value of the pixels outside the image, in the units of ``x``.

    Returns
    -------
    array
        Same shape, dtype, namespace and device as ``x``; uint8 results are
        rounded to the nearest integer.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    >>> affine(x, 90.0)[0, 0]  # a quarter turn clockwise
    array([[6., 3., 0.],
           [7., 4., 1.],
           [8., 5., 2.]], dtype=float32)
    >>> affine(x, 0.0, translate=(1, 0), fill=-1)[0, 0]
    array([[-1.,  0.,  1.],
           [-1.,  3.,  4.],
           [-1.,  6.,  7.]], dtype=float32)
    """
    return _affine(x, angle, translate, scale, fill, "affine")


def rotate(x: Any, angle: float | Sequence[float], fill: float | Sequence[float] = 0.0) -> Any:
    """Rotate each image counter-clockwise by ``angle`` degrees about its centre (``F.rotate``).

    ``rotate(x, a, fill) == affine(x, -a, fill=fill)``; the output keeps the
    input's size (torchvision's ``expand=False``). See :func:`affine`.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(4, dtype=np.uint8).reshape(1, 1, 2, 2)
    >>> rotate(x, 90)[0, 0]  # a quarter turn counter-clockwise, as np.rot90
    array([[1, 3],
           [0, 2]], dtype=uint8)
    """
    _check_batch(x, "rotate")
    angle = _per_image(angle, (x.shape[0],), "angle", "rotate")
    return _affine(x, -angle, (0.0, 0.0), 1.0, fill, "rotate")


def _affine(x: Any, angle: Any, translate: Any, scale: Any, fill: Any, who: str) -> Any:
    _check_batch(x, who)
    n, c = x.shape[0], x.shape[1]
    angle = _per_image(angle, (n,), "angle", who)
    shift = _per_image(translate, (n, 2), "translate", who)
    scale = _per_image(scale, (n,), "scale", who)
    if not (scale > 0).all():
        raise ValueError(f"{who}: scale must be > 0, got {scale.min()}")
    fill = _fill(fill, who)
    if len(fill) not in (1, c):
        raise ValueError(f"{who}: fill has {len(fill)} values for a batch of {c} channels")
    radians = np.deg2rad(angle)
    cos, sin = np.cos(radians), np.sin(radians)
    # cos(90 degrees) is 6e-17, not 0: snapping such values makes quarter turns
    # exact permutations instead of blends with a 1e-16 weight.
    cos[np.abs(cos) < 1e-12] = 0.0
    sin[np.abs(sin) < 1e-12] = 0.0
    h, w = x.shape[2], x.shape[3]
    cx, cy = (w - 1) / 2, (h - 1) / 2
    a, b, d, e = cos / scale, sin / scale, -sin / scale, cos / scale
    tx, ty = shift[:, 0], shift[:, 1]
    rows = np.stack([a, b, cx - a * tx - b * ty, d, e, cy - d * tx - e * ty], axis=1)
    return _warp(x, rows, fill, who)


def _warp(x: Any, matrix: np.ndarray, fill: tuple[float, ...], who: str) -> Any:
    """Bilinear resampling of every image at ``u = m0 xc + m1 yc + m2``, ``v = m3 xc + m4 yc + m5``.

    ``matrix`` is ``(N, 6)`` on the host; ``(xc, yc)`` are output pixel
    coordinates from the image centre, ``(u, v)`` input pixel indices.
    """
    xp = array_namespace(x)
    dev = device(x)
    work = _working_dtype(x, who)
    n, c, h, w = x.shape
    # Coordinates in float64, whatever the images are: a 1e-7 error in a float32
    # coordinate would already move an exact shift off the pixel grid.
    m = xp.asarray(matrix.tolist(), dtype=xp.float64, device=dev)

    def coefficient(k: int) -> Any:
        return xp.reshape(m[:, k], (n, 1, 1))

    xc = xp.reshape(xp.arange(w, dtype=xp.float64, device=dev) - (w - 1) / 2, (1, 1, w))
    yc = xp.reshape(xp.arange(h, dtype=xp.float64, device=dev) - (h - 1) / 2, (1, h, 1))
    # Beyond one pixel outside, every neighbour is fill anyway; clipping keeps
    # the int64 conversion below in range for any scale.
    u = xp.clip(coefficient(0) * xc + coefficient(1) * yc + coefficient(2), -2.0, w + 1.0)
    v = xp.clip(coefficient(3) * xc + coefficient(4) * yc + coefficient(5), -2.0, h + 1.0)
    u0, v0 = xp.floor(u), xp.floor(v)
    fu, fv = xp.astype(u - u0, work), xp.astype(v - v0, work)
    iu, iv = xp.astype(u0, xp.int64), xp.astype(v0, xp.int64)
    # One 1-D gather per neighbour: a flat index into all N*C*H*W values is
    # several times faster than take_along_axis over (N, C, H*W) on NumPy.
    flat = xp.reshape(xp.astype(x, work, copy=False), (n * c * h * w,))
    planes = xp.reshape(xp.arange(n * c, dtype=xp.int64, device=dev) * (h * w), (n, c, 1))
    zero = xp.zeros((), dtype=work, device=dev)
    out = None
    outside = None  # the weight that falls on pixels beyond the border, taken by fill
    for dv, weight_v in ((0, 1 - fv), (1, fv)):
        for du, weight_u in ((0, 1 - fu), (1, fu)):
            r, q = iv + dv, iu + du
            inside = (r >= 0) & (r < h) & (q >= 0) & (q < w)
            weight = weight_v * weight_u
            index = xp.reshape(xp.clip(r, 0, h - 1) * w + xp.clip(q, 0, w - 1), (n, 1, h * w))
            value = xp.take(flat, xp.reshape(planes + index, (-1,)), axis=0)
            term = xp.reshape(xp.where(inside, weight, zero), (n, 1, h, w)) * xp.reshape(
                value, (n, c, h, w)
            )
            out = term if out is None else out + term
            missed = xp.where(inside, zero, weight)
            outside = missed if outside is None else outside + missed
    if any(fill):
        fill_value = xp.reshape(xp.asarray(fill, dtype=work, device=dev), (1, len(fill), 1, 1))
        out = out + xp.reshape(outside, (n, 1, h, w)) * fill_value
    return _back_to(out, x.dtype)


class RandomRotation(_Seeded):
    """Rotate each image by its own random angle, uniform in ``degrees``, about its centre.

    torchvision's ``RandomRotation`` with ``interpolation=BILINEAR`` (its
    default is nearest) and ``expand=False``: image n becomes
    ``rotate(x[n], angle[n], fill)`` (counter-clockwise, see :func:`rotate`).

    Parameters
    ----------
    degrees : float or (float, float)
        A number ``d >= 0`` means angles in ``[-d, d]``; a pair ``(lo, hi)``
        means ``[lo, hi]``.
    fill : float or one per channel
        Value of the pixels that come from outside the image (units of the
        input: 0..255 for uint8, usually 0..1 for float batches).
    rng : int, xcnn.backends.Generator or numpy.random.Generator, optional
        Source of the angles (see :class:`RandomCrop`).

    Shapes
    ------
    ``(N, C, H, W) -> (N, C, H, W)``, same dtype (uint8 or floating).
    """

    def __init__(
        self,
        degrees: float | tuple[float, float],
        fill: float | Sequence[float] = 0.0,
        rng: Generator | int | None = None,
    ):
        self.degrees = _range(degrees, "degrees", "RandomRotation")
        self.fill = _fill(fill, "RandomRotation")
        self.generator = _generator(rng)

    def __call__(self, x: Any) -> Any:
        _check_batch(x, repr(self))
        angle = self.generator.host.uniform(*self.degrees, size=x.shape[0])
        return _affine(x, -angle, (0.0, 0.0), 1.0, self.fill, repr(self))

    def __repr__(self) -> str:
        return f"RandomRotation(degrees={self.degrees}, fill={self.fill})"


class RandomAffine(_Seeded):
    """Rotate, translate and scale each image by its own random amounts, as torchvision's.

    Per image: ``angle`` uniform in ``degrees``; a shift ``(tx, ty)`` of whole
    pixels, ``round(uniform(-a W, a W))`` and ``round(uniform(-b H, b H))``
    with ``translate = (a, b)``; a zoom uniform in ``scale``. Then
    :func:`affine` (bilinear, where torchvision defaults to nearest; positive
    angles clockwise, as ``F.affine``). No shear.

    Parameters
    ----------
    degrees : float or (float, float)
        ``d >= 0`` means ``[-d, d]``; a pair means ``[lo, hi]``. 0 for no rotation.
    translate : (float, float), optional
        Largest shifts as fractions of the width and height, each in ``[0, 1]``.
    scale : (float, float), optional
        Range of the zoom factor, ``0 < lo <= hi``.
    fill : float or one per channel
        Value of the pixels that come from outside the image.
    rng : int, xcnn.backends.Generator or numpy.random.Generator, optional
        Source of the parameters (see :class:`RandomCrop`).

    Shapes
    ------
    ``(N, C, H, W) -> (N, C, H, W)``, same dtype (uint8 or floating).
    """

    def __init__(
        self,
        degrees: float | tuple[float, float],
        translate: tuple[float, float] | None = None,
        scale: tuple[float, float] | None = None,
        fill: float | Sequence[float] = 0.0,
        rng: Generator | int | None = None,
    ):
        self.degrees = _range(degrees, "degrees", "RandomAffine")
        if translate is not None:
            if (
                not isinstance(translate, Sequence)
                or len(translate) != 2
                or not all(_real(t) and 0.0 <= t <= 1.0 for t in translate)
            ):
                raise ValueError(
                    f"RandomAffine: translate must be a pair of fractions in [0, 1], "
                    f"got {translate!r}"
                )
            translate = (float(translate[0]), float(translate[1]))
        if scale is not None:
            if (
                not isinstance(scale, Sequence)
                or len(scale) != 2
                or not all(_real(s) for s in scale)
                or not 0 < scale[0] <= scale[1]
            ):
                raise ValueError(
                    f"RandomAffine: scale must be a pair (lo, hi) with 0 < lo <= hi, got {scale!r}"
                )
            scale = (float(scale[0]), float(scale[1]))
        self.translate = translate
        self.scale = scale
        self.fill = _fill(fill, "RandomAffine")
        self.generator = _generator(rng)

    def __call__(self, x: Any) -> Any:
        _check_batch(x, repr(self))
        n, h, w = x.shape[0], x.shape[2], x.shape[3]
        host = self.generator.host
        angle = host.uniform(*self.degrees, size=n)
        shift = np.zeros((n, 2))
        if self.translate is not None:
            wide, high = self.translate[0] * w, self.translate[1] * h
            shift[:, 0] = np.round(host.uniform(-wide, wide, size=n))
            shift[:, 1] = np.round(host.uniform(-high, high, size=n))
        zoom = 1.0 if self.scale is None else host.uniform(*self.scale, size=n)
        return _affine(x, angle, shift, zoom, self.fill, repr(self))

    def __repr__(self) -> str:
        return (
            f"RandomAffine(degrees={self.degrees}, translate={self.translate}, "
            f"scale={self.scale}, fill={self.fill})"
        )


# -- colour ---------------------------------------------------------------------------------


class ColorJitter(_Seeded):
    """Change brightness, contrast and saturation of each image by random factors.

    torchvision's formulas, with ``blend(a, b, f) = clip(f a + (1 - f) b, 0, max)``
    (``max`` 1 for floats, 255 for uint8) and ``grey = 0.2989 R + 0.587 G + 0.114 B``:

    - brightness: ``blend(x, 0, f)``
    - contrast:   ``blend(x, mean(grey(x)), f)`` (the mean over the image; over
      ``x`` itself for one channel)
    - saturation: ``blend(x, grey(x), f)`` (nothing to do for one channel)

    Each image draws its own factors and applies the enabled adjustments in
    its own random order, as torchvision does per image. uint8 images are
    truncated to integers after each step (and ``grey`` too), as torchvision
    does; float images are expected in ``[0, 1]``, so put ``Normalize`` after it.

    Parameters
    ----------
    brightness, contrast, saturation : float or (float, float)
        ``v >= 0`` draws the factor uniformly in ``[max(0, 1 - v), 1 + v]``; a
        pair ``(lo, hi)`` with ``0 <= lo <= hi`` draws it in ``[lo, hi]``. 0 leaves
        that property alone.
    rng : int, xcnn.backends.Generator or numpy.random.Generator, optional
        Source of the factors and orders (see :class:`RandomCrop`).

    Shapes
    ------
    ``(N, C, H, W) -> (N, C, H, W)``, same dtype; contrast and saturation need
    C = 1 or 3 (RGB).
    """

    _NAMES = ("brightness", "contrast", "saturation")

    def __init__(
        self,
        brightness: float | tuple[float, float] = 0,
        contrast: float | tuple[float, float] = 0,
        saturation: float | tuple[float, float] = 0,
        rng: Generator | int | None = None,
    ):
        self.ranges: dict[str, tuple[float, float]] = {}
        for name, value in zip(self._NAMES, (brightness, contrast, saturation), strict=True):
            lo, hi = _range(value, name, "ColorJitter", symmetric_about=1.0)
            if _real(value):
                lo = max(0.0, lo)
            elif lo < 0:
                raise ValueError(f"ColorJitter: {name} factors must be >= 0, got {value!r}")
            if (lo, hi) != (1.0, 1.0):  # torchvision's way of switching one off
                self.ranges[name] = (lo, hi)
        self.generator = _generator(rng)

    def __call__(self, x: Any) -> Any:
        _check_batch(x, repr(self))
        xp = array_namespace(x)
        dev = device(x)
        work = _working_dtype(x, repr(self))
        n, c = x.shape[0], x.shape[1]
        if c not in (1, 3) and set(self.ranges) - {"brightness"}:
            raise ValueError(
                f"{self!r}: contrast and saturation need 1 or 3 (RGB) channels, got shape {x.shape}"
            )
        names = list(self.ranges)
        host = self.generator.host
        # A random permutation of the enabled adjustments per image, then the factors.
        order = np.argsort(host.random((n, len(names))), axis=1)
        factors = {name: host.uniform(*self.ranges[name], size=n) for name in names}
        integer = work != x.dtype
        bound = 255.0 if integer else 1.0
        out = xp.astype(x, work)

        def per_image(values: Any, dtype: Any = work) -> Any:
            return xp.reshape(xp.asarray(values.tolist(), dtype=dtype, device=dev), (n, 1, 1, 1))

        for position in range(len(names)):
            for k, name in enumerate(names):
                chosen = order[:, position] == k
                if not chosen.any() or (name == "saturation" and c == 1):
                    continue
                f = factors[name]
                blended = per_image(f) * out
                if name != "brightness":
                    other = out if c == 1 else self._grey(out, integer)
                    if name == "contrast":
                        other = xp.mean(other, axis=(1, 2, 3), keepdims=True)
                    # (1 - f) from the host in float64, as torchvision's Python float.
                    blended = blended + per_image(1.0 - f) * other
                blended = xp.clip(blended, 0.0, bound)
                if integer:
                    blended = xp.floor(blended)
                out = xp.where(per_image(chosen, xp.bool), blended, out)
        return out if not integer else xp.astype(out, x.dtype)

    @staticmethod
    def _grey(x: Any, integer: bool) -> Any:
        xp = array_namespace(x)
        grey = 0.2989 * x[:, 0:1, ...] + 0.587 * x[:, 1:2, ...] + 0.114 * x[:, 2:3, ...]
        return xp.floor(grey) if integer else grey

    def __repr__(self) -> str:
        options = ", ".join(f"{name}={value}" for name, value in self.ranges.items())
        return f"ColorJitter({options})"


# -- mixing images and labels ---------------------------------------------------------------


class _Mixing(_Seeded):
    """Shared by MixUp and CutMix: arguments, one-hot labels and their mixture."""

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        num_classes: int | None = None,
        rng: Generator | int | None = None,
    ):
        who = type(self).__name__
        if not _real(alpha) or alpha <= 0:
            raise ValueError(f"{who}: alpha must be a finite number > 0, got {alpha!r}")
        if num_classes is not None and (
            isinstance(num_classes, bool)
            or not isinstance(num_classes, (int, np.integer))
            or num_classes < 1
        ):
            raise ValueError(f"{who}: num_classes must be an int >= 1, got {num_classes!r}")
        self.alpha = float(alpha)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.generator = _generator(rng)

    def _check(self, x: Any, y: Any) -> None:
        _check_batch(x, repr(self))
        if y.shape[0] != x.shape[0]:
            raise ValueError(
                f"{self!r}: got {x.shape[0]} images and {y.shape[0]} labels; they must match"
            )

    def _mix_labels(self, y: Any, lam: float, dtype: Any) -> Any:
        """``lam onehot(y) + (1 - lam) roll(onehot(y))``, ``(N, K)`` in ``dtype``."""
        xp = array_namespace(y)
        k = self.num_classes
        if y.ndim == 2 and xp.isdtype(y.dtype, "real floating"):
            # Class probabilities already (e.g. from another mixing transform).
            if k is not None and y.shape[1] != k:
                raise ValueError(f"{self!r}: got labels of shape {y.shape} for {k} classes")
            onehot = xp.astype(y, dtype)
        elif y.ndim == 1 and xp.isdtype(y.dtype, "integral"):
            if k is None:
                raise ValueError(
                    f"{self!r}: integer labels need num_classes=K to become class probabilities"
                )
            # One small read, so that a label out of range is an error, not a zero row.
            if bool(xp.any((y < 0) | (y >= k))):
                raise ValueError(
                    f"{self!r}: labels must lie in [0, {k}), got values from "
                    f"{int(xp.min(y))} to {int(xp.max(y))}"
                )
            classes = xp.arange(k, dtype=y.dtype, device=device(y))
            onehot = xp.astype(xp.reshape(y, (-1, 1)) == xp.reshape(classes, (1, k)), dtype)
        else:
            raise ValueError(
                f"{self!r}: labels must be class indices (N,) or class probabilities (N, K), "
                f"got {y.dtype} of shape {y.shape}"
            )
        return lam * onehot + (1.0 - lam) * xp.roll(onehot, 1, axis=0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alpha={self.alpha}, num_classes={self.num_classes})"


class MixUp(_Mixing):
    """Blend each image and its labels with those of the previous image in the batch.

    torchvision.transforms.v2's ``MixUp``: one ``lam ~ Beta(alpha, alpha)`` per
    batch, and image n is paired with image n - 1 (the batch rolled by one)::

        x' = lam x + (1 - lam) roll(x, 1)
        y' = lam onehot(y) + (1 - lam) roll(onehot(y), 1)

    Use it as ``DataLoader(..., batch_transform=MixUp(alpha=0.2, num_classes=10))``;
    the loader then yields class probabilities, which ``nn.CrossEntropyLoss``
    takes as targets and :func:`xcnn.fit` scores by their argmax.

    Parameters
    ----------
    alpha : float
        Beta-distribution parameter, > 0 (1 draws ``lam`` uniformly).
    num_classes : int, optional
        K, to one-hot encode class indices. May be omitted when the labels are
        class probabilities ``(N, K)`` already.
    rng : int, xcnn.backends.Generator or numpy.random.Generator, optional
        Source of ``lam`` (see :class:`RandomCrop`).

    Shapes
    ------
    ``x (N, C, H, W), y (N,) or (N, K) -> x' (N, C, H, W), y' (N, K)``; ``x'`` keeps
    the dtype of ``x`` (uint8 rounded), ``y'`` is the float dtype of ``x`` (float32 for uint8).
    """

    def __call__(self, x: Any, y: Any) -> tuple[Any, Any]:
        self._check(x, y)
        xp = array_namespace(x)
        work = _working_dtype(x, repr(self))
        lam = float(self.generator.host.beta(self.alpha, self.alpha))
        images = xp.astype(x, work, copy=False)
        mixed = xp.roll(images, 1, axis=0) * (1.0 - lam) + images * lam
        return _back_to(mixed, x.dtype), self._mix_labels(y, lam, work)


class CutMix(_Mixing):
    """Paste a random box of the previous image in the batch into each image; mix labels by area.

    torchvision.transforms.v2's ``CutMix``: per batch, ``lam ~ Beta(alpha,
    alpha)``, a centre ``(cx, cy)`` uniform over the pixels, and half-sides
    ``int(r W)``, ``int(r H)`` with ``r = sqrt(1 - lam) / 2``, clipped to the
    image. The box ``[y1, y2) x [x1, x2)`` of ``roll(x, 1)`` replaces that of
    ``x`` in every image, and the labels mix by the area actually kept::

        lam' = 1 - (x2 - x1)(y2 - y1) / (W H)
        y' = lam' onehot(y) + (1 - lam') roll(onehot(y), 1)

    Plug in as :class:`MixUp` (``DataLoader(batch_transform=...)``).

    Parameters
    ----------
    alpha : float
        Beta-distribution parameter, > 0.
    num_classes : int, optional
        K, to one-hot encode class indices (see :class:`MixUp`).
    rng : int, xcnn.backends.Generator or numpy.random.Generator, optional
        Source of ``lam`` and the box (see :class:`RandomCrop`).

    Shapes
    ------
    ``x (N, C, H, W), y (N,) or (N, K) -> x' (N, C, H, W), y' (N, K)``; ``x'`` keeps
    the dtype of ``x``, ``y'`` is the float dtype of ``x`` (float32 for uint8).
    """

    def __call__(self, x: Any, y: Any) -> tuple[Any, Any]:
        self._check(x, y)
        xp = array_namespace(x)
        work = _working_dtype(x, repr(self))
        h, w = x.shape[2], x.shape[3]
        host = self.generator.host
        lam = float(host.beta(self.alpha, self.alpha))
        centre_x, centre_y = int(host.integers(w)), int(host.integers(h))
        r = 0.5 * math.sqrt(1.0 - lam)
        half_w, half_h = int(r * w), int(r * h)
        x1, y1 = max(centre_x - half_w, 0), max(centre_y - half_h, 0)
        x2, y2 = min(centre_x + half_w, w), min(centre_y + half_h, h)
        kept = 1.0 - (x2 - x1) * (y2 - y1) / (w * h)
        out = xp.asarray(x, copy=True)
        out[:, :, y1:y2, x1:x2] = xp.roll(x, 1, axis=0)[:, :, y1:y2, x1:x2]
        return out, self._mix_labels(y, kept, work)
