"""``xcnn.nn.functional``: finite differences, PyTorch parity, fan-out, no_grad and errors.

Every test runs on each namespace (the ``backend`` fixture). The gradient checks compare
the graph's gradients with central finite differences (``xcnn.testing.gradcheck`` on a
function of Tensors) w.r.t. every differentiable input, in float64.
The PyTorch comparisons draw shapes and geometry with Hypothesis and check the value,
dtype and namespace of the output and every input gradient at float32 and float64.
"""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xcnn
import xcnn.nn.functional as F
from xcnn import backends
from xcnn.autograd import Tensor
from xcnn.ops import pool as pool_ops
from xcnn.testing import gradcheck

TF = torch.nn.functional
TOL = {
    "float32": {"rtol": 1e-4, "atol": 1e-5},
    "float64": {"rtol": 1e-10, "atol": 1e-12},
}
# The backend fixture is the same for every example of one test, so reusing it is safe.
HYPOTHESIS = settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """The tensors here are tiny: waking torch's thread pool costs more than it saves."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _assert_on(backend, array, dtype):
    assert backends.namespace_name(array) == backend.name
    assert backends.dtype_name(array.dtype) == dtype


def _leaves(backend, hosts):
    return [Tensor(backend.asarray(h), requires_grad=True) for h in hosts]


# -- gradient checks ---------------------------------------------------------------------
# Each case: (backend, rng) -> (fn of the differentiable inputs, their float64 host values).


def _conv(kwargs, x_shape, w_shape, bias):
    def case(backend, rng):
        hosts = [rng.standard_normal(x_shape), rng.standard_normal(w_shape)]
        if bias:
            hosts.append(rng.standard_normal(w_shape[0]))
        return (lambda x, w, b=None: F.conv2d(x, w, b, **kwargs)), hosts

    return case


def _unary(fn, shape, scale=1.0):
    return lambda backend, rng: (fn, [scale * rng.standard_normal(shape)])


def _batch_norm_train(shape, running):
    def case(backend, rng):
        c = shape[1]
        stats = (
            (backend.asarray(np.zeros(c)), backend.asarray(np.ones(c))) if running else (None,) * 2
        )
        hosts = [rng.standard_normal(shape), rng.uniform(0.5, 2, c), rng.standard_normal(c)]
        return (lambda x, w, b: F.batch_norm(x, *stats, w, b, training=True)), hosts

    return case


def _batch_norm_eval(backend, rng):
    mean = backend.asarray(rng.standard_normal(3))
    var = backend.asarray(rng.uniform(0.5, 2.0, 3))
    hosts = [rng.standard_normal((4, 3, 2, 2)), rng.uniform(0.5, 2, 3), rng.standard_normal(3)]
    return (lambda x, w, b: F.batch_norm(x, mean, var, w, b, training=False, eps=1e-3)), hosts


def _dropout(backend, rng):
    # A new generator with the same seed each call: every evaluation draws the same mask.
    return (
        lambda x: F.dropout(x, 0.4, generator=backends.Generator(11)),
        [rng.standard_normal((4, 5))],
    )


def _cross_entropy(backend, rng):
    targets = backend.asarray(np.array([0, 4, 2, 4]))
    return (lambda x: F.cross_entropy(x, targets)), [rng.standard_normal((4, 5))]


GRADCHECK_CASES = {
    "conv2d": _conv({}, (2, 3, 5, 5), (4, 3, 3, 3), bias=True),
    "conv2d_stride_padding": _conv(
        {"stride": 2, "padding": 1}, (2, 2, 6, 5), (3, 2, 3, 2), bias=True
    ),
    "conv2d_tuples_dilation": _conv(
        {"stride": (2, 1), "padding": (1, 2), "dilation": (2, 1)},
        (1, 2, 7, 5),
        (2, 2, 3, 3),
        bias=True,
    ),
    "conv2d_groups": _conv({"groups": 2, "padding": 1}, (1, 4, 4, 4), (6, 2, 3, 3), bias=True),
    "conv2d_depthwise_no_bias": _conv({"groups": 3}, (2, 3, 4, 4), (3, 1, 2, 2), bias=False),
    "linear": lambda backend, rng: (
        F.linear,
        [rng.standard_normal((3, 4)), rng.standard_normal((2, 4)), rng.standard_normal(2)],
    ),
    "linear_no_bias_3d": lambda backend, rng: (
        F.linear,
        [rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4))],
    ),
    "relu": _unary(F.relu, (3, 4)),
    "leaky_relu": _unary(lambda x: F.leaky_relu(x, 0.2), (3, 4)),
    "sigmoid": _unary(F.sigmoid, (3, 4), scale=3.0),
    "tanh": _unary(F.tanh, (3, 4), scale=2.0),
    "softmax_dim1": _unary(lambda x: F.softmax(x, dim=1), (2, 3, 4)),
    "softmax_dim-1": _unary(lambda x: F.softmax(x, dim=-1), (2, 3, 4)),
    "log_softmax_dim1": _unary(lambda x: F.log_softmax(x, dim=1), (2, 3, 4)),
    "log_softmax_dim-1": _unary(lambda x: F.log_softmax(x, dim=-1), (2, 3, 4)),
    "max_pool2d": _unary(lambda x: F.max_pool2d(x, 2), (2, 2, 4, 5)),
    "max_pool2d_stride_padding": _unary(lambda x: F.max_pool2d(x, 3, 2, 1), (1, 2, 5, 6)),
    "max_pool2d_tuples": _unary(lambda x: F.max_pool2d(x, (3, 2), (1, 2), (1, 0)), (1, 2, 4, 5)),
    "avg_pool2d": _unary(lambda x: F.avg_pool2d(x, 2), (2, 2, 4, 5)),
    "avg_pool2d_stride_padding": _unary(lambda x: F.avg_pool2d(x, 3, 2, 1), (1, 2, 5, 6)),
    "avg_pool2d_tuples": _unary(lambda x: F.avg_pool2d(x, (3, 2), (1, 2), (1, 0)), (1, 2, 4, 5)),
    "adaptive_avg_pool2d": _unary(lambda x: F.adaptive_avg_pool2d(x, 1), (2, 3, 3, 4)),
    "adaptive_avg_pool2d_pair": _unary(lambda x: F.adaptive_avg_pool2d(x, (1, 1)), (1, 2, 2, 3)),
    "batch_norm_train_4d": _batch_norm_train((3, 2, 2, 3), running=True),
    "batch_norm_train_2d_no_stats": _batch_norm_train((5, 3), running=False),
    "batch_norm_eval": _batch_norm_eval,
    "dropout": _dropout,
    "cross_entropy": _cross_entropy,
    "mse_loss": lambda backend, rng: (
        F.mse_loss,
        [rng.standard_normal((3, 4)), rng.standard_normal((3, 4))],
    ),
    "flatten": _unary(lambda x: F.flatten(x, 1, 2), (2, 3, 2, 2)),
}


@pytest.mark.parametrize("case", list(GRADCHECK_CASES))
def test_gradients_match_finite_differences(backend, rng, case):
    """float64 central differences against the graph's gradient w.r.t. every input."""
    fn, hosts = GRADCHECK_CASES[case](backend, rng)
    inputs = [backend.asarray(h) for h in hosts]
    out = fn(*(Tensor(a, requires_grad=True) for a in inputs))
    assert isinstance(out, Tensor) and out.grad_fn is not None
    _assert_on(backend, out.data, "float64")
    assert gradcheck(fn, inputs, max_elements=40)


