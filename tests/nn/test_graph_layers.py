"""Every nn layer called with Tensors (the graph) against the layer-wise API on arrays.

Both APIs run the same Functions, so the outputs, input gradients, parameter gradients
and running statistics must be bitwise equal. Eval mode with Tensor inputs records
nothing unless the input requires grad; a layer called twice in one step accumulates
the sum of both calls' parameter gradients in both APIs.
"""

from __future__ import annotations

import numpy as np
import pytest

import xcnn
from xcnn import backends, nn
from xcnn.autograd import Tensor


def _sequential():
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, rng=0),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.MaxPool2d(2),  # ReLU then MaxPool2d: run as one fused step
        nn.Flatten(),
        nn.Linear(12, 5, rng=1),
        nn.ReLU(),  # Linear then ReLU: fused too
        nn.Dropout(0.3, rng=2),
        nn.Linear(5, 4, rng=3),
        nn.Sigmoid(),
    )


def _residual():
    block = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, rng=0), nn.BatchNorm2d(3), nn.Tanh())
    return nn.Residual(block)


def _residual_shortcut():
    block = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1, rng=0), nn.LeakyReLU(0.1))
    return nn.Residual(block, nn.Conv2d(2, 4, 1, stride=2, rng=1))


# name: (factory, input shape); inputs are float32, the layers' default.
LAYERS = {
    "Conv2d": (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1, rng=0), (2, 3, 6, 5)),
    "Conv2d_groups_no_bias": (
        lambda: nn.Conv2d(4, 6, 2, groups=2, bias=False, rng=0),
        (2, 4, 4, 4),
    ),
    "Linear": (lambda: nn.Linear(5, 3, rng=0), (4, 5)),
    "Linear_no_bias": (lambda: nn.Linear(5, 3, bias=False, rng=0), (2, 4, 5)),
    "ReLU": (nn.ReLU, (3, 4, 2)),
    "LeakyReLU": (lambda: nn.LeakyReLU(0.2), (3, 4, 2)),
    "Sigmoid": (nn.Sigmoid, (3, 4)),
    "Tanh": (nn.Tanh, (3, 4)),
    "MaxPool2d": (lambda: nn.MaxPool2d(3, 2, 1), (2, 3, 5, 5)),
    "AvgPool2d": (lambda: nn.AvgPool2d(3, 2, 1), (2, 3, 5, 5)),
    "AdaptiveAvgPool2d": (lambda: nn.AdaptiveAvgPool2d(1), (2, 3, 4, 3)),
    "Flatten": (nn.Flatten, (2, 3, 2, 2)),
    "Dropout": (lambda: nn.Dropout(0.4, rng=0), (6, 5)),
    "BatchNorm1d": (lambda: nn.BatchNorm1d(3), (5, 3)),
    "BatchNorm1d_3d": (lambda: nn.BatchNorm1d(3, momentum=None), (4, 3, 2)),
    "BatchNorm2d": (lambda: nn.BatchNorm2d(3), (4, 3, 2, 2)),
    "Sequential": (_sequential, (3, 2, 4, 4)),
    "Residual": (_residual, (2, 3, 4, 4)),
    "Residual_shortcut": (_residual_shortcut, (2, 2, 4, 4)),
}
# Layers that compute the same function in training and eval mode.
MODE_FREE = {
    "Conv2d",
    "Conv2d_groups_no_bias",
    "Linear",
    "Linear_no_bias",
    "ReLU",
    "LeakyReLU",
    "Sigmoid",
    "Tanh",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "Flatten",
}


def _build(backend, rng, name):
    factory, shape = LAYERS[name]
    module = factory()
    # Non-default affine parameters, so that batch norm's gamma and beta matter.
    for sub in module.modules():
        if isinstance(sub, (nn.BatchNorm1d, nn.BatchNorm2d)):
            sub.weight.data = backend.asarray(rng.uniform(0.5, 2.0, sub.num_features), "float32")
            sub.bias.data = backend.asarray(rng.standard_normal(sub.num_features), "float32")
    return module, rng.standard_normal(shape).astype(np.float32)


