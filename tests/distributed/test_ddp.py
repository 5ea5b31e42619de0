"""DistributedDataParallel: N ranks reach one process's weights; the sync node on the walk."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import xcnn
import xcnn.distributed as dist
from xcnn import backends, nn, optim
from xcnn.distributed import ddp
from xcnn.models import lenet5

PROGRAMS = Path(__file__).with_name("programs.py")

# -- N ranks against one process, under mpiexec -------------------------------------------

# The ranks' local batches sum 32 images where one process sums 64, and MPI adds the
# ranks' sums: the same numbers in another order. Rounding alone, so the gap scales
# with the dtype's epsilon, though 50 steps of SGD can amplify it: at float32 it was
# 3.6e-7 after 50 steps, and 4.6e-5 once the convolution's matmul shapes changed (the
# two runs stay within 5e-7 for 35 steps, then a near-tie resolved differently in one
# of them grows the gap tenfold every five steps). At float64 it stays 1.3e-15. A
# gradient summed instead of averaged, or one rank's left out, puts the weights 1.6
# and 1.1 away after 50 steps (simulated in one process). Weights of magnitude <= 1.05.
TOLERANCE = {"float32": 2e-4, "float64": 1e-12}


@pytest.mark.parametrize(
    ("ranks", "api", "dtype", "steps"),
    [
        (2, "graph", "float32", 50),
        (2, "layerwise", "float32", 50),
        (2, "graph", "float64", 50),
        (3, "graph", "float32", 20),
    ],
)
def test_ranks_reach_the_weights_of_one_process(mpirun, tmp_path, ranks, api, dtype, steps):
    run = mpirun(ranks, "equivalence", api, str(steps), dtype)
    assert run.returncode == 0, run.output
    single = np.load(tmp_path / "single.npz")
    replicas = [np.load(tmp_path / f"rank{r}.npz") for r in range(ranks)]
    names = [k for k in single.files if k != "losses"]
    assert len(names) == 10
    for replica in replicas[1:]:  # the replicas never drift apart, not even by rounding
        for name in names:
            np.testing.assert_array_equal(replica[name], replicas[0][name], err_msg=name)
    gap = max(float(np.abs(replicas[0][k] - single[k]).max()) for k in names)
    assert gap <= TOLERANCE[dtype], f"weights differ from one process by {gap:.3g}"
    np.testing.assert_allclose(
        replicas[0]["losses"], single["losses"], rtol=0, atol=TOLERANCE[dtype]
    )
    # Training moved the weights far more than the tolerance: the check is not vacuous.
    assert single["losses"][-1] < single["losses"][0] - 0.1


def test_a_parameter_without_gradient_on_some_ranks(mpirun, tmp_path):
    run = mpirun(2, "unused")
    assert run.returncode == 0, run.output
    grads = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert grads[0] == grads[1]
    # a: x0 = [0, 1, 2] on rank 0, x1 * b = [2, 4, 6] on rank 1; b: only rank 1's [1, 2, 3].
    assert grads[0] == {
        "module.a": [1.0, 2.5, 4.0],
        "module.b": [0.5, 1.0, 1.5],
        "module.c": None,  # no rank had one: it stays None, as in one process
    }


def test_buffers_are_rank_zeros_at_wrap_time_and_before_each_training_forward(mpirun, tmp_path):
    run = mpirun(2, "buffers")
    assert run.returncode == 0, run.output
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for report in reports:
        assert report["after_wrap"] == [1.0] * 4  # rank 0's running mean
        # 0.9 * rank 0's 1.0 + 0.1 * the local batch's mean (near 0), not 0.9 * 50 + ...
        assert all(0.8 < value < 1.0 for value in report["after_step"])
    assert reports[0]["after_step"] != reports[1]["after_step"]  # each rank's own batch


def test_a_world_of_one_is_the_plain_model(tmp_path):
    """A plain ``python`` (no launcher): the wrapper changes nothing and imports no MPI."""
    env = {k: v for k, v in os.environ.items() if "RANK" not in k}
    command = [sys.executable, str(PROGRAMS), "equivalence", str(tmp_path), "graph", "5"]
    subprocess.run(command, check=True, timeout=120, env=env)
    single, wrapped = np.load(tmp_path / "single.npz"), np.load(tmp_path / "rank0.npz")
    for name in single.files:
        np.testing.assert_array_equal(wrapped[name], single[name], err_msg=name)
    probe = (
        "import sys, numpy as np, xcnn, xcnn.distributed as dist\n"
        "model = dist.DistributedDataParallel(xcnn.models.lenet5())\n"
        "model(xcnn.tensor(np.zeros((2, 1, 28, 28), np.float32))).sum().backward()\n"
        "print(dist.world_size(), dist.rank(), 'mpi4py' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.stdout.split() == ["1", "0", "False"], out.stderr


# -- the sync node on the walk, in one process ----------------------------------------------


class Recorder:
    """Stands in for the gradient averager: snapshots every gradient when the sync node runs."""

    def __init__(self, params):
        self.params = params
        self.snapshots = []

    def __call__(self):
        self.snapshots.append([None if p.grad is None else p.grad.copy() for p in self.params])


class Branchy(nn.Module):
    """A shared layer used twice, and a parameter that never meets the input."""

    def __init__(self):
        super().__init__()
        g = np.random.default_rng(0)
        self.conv = nn.Conv2d(1, 2, 3, padding=1, rng=g)
        self.fc = nn.Linear(2 * 8 * 8, 3, rng=g)
        self.offset = nn.Parameter(np.ones(3, np.float32))

    def forward(self, x):
        h = self.conv(self.conv(x).relu().sum(1, keepdim=True))  # conv used twice
        return self.fc(xcnn.flatten(h, start_dim=1)) + self.offset * 2.0


def wrapped(model):
    """A wrapper that takes the two-rank path in one process, averaging with a Recorder."""
    model_ddp = dist.DistributedDataParallel(model)
    model_ddp._world_size = 2
    model_ddp._averager = Recorder([p for p in model.parameters() if p.requires_grad])
    return model_ddp


@pytest.mark.parametrize("api", ["graph", "layerwise"])
def test_the_sync_node_runs_after_every_gradient_is_accumulated(api):
    model = wrapped(Branchy())
    x = np.random.default_rng(1).standard_normal((4, 1, 8, 8)).astype(np.float32)
    y = np.array([0, 1, 2, 1])
    loss_fn = nn.CrossEntropyLoss()
    if api == "graph":
        out = model(xcnn.Tensor(x))
        # A loss term on a parameter, recorded after the model ran: also before the sync.
        loss = loss_fn(out, xcnn.Tensor(y)) + (model.module.fc.weight**2).sum() * 0.01
        loss.backward()
    else:
        loss_fn(model(x), y)
        gx = model.backward(loss_fn.backward())
        assert gx.shape == x.shape
    (snapshot,) = model._averager.snapshots  # one sync per backward
    for p, seen in zip(model._averager.params, snapshot, strict=True):
        assert seen is not None
        np.testing.assert_array_equal(seen, p.grad)


def test_the_first_layer_computes_no_input_gradient_in_the_graph_api():
    model = wrapped(lenet5())
    x = xcnn.Tensor(np.zeros((2, 1, 28, 28), np.float32))
    out = model(x)
    assert x.grad_fn is None and not x.requires_grad
    out.sum().backward()
    assert x.grad is None
    assert len(model._averager.snapshots) == 1


def test_no_sync_skips_the_averaging_and_eval_records_nothing():
    model = wrapped(lenet5())
    x = xcnn.Tensor(np.zeros((2, 1, 28, 28), np.float32))
    with model.no_sync():
        model(x).sum().backward()
    assert model._averager.snapshots == []
    model(x).sum().backward()
    assert len(model._averager.snapshots) == 1
    model.eval()
    assert model(x).grad_fn is None


def test_outputs_of_any_container_are_joined():
    token = ddp._SyncGradients.apply(nn.Parameter(np.ones(2, np.float32)), average=lambda: None)
    t = xcnn.tensor(np.ones(2, np.float32), requires_grad=True)
    Pair = collections.namedtuple("Pair", "a b")
    assert type(ddp._join(token, Pair(t, 3))) is Pair
    joined = ddp._join(token, {"logits": t, "n": 3})
    assert joined["logits"].grad_fn is not None and joined["n"] == 3
    double = xcnn.tensor(np.ones(2, np.float64), requires_grad=True)
    assert ddp._join(token, [double])[0].dtype == double.dtype
    with pytest.raises(TypeError, match="no floating-point Tensor"):
        ddp._join(token, 3)


# -- buckets and averaging, without MPI ---------------------------------------------------------


def test_buckets_are_consecutive_parameters_of_one_dtype_within_the_cap():
    def param(n, dtype="float32"):
        return nn.Parameter(np.zeros(n, dtype))

    a, b, c, d, e = param(100), param(100), param(100), param(10, "float64"), param(1000)
    buckets = ddp._buckets([a, b, c, d, e], bucket_bytes=800)
    assert [[id(p) for p in bucket] for bucket in buckets] == [
        [id(a), id(b)],
        [id(c)],
        [id(d)],  # another dtype starts a bucket
        [id(e)],  # larger than the cap: a bucket of its own
    ]


class TwoEqualRanks:
    """An MPI communicator whose other rank sent the same values: a sum doubles them."""

    def __init__(self):
        self.calls = 0

    def Get_size(self):
        return 2

    def Iallreduce(self, _inplace, array, op):
        self.calls += 1
        array *= 2
        return type("Done", (), {"Test": lambda self: True})()


def test_host_averaging_packs_one_message_per_bucket_and_keeps_none(backend):
    comm = TwoEqualRanks()
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    params = [nn.Parameter(backend.asarray(values)) for _ in range(3)]
    params[0].grad = backend.asarray(values / 3)
    params[2].grad = backend.asarray(-np.ones((2, 3), np.float32))
    ddp._average_on_host(comm, params, "test")
    assert comm.calls == 1
    assert params[1].grad is None
    for p, expected in ((params[0], values / 3), (params[2], -np.ones((2, 3), np.float32))):
        assert backends.namespace_name(p.grad) == backend.name  # back on the parameters' backend
        assert p.grad.dtype == p.data.dtype
        np.testing.assert_array_equal(backend.to_numpy(p.grad), expected)


def test_a_world_of_one_averages_nothing():
    model = lenet5()
    model(xcnn.Tensor(np.ones((2, 1, 28, 28), np.float32))).sum().backward()
    before = [p.grad.copy() for p in model.parameters()]
    dist.average_gradients(model)
    for p, g in zip(model.parameters(), before, strict=True):
        np.testing.assert_array_equal(p.grad, g)


def test_the_wrapper_keeps_the_model_and_its_keys():
    model = lenet5()
    wrapper = dist.DistributedDataParallel(model)
    assert wrapper.module is model and dist.unwrap(wrapper) is model
    assert list(wrapper.state_dict()) == [f"module.{k}" for k in model.state_dict()]
    opt = optim.SGD(wrapper.parameters(), lr=0.1)
    assert [id(p) for p in opt.param_groups[0]["params"]] == [id(p) for p in model.parameters()]
    with pytest.raises(TypeError, match=r"expected an xcnn\.nn\.Module"):
        dist.DistributedDataParallel(lambda x: x)
    with pytest.raises(ValueError, match="bucket_mb"):
        dist.DistributedDataParallel(model, bucket_mb=0)