def test_dropout_gradient_is_the_mask(backend, rng):
    """The same generator state gives the same mask; the gradient is that mask / (1 - p)."""
    host = rng.uniform(1.0, 2.0, (20, 30))  # no zeros: y == 0 marks a dropped element
    x = Tensor(backend.asarray(host), requires_grad=True)
    y = F.dropout(x, 0.25, generator=backends.Generator(3))
    again = F.dropout(Tensor(backend.asarray(host)), 0.25, generator=backends.Generator(3))
    kept = backend.to_numpy(y.data) != 0
    assert 0.15 < 1 - kept.mean() < 0.35
    np.testing.assert_array_equal(backend.to_numpy(again.data), backend.to_numpy(y.data))
    np.testing.assert_allclose(backend.to_numpy(y.data), np.where(kept, host / 0.75, 0.0))
    g = rng.standard_normal(host.shape)
    y.backward(backend.asarray(g))
    np.testing.assert_allclose(backend.to_numpy(x.grad), np.where(kept, g / 0.75, 0.0))

    xcnn.manual_seed(5)
    first = backend.to_numpy(F.dropout(x, 0.5).data)
    second = backend.to_numpy(F.dropout(x, 0.5).data)
    xcnn.manual_seed(5)
    np.testing.assert_array_equal(backend.to_numpy(F.dropout(x, 0.5).data), first)
    assert not np.array_equal(first, second)  # each call draws a new mask

    assert F.dropout(x, 0.5, training=False) is x
    identity = F.dropout(x, 0.0)
    np.testing.assert_array_equal(backend.to_numpy(identity.data), host)


# -- PyTorch as the oracle -----------------------------------------------------------------


def compare_with_torch(backend, fn, torch_fn, hosts, dtype):
    """Value, dtype and namespace of ``fn(*inputs)`` and every input's gradient against
    ``torch_fn`` on the same values, backpropagating the same random gradient."""
    hosts = [np.asarray(h, dtype=dtype) for h in hosts]
    leaves = _leaves(backend, hosts)
    t_leaves = [torch.tensor(h, requires_grad=True) for h in hosts]
    out, t_out = fn(*leaves), torch_fn(*t_leaves)
    assert isinstance(out, Tensor) and out.shape == tuple(t_out.shape)
    _assert_on(backend, out.data, dtype)
    np.testing.assert_allclose(backend.to_numpy(out.data), t_out.detach().numpy(), **TOL[dtype])
    g = np.asarray(np.random.default_rng(0).standard_normal(out.shape), dtype=dtype)
    out.backward(backend.asarray(g))
    t_out.backward(torch.from_numpy(g))
    for i, (leaf, t_leaf) in enumerate(zip(leaves, t_leaves, strict=True)):
        _assert_on(backend, leaf.grad, dtype)
        np.testing.assert_allclose(
            backend.to_numpy(leaf.grad), t_leaf.grad.numpy(), **TOL[dtype], err_msg=f"input {i}"
        )


dtypes = pytest.mark.parametrize("dtype", ["float32", "float64"])
seeds = st.integers(0, 2**16)


