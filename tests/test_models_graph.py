"""Models written as forward-only ``Module`` subclasses, against PyTorch twins.

The zoo's ResNets get their twins from ``xcnn.testing.to_torch``; the free-form models
written here have hand-written twins with the same module names, so one state dict
loads into both. In training mode (batch norm on batch statistics) the logits, the
cross-entropy loss and every parameter gradient after ``loss.backward()`` must agree;
after one SGD step the parameters and running statistics, and then the eval-mode
logits, must agree too. Float64 throughout, so the tolerances are tight.

Also here: weight sharing in both APIs, the layer-wise and graph APIs training LeNet-5
to bit-identical weights, and ``xcnn.fit`` with a custom ``Module`` and a functional loss,
checkpointed and resumed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import xcnn
import xcnn.nn.functional as F
from xcnn import backends, data, models, nn, optim
from xcnn.autograd import Tensor
from xcnn.testing import to_torch

torch = pytest.importorskip("torch")
tnn = torch.nn
TF = torch.nn.functional

pytestmark = pytest.mark.torch


# -- the models under test and their torch twins --------------------------------------------


class CNN(nn.Module):
    """PyTorch's most common tutorial CNN, written the same way in xcnn."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Linear(16 * 7 * 7, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.classifier(xcnn.flatten(self.features(x), 1))


class TorchCNN(tnn.Module):
    def __init__(self):
        super().__init__()
        self.features = tnn.Sequential(
            tnn.Conv2d(1, 8, 3, padding=1),
            tnn.ReLU(),
            tnn.MaxPool2d(2),
            tnn.Conv2d(8, 16, 3, padding=1),
            tnn.ReLU(),
            tnn.MaxPool2d(2),
        )
        self.classifier = tnn.Sequential(tnn.Linear(16 * 7 * 7, 32), tnn.ReLU(), tnn.Linear(32, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class TwoBranch(nn.Module):
    """A 3x3 and a 5x5 convolution side by side, concatenated along the channels."""

    def __init__(self):
        super().__init__()
        self.branch3 = nn.Conv2d(1, 4, 3, padding=1)
        self.branch5 = nn.Conv2d(1, 4, 5, padding=2)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8 * 7 * 7, 10)

    def forward(self, x):
        h = xcnn.cat([F.relu(self.branch3(x)), F.relu(self.branch5(x))], dim=1)
        h = F.max_pool2d(self.bn(h), 4)
        return self.head(xcnn.flatten(h, 1))


class TorchTwoBranch(tnn.Module):
    def __init__(self):
        super().__init__()
        self.branch3 = tnn.Conv2d(1, 4, 3, padding=1)
        self.branch5 = tnn.Conv2d(1, 4, 5, padding=2)
        self.bn = tnn.BatchNorm2d(8)
        self.head = tnn.Linear(8 * 7 * 7, 10)

    def forward(self, x):
        h = torch.cat([TF.relu(self.branch3(x)), TF.relu(self.branch5(x))], dim=1)
        h = TF.max_pool2d(self.bn(h), 4)
        return self.head(torch.flatten(h, 1))


class Shared(nn.Module):
    """One convolution applied twice in a forward: its gradient is the sum of both uses."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.head = nn.Linear(2 * 8 * 8, 3)

    def forward(self, x):
        h = F.relu(self.conv(F.relu(self.conv(x))))
        return self.head(xcnn.flatten(h, 1))


class TorchShared(tnn.Module):
    def __init__(self):
        super().__init__()
        self.conv = tnn.Conv2d(2, 2, 3, padding=1)
        self.head = tnn.Linear(2 * 8 * 8, 3)

    def forward(self, x):
        h = TF.relu(self.conv(TF.relu(self.conv(x))))
        return self.head(torch.flatten(h, 1))


# -- the comparison ---------------------------------------------------------------------------


def _twin(model, twin):
    """``twin`` in float64 with ``model``'s state dict (strict: every key, every shape)."""
    twin = twin.double()
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return twin.train(model.training)


def _close(actual, expected, tol, what):
    """Elementwise within ``tol``, relative to each element or to the largest one.

    The second bound matters where a gradient sums terms far larger than itself (the
    stem of ResNet-18 behind batch norms over two values): there float64 rounding of
    the large terms, not a bug, sets the error of the small results.
    """
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    if np.all(np.abs(actual - expected) <= tol * (np.abs(expected) + scale)):
        return  # the quick check; assert_allclose is slow on ResNet-18's 11M weights
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale, err_msg=what)


