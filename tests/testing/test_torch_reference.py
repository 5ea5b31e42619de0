"""to_torch builds a torch twin of every zoo model and refuses free-form Modules by name."""

from __future__ import annotations

import numpy as np
import pytest

from xcnn import models, nn
from xcnn.testing import to_torch

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.torch

# Each zoo model with the smallest input that keeps every stage non-empty.
ZOO = [
    pytest.param(lambda **kw: models.lenet5(input_size=12, **kw), (2, 1, 12, 12), id="lenet5"),
    pytest.param(lambda **kw: models.simple_cnn(input_size=8, **kw), (2, 1, 8, 8), id="simple_cnn"),
    pytest.param(models.resnet20, (2, 3, 8, 8), id="resnet20"),
    pytest.param(models.se_resnet20, (2, 3, 8, 8), id="se_resnet20"),
    pytest.param(lambda **kw: models.resnet18(num_classes=10, **kw), (2, 3, 16, 16), id="resnet18"),
]


@pytest.mark.parametrize(("builder", "shape"), ZOO)
def test_every_zoo_model_matches_its_twin_in_eval_mode(backend, rng, builder, shape):
    model = builder(rng=0, dtype="float64")
    # Running statistics away from (0, 1), so that eval-mode batch norm is exercised.
    state = model.state_dict()
    for key, value in state.items():
        if key.endswith("running_mean"):
            state[key] = 0.1 * rng.standard_normal(value.shape)
        elif key.endswith("running_var"):
            state[key] = rng.uniform(0.5, 2.0, value.shape)
    model.load_state_dict(state)
    model.eval()

    twin = to_torch(model)
    t_state = twin.state_dict()
    assert sorted(t_state) == sorted(state)
    for key, value in state.items():
        np.testing.assert_array_equal(t_state[key].numpy(), value, err_msg=key)
    assert not any(module.training for module in twin.modules())

    x = rng.standard_normal(shape)
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    assert expected.dtype == np.float64
    actual = backend.to_numpy(model(backend.asarray(x)))
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12)


def test_graph_twins_have_torchvisions_layout_and_each_modules_mode():
    model = models.se_resnet20(reduction=4, rng=0)
    model.layer2.eval()
    twin = to_torch(model)
    assert twin.maxpool is None  # the CIFAR stem
    block = twin.layer2[0]
    assert type(block).__name__ == "BasicBlock"
    assert isinstance(block.downsample, torch.nn.Sequential)
    assert type(block.se).__name__ == "SEBlock"
    assert twin.layer1[0].downsample is None
    assert [name for name, _ in twin.named_parameters()] == [
        name for name, _ in model.named_parameters()
    ]
    assert twin.training and twin.layer1[0].bn1.training
    assert not twin.layer2.training and not block.bn1.training and not block.se.training
    assert twin.fc.weight.dtype == torch.float32


def test_shared_module_stays_one_module_and_frozen_parameters_stay_frozen():
    lin = nn.Linear(3, 3, rng=0)
    model = nn.Sequential(lin, nn.ReLU(), lin).double()
    model[0].bias.requires_grad = False
    twin = to_torch(model)
    assert twin[0] is twin[2]
    assert not twin[0].bias.requires_grad and twin[0].weight.requires_grad
    x = np.random.default_rng(0).standard_normal((4, 3))
    with torch.no_grad():
        np.testing.assert_allclose(model(x), twin(torch.from_numpy(x)).numpy(), rtol=1e-12)
    assert isinstance(to_torch(nn.CrossEntropyLoss()), torch.nn.CrossEntropyLoss)


class MyBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4, rng=0)

    def forward(self, x):
        return self.fc(x) * 2


class MySequential(nn.Sequential):
    def forward(self, x):
        return super().forward(x) + 1


def test_a_modules_own_subclass_has_no_twin():
    model = nn.Sequential(nn.Linear(4, 4, rng=0), nn.Sequential(nn.ReLU(), MyBlock()))
    with pytest.raises(TypeError, match=r"no PyTorch twin for .*\.MyBlock at '1\.1'\. .*by hand"):
        to_torch(model)
    with pytest.raises(TypeError, match=r"\.MySequential\. .*not their subclasses"):
        to_torch(MySequential(nn.ReLU()))