@st.composite
def conv_geometry(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    size = [
        draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), 7))
        for k, p, d in zip(kernel, padding, dilation, strict=True)
    ]
    x_shape = (draw(st.integers(1, 2)), groups * draw(st.integers(1, 2)), *size)
    w_shape = (groups * draw(st.integers(1, 2)), x_shape[1] // groups, *kernel)
    params = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    return x_shape, w_shape, draw(st.booleans()), params


@dtypes
@HYPOTHESIS
@given(geometry=conv_geometry(), seed=seeds)
def test_conv2d_matches_torch(backend, dtype, geometry, seed):
    _conv2d_matches_torch(backend, dtype, geometry, seed)


def _conv2d_matches_torch(backend, dtype, geometry, seed):
    x_shape, w_shape, bias, params = geometry
    rng = np.random.default_rng(seed)
    hosts = [rng.standard_normal(x_shape), rng.standard_normal(w_shape)]
    if bias:
        hosts.append(rng.standard_normal(w_shape[0]))
    compare_with_torch(
        backend,
        lambda *a: F.conv2d(*a, **params),
        lambda *a: TF.conv2d(*a, **params),
        hosts,
        dtype,
    )


@dtypes
@HYPOTHESIS
@given(
    lead=st.lists(st.integers(1, 3), max_size=2),
    sizes=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    bias=st.booleans(),
    seed=seeds,
)
def test_linear_matches_torch(backend, dtype, lead, sizes, bias, seed):
    rng = np.random.default_rng(seed)
    fan_in, fan_out = sizes
    hosts = [rng.standard_normal((*lead, fan_in)), rng.standard_normal((fan_out, fan_in))]
    if bias:
        hosts.append(rng.standard_normal(fan_out))
    compare_with_torch(backend, F.linear, TF.linear, hosts, dtype)


@st.composite
def pool_geometry(draw):
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    size = [draw(st.integers(max(1, k - 2 * p), 7)) for k, p in zip(kernel, padding, strict=True)]
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *size)
    return shape, kernel, stride, padding


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
@dtypes
@HYPOTHESIS
@given(geometry=pool_geometry(), seed=seeds)
def test_pools_match_torch(backend, op, dtype, geometry, seed):
    shape, kernel, stride, padding = geometry
    host = np.random.default_rng(seed).standard_normal(shape)
    compare_with_torch(
        backend,
        lambda x: getattr(F, op)(x, kernel, stride, padding),
        lambda x: getattr(TF, op)(x, kernel, stride, padding),
        [host],
        dtype,
    )


@dtypes
@pytest.mark.parametrize("output_size", [1, (1, 1)])
def test_adaptive_avg_pool2d_matches_torch(backend, rng, dtype, output_size):
    compare_with_torch(
        backend,
        lambda x: F.adaptive_avg_pool2d(x, output_size),
        lambda x: TF.adaptive_avg_pool2d(x, output_size),
        [rng.standard_normal((2, 3, 4, 5))],
        dtype,
    )


ELEMENTWISE = {
    "relu": (F.relu, TF.relu),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.1), lambda x: TF.leaky_relu(x, 0.1)),
    "leaky_relu_default": (F.leaky_relu, TF.leaky_relu),
    "sigmoid": (F.sigmoid, torch.sigmoid),
    "tanh": (F.tanh, torch.tanh),
}


@pytest.mark.parametrize("op", list(ELEMENTWISE))
@dtypes
@HYPOTHESIS
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), seed=seeds)
def test_activations_match_torch(backend, op, dtype, shape, seed):
    # Scaled so that sigmoid and tanh also meet their saturated ends.
    host = 6.0 * np.random.default_rng(seed).standard_normal(shape)
    compare_with_torch(backend, *ELEMENTWISE[op], [host], dtype)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@dtypes
@HYPOTHESIS
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), data=st.data(), seed=seeds)
def test_softmax_matches_torch(backend, op, dtype, shape, data, seed):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim")
    host = 5.0 * np.random.default_rng(seed).standard_normal(shape)
    compare_with_torch(
        backend,
        lambda x: getattr(F, op)(x, dim=dim),
        lambda x: getattr(TF, op)(x, dim=dim),
        [host],
        dtype,
    )


@dtypes
@HYPOTHESIS
@given(
    shape=st.sampled_from([(4, 3), (2, 3, 5), (2, 3, 2, 3), (3, 1, 1, 2)]),
    momentum=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    affine=st.booleans(),
    seed=seeds,
)
def test_batch_norm_train_matches_torch_and_updates_running_stats(
    backend, dtype, shape, momentum, affine, seed
):
    """Output, gradients, and the running statistics written in place into the given
    arrays (torch's unbiased variance)."""
    rng = np.random.default_rng(seed)
    c = shape[1]
    mean0, var0 = rng.standard_normal(c).astype(dtype), rng.uniform(0.5, 2, c).astype(dtype)
    mean, var = backend.asarray(mean0.copy()), backend.asarray(var0.copy())
    t_mean, t_var = torch.tensor(mean0), torch.tensor(var0)
    hosts = [rng.standard_normal(shape)]
    if affine:
        hosts += [rng.uniform(0.5, 2, c), rng.standard_normal(c)]
    compare_with_torch(
        backend,
        lambda *a: F.batch_norm(a[0], mean, var, *a[1:], training=True, momentum=momentum),
        lambda *a: TF.batch_norm(a[0], t_mean, t_var, *a[1:], training=True, momentum=momentum),
        hosts,
        dtype,
    )
    _assert_on(backend, mean, dtype)
    np.testing.assert_allclose(backend.to_numpy(mean), t_mean.numpy(), **TOL[dtype])
    np.testing.assert_allclose(backend.to_numpy(var), t_var.numpy(), **TOL[dtype])
    if momentum > 0:
        assert not np.allclose(backend.to_numpy(var), var0)  # it was written to


@dtypes
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2, 2)])
def test_batch_norm_eval_matches_torch(backend, rng, dtype, shape):
    mean0, var0 = rng.standard_normal(3).astype(dtype), rng.uniform(0.5, 2, 3).astype(dtype)
    mean, var = backend.asarray(mean0), backend.asarray(var0)
    compare_with_torch(
        backend,
        lambda x, w, b: F.batch_norm(x, mean, var, w, b, eps=1e-3),
        lambda x, w, b: TF.batch_norm(x, torch.tensor(mean0), torch.tensor(var0), w, b, eps=1e-3),
        [rng.standard_normal(shape), rng.uniform(0.5, 2, 3), rng.standard_normal(3)],
        dtype,
    )
    np.testing.assert_array_equal(backend.to_numpy(mean), mean0)  # eval writes nothing
    np.testing.assert_array_equal(backend.to_numpy(var), var0)


