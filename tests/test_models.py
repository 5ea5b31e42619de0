"""The model zoo against PyTorch twins, and proof that LeNet-5 learns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import xcnn
from xcnn import data, models, nn, optim
from xcnn.testing import to_torch

torch = pytest.importorskip("torch")

FASHION = Path("/usr/share/datasets/fashion-mnist")


def _compare_with_torch(backend, model, x_host, y_host, rtol=1e-4, atol=1e-5):
    twin = to_torch(model)
    loss_fn = nn.CrossEntropyLoss()
    x, y = backend.asarray(x_host), backend.asarray(y_host, dtype="int64")
    loss = loss_fn(model(x), y)
    model.backward(loss_fn.backward())

    tx = torch.from_numpy(x_host)
    t_logits = twin(tx)
    t_loss = torch.nn.functional.cross_entropy(t_logits, torch.from_numpy(y_host))
    t_loss.backward()

    np.testing.assert_allclose(backend.to_numpy(loss), t_loss.item(), rtol=rtol, atol=atol)
    t_params = dict(twin.named_parameters())
    names = [name for name, _ in model.named_parameters()]
    assert names == list(t_params)
    for name, param in model.named_parameters():
        np.testing.assert_allclose(
            backend.to_numpy(param.grad),
            t_params[name].grad.numpy(),
            rtol=rtol,
            atol=atol,
            err_msg=f"gradient of {name}",
        )
    return twin, t_logits


def test_lenet5_matches_torch(backend, rng):
    """Same logits, loss and parameter gradients as an identical torch.nn.Sequential."""
    model = models.lenet5(rng=0)
    assert sum(int(np.prod(p.shape)) for p in model.parameters()) == 61706
    x = rng.random((16, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 16)
    _, t_logits = _compare_with_torch(backend, model, x, y)
    model.eval()
    logits = backend.to_numpy(model(backend.asarray(x)))
    np.testing.assert_allclose(logits, t_logits.detach().numpy(), rtol=1e-4, atol=1e-5)


def test_simple_cnn_matches_torch_in_eval_mode(backend, rng):
    model = models.simple_cnn(rng=1).eval()
    twin = to_torch(model)
    x = rng.random((4, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(
        backend.to_numpy(model(backend.asarray(x))),
        twin(torch.from_numpy(x)).detach().numpy(),
        rtol=1e-4,
        atol=1e-5,
    )


def test_resnet20_matches_torch(backend, rng):
    """Batch norm, residual blocks and projection shortcuts, train-mode gradients too."""
    model = models.resnet20(rng=2)
    n_params = sum(int(np.prod(p.shape)) for p in model.parameters())
    assert 270_000 < n_params < 275_000  # the paper's 0.27M
    x = rng.random((2, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, 2)
    twin, _ = _compare_with_torch(backend, model, x, y, rtol=1e-3, atol=1e-4)
    t_state = twin.state_dict()
    assert sorted(model.state_dict()) == sorted(t_state)
    for name, value in model.state_dict().items():
        if "running" in name:
            np.testing.assert_allclose(value, t_state[name].numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("builder", "activation"),
    [(models.lenet5, name) for name in sorted(models.ACTIVATIONS)] + [(models.simple_cnn, "tanh")],
)
def test_activation_and_batch_norm_options_match_torch(backend, rng, builder, activation):
    """Batch norm before every hidden activation, hidden layers then without bias."""
    model = builder(rng=3, activation=activation, batch_norm=True)
    kinds = [type(m).__name__ for m in model]
    assert kinds.count("BatchNorm2d") == 2
    assert kinds.count("BatchNorm1d") == (2 if builder is models.lenet5 else 1)
    act = type(models.ACTIVATIONS[activation]()).__name__
    for i, kind in enumerate(kinds):
        if kind.startswith("BatchNorm"):
            assert kinds[i + 1] == act and model[i - 1].bias is None
    assert model[len(model) - 1].bias is not None  # the classifier keeps its bias
    x = rng.random((8, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 8)
    if builder is models.simple_cnn:
        model.eval()  # dropout's masks differ from torch's; eval mode compares the rest
        twin = to_torch(model).eval()
        np.testing.assert_allclose(
            backend.to_numpy(model(backend.asarray(x))),
            twin(torch.from_numpy(x)).detach().numpy(),
            rtol=1e-4,
            atol=1e-5,
        )
    else:
        _compare_with_torch(backend, model, x, y, rtol=1e-3, atol=1e-4)


def test_activation_option_defaults_keep_the_weights_and_unknown_names_are_refused():
    plain, relu = models.lenet5(rng=4), models.lenet5(rng=4, activation="relu", batch_norm=False)
    assert all(np.array_equal(v, relu.state_dict()[k]) for k, v in plain.state_dict().items())
    with pytest.raises(ValueError, match=r"lenet5: unknown activation 'gelu'; choose one of relu"):
        models.lenet5(activation="gelu")
    with pytest.raises(ValueError, match=r"simple_cnn: unknown activation 'elu'"):
        models.simple_cnn(activation="elu")


@pytest.mark.parametrize("builder", [models.lenet5, models.simple_cnn, models.resnet20])
def test_first_layer_skips_the_input_gradient(backend, builder):
    """Only the input layer skips it: every later conv must still pass its gradient on."""
    model = builder(rng=0)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0] is model[0]
    assert model[0].needs_input_grad is False
    assert all(conv.needs_input_grad for conv in convs[1:])
    channels = model[0].in_channels
    side = 32 if builder is models.resnet20 else 28
    x = backend.asarray(np.ones((2, channels, side, side), dtype=np.float32))
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(model(x), backend.asarray(np.array([1, 2]), dtype="int64"))
    assert model.backward(loss_fn.backward()) is None
    assert model[0].weight.grad is not None


def test_same_seed_same_weights_on_every_backend(backend):
    reference = models.lenet5(rng=5).to("numpy").state_dict()
    for key, value in models.lenet5(rng=5).state_dict().items():
        np.testing.assert_array_equal(value, reference[key], err_msg=key)
    xcnn.manual_seed(9)
    a = models.lenet5().state_dict()
    xcnn.manual_seed(9)
    b = models.lenet5().state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def _learning_problem():
    """A real Fashion-MNIST subset when installed, else the embedded real sample."""
    if (FASHION / "train-labels-idx1-ubyte.gz").exists():
        ds = data.FashionMNIST(root=FASHION, train=True, download=False)
    else:
        ds = data.FashionMNISTSample(train=True)
    return ds.images[:2048], ds.labels[:2048]


def test_lenet5_learns(backend):
    """200 SGD steps cut the training loss by more than half."""
    images, labels = _learning_problem()
    ds = data.ArrayDataset(images, labels, [str(i) for i in range(10)])
    loader = data.DataLoader(ds, 32, shuffle=True, seed=0)
    model = models.lenet5(rng=0)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    while len(losses) < 200:
        for x, y in loader:
            opt.zero_grad()
            losses.append(float(backend.to_numpy(loss_fn(model(x), y))))
            model.backward(loss_fn.backward())
            opt.step()
            if len(losses) == 200:
                break
    first, last = np.mean(losses[:20]), np.mean(losses[-20:])
    assert last < first / 2, (first, last)


def test_resnet20_folds_batchnorm_in_eval_and_matches_torch(backend, rng):
    """model.eval() alone makes every convolution + batch norm pair run as one
    convolution; the logits stay torch's after training moved the statistics."""
    model = models.resnet20(rng=3)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    crit = nn.CrossEntropyLoss()
    # 16 images: the fold pays where N * OH * OW >= C * KH * KW (576 at 64 channels).
    x = backend.asarray(rng.random((16, 3, 32, 32), dtype=np.float32))
    y = backend.asarray(rng.integers(0, 10, 16))
    for _ in range(2):
        opt.zero_grad()
        crit(model(x), y)
        model.backward(crit.backward())
        opt.step()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 21  # the stem's, two per block, two projection shortcuts
    calls = []
    for bn in bns:
        bn.forward = lambda t, bn=bn: calls.append(bn) or type(bn).forward(bn, t)
    model.eval()
    logits = backend.to_numpy(model(x))
    assert calls == []  # every batch norm was folded into its convolution
    twin = to_torch(model).eval()
    with torch.no_grad():
        want = twin(torch.from_numpy(backend.to_numpy(x))).numpy()
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4)


