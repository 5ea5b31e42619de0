"""The output-size formula, in one place, used by convolution and pooling."""

from __future__ import annotations


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
