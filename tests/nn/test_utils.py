"""xcnn.nn.utils.clip_grad_norm_ against torch.nn.utils.clip_grad_norm_."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import xcnn
from xcnn import backends, nn
from xcnn.nn.utils import clip_grad_norm_


def _pair(backend, rng, shapes, scale):
    """xcnn Parameters and torch parameters holding the same random gradients."""
    ours, theirs = [], []
    for shape in shapes:
        g = rng.standard_normal(shape) * scale
        p = nn.Parameter(backend.asarray(np.zeros(shape)))
        p.grad = backend.asarray(g)
        t = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
        t.grad = torch.from_numpy(g.copy())
        ours.append(p)
        theirs.append(t)
    return ours, theirs


@pytest.mark.torch
@pytest.mark.parametrize("seed", range(12))
def test_matches_torch_on_random_configs(backend, seed):
    rng = np.random.default_rng(seed)
    shapes = [tuple(int(v) for v in rng.integers(1, 5, size=rng.integers(1, 4))) for _ in range(3)]
    scale = float(rng.choice([0.01, 1.0, 10.0]))
    norm_type = rng.choice([1.0, 2.0, 3.0, 0.5, math.inf])
    max_norm = float(rng.choice([0.1, 1.0, 5.0, 1e3]))
    ours, theirs = _pair(backend, rng, shapes, scale)
    ours[1].grad = None  # a parameter without gradient is skipped
    theirs[1].grad = None

    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=float(norm_type))
    total = clip_grad_norm_(iter(ours), max_norm, norm_type=float(norm_type))
    assert total.shape == () and backends.namespace_name(total) == backend.name
    np.testing.assert_allclose(float(total), float(expected), rtol=1e-12)
    assert ours[1].grad is None
    for p, t in zip(ours, theirs, strict=True):
        if t.grad is not None:
            np.testing.assert_allclose(backend.to_numpy(p.grad), t.grad.numpy(), rtol=1e-12)


def test_below_max_norm_keeps_gradients_and_inf_norm(backend):
    p = nn.Parameter(backend.asarray(np.zeros(3, dtype=np.float32)))
    p.grad = backend.asarray(np.array([1.0, -3.0, 2.0], dtype=np.float32))
    total = clip_grad_norm_(p, 10.0, norm_type="inf")  # a single Parameter works too
    assert float(total) == 3.0 and total.dtype == p.grad.dtype
    np.testing.assert_allclose(backend.to_numpy(p.grad), [1.0, -3.0, 2.0], rtol=1e-6)
    assert float(clip_grad_norm_([], 1.0)) == 0.0


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply:RuntimeWarning")
def test_nonfinite_norm(backend):
    p = nn.Parameter(backend.asarray(np.zeros(2)))
    p.grad = backend.asarray(np.array([np.inf, 1.0]))
    with pytest.raises(RuntimeError, match=r"clip_grad_norm_: the total norm of order 2.0"):
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    t = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    t.grad = torch.tensor([math.inf, 1.0], dtype=torch.float64)
    expected = torch.nn.utils.clip_grad_norm_([t], 1.0)
    assert float(clip_grad_norm_([p], 1.0)) == float(expected) == math.inf
    np.testing.assert_array_equal(backend.to_numpy(p.grad), t.grad.numpy())  # [nan, 0]


def test_errors(backend):
    with pytest.raises(ValueError, match=r"clip_grad_norm_: norm_type must be a number > 0"):
        clip_grad_norm_([], 1.0, norm_type=0)
    with pytest.raises(ValueError, match=r"clip_grad_norm_: norm_type must be a number > 0"):
        clip_grad_norm_([], 1.0, norm_type="fro")
    with pytest.raises(TypeError, match=r"clip_grad_norm_: max_norm must be a real number"):
        clip_grad_norm_([], None)
    with pytest.raises(TypeError, match=r"clip_grad_norm_: expected a Parameter or an iterable"):
        clip_grad_norm_(3, 1.0)


def test_gradients_from_the_graph_shared_between_leaves(backend, rng):
    # y = a + b hands both leaves the same gradient array: each is scaled once.
    a = xcnn.tensor(backend.asarray(np.zeros(4)), requires_grad=True)
    b = xcnn.tensor(backend.asarray(np.zeros(4)), requires_grad=True)
    (a + b).backward(backend.asarray(np.full(4, 3.0)))
    total = clip_grad_norm_([a, b], 1.0)
    assert float(total) == pytest.approx(math.sqrt(8 * 9.0))
    scaled = 3.0 / (math.sqrt(72.0) + 1e-6)
    np.testing.assert_allclose(backend.to_numpy(a.grad), np.full(4, scaled), rtol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(b.grad), np.full(4, scaled), rtol=1e-12)


def test_a_model_step_with_clipping(backend, rng):
    model = nn.Sequential(nn.Linear(3, 2, rng=0, dtype="float64")).to(backend)
    crit = nn.CrossEntropyLoss()
    x = backend.asarray(rng.standard_normal((4, 3)) * 100)
    crit(model(x), backend.asarray(np.array([0, 1, 0, 1])))
    model.backward(crit.backward())
    clip_grad_norm_(model.parameters(), 0.5)
    norms = [float(np.sum(backend.to_numpy(p.grad) ** 2)) for p in model.parameters()]
    assert math.sqrt(sum(norms)) <= 0.5 + 1e-9