@dtypes
@HYPOTHESIS
@given(n=st.integers(1, 5), classes=st.integers(1, 6), seed=seeds)
def test_cross_entropy_matches_torch(backend, dtype, n, classes, seed):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, classes, n)
    for target in (backend.asarray(targets), Tensor(backend.asarray(targets))):
        compare_with_torch(
            backend,
            lambda x, target=target: F.cross_entropy(x, target),
            lambda x: TF.cross_entropy(x, torch.from_numpy(targets)),
            [4.0 * rng.standard_normal((n, classes))],
            dtype,
        )


@dtypes
@HYPOTHESIS
@given(shape=st.lists(st.integers(1, 4), max_size=3), seed=seeds)
def test_mse_loss_matches_torch(backend, dtype, shape, seed):
    rng = np.random.default_rng(seed)
    compare_with_torch(
        backend, F.mse_loss, TF.mse_loss, [rng.standard_normal(shape) for _ in "it"], dtype
    )


@dtypes
@HYPOTHESIS
@given(shape=st.lists(st.integers(1, 3), min_size=1, max_size=4), data=st.data(), seed=seeds)
def test_flatten_matches_torch(backend, dtype, shape, data, seed):
    start = data.draw(st.integers(-len(shape), len(shape) - 1), label="start_dim")
    end = data.draw(st.integers(start % len(shape), len(shape) - 1), label="end_dim")
    compare_with_torch(
        backend,
        lambda x: F.flatten(x, start, end),
        lambda x: torch.flatten(x, start, end),
        [np.random.default_rng(seed).standard_normal(shape)],
        dtype,
    )


# -- fan-out and composition ---------------------------------------------------------------


@dtypes
def test_conv_relu_output_used_twice(backend, rng, dtype):
    """y = relu(conv2d(x, w, b)) feeds a pool and a product with itself: the gradients
    arriving at y from every use are summed."""

    def net(lib, x, w, b):
        y = lib.relu(lib.conv2d(x, w, b, padding=1))
        pooled = lib.max_pool2d(y, 2)
        gate = lib.sigmoid(y) if lib is F else torch.sigmoid(y)
        return (pooled * pooled).sum() + (gate * y).mean()

    compare_with_torch(
        backend,
        lambda *a: net(F, *a),
        lambda *a: net(TF, *a),
        [
            rng.standard_normal((2, 3, 4, 4)),
            rng.standard_normal((4, 3, 3, 3)),
            rng.standard_normal(4),
        ],
        dtype,
    )


@dtypes
def test_linear_weight_shared_by_two_calls(backend, rng, dtype):
    def net(lib, x, w, b, target):
        hidden = torch.tanh(TF.linear(x, w, b)) if lib is TF else F.tanh(F.linear(x, w, b))
        return lib.mse_loss(lib.linear(hidden, w), target)

    compare_with_torch(
        backend,
        lambda *a: net(F, *a),
        lambda *a: net(TF, *a),
        [
            rng.standard_normal((5, 4)),
            rng.standard_normal((4, 4)),
            rng.standard_normal(4),
            rng.standard_normal((5, 4)),
        ],
        dtype,
    )


def test_one_tensor_as_two_inputs_of_one_op(backend, rng):
    """The same Tensor as input and weight (linear, conv2d): both edges contribute."""
    compare_with_torch(
        backend,
        lambda w, b: F.linear(w, w, b),
        lambda w, b: TF.linear(w, w, b),
        [rng.standard_normal((3, 3)), rng.standard_normal(3)],
        "float64",
    )
    compare_with_torch(
        backend,
        lambda x: F.conv2d(x, x, padding=1),
        lambda x: TF.conv2d(x, x, padding=1),
        [rng.standard_normal((2, 3, 3, 3))],
        "float64",
    )


@dtypes
def test_small_cnn_composition_matches_torch(backend, rng, dtype):
    """conv -> batch_norm -> relu -> max_pool -> flatten -> linear -> cross_entropy."""
    targets = rng.integers(0, 3, 4)

    def net(lib, x, w, gamma, beta, fc):
        stats = (None, None)
        h = lib.conv2d(x, w, stride=1, padding=1)
        h = lib.relu(lib.batch_norm(h, *stats, gamma, beta, training=True))
        h = lib.avg_pool2d(lib.max_pool2d(h, 2, 1), 2)
        flat = torch.flatten(h, 1) if lib is TF else F.flatten(h, 1)
        logits = lib.log_softmax(lib.linear(flat, fc), dim=1)
        target = torch.from_numpy(targets) if lib is TF else backend.asarray(targets)
        return lib.cross_entropy(logits, target)

    compare_with_torch(
        backend,
        lambda *a: net(F, *a),
        lambda *a: net(TF, *a),
        [
            rng.standard_normal((4, 2, 5, 5)),
            rng.standard_normal((3, 2, 3, 3)),
            rng.uniform(0.5, 2, 3),
            rng.standard_normal(3),
            rng.standard_normal((3, 12)),
        ],
        dtype,
    )


# -- no_grad -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(GRADCHECK_CASES))
def test_no_grad_records_and_keeps_nothing(backend, rng, case):
    """Under no_grad an F op gives the same values, no grad_fn, and holds no reference
    to its inputs (in grad mode the graph does, which the weak references show)."""
    fn, hosts = GRADCHECK_CASES[case](backend, rng)
    leaves = _leaves(backend, hosts)
    recorded = fn(*leaves)
    assert recorded.grad_fn is not None and recorded.requires_grad
    refs = [weakref.ref(t) for t in leaves]
    del leaves
    assert all(r() is not None for r in refs)  # kept alive by recorded's graph
    del recorded

    leaves = _leaves(backend, hosts)
    refs = [weakref.ref(t) for t in leaves]
    with xcnn.no_grad():
        out = fn(*leaves)
    assert isinstance(out, Tensor) and out.grad_fn is None and not out.requires_grad
    expected = fn(*(Tensor(backend.asarray(h)) for h in hosts))
    np.testing.assert_array_equal(backend.to_numpy(out.data), backend.to_numpy(expected.data))
    del leaves
    assert all(r() is None for r in refs), "the no_grad result keeps an input alive"


