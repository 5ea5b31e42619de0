"""The backward walk: accumulation, retain_graph, argument checks, order, and memory."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

import xcnn
from xcnn import backends


def test_grads_accumulate_across_backward_calls(xp, make):
    x = make((2, 3))
    (x * 2.0).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(backends.to_host(x.grad), np.full((2, 3), 5.0))


def test_fan_out_sums_every_use(xp, make):
    x = make((4,))
    h = x * 2.0
    (h + h * h + h.exp()).sum().backward()
    hx = backends.to_host(h.data)
    np.testing.assert_allclose(backends.to_host(x.grad), 2.0 * (1 + 2 * hx + np.exp(hx)))


def test_leaf_grad_is_its_own_writable_array(xp, make):
    a, b = make((2, 3)), make((2, 3))
    seed = xp.ones((2, 3), dtype=xp.float64)
    (a + b).backward(seed)
    # Add hands the same array to both inputs, and it is the caller's seed: each leaf
    # must get a copy, or writing one gradient would change the other and the seed.
    assert a.grad is not b.grad and a.grad is not seed
    a.grad[0, 0] = 7.0
    assert backends.to_host(b.grad)[0, 0] == 1.0
    assert backends.to_host(seed)[0, 0] == 1.0


def test_summed_leaf_grad_is_writable(xp, make):
    x = make((2, 3))
    x.sum().backward()  # Sum's backward broadcasts a 0-d gradient: a read-only view
    x.grad[...] = 0.0
    assert float(backends.to_host(xp.sum(x.grad))) == 0.0


def test_zero_dim_tensors_hold_arrays(xp, make):
    """NumPy turns 0-d results into scalars; data and grad must stay arrays."""
    a, b = make(()), make((3,))
    s = b.sum()
    assert type(s.data) is type(b.data)
    (s * a + a).backward(retain_graph=True)
    (s * a).backward()  # a second accumulation into the 0-d .grad
    assert type(a.grad) is type(a.data) and tuple(a.grad.shape) == ()
    np.testing.assert_allclose(backends.to_host(a.grad), 2 * backends.to_host(s.data) + 1)


def test_retain_graph_allows_a_second_backward(xp, make):
    x = make((3,))
    y = (x * x).sum()
    y.backward(retain_graph=True)
    first = backends.to_host(x.grad).copy()
    y.backward()
    np.testing.assert_allclose(backends.to_host(x.grad), 2 * first)
    np.testing.assert_allclose(first, 2 * backends.to_host(x.data))
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()


def test_second_backward_without_retain_graph_raises(xp, make):
    x = make((3,))
    y = (x.exp() * 2.0).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_backward_through_a_freed_shared_part_raises(xp, make):
    x = make((3,))
    h = x.exp()
    (h * 2.0).sum().backward()
    with pytest.raises(RuntimeError, match=r"Exp.*retain_graph=True"):
        (h * 3.0).sum().backward()


def test_non_scalar_backward_needs_grad(xp, make):
    y = make((2, 3)) * 2.0
    with pytest.raises(RuntimeError, match=r"single-element.*\(2, 3\).*grad="):
        y.backward()


def test_single_element_non_scalar_backward_seeds_one(xp, make):
    x = make((1, 1))
    (x * 3.0).backward()
    assert backends.to_host(x.grad).tolist() == [[3.0]]


def test_backward_grad_is_checked(xp, make):
    y = make((2, 3)) * 2.0
    with pytest.raises(ValueError, match=r"grad has shape \(3, 2\).*\(2, 3\)"):
        y.backward(xp.ones((3, 2), dtype=xp.float64))
    with pytest.raises(TypeError, match=r"dtype float32.*float64"):
        y.backward(xp.ones((2, 3), dtype=xp.float32))
    with pytest.raises(TypeError, match="grad is list but the tensor lives on"):
        y.backward([[1.0] * 3] * 2)


def test_backward_grad_may_be_a_tensor_or_number(xp, make):
    x = make((2,))
    (x * 2.0).backward(xcnn.Tensor(xp.asarray([1.0, 2.0])))
    (x * 2.0).backward(0.5)
    assert backends.to_host(x.grad).tolist() == [3.0, 5.0]


def test_backward_without_graph_raises(xp, make):
    with pytest.raises(RuntimeError, match="does not require grad"):
        (make((2,), requires_grad=False) * 2.0).sum().backward()


def test_backward_of_a_leaf_fills_its_own_grad(xp, make):
    x = make((2,))
    x.backward(xp.asarray([1.0, -1.0]))
    assert backends.to_host(x.grad).tolist() == [1.0, -1.0]


def test_fan_out_sums_in_reverse_creation_order():
    """Nodes run newest-ready-first, so a leaf's contributions add up in a fixed order.

    In float32, (1 - 1e8) + 1e8 is 0 but (1e8 - 1e8) + 1 is 1: the result shows the order.
    """
    x = xcnn.tensor([1.0], requires_grad=True)
    # Stack's backward makes all three products ready at once; the newest runs first.
    xcnn.stack([x * 1e8, x * -1e8, x * 1.0]).sum().backward()
    assert x.grad.tolist() == [0.0]
    one, big = np.float32(1.0), np.float32(1e8)
    assert (one - big) + big == 0.0 and (big - big) + one == 1.0


def test_two_runs_are_bit_identical(rng):
    values = rng.standard_normal((64, 32)).astype(np.float32)
    grads = []
    for _ in range(2):
        x = xcnn.Tensor(values.copy(), requires_grad=True)
        h = x.exp()
        parts = [(h * float(k)).sum(dim=1) for k in range(1, 8)]
        loss = xcnn.stack(parts).sum() + (x @ x.T).mean() + h.max()
        loss.backward()
        grads.append(x.grad)
    assert np.array_equal(grads[0], grads[1])


def test_a_deep_chain_walks_and_frees_without_recursion():
    x = xcnn.tensor([1.0], requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0
    y.sum().backward()
    assert x.grad.tolist() == [1.0]
    z = x
    for _ in range(5000):
        z = z + 0.0
    del z  # freeing a long chain without a backward must not overflow the stack


def _without_gc(test):
    """Run ``test`` with the cycle collector off: whatever is freed is freed by refcount."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        test()
    finally:
        if enabled:
            gc.enable()


