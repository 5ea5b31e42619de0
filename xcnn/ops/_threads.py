"""Batch parallelism for the NumPy fast paths: each CPU thread takes a slice of the work.

NumPy releases the GIL inside its loops and inside OpenBLAS, so threads that each run
a fast path on their own images do run at once, on separate cores. The GIL is still
taken between NumPy calls, so this only pays when every call is large: work is split
only when each thread gets at least ``GRAIN`` elements of it, and the fast paths keep
their per-call work in the tens to hundreds of microseconds (a thread issuing calls
of a few microseconds each spends its time waiting for the GIL instead).

Inside every region that calls BLAS (convolution, linear) BLAS is held to one
thread, with one xcnn thread as with several. The fast paths' matmuls are per
chunk of images, too small for OpenBLAS to split well; two callers that each start
OpenBLAS's own threads oversubscribe the cores; and after a multi-threaded call
OpenBLAS's helper threads spin for a while, taking a core from xcnn's threads
(measured on 2 cores: a LeNet-5 training step used twice its wall time in CPU
time). With one xcnn thread and BLAS left to its own two threads, a LeNet-5 step at
batch 32 took 32-64 ms on the shared 2-core machine, against 3.7-4.4 ms with BLAS
on one thread. BLAS gets its own setting back when the last region ends, so the
caller's matmuls outside xcnn are unaffected.

Results do not depend on the threads' timing: each thread writes its own slice of the
output, and the partial sums the caller gets back are added in slice order. They can
depend on the thread count, by rounding, only where partial sums are added (a
convolution's weight and bias gradients).

Helper threads wait on plain locks (see ``_Worker``) and take a region's spans as
they come free (see ``_Region``); a forked child starts its own.

``XCNN_NUM_THREADS`` or :func:`set_num_threads` (``xcnn.set_num_threads``) sets the
thread count; the default is the number of CPUs the process may run on.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# A thread gets at least this much work, in elements a NumPy pass touches: about 100 us.
GRAIN = 1 << 17

# After a task, a helper waits for the next one in short timed waits for this long, then
# in one untimed wait (see _Worker._wait_for_task).
WAKE_WINDOW = 0.02
WAKE_POLL = 50e-6

_lock = threading.Lock()
_num_threads: int | None = None
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
    process may run on. 1 runs everything on the calling thread, BLAS calls too.
    """
    global _num_threads
    count = _num_threads  # read on every region: no lock once it is set
    if count is not None:
        return count
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
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: expected a positive integer, got {n!r}")
    with _lock:
        _num_threads = n


class _Region:
    """One parallel region: its spans go to whichever thread asks for one first.

    The calling thread starts on the first span at once; each helper takes the next
    span left when it wakes. A helper that wakes late (its CPU given to another
    process or guest) finds the spans taken and the region finished without it, where
    a fixed span per thread would hold the whole region until it ran. Which thread
    runs a span never changes what it computes.
    """

    def __init__(self, fn: Callable[[int, int], Any], parts: list[tuple[int, int]]):
        self.fn: Callable[[int, int], Any] | None = fn
        self.parts = parts
        self.results: list[Any] = [None] * len(parts)
        self.errors: list[BaseException | None] = [None] * len(parts)
        # next() on a count is one C call, so no two threads get the same number; it is
        # atomic in free-threaded CPython too (gh-117657).
        self._claims = itertools.count()
        self._finished = itertools.count()
        self.done = threading.Lock()  # released by whichever thread finishes the last span
        self.done.acquire()

    def work(self) -> None:
        """Run spans until none is left (errors are kept, per span, for the caller)."""
        while (index := next(self._claims)) < len(self.parts):
            try:
                self.results[index] = _run_inside(self.fn, *self.parts[index])
            except BaseException as error:  # raised by map_batch, in span order
                self.errors[index] = error
            if next(self._finished) == len(self.parts) - 1:
                self.done.release()


class _Worker:
    """One helper thread, woken through a plain lock to run the tasks handed to it.

    Plain locks are the cheapest wake-up Python has: a round trip costs about 10 us
    here, where ``concurrent.futures`` (futures, queue, condition variables) costs
    50-120 us, and a training step enters about 30 parallel regions. A task is a
    region's ``work``; nobody waits for the helper itself, only for the region's
    spans, so a helper may still be waking for an old region when the next one
    hands it another task.
    """

    def __init__(self) -> None:
        self._wake = threading.Lock()
        self._wake.acquire()
        self._tasks: list[Callable[[], None]] = []
        threading.Thread(target=self._loop, name="xcnn-worker", daemon=True).start()

    def _loop(self) -> None:
        while True:
            self._wait_for_task()
            while self._tasks:
                self._tasks.pop(0)()

    def _wait_for_task(self) -> None:
        """Block until ``submit``; for ``WAKE_WINDOW`` seconds, in waits of ``WAKE_POLL``.

        On a virtual machine, a thread that blocks for long lets its virtual CPU halt,
        and the host may give the physical CPU away: waking it again then takes the
        host's scheduler, not microseconds. Waits shorter than the host's halt polling
        keep the CPU. A training step's regions come a few milliseconds apart at most,
        so the helper is still awake for the next one. Measured on this project's
        2-core VM, LeNet-5 batch-128 steps alternated in one process: 0.82-0.99 of the
        time with plain blocking waits, the larger gains while the host was busy.
        (OpenMP's threads, PyTorch's, spin outright between regions for the same
        reason; a Python thread cannot spin without holding the GIL.)
        """
        if WAKE_WINDOW > 0:
            deadline = time.perf_counter() + WAKE_WINDOW
            while time.perf_counter() < deadline:
                if self._wake.acquire(timeout=WAKE_POLL):
                    return
        self._wake.acquire()

    def submit(self, task: Callable[[], None]) -> None:
        self._tasks.append(task)
        try:
            self._wake.release()
        except RuntimeError:  # already released: the helper has yet to wake, and then
            pass  # runs every task in its list, this one included