def _snapshot(module):
    """Buffers and dropout generator states, to replay the same step in the other API."""
    generators = [m.generator.state_dict() for m in module.modules() if isinstance(m, nn.Dropout)]
    return module.state_dict(), generators


def _restore(module, snapshot):
    state, generators = snapshot
    module.load_state_dict(state)
    dropouts = [m for m in module.modules() if isinstance(m, nn.Dropout)]
    for layer, generator_state in zip(dropouts, generators, strict=True):
        layer.generator.load_state_dict(generator_state)
    module.zero_grad()


def _host(value):
    return backends.to_host(value)


def _assert_same(actual, expected):
    """Bitwise equal, on the same namespace."""
    assert backends.namespace_name(actual) == backends.namespace_name(expected)
    assert actual.dtype == expected.dtype
    np.testing.assert_array_equal(_host(actual), _host(expected))


def _assert_same_state(module, grads, buffers):
    for name, p in module.named_parameters():
        assert p.grad is not None, name
        _assert_same(p.grad, grads[name])
    for name, value in module.named_buffers():
        np.testing.assert_array_equal(_host(value), _host(buffers[name]), err_msg=name)


def _gradients(module):
    return {name: p.grad for name, p in module.named_parameters()}


def _buffers(module):
    return dict(module.named_buffers())


@pytest.mark.parametrize("name", list(LAYERS))
def test_graph_gradients_equal_layerwise_gradients(backend, rng, name):
    module, host = _build(backend, rng, name)
    snapshot = _snapshot(module)

    x = Tensor(backend.asarray(host), requires_grad=True)
    y = module(x)
    assert isinstance(y, Tensor) and y.grad_fn is not None
    assert backends.namespace_name(y.data) == backend.name
    gy = backend.asarray(rng.standard_normal(y.shape), "float32")
    loss = (y * Tensor(gy)).sum()
    loss.backward()
    grads, buffers = _gradients(module), _buffers(module)
    assert x.grad is not None

    _restore(module, snapshot)
    out = module(backend.asarray(host))
    assert not isinstance(out, Tensor)
    _assert_same(out, y.data)
    gx = module.backward(gy)
    _assert_same(gx, x.grad)
    _assert_same_state(module, grads, buffers)


@pytest.mark.parametrize("loss", ["CrossEntropyLoss", "MSELoss"])
@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_losses_graph_equals_layerwise(backend, rng, loss, scale):
    crit = getattr(nn, loss)()
    host = rng.standard_normal((4, 5)).astype(np.float32)
    if loss == "CrossEntropyLoss":
        target = backend.asarray(rng.integers(0, 5, 4))
    else:
        target = backend.asarray(rng.standard_normal((4, 5)), "float32")

    x = Tensor(backend.asarray(host), requires_grad=True)
    value = crit(x, target)
    assert isinstance(value, Tensor) and value.shape == () and value.grad_fn is not None
    value.backward(scale)

    plain = crit(backend.asarray(host), target)
    assert not isinstance(plain, Tensor)
    _assert_same(plain, value.data)
    _assert_same(crit.backward(scale), x.grad)


def test_mse_loss_target_gradient_in_graph_mode(backend, rng):
    x = Tensor(backend.asarray(rng.standard_normal((3, 2))), requires_grad=True)
    t = Tensor(backend.asarray(rng.standard_normal((3, 2))), requires_grad=True)
    nn.MSELoss()(x, t).backward()
    _assert_same(t.grad, -x.grad)
    np.testing.assert_allclose(_host(x.grad), (_host(x.data) - _host(t.data)) / 3)