def test_max_pool2d_computes_indices_only_when_recording(backend, rng, monkeypatch):
    asked = []
    real = pool_ops.max_pool2d

    def spy(*args, **kwargs):
        asked.append(kwargs.get("return_indices", True))
        return real(*args, **kwargs)

    monkeypatch.setattr(pool_ops, "max_pool2d", spy)
    x = Tensor(backend.asarray(rng.standard_normal((1, 2, 4, 4))), requires_grad=True)
    assert F.max_pool2d(x, 2).grad_fn is not None
    with xcnn.no_grad():
        assert F.max_pool2d(x, 2).grad_fn is None
    assert F.max_pool2d(x.detach(), 2).grad_fn is None  # nothing requires grad
    assert asked == [True, False, False]


def test_only_inputs_that_require_grad_get_gradients(backend, rng):
    x = Tensor(backend.asarray(rng.standard_normal((2, 3, 4, 4))))
    w = Tensor(backend.asarray(rng.standard_normal((2, 3, 3, 3))), requires_grad=True)
    b = Tensor(backend.asarray(rng.standard_normal(2)))
    y = F.conv2d(x, w, b)
    assert y.requires_grad and y.grad_fn is not None
    y.sum().backward()
    assert x.grad is None and b.grad is None and w.grad is not None
    plain = F.conv2d(x.data, w.data)  # plain arrays: a Tensor outside the graph
    assert isinstance(plain, Tensor) and plain.grad_fn is None and not plain.requires_grad


# -- errors --------------------------------------------------------------------------------


# Each call gets ``a(shape)`` and ``b(shape)``: float tensors that require grad, ``a`` on
# NumPy, ``b`` on the other side of the mix (another backend, or another dtype).
MIXED = [
    pytest.param("conv2d", lambda a, b: F.conv2d(a((2, 3, 4, 4)), b((2, 3, 3, 3))), id="conv2d"),
    pytest.param(
        "conv2d", lambda a, b: F.conv2d(a((2, 3, 4, 4)), b((2, 3, 3, 3)).data), id="conv2d_array"
    ),
    pytest.param("linear", lambda a, b: F.linear(a((2, 3)), b((4, 3))), id="linear"),
    pytest.param("linear", lambda a, b: F.linear(a((2, 3)).data, b((4, 3))), id="linear_array"),
    pytest.param(
        "batch_norm",
        lambda a, b: F.batch_norm(a((4, 3)), None, None, b((3,)), training=True),
        id="batch_norm",
    ),
    pytest.param("mse_loss", lambda a, b: F.mse_loss(a((2, 3)), b((2, 3))), id="mse_loss"),
]


@pytest.mark.parametrize(("op", "call"), MIXED)
def test_mixing_backends_is_a_clear_error(op, call, rng):
    """A NumPy input with an array_api_strict weight: a TypeError naming the op and both
    backends, whether the weight comes as a Tensor or a plain array."""

    def strict(shape):
        host = rng.standard_normal(shape)
        return Tensor(backends.get("array_api_strict").asarray(host), requires_grad=True)

    with pytest.raises(TypeError, match=rf"(?i)\b{op}\b.*numpy.*array_api_strict"):
        call(lambda shape: Tensor(rng.standard_normal(shape), requires_grad=True), strict)


def test_cross_entropy_targets_on_another_backend_is_a_clear_error(rng):
    logits = Tensor(rng.standard_normal((2, 3)), requires_grad=True)
    targets = backends.get("array_api_strict").asarray(np.array([0, 2]))
    with pytest.raises(TypeError, match=r"^cross_entropy: (?=.*numpy)(?=.*array_api_strict)"):
        F.cross_entropy(logits, targets)


@pytest.mark.parametrize(("op", "call"), MIXED)
def test_mixing_float32_with_float64_is_a_clear_error(backend, op, call, rng):
    def make(dtype):
        def build(shape):
            host = rng.standard_normal(shape).astype(dtype)
            return Tensor(backend.asarray(host), requires_grad=True)

        return build

    with pytest.raises(TypeError, match=rf"(?i)\b{op}\b.*float(32|64).*float(64|32)"):
        call(make("float32"), make("float64"))


CONV_SHAPES = {
    "input_rank": ((5, 5), (4, 3, 3, 3), {}, r"3-D \(C, H, W\) or 4-D .*\(5, 5\)"),
    "unbatched_channels": ((2, 5, 5), (4, 3, 3, 3), {}, r"3 channels.*\(1, 2, 5, 5\)"),
    "weight_rank": ((2, 3, 5, 5), (4, 3, 3), {}, r"rank 4.*\(4, 3, 3\)"),
    "channels": ((2, 2, 5, 5), (4, 3, 3, 3), {}, r"3 channels.*\(2, 2, 5, 5\)"),
    "grouped_channels": ((2, 4, 5, 5), (4, 3, 3, 3), {"groups": 2}, r"6 channels.*groups=2"),
    "bias_shape": ((2, 3, 5, 5), (4, 3, 3, 3), {"bias": (5,)}, r"bias.*\(4,\).*\(5,\)"),
    "too_small": ((2, 3, 2, 2), (4, 3, 3, 3), {}, r"smaller than the dilated kernel"),
}


