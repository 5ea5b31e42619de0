"""Checkpoints: complete round trips, atomic writes, clear refusals, no pickle, any backend."""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

import xcnn
import xcnn._atomic
import xcnn.io
from xcnn import backends, data, nn, optim

REPO = Path(__file__).resolve().parents[1]


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
    # What load would refuse is refused when saving.
    for kwargs in ({"epoch": 1.5}, {"epoch": True}, {"step": -1}):
        (name,) = kwargs
        with pytest.raises(ValueError, match=rf"{name} must be None or an integer >= 0"):
            xcnn.save(tmp_path / "c.safetensors", WithBuffers(), **kwargs)
    with pytest.raises(TypeError, match="history must be an xcnn History or a dict, got list"):
        xcnn.save(tmp_path / "c.safetensors", WithBuffers(), history=[1.0])
    assert os.listdir(tmp_path) == []


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


# -- integrity -------------------------------------------------------------------------


def _parts(path):
    with safe_open(path, framework="numpy") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata())


def test_digests_cover_metadata_and_tensors(tmp_path):
    path = xcnn.save(tmp_path / "c.safetensors", WithBuffers(), note="x")
    tensors, metadata = _parts(path)
    assert sorted(metadata) == ["xcnn", "xcnn_sha256"]
    assert len(json.loads(metadata["xcnn"])["tensors_sha256"]) == 64
    # A weight changed after saving, the digests left as they were: refused.
    tensors["model.fc1.weight"] = tensors["model.fc1.weight"] + 1
    edited = tmp_path / "edited.safetensors"
    save_file(tensors, edited, metadata=metadata)
    with pytest.raises(ValueError, match=r"edited\.safetensors' is corrupt: its tensors"):
        xcnn.load(edited, WithBuffers())
    # The metadata changed: refused before its content is looked at.
    tensors, metadata = _parts(path)
    metadata["xcnn"] = metadata["xcnn"].replace('"note": "x"', '"note": "y"')
    save_file(tensors, edited, metadata=metadata)
    with pytest.raises(ValueError, match=r"edited\.safetensors' is corrupt: its xcnn metadata"):
        xcnn.load(edited, WithBuffers())


def test_a_checkpoint_without_checksums_is_refused_as_incompatible(tmp_path):
    """A format-1 file (xcnn metadata, no digests) is not silently trusted."""
    tensors, metadata = _parts(xcnn.save(tmp_path / "c.safetensors", WithBuffers()))
    blob = json.loads(metadata["xcnn"])
    del blob["tensors_sha256"]
    blob["format"] = 1
    old = tmp_path / "old.safetensors"
    save_file(tensors, old, metadata={"xcnn": json.dumps(blob)})
    model = WithBuffers(seed=4)
    before = model.state_dict()
    with pytest.raises(
        ValueError, match=r"old\.safetensors' carries no xcnn checksum.*incompatible"
    ):
        xcnn.load(old, model)
    assert_same_arrays(model.state_dict(), before)


# -- all or nothing --------------------------------------------------------------------


def _training_state(seed: int, batch_size: int = 4):
    model = WithBuffers(seed=seed)
    opt = optim.Adam(model.parameters(), lr=0.01 * (seed + 1))
    sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    images = np.random.default_rng(seed).integers(0, 255, (10, 1, 2, 2), dtype=np.uint8)
    loader = data.DataLoader(
        data.ArrayDataset(images, np.arange(10) % 3, ["a", "b", "c"]),
        batch_size,
        shuffle=True,
        seed=seed,
    )
    train_steps(model, opt, steps=2, seed=seed)
    sched.step()
    next(iter(loader))
    return model, opt, sched, loader


def _everything(model, opt, sched, loader):
    return (
        model.state_dict(),
        json.dumps(host_state(opt), default=lambda a: a.tolist(), sort_keys=True),
        [group["lr"] for group in opt.param_groups],
        sched.state_dict(),
        loader.state_dict(),
        model.drop.generator.state_dict(),
        backends.default_generator().bit_generator.state,
    )


def _assert_same(before, after):
    assert_same_arrays(after[0], before[0])
    assert after[1:] == before[1:]


def test_a_piece_refused_while_applying_restores_the_pieces_applied_before(tmp_path):
    """The loader checks its own configuration when loaded, after the optimizer and scheduler."""
    path = xcnn.save(
        tmp_path / "c.safetensors", *_training_state(0)[:3], loader=_training_state(0)[3]
    )
    model, opt, sched, loader = _training_state(1, batch_size=5)
    before = _everything(model, opt, sched, loader)
    with pytest.raises(ValueError, match=r"c\.safetensors': cannot restore the data loader state"):
        xcnn.load(path, model, opt, sched, loader=loader)
    _assert_same(before, _everything(model, opt, sched, loader))
    # The same file loads into a loader of the saved configuration.
    model, opt, sched, loader = _training_state(1)
    xcnn.load(path, model, opt, sched, loader=loader)
    assert opt.param_groups[0]["lr"] == 0.005


