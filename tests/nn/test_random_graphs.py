"""Random networks of layers and functionals, with shared weights, against PyTorch autograd.

Hypothesis draws a program: a sequence of steps on a list of live feature maps, each
step one of the layers or functionals below applied to earlier values (a shared
convolution may be applied several times, two values may be added, multiplied or
concatenated). The same program runs in xcnn (on the graph) and in PyTorch with the
same weights; the loss and every gradient (input and parameters) must agree.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import xcnn
import xcnn.nn.functional as F
from xcnn import nn
from xcnn.autograd import Tensor

C = 3  # every feature map keeps C channels and its spatial size, so steps compose freely
STEPS = (
    "conv",
    "relu",
    "sigmoid",
    "tanh",
    "leaky",
    "add",
    "mul",
    "cat",
    "maxpool",
    "avgpool",
    "bn",
    "conv_again",
)


def _build(rng):
    """xcnn layers and their torch twins, with the same weights."""
    conv = nn.Conv2d(C, C, 3, padding=1, dtype="float64", rng=rng)
    squeeze = nn.Conv2d(2 * C, C, 1, dtype="float64", rng=rng)  # after a cat
    bn = nn.BatchNorm2d(C, dtype="float64")
    head = nn.Linear(C * 4 * 4, 5, dtype="float64", rng=rng)
    t_conv = torch.nn.Conv2d(C, C, 3, padding=1).double()
    t_squeeze = torch.nn.Conv2d(2 * C, C, 1).double()
    t_bn = torch.nn.BatchNorm2d(C).double()
    t_head = torch.nn.Linear(C * 4 * 4, 5).double()
    for mine, theirs in ((conv, t_conv), (squeeze, t_squeeze), (bn, t_bn), (head, t_head)):
        theirs.load_state_dict({k: torch.from_numpy(v) for k, v in mine.state_dict().items()})
    return (conv, squeeze, bn, head), (t_conv, t_squeeze, t_bn, t_head)


def _run(program, x, layers, lib):
    """Run ``program`` on input ``x`` with xcnn (lib='xcnn') or torch (lib='torch')."""
    conv, squeeze, bn, _ = layers
    if lib == "xcnn":
        ops = {
            "relu": F.relu,
            "sigmoid": F.sigmoid,
            "tanh": F.tanh,
            "leaky": lambda v: F.leaky_relu(v, 0.1),
            "maxpool": lambda v: F.max_pool2d(v, 3, 1, 1),
            "avgpool": lambda v: F.avg_pool2d(v, 3, 1, 1),
            "cat": lambda a, b: xcnn.cat([a, b], dim=1),
            "flatten": lambda v: xcnn.flatten(v, 1),
            "loss": F.cross_entropy,
        }
    else:
        tf = torch.nn.functional
        ops = {
            "relu": tf.relu,
            "sigmoid": torch.sigmoid,
            "tanh": torch.tanh,
            "leaky": lambda v: tf.leaky_relu(v, 0.1),
            "maxpool": lambda v: tf.max_pool2d(v, 3, 1, 1),
            "avgpool": lambda v: tf.avg_pool2d(v, 3, 1, 1),
            "cat": lambda a, b: torch.cat([a, b], dim=1),
            "flatten": lambda v: torch.flatten(v, 1),
            "loss": tf.cross_entropy,
        }
    values = [x]
    for step, i, j in program:
        a, b = values[i % len(values)], values[j % len(values)]
        if step in ("conv", "conv_again"):
            out = conv(a)  # one layer, used at every conv step: weight sharing
        elif step == "add":
            out = a + b
        elif step == "mul":
            out = a * b * 0.5
        elif step == "cat":
            out = squeeze(ops["cat"](a, b))
        elif step == "bn":
            out = bn(a)
        else:
            out = ops[step](a)
        values.append(out)
    # Every value reaches the loss, so every step's backward runs.
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total, ops


@settings(max_examples=40, deadline=None)
@given(
    program=st.lists(
        st.tuples(st.sampled_from(STEPS), st.integers(0, 20), st.integers(0, 20)),
        min_size=1,
        max_size=7,
    ),
    seed=st.integers(0, 2**16),
)
def test_random_layer_graphs_match_torch(program, seed):
    rng = np.random.default_rng(seed)
    layers, t_layers = _build(rng)
    host_x = rng.standard_normal((2, C, 4, 4))
    targets = rng.integers(0, 5, 2)

    x = Tensor(host_x.copy(), requires_grad=True)
    total, ops = _run(program, x, layers, "xcnn")
    loss = ops["loss"](layers[3](ops["flatten"](total)), Tensor(targets))
    loss.backward()

    tx = torch.tensor(host_x, requires_grad=True)
    t_total, t_ops = _run(program, tx, t_layers, "torch")
    t_loss = t_ops["loss"](t_layers[3](t_ops["flatten"](t_total)), torch.from_numpy(targets))
    t_loss.backward()

    np.testing.assert_allclose(loss.item(), t_loss.item(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-8, atol=1e-10)
    for mine, theirs in zip(layers, t_layers, strict=True):
        named = dict(theirs.named_parameters())
        for name, param in mine.named_parameters():
            expected = named[name].grad
            if expected is None:  # the layer was not used by this program
                assert param.grad is None, name
                continue
            np.testing.assert_allclose(param.grad, expected.numpy(), rtol=1e-8, atol=1e-10)
        for name, buffer in mine.named_buffers():  # batch norm's running statistics
            np.testing.assert_allclose(
                np.asarray(buffer), dict(theirs.named_buffers())[name].numpy(), rtol=1e-10
            )


@pytest.mark.parametrize("api", ["graph", "layer-wise"])
def test_conv_used_three_times_gets_three_gradients(api, rng):
    """One layer applied three times in a chain: its weight gradient is the sum of all
    three uses, in both APIs, equal to PyTorch's."""
    conv = nn.Conv2d(C, C, 3, padding=1, dtype="float64", rng=0)
    t_conv = torch.nn.Conv2d(C, C, 3, padding=1).double()
    t_conv.load_state_dict({k: torch.from_numpy(v) for k, v in conv.state_dict().items()})
    host = rng.standard_normal((2, C, 5, 5))
    gy = rng.standard_normal((2, C, 5, 5))

    if api == "graph":
        x = Tensor(host.copy(), requires_grad=True)
        conv(conv(conv(x))).backward(gy)
        gx = x.grad
    else:
        y1 = conv(host)
        y2 = conv(y1)
        conv(y2)
        g = conv.backward(gy)
        g = conv.backward(g)
        gx = conv.backward(g)
    tx = torch.tensor(host, requires_grad=True)
    t_conv(t_conv(t_conv(tx))).backward(torch.from_numpy(gy))
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(conv.weight.grad, t_conv.weight.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(conv.bias.grad, t_conv.bias.grad.numpy(), rtol=1e-10)
