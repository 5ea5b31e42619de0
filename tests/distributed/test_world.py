"""The world without a launcher, and the messages that name what differs between ranks."""

from __future__ import annotations

import pytest

import xcnn.distributed as dist
from xcnn.distributed import ddp, world


def test_a_plain_process_is_a_world_of_one():
    dist.init()
    assert (dist.rank(), dist.world_size(), dist.is_main()) == (0, 1, True)
    assert (dist.local_rank(), dist.local_world_size()) == (0, 1)
    assert len(dist.peers()) == 1
    dist.barrier()
    dist.check_same({"lr": 0.1})  # nothing to compare with
    assert dist.broadcast_object({"a": [1, 2]}) == {"a": [1, 2]}


@pytest.mark.parametrize(
    ("text", "seconds"), [("", 300.0), ("2.5", 2.5), ("0", None), ("none", None)]
)
def test_the_time_limit_comes_from_the_environment(monkeypatch, text, seconds):
    monkeypatch.setenv("XCNN_DIST_TIMEOUT", text)
    assert world._read_timeout() == seconds


@pytest.mark.parametrize("text", ["-1", "soon"])
def test_a_malformed_time_limit_is_refused(monkeypatch, text):
    monkeypatch.setenv("XCNN_DIST_TIMEOUT", text)
    with pytest.raises(ValueError, match="XCNN_DIST_TIMEOUT must be a number of seconds"):
        world._read_timeout()


def test_differing_values_are_named_with_each_ranks_value():
    tables = [
        {"lr": "0.1", "seed": "0", "model": '"lenet5"'},
        {"lr": "0.05", "seed": "0", "model": '"lenet5"'},
        {"lr": "0.1", "seed": "0"},
    ]
    assert world._values_difference(tables, "hyper-parameters") == (
        "xcnn.distributed: hyper-parameters differ across ranks: lr is 0.1 on ranks 0, 2 "
        'but 0.05 on rank 1; model is "lenet5" on ranks 0, 1 but (not given) on rank 2'
    )
    assert world._values_difference(tables[:1] * 3, "x") is None


def entry(name, shape=(2, 3), dtype="float32", kind="parameter"):
    return {"kind": kind, "name": name, "shape": list(shape), "dtype": dtype, "backend": "numpy"}


def test_the_first_difference_between_models_is_named():
    same = [entry("0.weight"), entry("0.bias", (2,))]
    assert ddp._model_difference([same, same]) is None
    shapes = [same, [entry("0.weight", (4, 3)), entry("0.bias", (2,))], same]
    assert ddp._model_difference(shapes) == (
        "the ranks' models differ: parameter '0.weight' has shape (2, 3) on ranks 0, 2 "
        "but (4, 3) on rank 1; every rank must build the same model"
    )
    dtypes = [same, [entry("0.weight", dtype="float64"), entry("0.bias", (2,))]]
    assert "parameter '0.weight' has dtype float32 on rank 0 but float64 on rank 1" in (
        ddp._model_difference(dtypes)
    )
    shorter = [same, same[:1]]
    assert "entry 1 of the parameters and buffers is parameter '0.bias' on rank 0 but " in (
        ddp._model_difference(shorter)
    )
    assert ddp._model_difference(shorter).endswith(
        "nothing on rank 1; every rank must build the same model"
    )
