"""Window geometry shared by convolution and pooling, and by every backend's fast path.

A leaf: it imports nothing of xcnn's, so the public ops (``im2col.py``, ``pool.py``)
and their fast paths (``_numpy/``, ``_cupy/``) all import it without import cycles.
The output-size formula lives here, in one place.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = [
    "Geometry",
    "PoolGeometry",
    "geometry",
    "index_dtype",
    "output_size",
    "pair",
    "pool_geometry",
    "pool_params",
    "window_index",
    "window_slices",
]


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """Output length of a sliding window: ``(n + 2p - d(k-1) - 1) // s + 1`` (PyTorch's)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    """Expand ``3`` to ``(3, 3)``; check a given pair has two ints."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return (value, value)
    try:
        first, second = value
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (first, second)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return (first, second)


class Geometry(NamedTuple):
    """Kernel, stride, padding, dilation and output size of one sliding window op."""

    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    dh: int
    dw: int
    oh: int
    ow: int


def geometry(
    op: str,
    input_shape: tuple[int, ...],
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int],
    padding: int | tuple[int, int],
    dilation: int | tuple[int, int],
) -> Geometry:
    """Validate the window parameters against a ``(N, C, H, W)`` shape; ``op`` names the caller."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4:
        raise ValueError(f"{op}: expected a 4-D input (N, C, H, W), got shape {shape}")
    kh, kw = pair(kernel_size, f"{op}: kernel_size")
    sh, sw = pair(stride, f"{op}: stride")
    ph, pw = pair(padding, f"{op}: padding")
    dh, dw = pair(dilation, f"{op}: dilation")
    if kh < 1 or kw < 1:
        raise ValueError(f"{op}: kernel_size must be positive, got {(kh, kw)}")
    if sh < 1 or sw < 1:
        raise ValueError(f"{op}: stride must be positive, got {(sh, sw)}")
    if ph < 0 or pw < 0:
        raise ValueError(f"{op}: padding must be non-negative, got {(ph, pw)}")
    if dh < 1 or dw < 1:
        raise ValueError(f"{op}: dilation must be positive, got {(dh, dw)}")
    h, w = shape[2], shape[3]
    oh, ow = output_size(h, kh, sh, ph, dh), output_size(w, kw, sw, pw, dw)
    if oh < 1 or ow < 1:
        raise ValueError(
            f"{op}: input of spatial size {(h, w)} with padding {(ph, pw)} is smaller than "
            f"the dilated kernel {(dh * (kh - 1) + 1, dw * (kw - 1) + 1)}, which gives a "
            f"non-positive output size {(oh, ow)}; use a larger input, more padding or a "
            "smaller kernel"
        )
    return Geometry(kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)


def window_slices(g: Geometry, i: int, j: int) -> tuple[slice, slice]:
    """Rows/columns of the padded image that kernel tap ``(i, j)`` reads, one per output.

    The stop is exact (last index + 1), never past the end: array_api_strict rejects
    out-of-bounds slice stops.
    """
    top, left = i * g.dh, j * g.dw
    return (
        slice(top, top + g.sh * (g.oh - 1) + 1, g.sh),
        slice(left, left + g.sw * (g.ow - 1) + 1, g.sw),
    )


class PoolGeometry(NamedTuple):
    """Kernel, stride, padding and output size of one pooling op."""

    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    oh: int
    ow: int


def pool_params(
    label: str,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None,
    padding: int | tuple[int, int],
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Validate kernel/stride/padding on their own (no input needed); ``label`` names the caller."""
    kh, kw = pair(kernel_size, f"{label}: kernel_size")
    sh, sw = (kh, kw) if stride is None else pair(stride, f"{label}: stride")
    ph, pw = pair(padding, f"{label}: padding")
    if kh < 1 or kw < 1:
        raise ValueError(f"{label}: kernel_size must be positive, got {(kh, kw)}")
    if sh < 1 or sw < 1:
        raise ValueError(f"{label}: stride must be positive, got {(sh, sw)}")
    if ph < 0 or pw < 0:
        raise ValueError(f"{label}: padding must be non-negative, got {(ph, pw)}")
    if ph > kh // 2 or pw > kw // 2:
        # PyTorch's rule; it also guarantees every window holds at least one real pixel.
        raise ValueError(
            f"{label}: padding {(ph, pw)} must be at most half the kernel size {(kh, kw)} "
            f"(at most {(kh // 2, kw // 2)}), as in PyTorch"
        )
    return (kh, kw), (sh, sw), (ph, pw)


def pool_geometry(
    label: str,
    input_shape: tuple[int, ...],
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None,
    padding: int | tuple[int, int],
) -> PoolGeometry:
    """Validate a pooling window against a ``(N, C, H, W)`` shape; ``label`` names the caller."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4:
        raise ValueError(f"{label}: expected a 4-D input (N, C, H, W), got shape {shape}")
    (kh, kw), (sh, sw), (ph, pw) = pool_params(label, kernel_size, stride, padding)
    h, w = shape[2], shape[3]
    oh, ow = output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)
    if oh < 1 or ow < 1:
        raise ValueError(
            f"{label}: input of spatial size {(h, w)} with padding {(ph, pw)} is smaller than "
            f"the kernel {(kh, kw)}, which gives a non-positive output size {(oh, ow)}; "
            "use a larger input, more padding or a smaller kernel"
        )
    return PoolGeometry(kh, kw, sh, sw, ph, pw, oh, ow)


def index_dtype(xp: Any, window: int) -> Any:
    """dtype of max-pool ``indices`` for a window of ``window`` elements."""
    return xp.int8 if window <= 127 else xp.int32


def window_index(i: int, j: int, g: PoolGeometry) -> tuple:
    """Index of the (N, C, OH, OW) strided slice of window offset (i, j) in the padded input."""
    # Exact stops keep the slice in bounds, as array-api-strict requires.
    return (
        slice(None),
        slice(None),
        slice(i, i + g.sh * (g.oh - 1) + 1, g.sh),
        slice(j, j + g.sw * (g.ow - 1) + 1, g.sw),
    )