def _matches_torch(backend, model, x_host, y_host, twin=None, tol=1e-10, lr=0.01):
    """Train-mode logits, loss and gradients; one SGD step; eval-mode logits.

    ``twin``: the hand-written torch module of a free-form model; ``None`` for a zoo
    model, whose twin ``to_torch`` builds.
    """
    model = model.double()
    twin = to_torch(model) if twin is None else _twin(model, twin)
    x, y = Tensor(backend.asarray(x_host)), backend.asarray(y_host, dtype="int64")
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    t_logits = twin(torch.from_numpy(x_host))
    t_loss = TF.cross_entropy(t_logits, torch.from_numpy(y_host))
    t_loss.backward()

    _close(backend.to_numpy(logits.data), t_logits.detach().numpy(), tol, "logits")
    _close(loss.item(), t_loss.item(), tol, "loss")
    t_params = dict(twin.named_parameters())
    assert [name for name, _ in model.named_parameters()] == list(t_params)
    for name, param in model.named_parameters():
        _close(backend.to_numpy(param.grad), t_params[name].grad.numpy(), tol, name)

    # One plain SGD step (torch.optim would import TorchDynamo: seconds).
    optim.SGD(model.parameters(), lr=lr).step()
    with torch.no_grad():
        for param in twin.parameters():
            param -= lr * param.grad
    state, t_state = model.state_dict(), twin.state_dict()
    assert sorted(state) == sorted(t_state)
    for name, value in state.items():  # weights and running statistics
        _close(value, t_state[name].numpy(), tol, f"{name} after the step")

    # Eval mode on the stepped weights: the twin takes xcnn's, so that this compares the
    # eval forward alone (deep ResNets amplify the last digits of a step's weights).
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    model.eval()
    twin.eval()
    x2 = x_host[::-1].copy()
    with torch.no_grad():
        t_eval = twin(torch.from_numpy(x2)).numpy()
    _close(backend.to_numpy(model(backend.asarray(x2))), t_eval, tol, "eval logits")


def test_tutorial_cnn_matches_torch(backend, rng):
    xcnn.manual_seed(0)
    x = rng.random((4, 1, 28, 28))
    _matches_torch(backend, CNN(), x, rng.integers(0, 10, 4), TorchCNN())


def test_two_branch_cat_matches_torch(backend, rng):
    xcnn.manual_seed(1)
    x = rng.standard_normal((4, 1, 28, 28))
    _matches_torch(backend, TwoBranch(), x, rng.integers(0, 10, 4), TorchTwoBranch())


def test_resnet18_matches_torchvision_layout(backend, rng):
    model = models.resnet18(num_classes=10, rng=0, dtype="float64")
    assert isinstance(model, nn.Module) and not isinstance(model, nn.Sequential)
    # torchvision's resnet18(num_classes=10): 122 state-dict entries, 11,181,642 parameters.
    state = model.state_dict()
    assert len(state) == 122
    assert sum(p.numel() for p in model.parameters()) == 11_181_642
    for key in ("layer1.0.conv1.weight", "layer2.0.downsample.0.weight", "layer4.1.bn2.bias"):
        assert key in state
    x = rng.standard_normal((2, 3, 32, 32))
    # The last stage's batch norms see two values per channel (batch 2, 1x1 maps): the
    # gradients reaching the stem are sums of terms ~1e3 times larger (measured 7e-11).
    _matches_torch(backend, model, x, np.array([3, 7]), tol=1e-9)


