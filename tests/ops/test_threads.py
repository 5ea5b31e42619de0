"""The NumPy fast paths' thread pool (xcnn/ops/_threads.py) and its effect on results.

Parity tests force every region to split (GRAIN = 1) and compare 1 thread with 3
threads: elementwise outputs must be identical, sums equal up to rounding.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time

import numpy as np
import pytest

import xcnn
from xcnn import nn
from xcnn.ops import (
    _threads,
    conv2d,
    conv2d_backward,
    linear,
    linear_backward,
    max_pool2d,
    max_pool2d_backward,
    relu,
    relu_backward,
)


@pytest.fixture
def threads(monkeypatch):
    """Set the thread count for one test; every region splits (GRAIN = 1)."""
    monkeypatch.setattr(_threads, "GRAIN", 1)
    before = _threads.get_num_threads()
    yield _threads.set_num_threads
    _threads.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True, None])
def test_set_num_threads_rejects_non_positive_integers(bad):
    with pytest.raises(ValueError, match="positive integer"):
        xcnn.set_num_threads(bad)


def test_set_and_get_num_threads(threads):
    threads(3)
    assert xcnn.get_num_threads() == 3
    threads(1)
    assert xcnn.get_num_threads() == 1


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_bad_environment_variable_is_named(monkeypatch, value):
    monkeypatch.setenv("XCNN_NUM_THREADS", value)
    monkeypatch.setattr(_threads, "_num_threads", None)
    with pytest.raises(ValueError, match="XCNN_NUM_THREADS must be a positive integer"):
        _threads.get_num_threads()


def test_environment_variable_sets_the_default(monkeypatch):
    monkeypatch.setenv("XCNN_NUM_THREADS", "5")
    monkeypatch.setattr(_threads, "_num_threads", None)
    assert _threads.get_num_threads() == 5


@pytest.mark.parametrize("n", [1, 2, 3, 7, 100])
@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_spans_tile_the_range(threads, n, count):
    threads(count)
    parts = _threads.spans(n, grain=1, item_size=1)
    assert parts[0][0] == 0 and parts[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))
    assert all(stop > start for start, stop in parts)
    assert len(parts) == min(count, n)


def test_small_work_stays_on_one_thread(threads):
    threads(4)
    assert _threads.spans(1000, grain=1 << 17, item_size=1) == [(0, 1000)]


def _spans_that_wait_for_each_other(count: int):
    """A span function whose spans each wait (up to 10 s) until all ``count`` have
    started: spans are handed out to whichever thread is free, and without the wait
    the calling thread would finish tiny spans before a helper woke."""
    started = []
    everyone = threading.Event()

    def work(start, stop):
        started.append(threading.get_ident())
        if len(started) == count:
            everyone.set()
        everyone.wait(timeout=10)
        return (start, stop, threading.get_ident())

    return work


def test_map_batch_runs_spans_on_separate_threads_in_order(threads):
    threads(3)
    spans = _threads.map_batch(_spans_that_wait_for_each_other(3), 9, item_size=1)
    assert [(a, b) for a, b, _ in spans] == [(0, 3), (3, 6), (6, 9)]
    assert spans[0][2] == threading.get_ident()  # the caller starts on the first span
    assert len({ident for _, _, ident in spans}) == 3


def test_a_helper_that_wakes_late_does_not_hold_up_the_region(threads):
    """With its helpers slow to start, the calling thread runs every span itself."""
    threads(3)
    gate = threading.Event()
    for worker in _threads._pool(2):  # each helper's next task: wait for the gate
        worker.submit(lambda: gate.wait(timeout=10))
    try:
        spans = _threads.map_batch(lambda a, b: (a, b, threading.get_ident()), 9, item_size=1)
    finally:
        gate.set()
    assert [(a, b) for a, b, _ in spans] == [(0, 3), (3, 6), (6, 9)]
    assert {ident for _, _, ident in spans} == {threading.get_ident()}
    # Once free, the helpers take spans again.
    spans = _threads.map_batch(_spans_that_wait_for_each_other(3), 9, item_size=1)
    assert len({ident for _, _, ident in spans}) == 3


def test_an_error_in_any_span_reaches_the_caller_after_all_spans_finish(threads):
    threads(3)
    finished = []

    def work(start, stop):
        if start == 3:
            raise KeyError("span 2 failed")
        finished.append(start)

    with pytest.raises(KeyError, match="span 2 failed"):
        _threads.map_batch(work, 9, item_size=1)
    assert sorted(finished) == [0, 6]
    # The pool still works afterwards.
    assert _threads.map_batch(lambda a, b: b - a, 9, item_size=1) == [3, 3, 3]


def test_nested_regions_run_on_the_calling_thread(threads):
    threads(2)

    def inner(start, stop):
        return threading.get_ident()

    def outer(start, stop):
        return set(_threads.map_batch(inner, 10, item_size=1)) == {threading.get_ident()}

    assert _threads.map_batch(outer, 10, item_size=1) == [True, True]


@pytest.mark.parametrize("count", [1, 2])
def test_blas_is_single_threaded_inside_and_restored_after(threads, count):
    """With one xcnn thread too: BLAS left to its own threads beside xcnn's caller
    made LeNet-5 steps ten times slower on a shared 2-core machine."""
    pytest.importorskip("threadpoolctl")
    libraries = _threads._blas()
    if not libraries:
        pytest.skip("no BLAS library that threadpoolctl can control")
    threads(count)
    original = [library.get_num_threads() for library in libraries]
    try:
        for library in libraries:  # a BLAS setting that the region must change
            library.set_num_threads(2)
        inside = _threads.map_batch(
            lambda a, b: [library.get_num_threads() for library in libraries],
            4,
            item_size=1,
            blas=True,
        )
        assert inside == [[1] * len(libraries)] * count
        assert [library.get_num_threads() for library in libraries] == [2] * len(libraries)
    finally:
        for library, n in zip(libraries, original, strict=True):
            library.set_num_threads(n)


def test_concurrent_callers_each_get_their_own_results(threads):
    """Two user threads entering regions at once: one splits, the other runs alone."""
    threads(2)
    results = {}

    def caller(key):
        results[key] = [
            _threads.map_batch(lambda a, b: (key, a, b), 8, item_size=1) for _ in range(50)
        ]

    workers = [threading.Thread(target=caller, args=(k,)) for k in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for key, runs in results.items():
        for parts in runs:
            assert all(part[0] == key for part in parts)
            assert parts[0][1] == 0 and parts[-1][2] == 8


def _both(fn, threads, count=3):
    """``fn()`` with 1 thread and with ``count`` threads."""
    threads(1)
    one = fn()
    threads(count)
    return one, fn()


def test_elementwise_fast_paths_do_not_depend_on_the_thread_count(threads, rng):
    x = rng.standard_normal((7, 3, 6, 8)).astype(np.float32)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    one, three = _both(lambda: (relu(x), relu_backward(gy, x)), threads)
    for a, b in zip(one, three, strict=True):
        np.testing.assert_array_equal(a, b)

    def pool():
        y, indices = max_pool2d(x, 2)
        gp = np.arange(y.size, dtype=np.float32).reshape(y.shape)
        return (
            y,
            indices,
            max_pool2d(x, 2, return_indices=False),
            max_pool2d_backward(gp, indices, x.shape, 2),
        )

    one, three = _both(pool, threads)
    for a, b in zip(one, three, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "window",
    [{"padding": 2}, {"stride": 2, "padding": 1}, {"padding": 1, "groups": 2}],
    ids=["wide", "strided", "groups"],
)
@pytest.mark.parametrize("count", [2, 3, 4])
def test_conv_fast_path_does_not_depend_on_the_thread_count(threads, rng, window, count):
    x = rng.standard_normal((7, 4, 9, 8)).astype(np.float32)
    w = rng.standard_normal((6, 4 // window.get("groups", 1), 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)

    def run():
        y = conv2d(x, w, b, **window)
        gy = np.linspace(-1, 1, y.size, dtype=np.float32).reshape(y.shape)
        return (y, *conv2d_backward(gy, x, w, **window))

    one, three = _both(run, threads, count)
    np.testing.assert_array_equal(one[0], three[0])  # each image's output is its own
    np.testing.assert_array_equal(one[1], three[1])  # so is its input gradient
    for summed in (2, 3):  # weight and bias gradients: sums over the images
        np.testing.assert_allclose(one[summed], three[summed], rtol=1e-5, atol=1e-5)


def test_linear_fast_path_does_not_depend_on_the_thread_count(threads, rng):
    x = rng.standard_normal((5, 2, 13)).astype(np.float32)
    w = rng.standard_normal((11, 13)).astype(np.float32)
    b = rng.standard_normal(11).astype(np.float32)
    gy = rng.standard_normal((5, 2, 11)).astype(np.float32)
    one, three = _both(lambda: (linear(x, w, b), *linear_backward(gy, x, w)), threads)
    for a, c in zip(one, three, strict=True):
        np.testing.assert_allclose(a, c, rtol=1e-6, atol=1e-6)


def test_lenet_step_is_reproducible_with_threads(threads, rng):
    """Same seed, same batch, 3 threads: two runs give bit-identical gradients."""
    threads(3)
    x = rng.random((16, 1, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, 16)
    grads = []
    for _ in range(2):
        model = xcnn.models.lenet5(rng=0)
        loss_fn = nn.CrossEntropyLoss()
        loss_fn(model(x), labels)
        model.backward(loss_fn.backward())
        grads.append([p.grad.copy() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_its_own_threads(threads):
    """The parent's helper threads do not exist in a child: it must not wait for them."""
    threads(2)
    assert _threads.map_batch(lambda a, b: b - a, 8, item_size=1) == [4, 4]  # pool started
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: a region must finish, on threads of its own
        try:
            spans = _threads.map_batch(_spans_that_wait_for_each_other(2), 8, item_size=1)
            os.write(write, b"ok" if len({ident for *_, ident in spans}) == 2 else b"one thread")
        finally:
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung waiting for its parent's threads")
    assert os.read(read, 16) == b"ok"
    assert os.waitstatus_to_exitcode(done[1]) == 0