@pytest.mark.parametrize("case", list(CONV_SHAPES))
def test_conv2d_shape_errors_name_the_op_and_the_shapes(backend, rng, case):
    x_shape, w_shape, kwargs, message = CONV_SHAPES[case]
    kwargs = dict(kwargs)
    if "bias" in kwargs:
        kwargs["bias"] = backend.asarray(rng.standard_normal(kwargs["bias"]))
    x = Tensor(backend.asarray(rng.standard_normal(x_shape)))
    w = Tensor(backend.asarray(rng.standard_normal(w_shape)), requires_grad=True)
    with pytest.raises(ValueError, match=rf"^conv2d: .*{message}"):
        F.conv2d(x, w, **kwargs)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse_loss"])
@pytest.mark.parametrize("reduction", ["max", None, "Mean"])
def test_unknown_reduction_is_a_value_error(backend, rng, loss, reduction):
    x = Tensor(backend.asarray(rng.standard_normal((2, 3))), requires_grad=True)
    target = backend.asarray(np.array([0, 2]) if loss == "cross_entropy" else np.zeros((2, 3)))
    with pytest.raises(ValueError, match=rf"^{loss}: reduction={reduction!r} is not one of"):
        getattr(F, loss)(x, target, reduction=reduction)


INTEGER_INPUT = [
    ("relu", F.relu),
    ("leaky_relu", F.leaky_relu),
    ("sigmoid", F.sigmoid),
    ("tanh", F.tanh),
    ("softmax", F.softmax),
    ("log_softmax", F.log_softmax),
    ("max_pool2d", lambda x: F.max_pool2d(x, 2)),
    ("avg_pool2d", lambda x: F.avg_pool2d(x, 2)),
    ("adaptive_avg_pool2d", lambda x: F.adaptive_avg_pool2d(x, 1)),
    ("dropout", lambda x: F.dropout(x, 0.5, generator=backends.Generator(0))),
    ("batch_norm", lambda x: F.batch_norm(x, None, None, training=True)),
    ("linear", lambda x: F.linear(x, x[0, 0, ...])),
    ("conv2d", lambda x: F.conv2d(x, x)),
    ("mse_loss", lambda x: F.mse_loss(x, x)),
    ("cross_entropy", lambda x: F.cross_entropy(x[0, 0, ...], x[0, 0, 0, ...] * 0)),
]


@pytest.mark.parametrize(("op", "call"), INTEGER_INPUT)
@pytest.mark.parametrize("as_tensor", [True, False], ids=["tensor", "array"])
def test_integer_input_is_a_type_error_naming_the_op(backend, op, call, as_tensor):
    x = backend.asarray(np.arange(16).reshape(1, 1, 4, 4))
    with pytest.raises(TypeError, match=rf"^{op}\w*: expected (a )?floating-point .*int64"):
        call(Tensor(x) if as_tensor else x)


BAD_RUNNING_STATS = [
    pytest.param(
        True,
        (4,),
        "float64",
        ValueError,
        id="train_shape",
    ),
    pytest.param(False, (4,), "float64", ValueError, id="eval_shape"),
    pytest.param(
        True,
        (3,),
        "float32",
        TypeError,
        id="train_dtype",
    ),
    pytest.param(False, (3,), "float32", TypeError, id="eval_dtype"),
]


@pytest.mark.parametrize(("training", "shape", "dtype", "error"), BAD_RUNNING_STATS)
def test_batch_norm_bad_running_stats_are_a_clear_error(
    backend, rng, training, shape, dtype, error
):
    """Running statistics that do not fit the float64 (4, 3) input: the same clear
    error in training and in eval mode, naming batch_norm and running_mean."""
    x = Tensor(backend.asarray(rng.standard_normal((4, 3))), requires_grad=True)
    mean = backend.asarray(np.zeros(shape), dtype)
    var = backend.asarray(np.ones(shape), dtype)
    with pytest.raises(error, match=r"^batch_norm\w*: running_mean"):
        F.batch_norm(x, mean, var, training=training)


@pytest.mark.filterwarnings("ignore:You are comparing a array_api_strict dtype")
@pytest.mark.parametrize(
    "training",
    [
        pytest.param(True, id="train"),
        pytest.param(False, id="eval"),
    ],
)
def test_batch_norm_running_stats_on_another_backend_is_a_clear_error(rng, training):
    x = Tensor(rng.standard_normal((4, 3)), requires_grad=True)
    strict = backends.get("array_api_strict")
    mean, var = strict.asarray(np.zeros(3)), strict.asarray(np.ones(3))
    with pytest.raises(TypeError, match=r"^batch_norm\w*: (?=.*numpy)(?=.*array_api_strict)"):
        F.batch_norm(x, mean, var, training=training)


# -- PyTorch's remaining options: padding strings, ceil_mode, divisors, adaptive sizes,
# unbatched (C, H, W) input ------------------------------------------------------------------