def test_resnet18_uses_torchvisions_init(backend):
    model = models.resnet18(num_classes=10, rng=0)
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            w = backend.to_numpy(module.weight.data)
            fan_out = w.shape[0] * w.shape[2] * w.shape[3]
            assert abs(w.std() / math.sqrt(2 / fan_out) - 1) < 0.1, name
        elif isinstance(module, nn.BatchNorm2d):
            assert np.all(backend.to_numpy(module.weight.data) == 1)
            assert np.all(backend.to_numpy(module.bias.data) == 0)
    assert model.conv1.needs_input_grad is False


def test_se_resnet20_matches_torch(backend, rng):
    model = models.se_resnet20(num_classes=10, reduction=4, rng=0)
    assert "layer3.2.se.fc2.weight" in model.state_dict()
    x = rng.standard_normal((2, 3, 16, 16))  # 16x16 keeps it quick; the last stage is 4x4
    _matches_torch(backend, model, x, np.array([0, 9]))


def test_se_block_gates_scale_the_channels(backend, rng):
    se = models.SEBlock(8, reduction=2, rng=0, dtype="float64")
    x = rng.standard_normal((3, 8, 5, 5))
    y = backend.to_numpy(se(backend.asarray(x)))  # layer-wise, training mode
    s = x.mean(axis=(2, 3))
    w1, b1, w2, b2 = (backend.to_numpy(p.data) for p in se.parameters())
    gates = 1 / (1 + np.exp(-(np.maximum(s @ w1.T + b1, 0) @ w2.T + b2)))
    np.testing.assert_allclose(y, x * gates[:, :, None, None], rtol=1e-12)

    # The input gradient sums the direct path and the path through the gates.
    gy = rng.standard_normal(y.shape)
    gx = backend.to_numpy(se.backward(backend.asarray(gy)))
    twin = to_torch(se)
    tx = torch.from_numpy(x).requires_grad_()
    twin(tx).backward(torch.from_numpy(gy))
    _close(gx, tx.grad.numpy(), 1e-12, "input gradient")
    for name, param in se.named_parameters():
        _close(backend.to_numpy(param.grad), twin.get_parameter(name).grad.numpy(), 1e-12, name)

    with pytest.raises(ValueError, match=r"SEBlock\(8, reduction=2\): expected input \(N, 8"):
        se(backend.asarray(x[:, :4]))


def test_builders_draw_from_one_generator_in_order(backend):
    a = models.se_resnet20(rng=7).state_dict()
    b = models.se_resnet20(rng=np.random.default_rng(7)).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    xcnn.manual_seed(7)
    c = models.se_resnet20().state_dict()
    assert all(np.array_equal(a[k], c[k]) for k in a)
    # Construction order: the stem convolution is the first draw, the classifier the last.
    first = nn.Conv2d(3, 16, 3, 1, 1, bias=False, rng=7)
    np.testing.assert_array_equal(a["conv1.weight"], backend.to_numpy(first.weight.data))


# -- weight sharing -----------------------------------------------------------------------------


def test_shared_module_gets_both_gradients_in_the_graph(backend, rng):
    xcnn.manual_seed(2)
    x = rng.standard_normal((3, 2, 8, 8))
    _matches_torch(backend, Shared(), x, np.array([0, 1, 2]), TorchShared())


def test_shared_module_gets_both_gradients_layer_wise(backend, rng):
    """Two forwards then two backwards: the second backward pairs with the first forward."""
    xcnn.manual_seed(3)
    model = Shared().double()
    twin = _twin(model, TorchShared())
    conv, head = model.conv, model.head
    relu, flat, crit = nn.ReLU(), nn.Flatten(), nn.CrossEntropyLoss()
    x_host, y_host = rng.standard_normal((3, 2, 8, 8)), np.array([2, 0, 1])

    h = relu(conv(relu(conv(backend.asarray(x_host)))))
    loss = crit(head(flat(h)), backend.asarray(y_host, dtype="int64"))
    g = flat.backward(head.backward(crit.backward()))
    gx = conv.backward(relu.backward(conv.backward(relu.backward(g))))
    assert conv._pending() == 0 and relu._pending() == 0

    tx = torch.from_numpy(x_host).requires_grad_()
    t_loss = TF.cross_entropy(twin(tx), torch.from_numpy(y_host))
    t_loss.backward()
    _close(backend.to_numpy(loss), t_loss.item(), 1e-12, "loss")
    _close(backend.to_numpy(gx), tx.grad.numpy(), 1e-10, "input gradient")
    for name, param in model.named_parameters():
        t_grad = dict(twin.named_parameters())[name].grad.numpy()
        _close(backend.to_numpy(param.grad), t_grad, 1e-10, name)


