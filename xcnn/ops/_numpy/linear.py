"""NumPy fast path of linear and its gradients (reached only through ``xcnn.ops.linear``).

The same matmuls as the standard twin, split across threads (``_threads``) by
*features*, with BLAS single-threaded inside, as in every other fast path (a
multi-threaded OpenBLAS call leaves helper threads spinning on the cores the
convolutions need next). Each thread takes a block of output features: forward
computes its columns of ``y``, backward its rows of ``gW`` and the matching share
of ``gx``'s columns. Splitting by batch rows instead would make every thread stream
the whole weight matrix (6 MB for a 3136 -> 512 layer), which measured slower
than one thread; split by features, two threads match OpenBLAS's own.
"""

from __future__ import annotations

import numpy as np

from xcnn.ops import _recycle, _threads


def _rows(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, a.shape[-1])


def _work(x2: np.ndarray, weight: np.ndarray) -> int:
    # One output feature's multiply-adds, in units of GRAIN's elementwise work (a
    # multiply-add inside BLAS costs about 1/32 of an element of a NumPy ufunc pass).
    return x2.shape[0] * weight.shape[1] // 32


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, relu: bool) -> np.ndarray:
    """``x W^T + b``, clamped at 0 with ``relu``."""
    x2 = _rows(x)
    out_features = weight.shape[0]
    y2 = _recycle.empty((x2.shape[0], out_features), x.dtype)

    def run(start: int, stop: int) -> None:
        out = y2[:, start:stop]
        np.matmul(x2, weight[start:stop].T, out=out)
        if bias is not None:
            out += bias[start:stop]
        if relu:
            np.maximum(out, x.dtype.type(0), out=out)

    _threads.map_batch(run, out_features, item_size=_work(x2, weight), blas=True)
    return y2.reshape(*x.shape[:-1], out_features)


def linear_backward(
    gy: np.ndarray, x: np.ndarray, weight: np.ndarray, bias: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(gx, gW, gb)``."""
    x2, gy2 = _rows(x), _rows(gy)
    out_features, in_features = weight.shape
    gx2 = _recycle.empty(x2.shape, x.dtype)
    gw = np.empty(weight.shape, dtype=weight.dtype)

    def run(start: int, stop: int) -> None:
        np.matmul(gy2[:, start:stop].T, x2, out=gw[start:stop])
        # The same share of the input features, so the threads' gx blocks tile gx.
        first, last = in_features * start // out_features, in_features * stop // out_features
        np.matmul(gy2, weight[:, first:last], out=gx2[:, first:last])

    _threads.map_batch(run, out_features, item_size=2 * _work(x2, weight), blas=True)
    gb = np.sum(gy2, axis=0) if bias else None
    return gx2.reshape(x.shape), gw, gb
