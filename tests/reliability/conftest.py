"""Shared guards for the reliability tests: a wall-clock alarm and a peak-allocation probe."""

from __future__ import annotations

import contextlib
import signal
import threading
import tracemalloc
from collections.abc import Iterator

import pytest


class Hang(Exception):
    """Raised by :func:`no_hang` when the guarded code runs past its time limit."""


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    # SIGALRM interrupts a blocking read or a runaway loop, which a hypothesis
    # deadline (checked only after the call returns) cannot.
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum, frame):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class PeakMemory:
    """``with peak:`` measures the largest Python + NumPy allocation inside the block."""

    def __init__(self) -> None:
        self.bytes = 0

    def __enter__(self) -> PeakMemory:
        tracemalloc.start()
        tracemalloc.reset_peak()
        return self

    def __exit__(self, *exc) -> None:
        self.bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


@pytest.fixture
def no_hang():
    """``with no_hang(2.0): ...`` fails the test with :class:`Hang` after 2 s."""
    return _alarm


@pytest.fixture
def peak_memory():
    """A fresh :class:`PeakMemory` probe (NumPy reports its buffers to tracemalloc)."""
    return PeakMemory()
