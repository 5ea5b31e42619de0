"""save_checkpoint: rank 0 writes the plain model; every rank reads the whole file at return."""

from __future__ import annotations

import json

import numpy as np

import xcnn.distributed as dist
from xcnn import optim
from xcnn.models import lenet5


def test_rank_zero_writes_and_every_rank_loads_it(mpirun, tmp_path):
    run = mpirun(2, "checkpoint")
    assert run.returncode == 0, run.output
    for rank in (0, 1):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        # Rank 0's weights (broadcast at wrap) came back on every rank; no temporary file left.
        assert report == {"epoch": 1, "same": True, "files": ["run.ckpt"]}


def test_in_a_world_of_one_it_is_xcnn_save_of_the_plain_model(tmp_path):
    model = dist.DistributedDataParallel(lenet5(rng=np.random.default_rng(0)))
    opt = optim.SGD(model.parameters(), lr=0.1)
    path = dist.save_checkpoint(tmp_path / "one.ckpt", model, opt, epoch=3)
    plain = lenet5(rng=np.random.default_rng(1))
    assert dist.load_checkpoint(path, plain)["epoch"] == 3
    for key, value in model.module.state_dict().items():
        np.testing.assert_array_equal(plain.state_dict()[key], value)
