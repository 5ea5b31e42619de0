"""Sequential, Residual, ModuleList, Identity: naming, chaining, gradient flow, shared layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xcnn
from xcnn import backends, nn
from xcnn.testing import gradcheck, to_torch


class Scale(nn.Module):
    """y = x * w with one weight per feature: small enough to reason about exactly."""

    def __init__(self, n: int, seed: int):
        super().__init__()
        self.weight = nn.init.empty_parameter((n,), dtype="float64")
        nn.init.uniform_(self.weight, 0.5, 1.5, rng=seed)
        self._cache = None

    def forward(self, x):
        if self.training:
            self._cache = x
        return x * self.weight.data

    def backward(self, gy):
        x = self._require_cache()
        self._cache = None
        from array_api_compat import array_namespace

        self.weight.accumulate(array_namespace(gy).sum(gy * x, axis=0))
        return gy * self.weight.data


def test_sequential_names_and_order(backend):
    model = nn.Sequential(Scale(3, 0), Scale(3, 1), nn.Sequential(Scale(3, 2)))
    assert [k for k, _ in model.named_parameters()] == ["0.weight", "1.weight", "2.0.weight"]
    assert list(model.state_dict()) == ["0.weight", "1.weight", "2.0.weight"]
    assert len(model) == 3 and model[1] is list(model)[1]
    with pytest.raises(IndexError, match="3 modules"):
        model[5]
    with pytest.raises(TypeError, match="position 3"):
        model.append(lambda x: x)


def test_sequential_and_residual_gradients(backend, rng):
    x = backend.asarray(rng.standard_normal((4, 3)), dtype="float64")
    assert gradcheck(nn.Sequential(Scale(3, 0), Scale(3, 1)), x, max_elements=None)
    assert gradcheck(nn.Residual(Scale(3, 0)), x, max_elements=None)
    assert gradcheck(nn.Residual(Scale(3, 0), shortcut=Scale(3, 1)), x, max_elements=None)


def test_residual_values(backend, rng):
    host = rng.standard_normal((2, 3))
    block, short = Scale(3, 0), Scale(3, 1)
    y = nn.Residual(block, short)(backend.asarray(host, dtype="float64"))
    w_block = backend.to_numpy(block.weight.data)
    w_short = backend.to_numpy(short.weight.data)
    np.testing.assert_allclose(backend.to_numpy(y), host * w_block + host * w_short)
    identity = nn.Residual(block)(backend.asarray(host, dtype="float64"))
    np.testing.assert_allclose(backend.to_numpy(identity), host * w_block + host)


def test_residual_shape_mismatch_is_explained(backend):
    class Halve(nn.Module):
        def forward(self, x):
            return x[:, :1]

    with pytest.raises(ValueError, match="shortcut"):
        nn.Residual(Halve())(backend.asarray(np.ones((2, 2)), dtype="float64"))


def test_shared_layer_accumulates_both_uses(backend, rng):
    shared = Scale(3, 0)
    x = backend.asarray(rng.standard_normal((2, 3)), dtype="float64")
    gy = backend.asarray(np.ones((2, 3)), dtype="float64")
    shared(x)
    shared.backward(gy)
    once = backend.to_numpy(shared.weight.grad).copy()
    shared(x)
    shared.backward(gy)
    np.testing.assert_allclose(backend.to_numpy(shared.weight.grad), 2 * once)
    shared.zero_grad()
    assert shared.weight.grad is None


def test_eval_mode_caches_nothing_and_backward_explains(backend, rng):
    model = nn.Sequential(Scale(3, 0))
    model.eval()
    assert not model[0].training
    model(backend.asarray(rng.standard_normal((2, 3)), dtype="float64"))
    assert model[0]._pending() == 0
    with pytest.raises(RuntimeError, match="eval-mode forward caches nothing"):
        model.backward(backend.asarray(np.ones((2, 3)), dtype="float64"))
    model.train()
    assert model[0].training


def test_state_dict_round_trip_and_errors(backend):
    a = nn.Sequential(Scale(3, 0), Scale(3, 1))
    b = nn.Sequential(Scale(3, 5), Scale(3, 6))
    b.load_state_dict(a.state_dict())
    for (_, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        np.testing.assert_array_equal(backend.to_numpy(pa.data), backend.to_numpy(pb.data))
    with pytest.raises(ValueError, match=r"0.weight: expected \(3,\), got \(4,\)"):
        b.load_state_dict({"0.weight": np.ones(4), "1.weight": np.ones(3)})
    with pytest.raises(KeyError, match=r"missing keys.*1.weight.*unexpected keys.*extra"):
        b.load_state_dict({"0.weight": np.ones(3), "extra": np.ones(1)})


def test_to_moves_between_namespaces(backend):
    model = nn.Sequential(Scale(3, 0))
    before = model.state_dict()["0.weight"]
    other = "numpy" if backend.name != "numpy" else "array_api_strict"
    model.to(other)
    from xcnn import backends

    assert backends.namespace_name(model[0].weight.data) == other
    np.testing.assert_array_equal(model.state_dict()["0.weight"], before)


def test_a_relu_fuses_into_the_linear_before_it_or_a_neighbouring_maxpool():
    from xcnn.nn.containers import _run_order, _WithReLU

    relu, pool, conv, fc = nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(1, 1, 1), nn.Linear(2, 2)

    def shown(steps):
        return [("fused", s.layer) if isinstance(s, _WithReLU) else s for s in steps]

    assert shown(_run_order([conv, relu, pool, relu])) == [conv, ("fused", pool), relu]
    assert shown(_run_order([conv, pool, relu])) == [conv, ("fused", pool)]
    assert shown(_run_order([relu, pool, pool])) == [("fused", pool), pool]
    assert shown(_run_order([fc, relu, fc, relu, fc])) == [("fused", fc), ("fused", fc), fc]
    assert _run_order([relu, fc]) == [relu, fc]  # a ReLU before a Linear does not commute
    assert _run_order([conv, relu]) == [conv, relu]
    leaky = nn.LeakyReLU(-0.5)  # not monotone for a negative slope: never fused
    assert _run_order([leaky, pool]) == [leaky, pool]
    assert _run_order([fc, leaky]) == [fc, leaky]
    assert _run_order([pool, nn.AvgPool2d(2), relu])[0] is pool


def test_fused_linear_and_relu_equal_the_two_layers_exactly(backend, rng):
    fc1, fc2 = nn.Linear(6, 5, rng=1, dtype="float64"), nn.Linear(5, 3, rng=2, dtype="float64")
    model = nn.Sequential(fc1, nn.ReLU(), fc2, nn.ReLU())
    model.to(backend.name)
    x = backend.asarray(rng.standard_normal((4, 6)), dtype="float64")
    gy = backend.asarray(rng.standard_normal((4, 3)), dtype="float64")
    y, gx = model(x), model.backward(gy)
    fused_grads = [backend.to_numpy(p.grad) for p in model.parameters()]
    model.zero_grad()
    relu1, relu2 = nn.ReLU(), nn.ReLU()
    reference = relu2(fc2(relu1(fc1(x))))
    reference_gx = fc1.backward(relu1.backward(fc2.backward(relu2.backward(gy))))
    np.testing.assert_array_equal(backend.to_numpy(y), backend.to_numpy(reference))
    np.testing.assert_array_equal(backend.to_numpy(gx), backend.to_numpy(reference_gx))
    for fused, p in zip(fused_grads, model.parameters(), strict=True):
        np.testing.assert_array_equal(fused, backend.to_numpy(p.grad))
    assert 0 < float(np.mean(backend.to_numpy(y) > 0)) < 1  # some outputs were clamped


@pytest.mark.parametrize("relu_first", [True, False], ids=["relu-pool", "pool-relu"])
@pytest.mark.parametrize("pool_args", [(2,), (3, 2, 1), ((2, 3), 1)], ids=str)
def test_fused_relu_and_maxpool_equal_the_declared_order_exactly(
    backend, rng, pool_args, relu_first
):
    """Values and gradients, with all-negative windows, ties at zero and exact ties."""
    x = rng.standard_normal((3, 2, 7, 8)).round(1)  # rounding makes ties
    x[0, 0] = -np.abs(x[0, 0])  # windows whose maximum is negative
    x[1, 1, :4, :4] = 0.0  # windows of zeros
    x = backend.asarray(x, dtype="float64")
    relu, pool = nn.ReLU(), nn.MaxPool2d(*pool_args)
    if relu_first:
        model = nn.Sequential(nn.ReLU(), nn.MaxPool2d(*pool_args))
        reference = pool(relu(x))
    else:
        model = nn.Sequential(nn.MaxPool2d(*pool_args), nn.ReLU())
        reference = relu(pool(x))
    y = model(x)
    np.testing.assert_array_equal(backend.to_numpy(y), backend.to_numpy(reference))
    gy = backend.asarray(rng.standard_normal(tuple(y.shape)), dtype="float64")
    expected = relu.backward(pool.backward(gy)) if relu_first else pool.backward(relu.backward(gy))
    np.testing.assert_array_equal(backend.to_numpy(model.backward(gy)), backend.to_numpy(expected))
    model.eval()
    np.testing.assert_array_equal(backend.to_numpy(model(x)), backend.to_numpy(reference))


# -- Identity, ModuleList ------------------------------------------------------------------


def test_identity_passes_through_in_both_apis(backend, rng):
    x = backend.asarray(rng.standard_normal((2, 3)))
    layer = nn.Identity(54, unused="ignored")  # torch ignores its arguments too
    y = layer(x)
    np.testing.assert_array_equal(backend.to_numpy(y), backend.to_numpy(x))
    g = backend.asarray(rng.standard_normal((2, 3)))
    np.testing.assert_array_equal(backend.to_numpy(layer.backward(g)), backend.to_numpy(g))
    model = nn.Sequential(nn.Linear(3, 2, rng=0, dtype="float64"), nn.Identity())
    t = xcnn.tensor(x, requires_grad=True)
    model(t).sum().backward()
    assert t.grad.shape == (2, 3)
    assert list(nn.Identity().parameters()) == [] and repr(nn.Identity()) == "Identity()"


def _lins(n):
    return [nn.Linear(2, 2, rng=i) for i in range(n)]


def test_module_list_is_a_list_of_registered_modules():
    a, b, c, d = _lins(4)
    layers = nn.ModuleList([a, b])
    assert len(layers) == 2 and list(layers) == [a, b]
    assert layers.append(c) is layers
    layers.extend([d])
    assert [m for m in layers] == [a, b, c, d]
    assert layers[-1] is d and layers[1] is b
    sliced = layers[1:3]
    assert isinstance(sliced, nn.ModuleList) and list(sliced) == [b, c]
    assert list(sliced.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    layers.insert(0, nn.ReLU())
    assert [type(m).__name__ for m in layers] == ["ReLU", "Linear", "Linear", "Linear", "Linear"]
    assert list(layers.state_dict())[:2] == ["1.weight", "1.bias"]
    del layers[0]
    assert list(layers) == [a, b, c, d]
    layers[0] = nn.Identity()
    assert isinstance(layers[0], nn.Identity) and len(list(layers.parameters())) == 6
    layers += [nn.Tanh()]
    assert len(layers) == 5 and list(nn.ModuleList()) == []
    with pytest.raises(IndexError, match="ModuleList has 5 modules, index 5 is out of range"):
        layers[5]
    with pytest.raises(TypeError, match=r"ModuleList expects xcnn\.nn\.Module instances, got int"):
        layers.append(3)
    with pytest.raises(NotImplementedError, match="ModuleList has no forward"):
        layers(np.zeros((1, 2)))


@pytest.mark.torch
def test_module_list_state_dict_keys_match_torch():
    import torch

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(3, 3, rng=0), nn.ReLU(), nn.Linear(3, 2, rng=1)])

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            return x

    twin = torch.nn.Module()
    twin.blocks = torch.nn.ModuleList(
        [torch.nn.Linear(3, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)]
    )
    net = Net()
    assert list(net.state_dict()) == list(twin.state_dict())
    twin.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in net.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(net(x)),
        twin.blocks[2](twin.blocks[1](twin.blocks[0](torch.from_numpy(x)))).detach().numpy(),
        rtol=1e-5,
        atol=1e-6,
    )
    t = xcnn.tensor(x, requires_grad=True)  # a forward of one's own trains through the graph
    net(t).sum().backward()
    assert net.blocks[0].weight.grad.shape == (3, 3)


@pytest.mark.torch
def test_empty_batch_through_a_model_matches_torch_layerwise(backend):
    """N = 0 through conv, batch norm (training), activations, every pool and linear:
    empty output and input gradient, parameter gradients 0, running statistics kept."""
    model = nn.Sequential(
        nn.Conv2d(2, 4, 2, padding="same", rng=0),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1, ceil_mode=True),
        nn.AvgPool2d(2, 1, 1, count_include_pad=False),
        nn.AdaptiveAvgPool2d((2, 3)),
        nn.Flatten(),
        nn.Linear(24, 5, rng=0),
        nn.Tanh(),
    )
    twin = to_torch(model)
    x = np.zeros((0, 2, 7, 6), dtype=np.float32)
    tx = torch.from_numpy(x).requires_grad_()
    ty = twin(tx)
    y = model(backend.asarray(x))
    assert tuple(y.shape) == tuple(ty.shape) == (0, 5)
    ty.backward(torch.zeros(0, 5))
    gx = model.backward(backend.asarray(np.zeros((0, 5), dtype=np.float32)))
    assert tuple(gx.shape) == x.shape and backends.namespace_name(gx) == backend.name
    for name, param in model.named_parameters():
        expected = twin.get_parameter(name).grad.numpy()
        np.testing.assert_array_equal(backend.to_numpy(param.grad), expected, err_msg=name)
    for key, value in twin.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[key], value.numpy(), err_msg=key)


# -- convolution + batch norm folded in eval mode ---------------------------------------


def _conv_bn(backend, rng, *, bias: bool = True, affine: bool = True):
    """A declared Conv2d + BatchNorm2d pair with running statistics and affine values far
    from their initial 0/1, so that a fold that forgot one of them would show."""
    model = nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1, bias=bias, rng=0),
        nn.BatchNorm2d(5, affine=affine),
        nn.ReLU(),
    ).fold_batchnorm(0)
    conv, bn = model[0], model[1]
    state = {
        "1.running_mean": rng.normal(size=5).astype(np.float32),
        "1.running_var": rng.uniform(0.2, 3.0, size=5).astype(np.float32),
    }
    if affine:
        state["1.weight"] = rng.uniform(0.5, 2.0, size=5).astype(np.float32)
        state["1.bias"] = rng.normal(size=5).astype(np.float32)
    model.load_state_dict(state, strict=False)
    calls = []
    unfolded = bn.forward

    def counted(x):
        calls.append(1)
        return unfolded(x)

    bn.forward = counted
    return model, conv, bn, calls


def _two_layers(conv, bn, x):
    """The pair run one after the other (a direct call of each module never folds)."""
    with xcnn.no_grad():
        return nn.ReLU()(bn(conv(xcnn.Tensor(x)))).data


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_folded_pair_matches_the_two_layers(backend, rng, bias, affine):
    model, conv, bn, calls = _conv_bn(backend, rng, bias=bias, affine=affine)
    x = backend.asarray(rng.random((2, 3, 6, 6), dtype=np.float32))
    model.eval()
    got = model(x)
    assert calls == []  # the batch norm layer did not run: the pair was folded
    calls.clear()
    want = _two_layers(conv, bn, x)
    assert calls == [1]
    assert xcnn.backends.namespace_name(got) == backend.name
    # Float rounding apart (the fold multiplies the weights, not the activations).
    np.testing.assert_allclose(backend.to_numpy(got), backend.to_numpy(want), rtol=1e-4, atol=1e-5)


def test_no_fold_where_the_output_has_fewer_positions_than_a_filter_has_weights(backend, rng):
    """3x3 over 3 channels: 27 weights per output channel. 2 images of 4x4 (32 output
    positions) fold; 1 image of 5x5 (25) runs the two layers, with the same values."""
    model, conv, bn, calls = _conv_bn(backend, rng)
    model.eval()
    for shape, folded in (((2, 3, 4, 4), True), ((1, 3, 5, 5), False)):
        x = backend.asarray(rng.random(shape, dtype=np.float32))
        calls.clear()
        got = model(x)
        assert calls == ([] if folded else [1])
        want = _two_layers(conv, bn, x)
        np.testing.assert_allclose(
            backend.to_numpy(got), backend.to_numpy(want), rtol=1e-4, atol=1e-5
        )


def test_unfolded_runs_the_pair_as_its_two_layers_and_nests(backend, rng):
    model, conv, bn, calls = _conv_bn(backend, rng)
    x = backend.asarray(rng.random((2, 3, 6, 6), dtype=np.float32))
    model.eval()
    want = _two_layers(conv, bn, x)
    calls.clear()
    with nn.containers.unfolded():
        with nn.containers.unfolded():
            inner = model(x)
        outer = model(x)  # still inside the outer block
    assert calls == [1, 1]
    np.testing.assert_array_equal(backend.to_numpy(inner), backend.to_numpy(want))
    np.testing.assert_array_equal(backend.to_numpy(outer), backend.to_numpy(want))
    calls.clear()
    model(x)  # after the block: folded again
    assert calls == []


def test_folding_happens_only_in_eval_without_gradients(backend, rng):
    model, _, _, calls = _conv_bn(backend, rng)
    x = rng.random((2, 3, 6, 6), dtype=np.float32)
    model(backend.asarray(x))  # training mode: batch statistics
    assert calls == [1]
    model.eval()
    calls.clear()
    # Eval with a gradient wanted (a saliency map): the layers run as they are.
    t = xcnn.Tensor(backend.asarray(x), requires_grad=True)
    out = model(t)
    assert calls == [1]
    out.sum().backward()
    assert t.grad is not None
    calls.clear()
    with xcnn.no_grad():
        model(xcnn.Tensor(backend.asarray(x)))
    assert calls == []


def test_no_stale_fold_after_weights_or_statistics_change(backend, rng):
    """The fold follows in-place updates, load_state_dict, optimizer steps and train()."""
    model, conv, bn, _ = _conv_bn(backend, rng)
    x = backend.asarray(rng.random((4, 3, 6, 6), dtype=np.float32))

    def check():
        np.testing.assert_allclose(
            backend.to_numpy(model(x)),
            backend.to_numpy(_two_layers(conv, bn, x)),
            rtol=1e-4,
            atol=1e-4,
        )

    model.eval()
    before = backend.to_numpy(model(x))
    conv.weight.data *= 2.0  # in place: same array, same identity
    check()
    assert not np.allclose(backend.to_numpy(model(x)), before)
    state = {k: v * 0.5 + 0.25 for k, v in model.state_dict().items() if "num_batches" not in k}
    model.load_state_dict(state, strict=False)
    check()
    model.train()
    opt = xcnn.optim.SGD(model.parameters(), lr=0.5)
    model(x)  # moves the running statistics too
    model.backward(backend.asarray(np.ones((4, 5, 6, 6), dtype=np.float32)))
    opt.step()
    model.eval()
    check()


def test_fold_batchnorm_refuses_pairs_that_cannot_fold():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match=r"index 1 must hold a Conv2d followed by a BatchNorm2d"):
        model.fold_batchnorm(1)
    with pytest.raises(ValueError, match=r"index 2 .* found BatchNorm2d"):
        model.fold_batchnorm(2)
    with pytest.raises(ValueError, match=r"index 0 .* found Conv2d, ReLU"):
        model.fold_batchnorm(0)
    wrong_width = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(5))
    with pytest.raises(ValueError, match=r"of its out_channels"):
        wrong_width.fold_batchnorm(0)


def test_fold_keeps_state_dict_keys_and_input_errors(backend, rng):
    folded, *_ = _conv_bn(backend, rng)
    plain = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1, rng=0), nn.BatchNorm2d(5), nn.ReLU())
    assert list(folded.state_dict()) == list(plain.state_dict())
    folded.eval()
    bad = backend.asarray(np.zeros((1, 4, 6, 6), dtype=np.float32))
    with pytest.raises(ValueError, match=r"Conv2d\(3->5\): expected input with 3 channels"):
        folded(bad)