@pytest.mark.parametrize("count", [4, 8])
def test_conv_backward_with_more_threads_than_images(threads, rng, count):
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)

    def run():
        return conv2d_backward(np.ones((1, 3, 5, 5), np.float32), x, w, padding=1)

    one, many = _both(run, threads, count)
    for a, b in zip(one, many, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("count", [1, 2])
def test_an_empty_batch_passes_through_a_model(threads, count):
    threads(count)
    model = xcnn.models.simple_cnn(rng=0)
    logits = model(np.zeros((0, 1, 28, 28), np.float32))
    assert logits.shape == (0, 10)
    model.backward(np.zeros_like(logits))
    assert all(p.grad.shape == p.shape and not p.grad.any() for p in model.parameters())


@pytest.mark.parametrize("window", [0.0, 0.05], ids=["blocking", "timed waits"])
def test_helpers_take_tasks_within_and_after_their_wake_window(threads, monkeypatch, window):
    """A helper waits in short timed waits for a while after each task, then blocks:
    a region must reach it, and come back with its result, in both states."""
    monkeypatch.setattr(_threads, "WAKE_WINDOW", window)
    threads(2)
    outcome: list = []

    def regions() -> None:
        for pause in (0.0, 0.2, 0.0):  # 0.2 s: past the window, the helper blocks
            time.sleep(pause)
            spans = _threads.map_batch(_spans_that_wait_for_each_other(2), 10, item_size=1)
            outcome.append(spans)

    runner = threading.Thread(target=regions, daemon=True)
    runner.start()
    runner.join(timeout=30)
    assert not runner.is_alive(), "a helper never picked up its task"
    assert len(outcome) == 3
    for spans in outcome:
        assert [(a, b) for a, b, _ in spans] == [(0, 5), (5, 10)]
        assert spans[0][2] != spans[1][2]  # the second span ran on a helper