# -- the two APIs train alike ---------------------------------------------------------------------


def test_lenet5_layer_wise_and_graph_training_are_bit_identical():
    """50 SGD-momentum steps each way, same seed and batches: the same weights, bit for bit.

    On NumPy, where the two APIs run the very same Functions in the same order.
    """
    with backends.use("numpy") as backend:
        _train_lenet5_both_ways(backend)


def _train_lenet5_both_ways(backend):
    rng = np.random.default_rng(0)
    batches = [
        (rng.random((16, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 16)) for _ in range(50)
    ]

    layer_wise = models.lenet5(rng=0)
    opt = optim.SGD(layer_wise.parameters(), lr=0.05, momentum=0.9)
    crit = nn.CrossEntropyLoss()
    for x, y in batches:
        opt.zero_grad()
        crit(layer_wise(backend.asarray(x)), backend.asarray(y, dtype="int64"))
        layer_wise.backward(crit.backward())
        opt.step()

    graph = models.lenet5(rng=0)
    opt = optim.SGD(graph.parameters(), lr=0.05, momentum=0.9)
    for x, y in batches:
        opt.zero_grad()
        loss = F.cross_entropy(graph(Tensor(backend.asarray(x))), backend.asarray(y, dtype="int64"))
        loss.backward()
        opt.step()

    a, b = layer_wise.state_dict(), graph.state_dict()
    assert not np.array_equal(a["0.weight"], models.lenet5(rng=0).state_dict()["0.weight"])
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# -- xcnn.fit with a custom Module and a functional loss ----------------------------------------


class Tiny(nn.Module):
    def __init__(self, seed):
        super().__init__()
        g = np.random.default_rng(seed)
        self.conv = nn.Conv2d(1, 4, 3, padding=1, rng=g)
        self.fc = nn.Linear(4 * 4 * 4, 4, rng=g)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.fc(xcnn.flatten(h, 1))


def _bars(n=64, seed=0):
    """8x8 images whose class (0..3) is the row of a bright bar, under noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    images = rng.integers(0, 60, (n, 1, 8, 8), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i, 0, 2 * label : 2 * label + 2, 1:7] += 190
    return data.ArrayDataset(images, labels, ["0", "1", "2", "3"])


def _fit(model, epochs, **kwargs):
    loader = data.DataLoader(_bars(), 16, shuffle=True, seed=0)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return xcnn.fit(model, F.cross_entropy, opt, loader, epochs, progress=False, **kwargs)


def test_fit_trains_a_forward_only_module_and_resumes_exactly(backend, tmp_path):
    straight = Tiny(seed=0)
    history = _fit(straight, 6)
    assert history.train_loss[-1] < history.train_loss[0] / 2, history.train_loss
    assert history.train_accuracy[-1] > 0.9

    ckpt = tmp_path / "tiny.safetensors"
    half = Tiny(seed=0)
    first_half = _fit(half, 3, checkpoint=ckpt).train_loss
    loaded = Tiny(seed=1)  # other weights: the checkpoint must replace them
    assert xcnn.load(ckpt, loaded)["epoch"] == 3
    for name, value in half.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value, err_msg=name)

    resumed = Tiny(seed=1)
    history = _fit(resumed, 6, checkpoint=ckpt, resume=True)
    assert history.train_loss[:3] == first_half
    for name, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name], value, err_msg=name)
