"""Batch parallelism for the NumPy fast paths: each CPU thread takes a slice of the batch.

NumPy releases the GIL inside its loops and inside OpenBLAS, so threads that each run
a fast path on their own images do run at once, on separate cores. The GIL is still
taken between NumPy calls, so this only pays when every call is large: a region is
split only when each thread gets at least ``grain`` elements of work, and the fast
paths keep their per-call work in the hundreds of microseconds (a thread issuing
calls of a few microseconds each spends its time waiting for the GIL instead).

Inside a parallel region OpenBLAS is held to one thread. The fast paths' matmuls are
per chunk of images, too small for OpenBLAS to split well, and two callers that each
start OpenBLAS's own threads oversubscribe the cores (measured: slower than running
on one thread). The setting is restored when the last region ends, so matmuls
outside (a large ``Linear``, say) still get every BLAS thread.

Results do not depend on the threads' timing: each thread writes its own slice of the
output, and the partial sums the caller gets back are added in slice order. They can
depend on the thread count only where partial sums are added (the convolution's
weight gradient), by rounding.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

# A thread gets at least this much work (elements touched): about 100 us of NumPy calls.
GRAIN = 1 << 17

_lock = threading.Lock()
_num_threads: int | None = None
_executor: concurrent.futures.ThreadPoolExecutor | None = None
_inside = threading.local()

# BLAS limiting: how many regions are running, and the thread count to restore.
_blas_lock = threading.Lock()
_blas_users = 0
_blas_saved: list[tuple[Any, int]] = []
_blas_controllers: list[Any] | None = None


def _default_threads() -> int:
    """``XCNN_NUM_THREADS``, else the CPUs this process may run on."""
    value = os.environ.get("XCNN_NUM_THREADS", "").strip()
    if value:
        try:
            count = int(value)
        except ValueError:
            count = 0
        if count < 1:
            raise ValueError(f"XCNN_NUM_THREADS must be a positive integer, got {value!r}")
        return count
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def get_num_threads() -> int:
    """The number of CPU threads the NumPy fast paths split a batch across.

    The default is ``XCNN_NUM_THREADS`` if set, else the number of CPUs this
    process may run on. 1 runs everything on the calling thread.
    """
    global _num_threads
    with _lock:
        if _num_threads is None:
            _num_threads = _default_threads()
        return _num_threads


def set_num_threads(n: int) -> None:
    """Set how many CPU threads the NumPy fast paths use (as ``torch.set_num_threads``).

    Parameters
    ----------
    n : int
        At least 1. 1 runs every op on the calling thread.
    """
    global _num_threads, _executor
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: expected a positive integer, got {n!r}")
    with _lock:
        _num_threads = n
        if _executor is not None:
            # Running regions keep the old pool until they finish; later ones get a new one.
            _executor.shutdown(wait=False)
            _executor = None


def _forget_pool_in_child() -> None:
    # A forked child has none of the parent's threads: start a fresh pool if it needs one.
    global _executor, _blas_users, _lock, _blas_lock
    _executor = None
    _blas_users = 0
    _blas_saved.clear()
    _lock = threading.Lock()
    _blas_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def _pool(workers: int) -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="xcnn-worker"
            )
        return _executor


def _blas() -> list[Any]:
    """threadpoolctl's controllers for the BLAS libraries loaded in this process."""
    global _blas_controllers
    if _blas_controllers is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # without it, BLAS keeps its own setting
            _blas_controllers = []
        else:
            _blas_controllers = list(
                ThreadpoolController().select(user_api="blas").lib_controllers
            )
    return _blas_controllers


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    global _blas_users
    with _blas_lock:
        if _blas_users == 0:
            _blas_saved.clear()
            for library in _blas():
                _blas_saved.append((library, library.get_num_threads()))
                library.set_num_threads(1)
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                for library, count in _blas_saved:
                    library.set_num_threads(count)


def spans(n: int, grain: int, item_size: int) -> list[tuple[int, int]]:
    """Contiguous ``(start, stop)`` slices of ``range(n)``, one per thread that is worth it.

    ``item_size`` is the work of one item (elements touched, say); a slice gets at
    least ``grain`` of work, so a small batch stays on one thread.
    """
    threads = max(1, min(get_num_threads(), n, (n * item_size) // max(1, grain)))
    bounds = [n * k // threads for k in range(threads + 1)]
    return [(bounds[k], bounds[k + 1]) for k in range(threads)]


def _run_inside(fn: Callable[[int, int], T], start: int, stop: int) -> T:
    _inside.active = True
    try:
        return fn(start, stop)
    finally:
        _inside.active = False


def map_batch(fn: Callable[[int, int], T], n: int, *, item_size: int) -> list[T]:
    """``[fn(start, stop) for each span]``, the spans run on separate threads.

    ``fn`` must only write to its own slice of any shared output. The calling thread
    runs the first span itself. Every span finishes before this returns, even when
    one raises; the first error (in span order) is then raised.

    With more than one thread configured, BLAS runs single-threaded inside ``fn``
    even when the work is too small to split: a multi-threaded OpenBLAS call leaves
    its helper threads spinning for a while, and on a machine with few cores they
    then take a core from xcnn's own threads (measured on 2 cores: a LeNet-5
    training step used twice its wall time in CPU time).
    """
    if get_num_threads() == 1 or getattr(_inside, "active", False):
        return [fn(0, n)]
    parts = spans(n, GRAIN, item_size)
    with _single_threaded_blas():
        if len(parts) == 1:
            return [_run_inside(fn, 0, n)]
        pool = _pool(get_num_threads() - 1)
        futures = [pool.submit(_run_inside, fn, start, stop) for start, stop in parts[1:]]
        try:
            first = _run_inside(fn, *parts[0])
        finally:
            concurrent.futures.wait(futures)
        return [first, *(future.result() for future in futures)]