_workers: list[_Worker] = []
# Held by the thread running a parallel region; another thread that finds it taken
# runs its region alone rather than queue behind it.
_region = threading.Lock()


def _forget_pool_in_child() -> None:
    # A forked child has none of the parent's threads: start fresh ones if it needs any.
    global _workers, _blas_users, _lock, _blas_lock, _region
    _workers = []
    _blas_users = 0
    _blas_saved.clear()
    _lock = threading.Lock()
    _blas_lock = threading.Lock()
    _region = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def _pool(count: int) -> list[_Worker]:
    """``count`` started helper threads (more are started when first needed)."""
    with _lock:
        while len(_workers) < count:
            _workers.append(_Worker())
        return _workers[:count]


def _blas() -> list[Any]:
    """threadpoolctl's controllers for the BLAS libraries loaded in this process."""
    global _blas_controllers
    if _blas_controllers is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # without it, BLAS keeps its own setting
            _blas_controllers = []
        else:
            _blas_controllers = list(ThreadpoolController().select(user_api="blas").lib_controllers)
    return _blas_controllers


def _limit_blas() -> None:
    """Hold BLAS to one thread until the matching :func:`_release_blas`."""
    global _blas_users
    with _blas_lock:
        if _blas_users == 0:
            _blas_saved[:] = [(library, library.get_num_threads()) for library in _blas()]
            for library, count in _blas_saved:
                if count != 1:
                    library.set_num_threads(1)
        _blas_users += 1


def _release_blas() -> None:
    global _blas_users
    with _blas_lock:
        _blas_users -= 1
        if _blas_users == 0:
            for library, count in _blas_saved:
                if count != 1:
                    library.set_num_threads(count)


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """``range(n)`` as ``min(parts, n)`` (at least 1) contiguous, nearly equal ``(start, stop)``."""
    parts = max(1, min(parts, n))
    return [(n * k // parts, n * (k + 1) // parts) for k in range(parts)]


def spans(n: int, grain: int, item_size: int) -> list[tuple[int, int]]:
    """Contiguous ``(start, stop)`` slices of ``range(n)``, one per thread that is worth it.

    ``item_size`` is the work of one item (elements touched, say); a slice gets at
    least ``grain`` of work, so a small batch stays on one thread.
    """
    return split(n, min(get_num_threads(), (n * item_size) // max(1, grain)))


def _run_inside(fn: Callable[[int, int], T], start: int, stop: int) -> T:
    _inside.active = True
    try:
        return fn(start, stop)
    finally:
        _inside.active = False


def map_batch(
    fn: Callable[[int, int], T], n: int, *, item_size: int, blas: bool = False
) -> list[T]:
    """``[fn(start, stop) for each span]``, the spans run on separate threads.

    ``fn`` must only write to its own slice of any shared output. The calling thread
    starts on the first span itself; the others go to whichever thread is free first
    (see ``_Region``). Every span finishes before this returns, even when one raises;
    the first error (in span order) is then raised.

    ``blas=True`` says ``fn`` calls BLAS. BLAS then runs single-threaded inside
    ``fn``, also with one xcnn thread and when the work is too small to split: a
    multi-threaded OpenBLAS call leaves its helper threads spinning for a while, and
    on a machine with few cores they take a core from xcnn's own threads (measured on
    2 cores: a LeNet-5 training step used twice its wall time in CPU time). Regions
    without BLAS skip the switch, which costs about 3 us.
    """
    if getattr(_inside, "active", False):  # a region inside a span: already set up
        return [fn(0, n)]
    single = get_num_threads() == 1
    if single and not blas:
        return [fn(0, n)]
    parts = [(0, n)] if single else spans(n, GRAIN, item_size)
    if blas:
        _limit_blas()
    try:
        if len(parts) == 1 or not _region.acquire(blocking=False):
            return [_run_inside(fn, 0, n)]
        try:
            region = _Region(fn, parts)
            for worker in _pool(len(parts) - 1):
                worker.submit(region.work)
            region.work()
            region.done.acquire()
            region.fn = None  # a helper that wakes late must not keep fn's arrays alive
            error = next((error for error in region.errors if error is not None), None)
            if error is not None:
                raise error
            return region.results
        finally:
            _region.release()
    finally:
        if blas:
            _release_blas()
