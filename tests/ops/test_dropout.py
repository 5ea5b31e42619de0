"""xcnn.ops.dropout: statistics, reproducibility, gradient with a fixed mask, errors."""

from __future__ import annotations

import numpy as np
import pytest

from xcnn import backends
from xcnn.backends import Generator
from xcnn.ops import dropout, dropout_backward
from xcnn.testing import gradcheck


def _host(backend, a):
    return np.asarray(backend.to_numpy(a))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_statistics(backend, p):
    n = 40_000
    x = backend.asarray(np.full(n, 3.0), dtype="float32")
    y, mask = dropout(x, p, Generator(123))
    y_host = _host(backend, y)
    zeroed = float(np.mean(y_host == 0.0))
    sigma = np.sqrt(p * (1 - p) / n)
    assert abs(zeroed - p) < 5 * sigma
    # Survivors are scaled by exactly 1/(1-p) (computed in float32).
    survivors = y_host[y_host != 0.0]
    np.testing.assert_allclose(survivors, np.float32(3.0) * np.float32(1.0 / (1.0 - p)), rtol=1e-6)
    # E[y] = x: the sample mean is within 5 standard errors of 3.
    std_error = 3.0 * np.sqrt(p / (1 - p)) / np.sqrt(n)
    assert abs(float(y_host.mean()) - 3.0) < 5 * std_error
    np.testing.assert_array_equal(_host(backend, mask) * np.float32(3.0), y_host)


def test_same_seed_same_mask_and_streams_advance(backend, rng):
    x = backend.asarray(rng.standard_normal((6, 7)), dtype="float32")
    y1, m1 = dropout(x, 0.5, Generator(7))
    y2, m2 = dropout(x, 0.5, Generator(7))
    np.testing.assert_array_equal(_host(backend, m1), _host(backend, m2))
    np.testing.assert_array_equal(_host(backend, y1), _host(backend, y2))
    _, other = dropout(x, 0.5, Generator(8))
    assert not np.array_equal(_host(backend, other), _host(backend, m1))
    stream = Generator(7)
    _, first = dropout(x, 0.5, stream)
    _, second = dropout(x, 0.5, stream)
    np.testing.assert_array_equal(_host(backend, first), _host(backend, m1))
    assert not np.array_equal(_host(backend, second), _host(backend, first))


def test_gradcheck_with_the_mask_held_fixed(backend, rng):
    x = backend.asarray(rng.standard_normal((4, 5)), dtype="float64")
    masks = []

    def forward(x):
        y, mask = dropout(x, 0.4, Generator(11))  # re-seeded: the same mask every call
        masks.append(mask)
        return y

    def backward(gy):
        return dropout_backward(gy, masks[-1])

    assert gradcheck(forward, [x], backward, max_elements=None)
    assert float(_host(backend, masks[-1]).min()) == 0.0  # some elements were dropped


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_and_namespace(backend, rng, dtype):
    x = backend.asarray(rng.standard_normal((3, 4)), dtype=dtype)
    y, mask = dropout(x, 0.3, Generator(0))
    gx = dropout_backward(y, mask)
    for a in (y, mask, gx):
        assert backends.dtype_name(a.dtype) == dtype
        assert backends.namespace_name(a) == backend.name


def test_non_contiguous_input_gives_identical_results(backend, rng):
    host = rng.standard_normal((4, 6)).astype(np.float32)
    strided = np.repeat(host, 2, axis=1)[:, ::2]
    if backend.name == "numpy":
        assert not strided.flags.c_contiguous
    y1, _ = dropout(backend.asarray(host), 0.5, Generator(3))
    y2, _ = dropout(backend.asarray(strided), 0.5, Generator(3))
    np.testing.assert_array_equal(_host(backend, y1), _host(backend, y2))


def test_mask_is_drawn_where_the_input_lives_not_on_the_active_backend(backend, rng):
    """The active backend (set by the fixture) does not matter, only the input's."""
    x = np.asarray(rng.standard_normal((3, 4)), dtype=np.float32)
    y, mask = dropout(x, 0.5, Generator(1))
    assert backends.namespace_name(y) == "numpy" and backends.namespace_name(mask) == "numpy"


def test_p_zero_is_the_identity_and_draws_nothing(backend, rng):
    x = backend.asarray(rng.standard_normal((3, 4)), dtype="float32")
    stream = Generator(5)
    before = stream.state_dict()
    y, mask = dropout(x, 0.0, stream)
    assert y is x and mask is None
    assert stream.state_dict() == before
    gy = backend.asarray(rng.standard_normal((3, 4)), dtype="float32")
    assert dropout_backward(gy, None) is gy


def test_errors(backend):
    x = backend.asarray(np.ones((2, 3)), dtype="float32")
    for p in (1.0, -0.1, 1.5, True, "0.5", None):
        with pytest.raises(ValueError, match=r"dropout: expected a drop probability p in \[0, 1\)"):
            dropout(x, p, Generator(0))
    with pytest.raises(TypeError, match=r"dropout: expected an xcnn\.backends\.Generator, got int"):
        dropout(x, 0.5, 3)
    with pytest.raises(TypeError, match="dropout: expected a floating-point array, got dtype int"):
        dropout(backend.asarray(np.arange(3)), 0.5, Generator(0))
    _, mask = dropout(x, 0.5, Generator(0))
    with pytest.raises(
        ValueError, match=r"dropout_backward: expected gy of shape \(2, 3\).*got shape \(3, 2\)"
    ):
        dropout_backward(backend.asarray(np.ones((3, 2)), dtype="float32"), mask)
