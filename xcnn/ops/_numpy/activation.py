"""NumPy fast path of relu and its gradient (reached only through ``xcnn.ops.activation``).

The same math as the standard twin, bit for bit, with the output on a recycled
buffer (``_recycle``), the mask in per-thread scratch instead of two fresh
temporaries, and large arrays split across threads (``_threads``).
"""

from __future__ import annotations

import numpy as np

from xcnn.ops import _recycle, _threads


def relu(x: np.ndarray) -> np.ndarray:
    """``max(x, 0)`` of a C-contiguous array."""
    y = _recycle.empty(x.shape, x.dtype)
    flat_x, flat_y = x.reshape(-1), y.reshape(-1)
    zero = x.dtype.type(0)

    def run(start: int, stop: int) -> None:
        np.maximum(flat_x[start:stop], zero, out=flat_y[start:stop])

    _threads.map_batch(run, flat_x.size, item_size=1)
    return y


def relu_backward(gy: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``gy * [x > 0]`` of two C-contiguous arrays of one shape and dtype."""
    gx = _recycle.empty(x.shape, gy.dtype)
    flat_gy, flat_x, flat_gx = gy.reshape(-1), x.reshape(-1), gx.reshape(-1)

    def run(start: int, stop: int) -> None:
        mask = _recycle.scratch("relu mask", (stop - start,), np.bool_)
        np.greater(flat_x[start:stop], 0, out=mask)
        # float * bool multiplies by exactly 1.0 or 0.0, as the twin's float mask does.
        np.multiply(flat_gy[start:stop], mask, out=flat_gx[start:stop])

    _threads.map_batch(run, flat_x.size, item_size=1)
    return gx