def test_an_unexpected_failure_while_applying_restores_everything_and_propagates(
    tmp_path, monkeypatch
):
    """E.g. device memory running out while the module generators are restored."""
    path = xcnn.save(
        tmp_path / "c.safetensors", *_training_state(0)[:3], loader=_training_state(0)[3]
    )
    model, opt, sched, loader = _training_state(1)
    before = _everything(model, opt, sched, loader)
    generator_load = type(model.drop.generator).load_state_dict
    calls = []

    def fail_once(self, state):
        calls.append(state)
        if len(calls) == 1:
            raise MemoryError("out of device memory")
        generator_load(self, state)

    monkeypatch.setattr(type(model.drop.generator), "load_state_dict", fail_once)
    with pytest.raises(MemoryError, match="out of device memory"):
        xcnn.load(path, model, opt, sched, loader=loader)
    _assert_same(before, _everything(model, opt, sched, loader))


# -- temporary files of killed saves ---------------------------------------------------

KILLED_SAVE = """
import os, signal, sys
import xcnn, xcnn.io
from xcnn import nn

def write_half_then_die(tensors, filename, metadata=None):
    with open(filename, "wb") as stream:
        stream.write(b"half a checkpoint")
        stream.flush()
    os.kill(os.getpid(), signal.SIGKILL)

xcnn.io.save_file = write_half_then_die
xcnn.save(sys.argv[1], nn.Linear(2, 2))
"""

STALLED_SAVE = """
import sys
import xcnn, xcnn.io
from safetensors.numpy import save_file
from xcnn import nn

def write_after_go(tensors, filename, metadata=None):
    print("writing", flush=True)
    sys.stdin.readline()
    save_file(tensors, filename, metadata=metadata)

xcnn.io.save_file = write_after_go
xcnn.save(sys.argv[1], nn.Linear(2, 2), who="stalled")
"""


def _python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, **kwargs)


def _temps(folder, name="c.safetensors"):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}."))


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="no SIGKILL on this platform")
def test_save_removes_temp_files_left_by_killed_saves(tmp_path):
    path = tmp_path / "c.safetensors"
    seen = []
    for _ in range(3):
        killed = _python(KILLED_SAVE, str(path))
        assert killed.wait(timeout=60) == -signal.SIGKILL
        # Each killed save leaves its temp file, and removed the one before: no pile-up.
        (left,) = _temps(tmp_path)
        assert re.fullmatch(r"\.c\.safetensors\.[0-9a-f]{12}\.tmp", left) and left not in seen
        seen.append(left)
    assert not path.exists()
    # Files that only look alike are never touched.
    decoys = [
        ".c.safetensors.notes.tmp",
        ".c.safetensors.0123456789ab.tmp.bak",
        ".c.safetensors.0123456789abc.tmp",
        "c.safetensors.0123456789ab.tmp",
        ".other.safetensors.0123456789ab.tmp",
    ]
    for name in decoys:
        (tmp_path / name).write_bytes(b"keep")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".c.safetensors.0123456789ab.tmp").write_bytes(b"keep")

    xcnn.save(path, WithBuffers(), epoch=3)
    assert sorted(os.listdir(tmp_path)) == sorted(["c.safetensors", "sub", *decoys])
    assert os.listdir(tmp_path / "sub") == [".c.safetensors.0123456789ab.tmp"]
    assert xcnn.load(path, WithBuffers())["epoch"] == 3


@pytest.mark.skipif(xcnn._atomic.fcntl is None, reason="no directory locks on this platform")
def test_a_save_in_progress_keeps_its_temp_file(tmp_path):
    """A second process saving the same file at the same time must not lose its temp file."""
    path = tmp_path / "c.safetensors"
    stalled = _python(
        STALLED_SAVE, str(path), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert stalled.stdout.readline() == "writing\n"
        (theirs,) = _temps(tmp_path)
        xcnn.save(path, WithBuffers(), who="here")
        assert _temps(tmp_path) == [theirs]
        assert xcnn.load(path, WithBuffers())["who"] == "here"
        stalled.stdin.write("go\n")
        stalled.stdin.close()
        assert stalled.wait(timeout=60) == 0
    finally:
        if stalled.poll() is None:
            stalled.kill()
            stalled.wait()
    assert _temps(tmp_path) == []
    assert xcnn.load(path, nn.Linear(2, 2))["who"] == "stalled"


def test_written_files_get_the_usual_permissions(tmp_path):
    """Atomic writes honour the umask like open(), not mkstemp's private 0o600."""
    umask = os.umask(0o022)
    try:
        xcnn.save(tmp_path / "model.ckpt", nn.Sequential(nn.Linear(2, 2)))
        hist = xcnn.History()
        hist.save_json(tmp_path / "history.json")
    finally:
        os.umask(umask)
    for name in ("model.ckpt", "history.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_read_metadata_without_a_model_equals_what_load_returns(tmp_path):
    model = nn.Sequential(nn.Linear(3, 2, rng=0))
    path = xcnn.save(tmp_path / "m.ckpt", model, epoch=4, classes=["a", "b"], input_shape=[3])
    meta = xcnn.io.read_metadata(path)
    assert meta == xcnn.load(path, nn.Sequential(nn.Linear(3, 2)))
    assert meta["classes"] == ["a", "b"] and meta["epoch"] == 4
    with pytest.raises(FileNotFoundError, match="does not exist"):
        xcnn.io.read_metadata(tmp_path / "none.ckpt")
    with safe_open(path, framework="numpy") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        header = handle.metadata()
    header["xcnn"] = header["xcnn"].replace('"a"', '"z"')  # the digest no longer matches
    save_file(tensors, tmp_path / "edited.ckpt", metadata=header)
    with pytest.raises(ValueError, match="does not match its SHA-256 checksum"):
        xcnn.io.read_metadata(tmp_path / "edited.ckpt")
