"""nn.Softmax / nn.LogSoftmax: PyTorch parity in both APIs, gradients, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xcnn
from xcnn import nn
from xcnn.testing import gradcheck

LAYERS = [(nn.Softmax, torch.nn.Softmax), (nn.LogSoftmax, torch.nn.LogSoftmax)]


@pytest.mark.torch
@pytest.mark.parametrize("dim", [0, 1, -1, 2])
@pytest.mark.parametrize(("cls", "twin_cls"), LAYERS)
def test_matches_torch_layerwise_and_in_the_graph(backend, rng, cls, twin_cls, dim):
    x = rng.standard_normal((2, 3, 4)) * 3
    g = rng.standard_normal((2, 3, 4))
    tx = torch.tensor(x, requires_grad=True)
    ty = twin_cls(dim=dim)(tx)
    ty.backward(torch.from_numpy(g))

    layer = cls(dim=dim)
    y = layer(backend.asarray(x))
    gx = layer.backward(backend.asarray(g))
    np.testing.assert_allclose(backend.to_numpy(y), ty.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(backend.to_numpy(gx), tx.grad.numpy(), rtol=1e-10, atol=1e-14)

    t = xcnn.tensor(backend.asarray(x), requires_grad=True)
    layer(t).backward(backend.asarray(g))
    np.testing.assert_allclose(backend.to_numpy(t.grad), tx.grad.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("cls", [nn.Softmax, nn.LogSoftmax])
def test_gradcheck(backend, rng, cls):
    assert gradcheck(cls(dim=1), [backend.asarray(rng.standard_normal((3, 4)))])


@pytest.mark.parametrize("cls", [nn.Softmax, nn.LogSoftmax])
def test_errors_and_repr(backend, cls):
    name = cls.__name__
    assert repr(cls(dim=1)) == f"{name}(dim=1)"
    with pytest.raises(ValueError, match=rf"{name}: dim=None is not supported"):
        cls()(backend.asarray(np.zeros((2, 3))))
    with pytest.raises(IndexError, match=r"dim 2 is out of range for an input of shape \(2, 3\)"):
        cls(dim=2)(backend.asarray(np.zeros((2, 3))))
    with pytest.raises(TypeError, match=rf"{name}: dim must be an int"):
        cls(dim=1.0)