@pytest.mark.parametrize("name", list(LAYERS))
def test_eval_mode_records_nothing_unless_the_input_requires_grad(backend, rng, name):
    module, host = _build(backend, rng, name)
    module.eval()
    plain = module(backend.asarray(host))  # layer-wise, eval mode

    y = module(Tensor(backend.asarray(host)))
    assert isinstance(y, Tensor) and y.grad_fn is None and not y.requires_grad
    _assert_same(y.data, plain)
    assert all(p.grad is None for p in module.parameters())
    with pytest.raises(RuntimeError, match="backward"):
        module.backward(backend.asarray(np.ones(y.shape, dtype=np.float32)))

    x = Tensor(backend.asarray(host), requires_grad=True)
    y = module(x)
    assert y.requires_grad
    assert y is x if name == "Dropout" else y.grad_fn is not None  # eval dropout: identity
    _assert_same(y.data, plain)
    gy = backend.asarray(rng.standard_normal(y.shape), "float32")
    y.backward(gy)
    assert x.grad is not None and x.grad.shape == x.shape

    if name in MODE_FREE:  # the same function in both modes: the same gradient
        module.train()
        again = Tensor(backend.asarray(host), requires_grad=True)
        module(again).backward(gy)
        _assert_same(x.grad, again.grad)
    elif name == "Dropout":  # the identity in eval mode
        _assert_same(x.grad, gy)
    elif name.startswith("BatchNorm"):  # an affine map with the running statistics
        shape = (1, -1) + (1,) * (len(host.shape) - 2)
        scale = _host(module.weight.data) / np.sqrt(_host(module.running_var) + module.eps)
        np.testing.assert_allclose(_host(x.grad), _host(gy) * scale.reshape(shape), rtol=1e-6)
    else:  # a container: its children called one by one, each in eval mode
        chained = Tensor(backend.asarray(host), requires_grad=True)
        if isinstance(module, nn.Sequential):
            h = chained
            for child in module:
                h = child(h)
        else:
            skip = chained if module.shortcut is None else module.shortcut(chained)
            h = module.block(chained) + skip
        h.backward(gy)
        np.testing.assert_allclose(_host(x.grad), _host(chained.grad), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_called_twice_accumulates_both_calls(backend, rng, name):
    """Two calls in one step: in the graph one loss over both outputs, layer-wise two
    backward calls (latest first). Both equal the sum of the two calls' gradients taken
    one at a time."""
    module, host1 = _build(backend, rng, name)
    host2 = rng.standard_normal(host1.shape).astype(np.float32)
    snapshot = _snapshot(module)

    # Reference: each call on its own (the second after the first, as in the step).
    singles = []
    for host in (host1, host2):
        module.zero_grad()
        x = Tensor(backend.asarray(host), requires_grad=True)
        y = module(x)
        gy = backend.asarray(rng.standard_normal(y.shape), "float32")
        y.backward(gy)
        singles.append((gy, x.grad, _gradients(module)))
    (g1, gx1, p1), (g2, gx2, p2) = singles
    buffers = _buffers(module)

    _restore(module, snapshot)
    x1 = Tensor(backend.asarray(host1), requires_grad=True)
    x2 = Tensor(backend.asarray(host2), requires_grad=True)
    y1, y2 = module(x1), module(x2)
    ((y1 * Tensor(g1)).sum() + (y2 * Tensor(g2)).sum()).backward()
    _assert_same(x1.grad, gx1)
    _assert_same(x2.grad, gx2)
    total = {name: p1[name] + p2[name] for name in p1}
    _assert_same_state(module, total, buffers)

    _restore(module, snapshot)
    module(backend.asarray(host1))
    module(backend.asarray(host2))
    _assert_same(module.backward(g2), gx2)
    _assert_same(module.backward(g1), gx1)
    _assert_same_state(module, total, buffers)
    for layer in module.modules():
        if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            assert int(layer.num_batches_tracked) == 2


def test_no_grad_in_training_mode_records_nothing_in_either_api(backend, rng):
    """no_grad records no graph and keeps no call for backward, but a training-mode
    batch norm still moves its running statistics (as in PyTorch)."""
    module, host = _build(backend, rng, "Sequential")
    norm = module[1]
    x = Tensor(backend.asarray(host), requires_grad=True)
    with xcnn.no_grad():
        y = module(x)
        plain = module(backend.asarray(host))
    assert y.grad_fn is None and not y.requires_grad
    assert not isinstance(plain, Tensor)
    assert int(norm.num_batches_tracked) == 2
    assert not np.array_equal(_host(norm.running_mean), np.zeros(3))
    with pytest.raises(RuntimeError, match="backward"):
        module.backward(backend.asarray(np.ones(plain.shape, dtype=np.float32)))
