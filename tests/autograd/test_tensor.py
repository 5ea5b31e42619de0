"""Tensor: creation, what it refuses (with errors naming the op), and its plain accessors."""

from __future__ import annotations

import array_api_strict
import numpy as np
import pytest

import xcnn
from xcnn import backends


def test_tensor_wraps_the_array(xp, make):
    a = xp.asarray(np.arange(6.0).reshape(2, 3))
    t = xcnn.Tensor(a, requires_grad=True)
    assert t.data is a and t.grad is None and t.grad_fn is None and t.is_leaf
    assert t.shape == (2, 3) and t.ndim == 2 and t.numel() == 6 and len(t) == 2
    assert t.size() == (2, 3) and t.size(1) == 3 and t.dim() == 2
    assert t.dtype == xp.float64
    assert t[1, 2].item() == 5.0 and float(t.sum()) == 15.0
    assert t.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]


def test_xcnn_tensor_from_host_data():
    t = xcnn.tensor([[1.0, 2.0]], requires_grad=True)
    assert t.dtype == np.float32 and t.requires_grad
    assert xcnn.tensor([1, 2]).dtype == np.int64
    assert xcnn.tensor(np.array([1.0]), dtype="float64").dtype == np.float64
    assert xcnn.tensor(t).data is t.data and not xcnn.tensor(t).requires_grad


def test_requires_grad_on_integers_is_refused(xp):
    ints = xp.asarray(np.array([1, 2, 3]))
    with pytest.raises(
        TypeError, match=r"only floating-point tensors can require gradients.*int64"
    ):
        xcnn.Tensor(ints, requires_grad=True)
    with pytest.raises(TypeError, match="floating-point"):
        xcnn.tensor([1, 2], requires_grad=True)
    with pytest.raises(TypeError, match="floating-point"):
        xcnn.Tensor(ints).requires_grad_()


def test_requires_grad_off_only_on_leaves(xp, make):
    x = make((2,))
    x.requires_grad = False
    assert not (x * 2.0).requires_grad
    y = make((2,)) * 2.0
    with pytest.raises(RuntimeError, match=r"leaf tensor; use t.detach\(\)"):
        y.requires_grad = False


def test_detach_leaves_the_graph(xp, make):
    x = make((2,))
    d = (x * 2.0).detach()
    assert d.grad_fn is None and not d.requires_grad
    (d * x).sum().backward()
    np.testing.assert_allclose(backends.to_host(x.grad), backends.to_host(d.data))


def test_mixing_backends_names_the_op():
    a = xcnn.Tensor(np.ones(3), requires_grad=True)
    b = xcnn.Tensor(array_api_strict.ones(3, dtype=array_api_strict.float64))
    for op, name in [
        (lambda: a * b, "Mul"),
        (lambda: b + a, "Add"),
        (lambda: a @ b, "MatMul"),
        (lambda: xcnn.cat([a, b]), "Cat"),
        (lambda: xcnn.stack([b, a]), "Stack"),
    ]:
        with pytest.raises(TypeError, match=f"{name}: all inputs must live on one backend, got "):
            op()


def test_mixing_a_tensor_with_another_backend_array_is_refused():
    a = xcnn.Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(TypeError, match="cannot combine a Tensor with a Array"):
        a * array_api_strict.ones(3, dtype=array_api_strict.float64)


def test_mixing_float_dtypes_names_the_op(xp, make):
    a, b = make((3,), dtype="float32"), make((3,), dtype="float64")
    for op, name in [
        (lambda: a * b, "Mul"),
        (lambda: b - a, "Sub"),
        (lambda: a**b, "Pow"),
        (lambda: xcnn.cat([a, b]), "Cat"),
    ]:
        message = rf"{name}: floating-point inputs of different dtypes \(float\d\d, float\d\d\)"
        with pytest.raises(TypeError, match=message):
            op()


def test_raw_arrays_of_the_same_backend_combine(xp, make):
    a = make((3,))
    raw = xp.asarray(np.array([1.0, 2.0, 3.0]))
    (a * raw).sum().backward()
    assert backends.to_host(a.grad).tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    "write",
    [
        lambda t: t.__iadd__(1.0),
        lambda t: t.__isub__(1.0),
        lambda t: t.__imul__(2.0),
        lambda t: t.__itruediv__(2.0),
        lambda t: t.__setitem__(0, 5.0),
        lambda t: t.add_(1.0),
        lambda t: t.zero_(),
    ],
    ids=["+=", "-=", "*=", "/=", "setitem", "add_", "zero_"],
)
def test_in_place_on_a_tensor_that_requires_grad_is_refused(xp, make, write):
    leaf = make((3,))
    before = backends.to_host(leaf.data).copy()
    with pytest.raises(RuntimeError, match="in-place change of a leaf tensor that requires grad"):
        write(leaf)
    np.testing.assert_array_equal(backends.to_host(leaf.data), before)
    with pytest.raises(RuntimeError, match="in-place change of a tensor that requires grad"):
        write(leaf * 1.0)
    with xcnn.no_grad():  # an optimizer's update
        write(leaf)
    assert leaf._version == 1


def test_indexing_with_a_tensor_is_refused(xp, make):
    x = make((3,))
    with pytest.raises(TypeError, match="indexing a Tensor with a Tensor"):
        x[xcnn.Tensor(xp.asarray(np.array([0])))]
    with pytest.raises(TypeError, match=r"ints, slices, \.\.\. or None, got list"):
        x[[0, 1]]


def test_shape_errors_are_clear(xp, make):
    x = make((2, 3))
    with pytest.raises(ValueError, match=r"permute: \(0, 0\) is not a permutation"):
        x.permute(0, 0)
    with pytest.raises(ValueError, match="give at least one of min and max"):
        x.clamp()
    with pytest.raises(ValueError, match="start_dim 1 comes after end_dim 0"):
        x.flatten(1, 0)
    with pytest.raises(ValueError, match="non-empty"):
        xcnn.cat([])
    with pytest.raises(IndexError, match="dimension 2 is out of range"):
        x.sum(dim=2)
    with pytest.raises(ValueError, match=r"only a single-element tensor.*\(2, 3\)"):
        x.item()


def test_comparisons_give_boolean_tensors_outside_the_graph(xp, make):
    x = xcnn.Tensor(xp.asarray(np.array([1.0, 2.0, 3.0])), requires_grad=True)
    for mask, expected in [
        (x > 1.5, [False, True, True]),
        (x <= 2.0, [True, True, False]),
        (x == x, [True, True, True]),
        (x != 2.0, [True, False, True]),
    ]:
        assert mask.grad_fn is None and not mask.requires_grad
        assert backends.to_host(mask.data).tolist() == expected
    assert x.argmax().item() == 2


def test_numpy_conversion():
    t = xcnn.tensor([1.0, 2.0], requires_grad=True)
    assert np.asarray(t) is t.data and t.numpy() is t.data
    assert repr(t) == "tensor([1., 2.], dtype=float32, requires_grad=True)"


def test_strict_arrays_do_not_convert_implicitly():
    t = xcnn.Tensor(array_api_strict.ones(2, dtype=array_api_strict.float64))
    with pytest.raises(TypeError, match=r"call t\.numpy"):
        np.asarray(t)
    assert t.numpy().tolist() == [1.0, 1.0]
