"""``xcnn.onnx.export``: the exported graph passes onnx.checker and ONNX Runtime gives
xcnn's eval-mode outputs, at another batch size than the one traced."""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xcnn
import xcnn.nn.functional as F
from xcnn import backends, models, nn
from xcnn.autograd import Function
from xcnn.nn.module import Module
from xcnn.ops._geometry import pool_output_size

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'xcnn[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the test extra)")

# float32 throughout: ONNX Runtime and xcnn sum in different orders.
ATOL = RTOL = 1e-4


def _randomize_batch_norms(model, rng):
    """Statistics and affine parameters away from 0/1, so a wrong BN translation shows."""
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and module.track_running_stats:
            c = module.num_features
            module.load_state_dict(
                {
                    "weight": rng.uniform(0.5, 1.5, c),
                    "bias": rng.normal(0.0, 0.3, c),
                    "running_mean": rng.normal(0.0, 0.3, c),
                    "running_var": rng.uniform(0.5, 1.5, c),
                    "num_batches_tracked": np.asarray(7),
                }
            )


def _run(path, inputs, names=("input",)):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, dict(zip(names, inputs, strict=True)))


def _export_and_compare(backend, model, sample_shape, rng, tmp_path, **kwargs):
    """Export at batch 2, run ONNX Runtime at batch 5, compare with xcnn in eval mode."""
    model.train()
    path = tmp_path / "model.onnx"
    example = backend.asarray(rng.standard_normal((2, *sample_shape)).astype(np.float32))
    proto = xcnn.onnx.export(model, example, path, **kwargs)
    assert all(m.training for m in model.modules())  # the mode is restored
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"

    x = rng.standard_normal((5, *sample_shape)).astype(np.float32)
    outputs = _run(path, [x])
    model.eval()
    expected = model(xcnn.Tensor(backend.asarray(x)))
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected, strict=True):
        want = backend.to_numpy(want.data)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    return proto


# The ResNets adapt to any side with global average pooling: 12x12 keeps the test quick.
ZOO = {
    "lenet5": (lambda: models.lenet5(rng=0), (1, 28, 28)),
    "simple_cnn": (lambda: models.simple_cnn(rng=0), (1, 28, 28)),
    "resnet20": (lambda: models.resnet20(rng=0), (3, 12, 12)),
    "se_resnet20": (lambda: models.se_resnet20(rng=0), (3, 12, 12)),
}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_runs_in_onnxruntime_at_another_batch_size(backend, rng, tmp_path, name):
    build, shape = ZOO[name]
    model = build()
    _randomize_batch_norms(model, rng)
    _export_and_compare(backend, model, shape, rng, tmp_path)


def test_fused_sequential_steps_become_their_onnx_ops(rng, tmp_path):
    # LeNet-5's Sequential runs ReLU+MaxPool and Linear+ReLU as fused steps: each fused
    # ReLU must still be in the graph, and parameters named by their state_dict keys.
    model = models.lenet5(rng=0)
    proto = xcnn.onnx.export(model, np.zeros((2, 1, 28, 28), np.float32), tmp_path / "m.onnx")
    ops = [node.op_type for node in proto.graph.node]
    assert ops == [
        "Conv", "MaxPool", "Relu", "Conv", "MaxPool", "Relu", "Reshape",
        "Gemm", "Relu", "Gemm", "Relu", "Gemm",
    ]  # fmt: skip
    initializers = {i.name for i in proto.graph.initializer}
    assert set(model.state_dict()) <= initializers
    weight = next(i for i in proto.graph.initializer if i.name == "7.weight")
    np.testing.assert_array_equal(
        onnx.numpy_helper.to_array(weight), model.state_dict()["7.weight"]
    )


