"""xcnn.summary against sum(p.size) and against torchinfo on each zoo model's torch twin."""

from __future__ import annotations

import math

import pytest

import xcnn
from xcnn import models, nn

ZOO = [
    ("lenet5", (1, 28, 28)),
    ("simple_cnn", (1, 28, 28)),
    ("resnet20", (3, 32, 32)),
    ("se_resnet20", (3, 32, 32)),
    ("resnet18", (3, 32, 32)),
]


@pytest.fixture(scope="module")
def zoo():
    xcnn.manual_seed(0)
    return {name: getattr(models, name)() for name, _ in ZOO}


@pytest.mark.torch
@pytest.mark.parametrize(("name", "shape"), ZOO)
def test_figures_equal_sum_of_sizes_and_torchinfo(zoo, name, shape):
    pytest.importorskip("torch")
    torchinfo = pytest.importorskip("torchinfo")
    from xcnn.testing import to_torch

    model = zoo[name]
    stats = xcnn.summary(model, shape, print_fn=None)
    assert stats.total_params == sum(math.prod(p.shape) for p in model.parameters())
    assert stats.trainable_params == stats.total_params
    assert stats.non_trainable_params == 0

    ref = torchinfo.summary(to_torch(model).eval(), input_size=(1, *shape), verbose=0)
    assert stats.total_params == ref.total_params
    assert stats.trainable_params == ref.trainable_params
    assert stats.total_mult_adds == ref.total_mult_adds
    assert stats.forward_backward_bytes == ref.total_output_bytes
    assert stats.param_bytes == ref.total_param_bytes
    # torchinfo's input size adds the Python object's header; xcnn's is the data alone.
    assert stats.input_bytes == math.prod(shape) * 4
    ours = [(r.class_name, r.depth, r.index, r.output_shape) for r in stats.rows]
    theirs = [
        (r.class_name, r.depth, r.depth_index, tuple(r.output_size)) for r in ref.summary_list
    ]
    assert ours == theirs


def test_lenet5_rows_by_hand():
    # Mult-adds by torchinfo's rule, worked out: conv = (weights + biases) * N*OH*OW,
    # linear = (weights + biases) * N; activations, pooling and flatten cost nothing.
    stats = xcnn.summary(models.lenet5(), (1, 28, 28), print_fn=None)
    expected = [
        ("Sequential", 0, (1, 10), 61706, 0),
        ("Conv2d", 1, (1, 6, 28, 28), 156, 156 * 28 * 28),
        ("ReLU", 1, (1, 6, 28, 28), 0, 0),
        ("MaxPool2d", 1, (1, 6, 14, 14), 0, 0),
        ("Conv2d", 1, (1, 16, 10, 10), 2416, 2416 * 10 * 10),
        ("ReLU", 1, (1, 16, 10, 10), 0, 0),
        ("MaxPool2d", 1, (1, 16, 5, 5), 0, 0),
        ("Flatten", 1, (1, 400), 0, 0),
        ("Linear", 1, (1, 120), 48120, 48120),
        ("ReLU", 1, (1, 120), 0, 0),
        ("Linear", 1, (1, 84), 10164, 10164),
        ("ReLU", 1, (1, 84), 0, 0),
        ("Linear", 1, (1, 10), 850, 850),
    ]
    got = [(r.class_name, r.depth, r.output_shape, r.num_params, r.mult_adds) for r in stats.rows]
    assert got == expected
    assert stats.total_mult_adds == 423038
    assert stats.rows[1].label == "└─Conv2d: 1-1"
    assert stats.rows[12].label == "└─Linear: 1-12"


