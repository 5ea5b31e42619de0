"""Checkpoints: complete round trips, atomic writes, clear refusals, no pickle, any backend."""

from __future__ import annotations

import json
import os
import pickle
import re

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

import xcnn
import xcnn.io
from xcnn import backends, nn, optim


class WithBuffers(nn.Module):
    """Linear -> Dropout -> Linear with a float and an integer buffer (like batch norm's)."""

    def __init__(self, hidden: int = 5, seed: int = 0):
        super().__init__()
        self.fc1 = nn.Linear(4, hidden, rng=seed)
        self.drop = nn.Dropout(0.5, rng=seed + 1)
        self.fc2 = nn.Linear(hidden, 3, rng=seed + 2)
        b = backends.current()
        self.register_buffer("scale", b.asarray(np.linspace(0.5, 1.5, 3), dtype="float32"))
        self.register_buffer("count", b.xp.asarray(seed, dtype=b.xp.int64))

    def forward(self, x):
        return self.fc2(self.drop(self.fc1(x))) * self.scale

    def backward(self, gy):
        return self.fc1.backward(self.drop.backward(self.fc2.backward(gy * self.scale)))


def train_steps(model, optimizer, steps=3, seed=0):
    """A few real optimizer steps so that the optimizer has state."""
    b = backends.current()
    host = np.random.default_rng(seed)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(steps):
        x = b.asarray(host.normal(size=(6, 4)), dtype="float32")
        y = b.asarray(host.integers(0, 3, 6), dtype="int64")
        optimizer.zero_grad()
        loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        optimizer.step()


def host_state(optimizer):
    """The optimizer state dict with every array on the host, for comparisons."""
    sd = optimizer.state_dict()
    return {i: {k: np.asarray(v) for k, v in entries.items()} for i, entries in sd["state"].items()}


def assert_same_arrays(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key, strict=True)


def test_round_trip_restores_everything(backend, tmp_path):
    xcnn.manual_seed(3)
    model = WithBuffers(seed=0)
    opt = optim.Adam(model.parameters(), lr=0.01)
    sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    train_steps(model, opt)
    sched.step()
    path = tmp_path / "run.safetensors"
    default_state = backends.default_generator().bit_generator.state
    dropout_state = model.drop.generator.state_dict()
    returned = xcnn.save(path, model, opt, sched, epoch=4, step=12, lr=0.01, name="tiny")
    assert returned == path and path.is_file()

    # A different model/optimizer state and moved RNGs, all to be overwritten.
    other = WithBuffers(seed=10)
    other_opt = optim.Adam(other.parameters(), lr=0.5)
    other_sched = optim.lr_scheduler.StepLR(other_opt, step_size=3, gamma=0.9)
    train_steps(other, other_opt, steps=1, seed=9)
    backends.default_generator().random(5)
    meta = xcnn.load(path, other, other_opt, other_sched)

    assert meta == {
        "lr": 0.01,
        "name": "tiny",
        "epoch": 4,
        "step": 12,
        "history": None,
        "xcnn_version": xcnn.__version__,
    }
    assert_same_arrays(other.state_dict(), model.state_dict())
    for param in other.parameters():
        assert backends.namespace_name(param.data) == backend.name
    assert backends.namespace_name(other.count) == backend.name
    saved, loaded = host_state(opt), host_state(other_opt)
    assert sorted(saved) == sorted(loaded) and len(saved) == 4
    for index in saved:
        assert loaded[index]["step"] == saved[index]["step"] == 3
        for name in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(loaded[index][name], saved[index][name])
    assert other_opt.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == 0.005
    assert other_sched.state_dict() == sched.state_dict()
    assert other.drop.generator.state_dict() == dropout_state
    assert backends.default_generator().bit_generator.state == default_state


def test_file_layout_is_safetensors_with_json_metadata(tmp_path):
    model = WithBuffers()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_steps(model, opt, steps=1)
    path = xcnn.save(tmp_path / "c.safetensors", model, opt, note=[1, 2])
    with safe_open(path, framework="numpy") as f:
        keys = set(f.keys())
        blob = json.loads(f.metadata()["xcnn"])
    assert keys == {f"model.{k}" for k in model.state_dict()} | {
        f"optim.state.{i}.momentum_buffer" for i in range(4)
    }
    assert blob["config"] == {"note": [1, 2]}
    assert blob["xcnn_version"] == xcnn.__version__
    assert blob["optimizer"]["class"] == "SGD"
    assert blob["optimizer"]["param_groups"][0]["momentum"] == 0.9
    assert blob["rng"]["modules"].keys() == {"drop"}
    assert blob["rng"]["default"]["bit_generator"] == "PCG64"
    assert blob["epoch"] is None and blob["scheduler"] is None and blob["loader"] is None