def test_folded_batch_norm_pairs_export_as_two_nodes_with_their_state_dict_names(rng, tmp_path):
    # resnet20 folds its declared conv + batch norm pairs in eval mode; the export keeps
    # them apart, so every parameter and running statistic is an initializer by its key.
    model = models.resnet20(rng=0)
    _randomize_batch_norms(model, rng)
    proto = xcnn.onnx.export(model, np.zeros((2, 3, 12, 12), np.float32), tmp_path / "m.onnx")
    ops = [node.op_type for node in proto.graph.node]
    assert ops.count("Conv") == ops.count("BatchNormalization") == 21
    state = model.state_dict()
    initializers = {i.name: i for i in proto.graph.initializer}
    floats = {key for key, value in state.items() if value.dtype.kind == "f"}
    assert floats <= set(initializers)
    key = "3.0.block.4.running_var"
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(initializers[key]), state[key])
    assert model.training  # the mode the model had before the export


class TwoBranch(nn.Module):
    """examples/custom_model.py's two-branch model, with more Tensor arithmetic."""

    def __init__(self):
        super().__init__()
        self.branch3 = nn.Conv2d(1, 8, 3, padding=1, rng=1)
        self.branch5 = nn.Conv2d(1, 8, 5, padding=2, rng=2)
        self.conv = nn.Conv2d(16, 16, 3, padding=1, rng=3)
        self.fc = nn.Linear(16 * 7 * 7, 10, rng=4)

    def forward(self, x):
        a, b = F.relu(self.branch3(x)), F.relu(self.branch5(x))
        x = xcnn.cat([a, b], dim=1) * 0.5 + (a - b).sum(dim=1, keepdim=True) / 4.0
        x = F.max_pool2d(x, 2)
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.fc(xcnn.flatten(x, 1))


def test_two_branch_graph_model(backend, rng, tmp_path):
    _export_and_compare(backend, TwoBranch(), (1, 28, 28), rng, tmp_path)