@st.composite
def conv_padding_geometry(draw):
    padding = draw(st.sampled_from(["same", "valid"]))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))  # even kernels: asymmetric
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (1, 1) if padding == "same" else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    smallest = [
        1 if padding == "same" else d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True)
    ]
    size = [draw(st.integers(s, s + 4)) for s in smallest]
    groups = draw(st.sampled_from([1, 1, 2]))
    channels = groups * draw(st.integers(1, 2))
    x_shape = (
        (channels, *size) if draw(st.booleans()) else (draw(st.integers(1, 2)), channels, *size)
    )
    w_shape = (groups * draw(st.integers(1, 2)), channels // groups, *kernel)
    params = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    return x_shape, w_shape, draw(st.booleans()), params


@dtypes
@HYPOTHESIS
@given(geometry=conv_padding_geometry(), seed=seeds)
def test_conv2d_padding_strings_and_unbatched_match_torch(backend, dtype, geometry, seed):
    _conv2d_matches_torch(backend, dtype, geometry, seed)


@st.composite
def pool_options(draw, op):
    """A pooling geometry with PyTorch's options, and an input (possibly unbatched) for it."""
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    size = [draw(st.integers(max(1, k - 2 * p), 8)) for k, p in zip(kernel, padding, strict=True)]
    lead = () if draw(st.booleans()) else (draw(st.integers(1, 2)),)
    shape = (*lead, draw(st.integers(1, 2)), *size)
    options = {"stride": stride, "padding": padding, "ceil_mode": draw(st.booleans())}
    if op == "avg_pool2d":
        options["count_include_pad"] = draw(st.booleans())
        options["divisor_override"] = draw(st.sampled_from([None, None, 1, 3, -2]))
    return shape, kernel, options


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
@dtypes
@settings(HYPOTHESIS, max_examples=25)
@given(data=st.data(), seed=seeds)
def test_pool_options_and_unbatched_match_torch(backend, op, dtype, data, seed):
    shape, kernel, options = data.draw(pool_options(op))
    host = np.random.default_rng(seed).standard_normal(shape)
    compare_with_torch(
        backend,
        lambda x: getattr(F, op)(x, kernel, **options),
        lambda x: getattr(TF, op)(x, kernel, **options),
        [host],
        dtype,
    )


def test_ceil_mode_sizes_and_divisors_match_torch_on_every_small_geometry():
    """Every (size, kernel, stride, padding) up to 8/4/3/2 along one axis, ceil mode: the
    output size (the last window must start inside the input or its left padding) and
    each divisor (an input of ones shows it) of windows that hang past the padded input
    (counted padding, but not the overhang, with count_include_pad)."""
    checked_overhang = 0
    for size in range(1, 9):
        for k in range(1, 5):
            for s in range(1, 4):
                for p in range(k // 2 + 1):
                    if size + 2 * p < k:
                        continue
                    host = np.ones((1, 1, size, 1))
                    window = ((k, 1), (s, 1), (p, 0))
                    expected = TF.max_pool2d(torch.from_numpy(host), *window, ceil_mode=True)
                    y = F.max_pool2d(host, *window, ceil_mode=True)
                    assert y.shape == tuple(expected.shape), (size, k, s, p)
                    checked_overhang += (y.shape[2] - 1) * s + k > size + 2 * p
                    for count_include_pad in (True, False):
                        options = {"ceil_mode": True, "count_include_pad": count_include_pad}
                        expected = TF.avg_pool2d(torch.from_numpy(host), *window, **options)
                        y = F.avg_pool2d(host, *window, **options)
                        np.testing.assert_allclose(y.data, expected.numpy(), rtol=1e-12)
    assert checked_overhang > 20


@dtypes
@HYPOTHESIS
@given(
    size=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    output_size=st.one_of(
        st.integers(1, 10),
        st.tuples(st.sampled_from([None, 1, 2, 3, 4, 5, 7, 10]), st.integers(1, 10)),
        st.tuples(st.integers(1, 10), st.none()),
    ),
    unbatched=st.booleans(),
    seed=seeds,
)
def test_adaptive_avg_pool2d_any_size_matches_torch(
    backend, dtype, size, output_size, unbatched, seed
):
    shape = (3, *size) if unbatched else (2, 3, *size)
    host = np.random.default_rng(seed).standard_normal(shape)
    compare_with_torch(
        backend,
        lambda x: F.adaptive_avg_pool2d(x, output_size),
        lambda x: TF.adaptive_avg_pool2d(x, output_size),
        [host],
        dtype,
    )


NEW_OPTION_GRADCHECKS = {
    "conv-same-even-kernel": (
        lambda x, w, b: F.conv2d(x, w, b, padding="same", dilation=(1, 2)),
        [(2, 2, 5, 6), (3, 2, 2, 4), (3,)],
    ),
    "conv-valid-unbatched": (
        lambda x, w: F.conv2d(x, w, padding="valid", stride=2),
        [(2, 6, 5), (2, 2, 3, 2)],
    ),
    "max-ceil": (lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True), [(2, 2, 6, 7)]),
    "max-ceil-unbatched": (lambda x: F.max_pool2d(x, 2, ceil_mode=True), [(2, 5, 3)]),
    "avg-ceil-include-pad": (lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True), [(1, 2, 6, 5)]),
    "avg-ceil-exclude-pad": (
        lambda x: F.avg_pool2d(x, (3, 2), 2, (1, 1), True, count_include_pad=False),
        [(1, 2, 6, 5)],
    ),
    "avg-divisor-override": (
        lambda x: F.avg_pool2d(x, 2, 1, 1, divisor_override=3),
        [(2, 4, 4)],
    ),
    "adaptive-overlapping-bins": (lambda x: F.adaptive_avg_pool2d(x, (3, 4)), [(2, 2, 5, 7)]),
    "adaptive-none-unbatched": (lambda x: F.adaptive_avg_pool2d(x, (None, 2)), [(2, 3, 5)]),
}


@pytest.mark.parametrize("case", list(NEW_OPTION_GRADCHECKS))
def test_new_options_gradcheck(backend, case):
    fn, shapes = NEW_OPTION_GRADCHECKS[case]
    rng = np.random.default_rng(7)
    # Scaled permutations: no ties, so max pooling is differentiable there.
    hosts = [rng.permutation(int(np.prod(s))).reshape(s) / np.prod(s) - 0.5 for s in shapes]
    inputs = [backend.asarray(h, dtype="float64") for h in hosts]
    assert gradcheck(fn, inputs, max_elements=60)