def test_non_contiguous_arrays_are_saved_by_value(tmp_path):
    model = nn.Linear(3, 4)
    transposed = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(4, 3))
    model.weight.data = transposed
    path = xcnn.save(tmp_path / "c.safetensors", model)
    fresh = nn.Linear(3, 4)
    xcnn.load(path, fresh)
    np.testing.assert_array_equal(fresh.weight.data, transposed)


def test_checkpoint_from_array_api_strict_loads_on_numpy(tmp_path):
    path = tmp_path / "strict.safetensors"
    with backends.use("array_api_strict"):
        model = WithBuffers(seed=1)
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        train_steps(model, opt)
        xcnn.save(path, model, opt)
        expected_model, expected_opt = model.state_dict(), host_state(opt)
    with backends.use("numpy"):
        fresh = WithBuffers(seed=7)
        fresh_opt = optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
        xcnn.load(path, fresh, fresh_opt)
        assert_same_arrays(fresh.state_dict(), expected_model)
        assert isinstance(fresh.fc1.weight.data, np.ndarray)
        for index, entries in host_state(fresh_opt).items():
            np.testing.assert_array_equal(
                entries["momentum_buffer"], expected_opt[index]["momentum_buffer"]
            )
        # The restored state is usable: one more step runs on NumPy.
        train_steps(fresh, fresh_opt, steps=1)
        state = fresh_opt.state[fresh.fc1.weight]["momentum_buffer"]
        assert isinstance(state, np.ndarray)


def test_failed_write_leaves_old_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "c.safetensors"
    model = WithBuffers(seed=0)
    xcnn.save(path, model, epoch=1)
    before = path.read_bytes()

    def broken_save_file(tensors, filename, metadata=None):
        with open(filename, "wb") as stream:
            stream.write(b"\x00" * 100)  # a partial write ...
        raise OSError("No space left on device")  # ... then the disk fills up

    monkeypatch.setattr(xcnn.io, "save_file", broken_save_file)
    changed = WithBuffers(seed=5)
    with pytest.raises(OSError, match="No space left"):
        xcnn.save(path, changed, epoch=2)
    assert sorted(os.listdir(tmp_path)) == ["c.safetensors"]
    assert path.read_bytes() == before
    restored = WithBuffers(seed=9)
    assert xcnn.load(path, restored)["epoch"] == 1
    assert_same_arrays(restored.state_dict(), model.state_dict())

    with pytest.raises(OSError, match="No space left"):
        xcnn.save(tmp_path / "new.safetensors", changed)
    assert sorted(os.listdir(tmp_path)) == ["c.safetensors"]


def test_failed_rename_removes_temp_file(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise PermissionError(f"cannot replace {dst}")

    monkeypatch.setattr(xcnn.io.os, "replace", refuse)
    with pytest.raises(PermissionError):
        xcnn.save(tmp_path / "c.safetensors", WithBuffers())
    assert os.listdir(tmp_path) == []


def test_metadata_that_is_not_json_is_refused_before_writing(tmp_path):
    with pytest.raises(TypeError, match=r"JSON-serialisable.*object"):
        xcnn.save(tmp_path / "c.safetensors", WithBuffers(), thing=object())
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="reserved"):
        xcnn.save(tmp_path / "c.safetensors", WithBuffers(), xcnn_version="1")


def test_wrong_architecture_lists_keys_shapes_and_file(tmp_path):
    path = tmp_path / "small.safetensors"
    xcnn.save(path, WithBuffers(hidden=5))
    with pytest.raises(ValueError) as info:
        xcnn.load(path, WithBuffers(hidden=8))
    message = str(info.value)
    assert str(path) in message
    assert "fc1.weight: model (8, 4), checkpoint (5, 4)" in message
    assert "fc2.weight: model (3, 8), checkpoint (3, 5)" in message

    other = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 3))
    with pytest.raises(ValueError) as info:
        xcnn.load(path, other)
    message = str(info.value)
    assert str(path) in message and "another architecture" in message
    assert "'0.weight'" in message and "'fc1.weight'" in message and "'count'" in message