def test_backward_and_del_free_every_intermediate():
    """After backward and ``del loss`` all intermediates are gone, without the cycle collector.

    Nodes point to their inputs only; a cycle (node -> output -> node) would keep the
    arrays until gc.collect() ran.
    """

    def body():
        rng = np.random.default_rng(0)
        x = xcnn.Tensor(rng.standard_normal((4, 3)), requires_grad=True)
        w = xcnn.Tensor(rng.standard_normal((3, 2)), requires_grad=True)
        h = x @ w
        e = h.exp()
        m, _ = e.max(dim=1)
        loss = (e * e).sum() + m.sum() + xcnn.cat([h, e]).mean()
        tensors = [weakref.ref(t) for t in (h, e, m)]
        arrays = [weakref.ref(t.data) for t in (h, e, m)]
        del h, e, m
        assert arrays[1]() is not None  # saved by Exp and Mul: the graph holds it
        loss.backward()
        del loss
        assert [r() for r in tensors] == [None] * 3
        assert [r() for r in arrays] == [None] * 3
        assert x.grad is not None and w.grad is not None

    _without_gc(body)


def test_del_without_backward_frees_the_graph():
    def body():
        x = xcnn.Tensor(np.ones((3, 3)), requires_grad=True)
        h = x.exp()
        ref = weakref.ref(h.data)
        loss = (h * x).sum()
        del h
        assert ref() is not None
        del loss
        assert ref() is None

    _without_gc(body)


def test_saved_arrays_are_released_right_after_backward():
    def body():
        x = xcnn.Tensor(np.linspace(0.5, 1.0, 6), requires_grad=True)
        h = x.exp()
        ref = weakref.ref(h.data)
        product = h * x
        node = product.grad_fn
        loss = product.sum()
        del h, product
        assert ref() is not None
        assert len(node.saved_tensors) == 2
        loss.backward()
        assert ref() is None  # loss is alive, its nodes no longer hold what they saved
        assert node.next_edges == ()
        with pytest.raises(RuntimeError, match="Mul: its saved arrays were already freed"):
            _ = node.saved_tensors

    _without_gc(body)


def test_retain_graph_keeps_saved_arrays_until_the_last_backward():
    def body():
        x = xcnn.Tensor(np.linspace(0.5, 1.0, 6), requires_grad=True)
        h = x.exp()
        ref = weakref.ref(h.data)
        loss = (h * x).sum()
        del h
        loss.backward(retain_graph=True)
        assert ref() is not None
        loss.backward()
        assert ref() is None

    _without_gc(body)


def test_gradient_buffers_are_not_kept():
    """The walk keeps no gradient of an intermediate once its node ran."""
    seen = []

    class Spy(xcnn.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            return a * 1.0

        @staticmethod
        def backward(ctx, grad):
            seen.append(weakref.ref(grad))
            return grad * 1.0

    def body():
        x = xcnn.Tensor(np.ones(5), requires_grad=True)
        loss = (Spy.apply(x.exp()) * 2.0).sum()
        loss.backward()
        assert seen and seen[0]() is None

    _without_gc(body)
