"""Fresh-looking NumPy arrays on memory that has been used before, for the fast paths' outputs.

A training step allocates the same large arrays every step (activations, their
gradients), and glibc hands that memory back to the OS between steps, so each new
array pays a page fault per 4 KiB page the first time it is written: about 1,100
faults, 2 to 5 ms of a LeNet-5 batch-128 step on this project's 2-core machine.
This module keeps the buffers instead, as CuPy's memory pool does on the GPU.

A buffer is handed out again only when nothing references it but this module: every
array made from it (the output itself, any view of it, a view of a view) holds it as
its ``.base``, so its reference count says whether anyone can still see it. An
output is never shared with live data, and its contents are undefined, as with
``np.empty``.

At most ``LIMIT`` bytes are kept; beyond that a buffer is dropped when freed
instead of kept. :func:`empty_cache` drops every unused buffer now.

:func:`scratch` is the other half: temporaries that never leave a fast path, kept
per thread and per name.
"""

from __future__ import annotations

import math
import sys
import threading

import numpy as np

# Bytes kept for reuse, in use or not; a LeNet-5 batch-128 step needs about 30 MB.
LIMIT = 512 << 20

_lock = threading.Lock()
_buffers: dict[int, list[np.ndarray]] = {}
_total = 0
_workspace = threading.local()


def _free_buffers(bucket: list[np.ndarray], free: int) -> list[np.ndarray]:
    """The buffers of ``bucket`` that only ``bucket`` references."""
    return [buffer for buffer in bucket if sys.getrefcount(buffer) == free]


def _references_when_free() -> int:
    # What sys.getrefcount reports inside _free_buffers for a buffer only the list holds,
    # measured rather than assumed: interpreters differ in the references they count.
    bucket = [np.empty(1)]
    return next(count for count in range(1, 8) if _free_buffers(bucket, count))


_FREE = _references_when_free()


def empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Like ``np.empty(shape, dtype)`` (C order), on a recycled buffer when one is free."""
    global _total
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < 1 << 16:  # small arrays are cheap to allocate and not worth tracking
        return np.empty(shape, dtype=dtype)
    with _lock:
        bucket = _buffers.setdefault(nbytes, [])
        free = _free_buffers(bucket, _FREE)
        if free:
            return free[0].view(dtype).reshape(shape)
        buffer = np.empty(nbytes, dtype=np.uint8)
        if _total + nbytes <= LIMIT:
            bucket.append(buffer)
            _total += nbytes
    return buffer.view(dtype).reshape(shape)


def empty_cache() -> int:
    """Release the recycled NumPy buffers that no array uses any more (``xcnn.ops.empty_cache``).

    Like ``torch.cuda.empty_cache``: worth calling after training, to give the memory
    of the activation buffers back. Returns the number of bytes released.
    """
    global _total
    released = 0
    with _lock:
        for nbytes, bucket in _buffers.items():
            free = _free_buffers(bucket, _FREE)
            released += nbytes * len(free)
            bucket[:] = [buffer for buffer in bucket if not any(buffer is f for f in free)]
            del free
        _total -= released
    return released


def scratch(name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array kept for reuse by later calls (per thread, per ``name``).

    Only for temporaries that never leave the fast path that asks (outputs come from
    :func:`empty`). Fresh multi-megabyte arrays cost a page fault per 4 KiB page on
    first touch (measured: ~4,400 faults, a quarter of a LeNet-5 training step).
    Each name is one buffer per thread, so a caller must be done with it before
    asking for the same name again.
    """
    pool = _workspace.__dict__.setdefault("pool", {})
    key = (name, np.dtype(dtype))
    size = math.prod(shape)
    buffer = pool.get(key)
    if buffer is None or buffer.size < size:
        buffer = pool[key] = np.empty(size, dtype=dtype)
    return buffer[:size].reshape(shape)
