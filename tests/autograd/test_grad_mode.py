"""no_grad, enable_grad, set_grad_enabled: what records, and that the switch is per thread."""

from __future__ import annotations

import threading
from typing import ClassVar

import pytest

import xcnn
from xcnn.autograd import Function


class Recorder(Function):
    """Doubles its input and keeps its ctx, to look at what was saved."""

    contexts: ClassVar[list] = []

    @staticmethod
    def forward(ctx, x):
        Recorder.contexts.append(ctx)
        ctx.save_for_backward(x)
        return x * 2.0

    @staticmethod
    def backward(ctx, grad):
        return grad * 2.0


def _assert_not_recorded(t):
    assert t.grad_fn is None and not t.requires_grad


def _assert_recorded(t):
    assert t.grad_fn is not None and t.requires_grad


def test_no_grad_builds_no_nodes_and_saves_nothing(xp, make):
    x = make((3,))
    Recorder.contexts.clear()
    with xcnn.no_grad():
        assert not xcnn.is_grad_enabled()
        y = Recorder.apply(x)
        for t in (y, x * 2.0, x.exp(), x[0], xcnn.cat([x, x]), x.max(dim=0).values):
            _assert_not_recorded(t)
    assert xcnn.is_grad_enabled()
    assert Recorder.contexts[0].saved_tensors == ()
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_set_grad_enabled_as_a_context(xp, make):
    x = make((3,))
    with xcnn.set_grad_enabled(False):
        _assert_not_recorded(x * 2.0)
        with xcnn.set_grad_enabled(True):
            _assert_recorded(x * 2.0)
        _assert_not_recorded(x * 2.0)
    _assert_recorded(x * 2.0)


def test_set_grad_enabled_as_a_call(xp, make):
    x = make((3,))
    try:
        xcnn.set_grad_enabled(False)
        _assert_not_recorded(x * 2.0)
    finally:
        xcnn.set_grad_enabled(True)
    _assert_recorded(x * 2.0)


def test_enable_grad_records_inside_no_grad(xp, make):
    x = make((3,))
    with xcnn.no_grad():
        with xcnn.enable_grad():
            y = x * 3.0
        _assert_not_recorded(x * 3.0)
    _assert_recorded(y)
    y.sum().backward()
    assert xcnn.backends.to_host(x.grad).tolist() == [3.0, 3.0, 3.0]


def test_decorators(xp, make):
    x = make((3,))

    @xcnn.no_grad()
    def infer(t):
        return t * 2.0

    @xcnn.enable_grad()
    def train(t):
        return t * 2.0

    _assert_not_recorded(infer(x))
    assert xcnn.is_grad_enabled()
    with xcnn.no_grad():
        _assert_recorded(train(x))
        assert not xcnn.is_grad_enabled()
    assert infer.__name__ == "infer"


def test_modes_are_restored_after_an_exception(xp, make):
    @xcnn.no_grad()
    def fails():
        raise ValueError("boom")

    with pytest.raises(ValueError):
        fails()
    assert xcnn.is_grad_enabled()
    with pytest.raises(ValueError), xcnn.no_grad():
        raise ValueError("boom")
    assert xcnn.is_grad_enabled()


def test_grad_mode_is_per_thread(xp, make):
    """A thread inside no_grad does not stop another thread from recording, and back."""
    x = make((3,))
    inside = threading.Barrier(2)
    results = {}

    def worker():
        with xcnn.no_grad():
            inside.wait()  # the main thread records while this one is in no_grad
            results["worker"] = x * 2.0
            inside.wait()

    thread = threading.Thread(target=worker)
    thread.start()
    inside.wait()
    results["main"] = x * 2.0
    inside.wait()
    thread.join()
    _assert_recorded(results["main"])
    _assert_not_recorded(results["worker"])

    # A new thread starts with grad enabled even while this one is in no_grad.
    with xcnn.no_grad():
        thread = threading.Thread(target=lambda: results.update(fresh=xcnn.is_grad_enabled()))
        thread.start()
        thread.join()
    assert results["fresh"] is True