OPTION_ERRORS = [
    (lambda x, w: F.conv2d(x, w, padding="same", stride=2), "padding='same' is not supported"),
    (lambda x, w: F.conv2d(x, w, padding="full"), "padding='full' is not one of 'same', 'valid'"),
    (lambda x, w: F.max_pool2d(x, 2, dilation=2), r"max_pool2d: dilation=2 is not supported"),
    (
        lambda x, w: F.max_pool2d(x, 2, return_indices=True),
        "max_pool2d: return_indices=True is not supported",
    ),
    (lambda x, w: F.avg_pool2d(x, 2, divisor_override=0), "divisor_override must be a non-zero"),
    (lambda x, w: F.avg_pool2d(x, 2, count_include_pad=1), "count_include_pad must be True or"),
    (lambda x, w: F.max_pool2d(x, 2, ceil_mode="yes"), "ceil_mode must be True or False"),
    (lambda x, w: F.adaptive_avg_pool2d(x, (2, 0)), "output_size must be a positive int"),
    (lambda x, w: F.avg_pool2d(x[0, 0], 2), r"avg_pool2d: expected a 3-D \(C, H, W\) or 4-D"),
]


@pytest.mark.parametrize(("call", "message"), OPTION_ERRORS)
def test_refused_options_name_the_option(backend, call, message):
    x = Tensor(backend.asarray(np.zeros((1, 2, 6, 6))))
    w = Tensor(backend.asarray(np.zeros((3, 2, 2, 2))))
    with pytest.raises((ValueError, TypeError), match=message):
        call(x, w)


# -- zero-size batches (N = 0), as torch: empty outputs and gradients; a mean over no
# elements is NaN -----------------------------------------------------------------------------

X0 = (0, 2, 5, 6)  # an empty batch of 2-channel 5x6 images
W = (3, 2, 3, 3)
EMPTY_BATCH = {
    "conv": (lambda x, w: F.conv2d(x, w, padding=1), lambda x, w: TF.conv2d(x, w, padding=1), W),
    "conv-same": (
        lambda x, w: F.conv2d(x, w, padding="same"),
        lambda x, w: TF.conv2d(x, w, padding="same"),
        (3, 2, 2, 2),
    ),
    "max": (lambda x: F.max_pool2d(x, 2), lambda x: TF.max_pool2d(x, 2)),
    "max-ceil": (
        lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True),
        lambda x: TF.max_pool2d(x, 3, 2, 1, ceil_mode=True),
    ),
    "avg": (
        lambda x: F.avg_pool2d(x, 3, 1, 1, count_include_pad=False),
        lambda x: TF.avg_pool2d(x, 3, 1, 1, count_include_pad=False),
    ),
    "adaptive": (
        lambda x: F.adaptive_avg_pool2d(x, (2, 3)),
        lambda x: TF.adaptive_avg_pool2d(x, (2, 3)),
    ),
    "global": (lambda x: F.adaptive_avg_pool2d(x, 1), lambda x: TF.adaptive_avg_pool2d(x, 1)),
    "linear": (
        lambda x, w, b: F.linear(F.flatten(x, 1), w, b),
        lambda x, w, b: TF.linear(x.flatten(1), w, b),
        (4, 60),
        (4,),
    ),
    "relu": (F.relu, TF.relu),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), lambda x: TF.leaky_relu(x, 0.2)),
    "sigmoid": (F.sigmoid, torch.sigmoid),
    "tanh": (F.tanh, torch.tanh),
    "softmax": (lambda x: F.softmax(x, 1), lambda x: TF.softmax(x, 1)),
    "batch_norm_eval": (
        lambda x, w, b: F.batch_norm(
            x, backends.current().asarray(np.zeros(2)), backends.current().asarray(np.ones(2)), w, b
        ),
        lambda x, w, b: TF.batch_norm(
            x, torch.zeros(2, dtype=x.dtype), torch.ones(2, dtype=x.dtype), w, b
        ),
        (2,),
        (2,),
    ),
    # torch returns an empty output here (it raises only for one value per channel).
    "batch_norm_train": (
        lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
        lambda x, w, b: TF.batch_norm(x, None, None, w, b, training=True),
        (2,),
        (2,),
    ),
}


@pytest.mark.parametrize("case", list(EMPTY_BATCH))
def test_empty_batch_matches_torch(backend, case):
    """Outputs and every gradient (empty for the input, zeros for weights) as torch's."""
    fn, torch_fn, *shapes = EMPTY_BATCH[case]
    rng = np.random.default_rng(0)
    hosts = [np.zeros(X0)] + [rng.standard_normal(s) for s in shapes]
    compare_with_torch(backend, fn, torch_fn, hosts, "float64")


@pytest.mark.parametrize("batch", [0, 3], ids=["empty-batch", "batch"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("loss", ["mse_loss", "cross_entropy", "cross_entropy-probabilities"])
def test_explicit_reductions_and_empty_batch_losses_match_torch(backend, loss, reduction, batch):
    """Every reduction given explicitly (``"mean"`` too) as torch's; with an empty batch a
    mean over no elements is NaN, a sum 0, the per-sample loss empty, the gradient empty."""
    name = loss.split("-")[0]
    rng = np.random.default_rng(batch)
    if loss == "cross_entropy":
        target = rng.integers(0, 4, size=batch)
    else:
        target = rng.random((batch, 4))
    host = rng.standard_normal((batch, 4))
    x = Tensor(backend.asarray(host), requires_grad=True)
    tx = torch.from_numpy(host).requires_grad_()
    out = getattr(F, name)(x, backend.asarray(target), reduction=reduction)
    t_out = getattr(TF, name)(tx, torch.from_numpy(target), reduction=reduction)
    assert out.shape == tuple(t_out.shape)
    _assert_on(backend, out.data, "float64")
    np.testing.assert_allclose(backend.to_numpy(out.data), t_out.detach().numpy(), **TOL["float64"])
    if reduction == "mean":
        assert np.isnan(float(backend.to_numpy(out.data))) == (batch == 0)
    grad = np.ones(out.shape)
    out.backward(backend.asarray(grad))
    t_out.backward(torch.from_numpy(grad))
    _assert_on(backend, x.grad, "float64")
    np.testing.assert_allclose(backend.to_numpy(x.grad), tx.grad.numpy(), **TOL["float64"])
    assert tuple(x.grad.shape) == (batch, 4)