def test_table_prints_rows_and_totals():
    lines: list[str] = []
    stats = xcnn.summary(models.lenet5(), (2, 1, 28, 28), print_fn=lines.append)
    assert len(lines) == 1
    assert lines[0] == str(stats)
    assert stats.input_shape == (2, 1, 28, 28)
    assert stats.rows[1].output_shape == (2, 6, 28, 28)
    assert stats.total_mult_adds == 2 * 423038
    text = lines[0]
    assert "└─Conv2d: 1-1" in text
    assert "[2, 6, 28, 28]" in text
    assert "Total params: 61,706" in text
    assert "Trainable params: 61,706" in text
    assert "Non-trainable params: 0" in text
    assert "Total mult-adds (M): 0.85" in text
    assert "Params size (MB): 0.25" in text


def test_depth_limits_the_table_not_the_totals():
    model = models.resnet20()
    deep = xcnn.summary(model, (3, 32, 32), depth=3, print_fn=None)
    shallow = xcnn.summary(model, (3, 32, 32), depth=1, print_fn=None)
    assert shallow.total_mult_adds == deep.total_mult_adds
    assert "Residual: 2-1" in str(deep)
    assert "Residual" not in str(shallow)
    assert "└─Sequential: 1-4" in str(shallow)


def test_shared_module_counted_once():
    xcnn.manual_seed(0)
    shared = nn.Linear(8, 8)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    stats = xcnn.summary(model, (4, 8), print_fn=None)
    assert stats.total_params == 8 * 8 + 8
    linear_rows = [r for r in stats.rows if r.class_name == "Linear"]
    assert [r.recursive for r in linear_rows] == [False, True]
    assert [r.num_params for r in linear_rows] == [72, 0]
    # Each call does its own work.
    assert stats.total_mult_adds == 2 * 4 * 72
    assert "(recursive)" in str(stats)


def test_non_trainable_parameters():
    model = models.lenet5()
    model[0].weight.requires_grad = False
    stats = xcnn.summary(model, (1, 28, 28), print_fn=None)
    assert stats.non_trainable_params == 150
    assert stats.trainable_params == 61706 - 150


def test_wrong_channels_raise_the_models_error_and_restore_everything():
    model = models.resnet20()
    model.train()
    call = nn.Module.__call__
    with pytest.raises(ValueError, match=r"expected input with 3 channels"):
        xcnn.summary(model, (1, 32, 32), print_fn=None)
    assert nn.Module.__call__ is call
    assert all(m.training for m in model.modules())
    # The fused ReLU of Sequential is back in place too: a fresh summary still works.
    assert xcnn.summary(model, (3, 32, 32), print_fn=None).total_params == 272474


def test_mode_restored_per_module():
    model = models.resnet20()
    model.train()
    model[1].eval()
    xcnn.summary(model, (3, 32, 32), print_fn=None)
    assert model.training
    assert not model[1].training
    assert all(m.training for i, m in enumerate(model) if i != 1)
    model.eval()
    xcnn.summary(model, (3, 32, 32), print_fn=None)
    assert not any(m.training for m in model.modules())


def test_batch_norm_statistics_untouched():
    model = models.resnet20()
    model.train()
    before = {k: xcnn.backends.to_host(v).copy() for k, v in model.state_dict().items()}
    xcnn.summary(model, (3, 32, 32), print_fn=None)
    after = model.state_dict()
    for key, value in before.items():
        assert (xcnn.backends.to_host(after[key]) == value).all(), key


def test_every_backend_same_figures(backend):
    xcnn.manual_seed(0)
    stats = xcnn.summary(models.lenet5(), (1, 28, 28), print_fn=None)
    assert (stats.total_params, stats.total_mult_adds) == (61706, 423038)
    assert stats.rows[-1].output_shape == (1, 10)
    assert stats.param_bytes == 61706 * 4


def test_dtype_sets_the_input_and_the_sizes():
    stats = xcnn.summary(
        models.lenet5(dtype="float64"), (1, 28, 28), dtype="float64", print_fn=None
    )
    assert stats.input_bytes == 28 * 28 * 8
    assert stats.param_bytes == 61706 * 8
    with pytest.raises(ValueError, match="dtype must be"):
        xcnn.summary(models.lenet5(), (1, 28, 28), dtype="int8", print_fn=None)
