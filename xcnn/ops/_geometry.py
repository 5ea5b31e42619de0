"""Window geometry shared by convolution and pooling, and by every backend's fast path.

A leaf: it imports nothing of xcnn's, so the public ops (``im2col.py``, ``pool.py``)
and their fast paths (``_numpy/``, ``_cupy/``) all import it without import cycles.
The output-size formulas live here, in one place: sliding windows (floor and
PyTorch's ``ceil_mode``), ``padding="same"``, average-pool divisors and adaptive bins.
So does the one explicit pad (and its crop) that asymmetric padding needs.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from array_api_compat import device

__all__ = [
    "Geometry",
    "PoolGeometry",
    "adaptive_bins",
    "adaptive_size",
    "avg_pool_divisors",
    "conv_padding",
    "crop2d",
    "geometry",
    "index_dtype",
    "output_size",
    "pad2d",
    "pair",
    "pool_geometry",
    "pool_output_size",
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


def conv_padding(
    label: str,
    padding: int | tuple[int, int] | str,
    kernel: tuple[int, int],
    stride: int | tuple[int, int],
    dilation: int | tuple[int, int],
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Padding ``((top, left), (bottom, right))`` of a convolution, PyTorch's rules.

    An int or pair pads both sides alike. ``"valid"`` pads nothing. ``"same"`` pads
    ``d*(k-1)`` in all, half on the top/left and the rest (one more for an odd total)
    on the bottom/right, so that the output has the input's size; it needs stride 1.
    """
    if not isinstance(padding, str):
        ph, pw = pair(padding, f"{label}: padding")
        return (ph, pw), (ph, pw)
    if padding not in ("same", "valid"):
        raise ValueError(
            f"{label}: padding={padding!r} is not one of 'same', 'valid' or an int or pair of ints"
        )
    if padding == "valid":
        return (0, 0), (0, 0)
    if pair(stride, f"{label}: stride") != (1, 1):
        raise ValueError(
            f"{label}: padding='same' is not supported for strided convolutions "
            f"(stride={stride!r}), as in PyTorch; give the padding as numbers"
        )
    dh, dw = pair(dilation, f"{label}: dilation")
    total = (dh * (kernel[0] - 1), dw * (kernel[1] - 1))
    before = (total[0] // 2, total[1] // 2)
    return before, (total[0] - before[0], total[1] - before[1])


def pad2d(x: Any, before: tuple[int, int], after: tuple[int, int], value: float, *, xp: Any) -> Any:
    """``x (..., H, W)`` padded with ``value``: ``before`` rows/columns at the top/left,
    ``after`` at the bottom/right (``x`` itself when there is nothing to add)."""
    if before == (0, 0) and after == (0, 0):
        return x
    *lead, h, w = (int(s) for s in x.shape)
    shape = (*lead, h + before[0] + after[0], w + before[1] + after[1])
    padded = xp.full(shape, value, dtype=x.dtype, device=device(x))
    padded[..., before[0] : before[0] + h, before[1] : before[1] + w] = x
    return padded


def crop2d(x: Any, before: tuple[int, int], size: tuple[int, int]) -> Any:
    """The ``size`` window of ``x (..., H, W)`` at offset ``before``: undoes :func:`pad2d`."""
    return x[..., before[0] : before[0] + size[0], before[1] : before[1] + size[1]]


class PoolGeometry(NamedTuple):
    """Kernel, stride, padding and output size of one pooling op.

    ``eh``/``ew``: rows/columns of padding past ``ph``/``pw`` on the bottom/right that
    ``ceil_mode`` windows reach (0 in floor mode): the padded input is
    ``(H + 2*ph + eh, W + 2*pw + ew)``.
    """

    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    oh: int
    ow: int
    eh: int = 0
    ew: int = 0


def pool_output_size(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output length: floor, or ceil with the last window starting
    inside the input or its left padding (``(out - 1) * s < n + p``)."""
    if not ceil_mode:
        return output_size(size, kernel, stride, padding)
    out = (size + 2 * padding - kernel + stride - 1) // stride + 1
    if (out - 1) * stride >= size + padding:
        out -= 1
    return out


def avg_pool_divisors(
    size: int, kernel: int, stride: int, padding: int, out: int, count_include_pad: bool
) -> list[int]:
    """Per-output divisor along one axis of ``avg_pool2d`` (the 2-D one is the product).

    As PyTorch: a window counts the padding it covers (``count_include_pad``) but never
    what a ``ceil_mode`` window hangs past the padded input; without
    ``count_include_pad`` only real pixels count.
    """
    counts = []
    for o in range(out):
        start = o * stride - padding
        end = min(start + kernel, size + padding)
        counts.append(end - start if count_include_pad else min(end, size) - max(start, 0))
    return counts


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
    ceil_mode: bool = False,
) -> PoolGeometry:
    """Validate a pooling window against a ``(N, C, H, W)`` shape; ``label`` names the caller."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4:
        raise ValueError(f"{label}: expected a 4-D input (N, C, H, W), got shape {shape}")
    (kh, kw), (sh, sw), (ph, pw) = pool_params(label, kernel_size, stride, padding)
    h, w = shape[2], shape[3]
    oh = pool_output_size(h, kh, sh, ph, ceil_mode)
    ow = pool_output_size(w, kw, sw, pw, ceil_mode)
    if oh < 1 or ow < 1:
        raise ValueError(
            f"{label}: input of spatial size {(h, w)} with padding {(ph, pw)} is smaller than "
            f"the kernel {(kh, kw)}, which gives a non-positive output size {(oh, ow)}; "
            "use a larger input, more padding or a smaller kernel"
        )
    # ceil_mode's last window may hang past the padded input: pad that much more.
    eh = max(0, (oh - 1) * sh + kh - (h + 2 * ph))
    ew = max(0, (ow - 1) * sw + kw - (w + 2 * pw))
    return PoolGeometry(kh, kw, sh, sw, ph, pw, oh, ow, eh, ew)


def adaptive_size(label: str, output_size: Any) -> tuple[int | None, int | None]:
    """Validate an adaptive pool's ``output_size``: an int, or a pair of ints or ``None``."""
    value = (output_size, output_size) if isinstance(output_size, int) else output_size
    try:
        first, second = value
    except (TypeError, ValueError):
        first = second = "bad"
    for v in (first, second):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(
                f"{label}: output_size must be a positive int or a pair of positive ints "
                f"or None (None keeps that input size), got output_size={output_size!r}"
            )
    return first, second


def adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive bins along one axis: ``[floor(i*n/out), ceil((i+1)*n/out))``."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


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
