"""How much CUDA memory is free (CuPy only; imported only when the backend is CuPy)."""

from __future__ import annotations


def free_device_bytes() -> int:
    """Bytes the current device can still give: driver-free plus CuPy's pooled free blocks."""
    import cupy

    free, _total = cupy.cuda.runtime.memGetInfo()
    return int(free) + int(cupy.get_default_memory_pool().free_bytes())