class EveryOp(nn.Module):
    """A forward that uses each operation the exporter translates (and returns two outputs)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, stride=2, padding=2, dilation=2, groups=2, rng=5)
        self.bn = nn.BatchNorm2d(8)
        self.bn_batch = nn.BatchNorm2d(8, track_running_stats=False)  # batch statistics
        self.pool = nn.AvgPool2d(3, 1, 1)
        self.drop = nn.Dropout(0.5)
        self.seq = nn.Sequential(nn.Linear(6, 6, rng=6), nn.ReLU())  # Linear on (N, 8, 6)
        self.proj = nn.Linear(8, 5, bias=False, rng=7)
        self.bn1d = nn.BatchNorm1d(5)
        self.scale = xcnn.tensor(np.linspace(0.5, 1.5, 5, dtype=np.float32))  # a constant

    def forward(self, x):
        y = self.bn(self.conv(x))  # (N, 8, 6, 6)
        y = F.leaky_relu(self.bn_batch(y), 0.1) + F.tanh(self.pool(y))
        y = self.drop(F.avg_pool2d(y, 2, 1, 1) ** 2)  # (N, 8, 7, 7)
        y = y[:, :, 1:, ::-1][..., :6]  # (N, 8, 6, 6), reversed columns
        z = self.seq(y.mean(dim=2))  # (N, 8, 6)
        z = z.permute(0, 2, 1).max(dim=1).values + z.sum(dim=2) / z.max()  # (N, 8)
        z = self.bn1d(self.proj(z))  # (N, 5)
        z = (z.clamp(-2.0, 2.0).exp() + 1.0).log() * self.scale - z.abs().sqrt()
        m = z[:, None, :] @ xcnn.stack([z, -z, F.sigmoid(z)], dim=2)  # (N, 1, 3)
        z = F.log_softmax(z, dim=1) + F.softmax(m[:, 0, :].double(), dim=-1).float().sum(1)[:, None]
        return z, y.reshape(y.shape[0], -1).max(dim=1).indices


@pytest.mark.parametrize("opset", [13, 17, 18])
def test_every_operation_at_each_opset(backend, rng, tmp_path, opset):
    model = EveryOp()
    _randomize_batch_norms(model, rng)
    proto = _export_and_compare(
        backend, model, (4, 9, 9), rng, tmp_path, output_names=("logp", "argmax"), opset=opset
    )
    assert [o.name for o in proto.graph.output] == ["logp", "argmax"]
    assert proto.opset_import[0].version == opset


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3, rng=0)

    def forward(self, x, y):
        return self.fc(x) * y, x  # the second output is an input itself


def test_several_inputs_and_an_input_returned(rng, tmp_path):
    model = TwoInputs().eval()
    x, y = (rng.standard_normal((2, 3)).astype(np.float32) for _ in range(2))
    proto = xcnn.onnx.export(
        model, (x, y), tmp_path / "m.onnx", input_names=("x", "y"), output_names=("z", "x_out")
    )
    assert not model.training  # eval before, eval after
    assert [i.name for i in proto.graph.input] == ["x", "y"]
    x, y = (rng.standard_normal((4, 3)).astype(np.float32) for _ in range(2))
    z, x_out = _run(tmp_path / "m.onnx", [x, y], names=("x", "y"))
    want_z, _ = model(xcnn.Tensor(x), xcnn.Tensor(y))
    np.testing.assert_allclose(z, want_z.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(x_out, x)


def test_fixed_batch(rng, tmp_path):
    model = models.lenet5(rng=0)
    proto = xcnn.onnx.export(
        model, np.zeros((3, 1, 28, 28), np.float32), tmp_path / "m.onnx", dynamic_batch=False
    )
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 3
    x = rng.standard_normal((3, 1, 28, 28)).astype(np.float32)
    (got,) = _run(tmp_path / "m.onnx", [x])
    np.testing.assert_allclose(got, model.eval()(x), rtol=RTOL, atol=ATOL)


# -- what cannot be exported: a clear error, nothing written, nothing left changed ----------


class Square(Function):
    @staticmethod
    def forward(ctx, x):
        return x * x

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError


class Head(nn.Module):
    def forward(self, x):
        return Square.apply(x)


class WithCustomFunction(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3, rng=0)
        self.head = Head()

    def forward(self, x):
        return self.head(self.fc(x))


class HandWritten(nn.Module):
    """The classic layer-wise module: forward and backward on arrays."""

    def forward(self, x):
        return x * 2

    def backward(self, grad):
        return grad * 2


class Masked(nn.Module):
    def forward(self, x):
        return x * (x > 0)  # a comparison is not a recorded operation


def _unchanged_after_failure(model, tmp_path, error, match):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous")
    model.train()
    apply, call = Function.__dict__["apply"], Module.__call__
    with pytest.raises(error, match=match):
        xcnn.onnx.export(model, np.ones((2, 4), np.float32), path)
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temporary file
    assert all(m.training for m in model.modules())
    assert Function.__dict__["apply"] is apply and Module.__call__ is call


def test_unsupported_function_names_the_op_and_the_module(tmp_path):
    _unchanged_after_failure(
        WithCustomFunction(),
        tmp_path,
        xcnn.onnx.UnsupportedOperationError,
        r"operation 'Square' \(.*Square\), called in module 'head' \(Head\)",
    )


def test_unsupported_hand_written_module(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4, rng=0), HandWritten())
    _unchanged_after_failure(
        model, tmp_path, xcnn.onnx.UnsupportedOperationError, r"module '1' \(HandWritten\)"
    )


def test_unsupported_loss_in_forward(tmp_path):
    class WithLoss(nn.Module):
        def forward(self, x):
            return F.mse_loss(x, x * 0.0)

    _unchanged_after_failure(
        WithLoss(), tmp_path, xcnn.onnx.UnsupportedOperationError, "'mse_loss'"
    )


def test_value_computed_outside_the_graph_is_refused(tmp_path):
    _unchanged_after_failure(Masked(), tmp_path, ValueError, "computed outside xcnn's operations")


def test_checker_failure_leaves_no_file(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise onnx.checker.ValidationError("refused")

    monkeypatch.setattr(onnx.checker, "check_model", refuse)
    with pytest.raises(onnx.checker.ValidationError):
        xcnn.onnx.export(nn.Linear(4, 2, rng=0), np.ones((2, 4), np.float32), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path):
    model, x = nn.Linear(4, 2, rng=0), np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match="opset must be an int from 13"):
        xcnn.onnx.export(model, x, tmp_path / "m.onnx", opset=9)
    with pytest.raises(ValueError, match=r"output_names must be 1 non-empty string\(s\), one per"):
        xcnn.onnx.export(model, x, tmp_path / "m.onnx", output_names=("a", "b"))
    with pytest.raises(ValueError, match="must not share a name"):
        xcnn.onnx.export(model, x, tmp_path / "m.onnx", input_names=("x",), output_names=("x",))
    with pytest.raises(ValueError, match="reshape to"):

        class Folds(nn.Module):
            def forward(self, x):
                return x.reshape(x.shape[0] * 2, -1)

        xcnn.onnx.export(Folds(), x, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_missing_onnx_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install 'xcnn\[onnx\]'"):
        xcnn.onnx.export(nn.Linear(4, 2, rng=0), np.ones((2, 4), np.float32), tmp_path / "m.onnx")


# -- PyTorch's conv and pooling options: padding strings, ceil_mode, divisors, adaptive
# sizes, unbatched input, empty batches ------------------------------------------------------

NUMPY = backends.get("numpy")
HYPOTHESIS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _ops(proto):
    return [node.op_type for node in proto.graph.node]


def test_ceil_mode_on_every_small_geometry(rng, tmp_path):
    """Every (size, kernel, stride, padding) up to 7/3/3/1 where ceil_mode changes the
    output: ONNX Runtime must keep PyTorch's rule (the last window starts inside the input
    or its left padding) and its divisors (count the padding, not the overhang past it)."""
    dropped = overhang = 0
    for size, k, s in itertools.product(range(1, 8), range(1, 4), range(1, 4)):
        for p in range(k // 2 + 1):
            if size + 2 * p < k:
                continue
            naive = -(-(size + 2 * p - k) // s) + 1  # ONNX shape inference's ceil
            out = pool_output_size(size, k, s, p, ceil_mode=True)
            if naive == pool_output_size(size, k, s, p, ceil_mode=False):
                continue  # ceil_mode changes nothing
            dropped += naive > out
            overhang += (out - 1) * s + k > size + 2 * p
            for layer in (
                nn.MaxPool2d(k, s, p, ceil_mode=True),
                nn.AvgPool2d(k, s, p, ceil_mode=True),
                nn.AvgPool2d(k, s, p, ceil_mode=True, count_include_pad=False),
            ):
                _export_and_compare(NUMPY, layer, (2, size, size + 1), rng, tmp_path)
    assert dropped > 0 and overhang > 0  # both tricky cases were among them


@st.composite
def pool_options(draw):
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    size = tuple(
        draw(st.integers(max(1, k - 2 * p), k - 2 * p + 6))
        for k, p in zip(kernel, padding, strict=True)
    )
    options = {"stride": stride, "padding": padding, "ceil_mode": draw(st.booleans())}
    layer = draw(st.sampled_from(["MaxPool2d", "AvgPool2d"]))
    if layer == "AvgPool2d":
        options["count_include_pad"] = draw(st.booleans())
        options["divisor_override"] = draw(st.sampled_from([None, None, 1, 3, -2]))
    return layer, kernel, options, size


@HYPOTHESIS
@given(case=pool_options(), opset=st.sampled_from([13, 17, 21]))
def test_pooling_layers_with_every_option(backend, rng, tmp_path, case, opset):
    layer, kernel, options, size = case
    model = nn.Sequential(getattr(nn, layer)(kernel, **options), nn.ReLU())  # ReLU: fused
    _export_and_compare(backend, model, (3, *size), rng, tmp_path, opset=opset)


@pytest.mark.parametrize(
    ("output_size", "size", "op"),
    [
        (1, (5, 7), "GlobalAveragePool"),
        ((1, 1), (4, 4), "GlobalAveragePool"),
        (2, (6, 4), "AveragePool"),  # equal bins
        ((3, None), (9, 5), "AveragePool"),
        (3, (7, 5), "MatMul"),  # overlapping bins
        ((None, 3), (4, 7), "MatMul"),
        ((4, 2), (3, 5), "MatMul"),  # more outputs than input rows
    ],
)
def test_adaptive_average_pooling_to_any_size(backend, rng, tmp_path, output_size, size, op):
    model = nn.Sequential(nn.Conv2d(2, 3, 1, rng=0), nn.AdaptiveAvgPool2d(output_size))
    proto = _export_and_compare(backend, model, (2, *size), rng, tmp_path)
    assert op in _ops(proto)


@pytest.mark.parametrize(("kernel", "dilation"), [(3, 1), (2, 1), ((4, 1), 1), ((2, 3), 2)])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_conv_padding_strings(backend, rng, tmp_path, kernel, dilation, padding):
    model = nn.Conv2d(2, 3, kernel, padding=padding, dilation=dilation, rng=0)
    proto = _export_and_compare(backend, model, (2, 7, 6), rng, tmp_path)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    # An odd total padding (even dilated kernel) puts the extra row/column last: a Pad.
    odd = padding == "same" and (dilation * (kh - 1) % 2 or dilation * (kw - 1) % 2)
    assert ("Pad" in _ops(proto)) == bool(odd)


class PadValue(nn.Module):
    def forward(self, x):
        return F.Pad2d.apply(x, (1, 0), (2, 3), 1.5)


def test_pad_with_a_value(backend, rng, tmp_path):
    _export_and_compare(backend, PadValue(), (2, 3, 4), rng, tmp_path)


def _options_model():
    return nn.Sequential(
        nn.Conv2d(3, 4, 4, padding="same", rng=0),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
        nn.AvgPool2d(2, 1, 1, divisor_override=3),
        nn.AdaptiveAvgPool2d((2, None)),
    )


def test_unbatched_input_with_a_fixed_shape(rng, tmp_path):
    model = _options_model()
    x = rng.standard_normal((3, 9, 7)).astype(np.float32)
    proto = xcnn.onnx.export(model, x, tmp_path / "m.onnx", dynamic_batch=False)
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [3, 9, 7]
    x = rng.standard_normal((3, 9, 7)).astype(np.float32)
    (got,) = _run(tmp_path / "m.onnx", [x])
    want = model.eval()(xcnn.Tensor(x)).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_unbatched_input_with_a_dynamic_batch_is_refused(tmp_path):
    model = _options_model()
    x = np.ones((3, 9, 7), np.float32)
    with pytest.raises(
        ValueError,
        match=r"failed on a second input with one more row in dimension 0 \(shape \(4, 9, 7\).*"
        r"expected input with 3 channels.*pass dynamic_batch=False",
    ):
        xcnn.onnx.export(model, x, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_empty_batch(rng, tmp_path):
    model = _options_model()
    proto = xcnn.onnx.export(model, np.zeros((0, 3, 9, 7), np.float32), tmp_path / "m.onnx")
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    model.eval()
    for n in (0, 4):
        x = rng.standard_normal((n, 3, 9, 7)).astype(np.float32)
        (got,) = _run(tmp_path / "m.onnx", [x])
        want = model(xcnn.Tensor(x)).numpy()
        assert got.shape == want.shape and got.shape[0] == n
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
