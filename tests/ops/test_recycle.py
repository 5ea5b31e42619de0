"""Recycled output buffers (xcnn/ops/_recycle.py): reused only when nothing can see them."""

from __future__ import annotations

import numpy as np
import pytest

from xcnn import models, nn
from xcnn.ops import _recycle, relu


@pytest.fixture(autouse=True)
def fresh_pool(monkeypatch):
    monkeypatch.setattr(_recycle, "_buffers", {})
    monkeypatch.setattr(_recycle, "_total", 0)


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


SHAPE = (64, 1024)  # 256 KiB of float32: above the size that is recycled


def test_a_live_array_is_never_handed_out_again():
    first = _recycle.empty(SHAPE, np.float32)
    second = _recycle.empty(SHAPE, np.float32)
    assert _address(first) != _address(second)


def test_a_dropped_array_is_reused_for_any_shape_and_dtype_of_its_size():
    first = _recycle.empty(SHAPE, np.float32)
    address = _address(first)
    del first
    again = _recycle.empty((1024, 32), np.float64)
    assert _address(again) == address
    assert again.shape == (1024, 32) and again.dtype == np.float64


@pytest.mark.parametrize(
    "keep",
    [lambda a: a[3:], lambda a: a.T, lambda a: a.reshape(-1)[::2], lambda a: memoryview(a)],
    ids=["slice", "transpose", "strided-view", "memoryview"],
)
def test_a_view_keeps_its_buffer_busy(keep):
    first = _recycle.empty(SHAPE, np.float32)
    first[...] = 7
    address = _address(first)
    view = keep(first)
    del first
    other = _recycle.empty(SHAPE, np.float32)
    other[...] = 0
    assert _address(other) != address
    assert np.all(np.asarray(view) == 7)


def test_small_arrays_are_plain_allocations():
    small = _recycle.empty((16,), np.float32)
    assert _recycle._buffers == {}
    assert small.shape == (16,)


def test_the_cache_stays_under_its_limit(monkeypatch):
    monkeypatch.setattr(_recycle, "LIMIT", 3 * 256 * 1024)
    live = [_recycle.empty(SHAPE, np.float32) for _ in range(5)]
    assert len({_address(a) for a in live}) == 5
    assert _recycle._total == 3 * 256 * 1024


def test_empty_cache_releases_unused_buffers_only():
    kept = _recycle.empty(SHAPE, np.float32)
    dropped = _recycle.empty(SHAPE, np.float32)
    del dropped
    assert _recycle.empty_cache() == 256 * 1024
    assert _recycle._total == 256 * 1024
    assert _address(_recycle.empty(SHAPE, np.float32)) != _address(kept)


def test_outputs_kept_by_the_caller_survive_later_steps(rng):
    """An activation the caller holds is never overwritten by the next forward pass."""
    x = rng.standard_normal((8, 6, 32, 32)).astype(np.float32)
    held = relu(x)
    expected = held.copy()
    for _ in range(3):
        relu(-x)
    np.testing.assert_array_equal(held, expected)


def test_training_steps_reuse_memory_and_keep_logits(rng):
    model = models.lenet5(rng=0)
    loss_fn = nn.CrossEntropyLoss()
    x = rng.random((32, 1, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, 32)
    first_logits = model(x)
    expected = first_logits.copy()
    loss_fn(first_logits, labels)
    model.backward(loss_fn.backward())
    totals = []
    for _ in range(4):
        loss_fn(model(x), labels)
        model.backward(loss_fn.backward())
        totals.append(_recycle._total)
    # Once a step's arrays exist, later steps find them free again instead of allocating.
    assert totals[0] > 0
    assert totals[1:] == totals[:-1]
    np.testing.assert_array_equal(first_logits, expected)