def test_weights_are_untouched_when_the_checkpoint_is_refused(tmp_path):
    path = tmp_path / "c.safetensors"
    xcnn.save(path, WithBuffers(hidden=5))
    model = WithBuffers(hidden=8)
    before = model.state_dict()
    with pytest.raises(ValueError):
        xcnn.load(path, model)
    assert_same_arrays(model.state_dict(), before)


def test_missing_dropout_generator_is_an_architecture_mismatch(tmp_path):
    class Identity(nn.Module):
        def forward(self, x):
            return x

    class NoDropout(WithBuffers):
        def __init__(self):
            super().__init__()
            self.drop = Identity()

    path = xcnn.save(tmp_path / "c.safetensors", WithBuffers())
    with pytest.raises(ValueError, match=r"c\.safetensors.*random generator.*\['drop'\]"):
        xcnn.load(path, NoDropout())


def test_paths_that_are_not_regular_files_are_refused(tmp_path):
    with pytest.raises(IsADirectoryError, match=re.escape(str(tmp_path)) + ".*is a directory"):
        xcnn.load(tmp_path, WithBuffers())
    with pytest.raises(FileNotFoundError, match=r"nothing-here\.safetensors.*does not exist"):
        xcnn.load(tmp_path / "nothing-here.safetensors", WithBuffers())
    with pytest.raises(IsADirectoryError, match="is a directory"):
        xcnn.save(tmp_path, WithBuffers())
    # Missing parent directories are created, as for a first run's checkpoint folder.
    nested = xcnn.save(tmp_path / "runs" / "a" / "c.safetensors", WithBuffers())
    assert nested.is_file() and xcnn.load(nested, WithBuffers())["epoch"] is None


def test_corrupt_and_foreign_files_are_refused_naming_them(tmp_path):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(ValueError, match=r"garbage\.ckpt.*not a readable safetensors"):
        xcnn.load(garbage, WithBuffers())
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": np.zeros((2, 2), np.float32)}, foreign)
    with pytest.raises(ValueError, match=r"foreign\.safetensors.*without xcnn metadata"):
        xcnn.load(foreign, WithBuffers())
    pickled = tmp_path / "pickled.ckpt"
    pickled.write_bytes(pickle.dumps({"weight": np.zeros(2)}))
    with pytest.raises(ValueError, match=r"pickled\.ckpt"):
        xcnn.load(pickled, WithBuffers())


def test_loading_never_unpickles(tmp_path, monkeypatch):
    model = WithBuffers()
    opt = optim.Adam(model.parameters())
    train_steps(model, opt, steps=1)
    path = xcnn.save(tmp_path / "c.safetensors", model, opt, history={"epochs": [1]})

    def forbidden(*args, **kwargs):
        raise AssertionError("xcnn.load must not unpickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(np, "load", forbidden)
    fresh = WithBuffers(seed=4)
    meta = xcnn.load(path, fresh, optim.Adam(fresh.parameters()))
    assert meta["history"] == {"epochs": [1]}
    assert_same_arrays(fresh.state_dict(), model.state_dict())


def test_missing_or_mismatched_optimizer_state_is_refused(tmp_path):
    model = WithBuffers()
    bare = xcnn.save(tmp_path / "bare.safetensors", model)
    with pytest.raises(ValueError, match=r"bare\.safetensors' holds no optimizer state"):
        xcnn.load(bare, model, optim.SGD(model.parameters(), lr=0.1))
    opt = optim.Adam(model.parameters())
    train_steps(model, opt, steps=1)
    adam = xcnn.save(tmp_path / "adam.safetensors", model, opt)
    with pytest.raises(ValueError, match=r"adam\.safetensors' holds Adam.*into SGD"):
        xcnn.load(adam, model, optim.SGD(model.parameters(), lr=0.1))


def test_restore_rng_false_leaves_the_default_generator(tmp_path):
    path = xcnn.save(tmp_path / "c.safetensors", WithBuffers())
    backends.default_generator().random(3)
    state = backends.default_generator().bit_generator.state
    xcnn.load(path, WithBuffers(), restore_rng=False)
    assert backends.default_generator().bit_generator.state == state