def _conv_bn_pairs(model):
    """Every convolution + batch norm pair of a ResNet / BasicBlock model."""
    pairs = [(model.conv1, model.bn1)]
    for block in model.modules():
        if isinstance(block, models.BasicBlock):
            pairs += [(block.conv1, block.bn1), (block.conv2, block.bn2)]
            if block.downsample is not None:
                pairs.append((block.downsample[0], block.downsample[1]))
    return pairs


@pytest.mark.parametrize("name", ["se_resnet20", "resnet18"])
def test_basic_block_models_fold_batchnorm_in_eval_and_match_torch(backend, rng, name):
    """BasicBlock's own forward folds each convolution + batch norm in eval mode (the
    stem's and the downsampling shortcuts' too) where the fold pays: where the output
    positions (N * OH * OW) are at least the weights per output channel (C * KH * KW),
    so not ResNet-18's last stages on 32x32 images. The logits stay torch's after a
    training step moved the running statistics, and training still runs every layer."""
    model = getattr(models, name)(num_classes=10, rng=3)
    pairs = _conv_bn_pairs(model)
    assert len(pairs) == len([m for m in model.modules() if isinstance(m, nn.BatchNorm2d)])
    calls, inputs = [], {}
    for conv, bn in pairs:
        bn.forward = lambda t, bn=bn: calls.append(bn) or type(bn).forward(bn, t)
        conv.forward = lambda t, conv=conv: (
            inputs.__setitem__(conv, tuple(t.shape)) or type(conv).forward(conv, t)
        )
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    crit = nn.CrossEntropyLoss()
    x = backend.asarray(rng.random((16, 3, 32, 32), dtype=np.float32))
    y = backend.asarray(rng.integers(0, 10, 16))
    opt.zero_grad()
    crit(model(x), y)
    model.backward(crit.backward())
    opt.step()
    assert len(calls) == len(pairs)  # training: every batch norm ran
    model.eval()
    calls.clear()
    with nn.containers.unfolded():
        unfolded = backend.to_numpy(model(x))
    assert len(calls) == len(pairs)
    calls.clear()
    logits = backend.to_numpy(model(x))
    unfit = set()
    for conv, bn in pairs:
        n, c, h, w = inputs[conv]
        positions = n * h * w // (conv.stride[0] * conv.stride[1])
        if positions < c * conv.kernel_size[0] * conv.kernel_size[1]:
            unfit.add(id(bn))
    assert {id(bn) for bn in calls} == unfit
    assert 0 < len(unfit) < len(pairs) if name == "resnet18" else not unfit
    twin = to_torch(model).eval()
    with torch.no_grad():
        want = twin(torch.from_numpy(backend.to_numpy(x))).numpy()
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(unfolded, want, rtol=1e-4, atol=1e-4)
