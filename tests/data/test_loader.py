"""DataLoader: batching, device conversion, owned shuffling, exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xcnn import backends
from xcnn.backends import _random
from xcnn.data import ArrayDataset, DataLoader
from xcnn.data.transforms import RandomHorizontalFlip


def toy(n: int = 10, channels: int = 1, size: int = 3) -> ArrayDataset:
    """Image i is filled with pixel value 25*i % 256 + position, label i % 3."""
    base = (np.arange(n, dtype=np.int64) * 25)[:, None, None, None]
    offsets = np.arange(channels * size * size).reshape(1, channels, size, size)
    images = ((base + offsets) % 256).astype(np.uint8)
    return ArrayDataset(images, np.arange(n) % 3, ["a", "b", "c"], name="toy")


def index_of(ds: ArrayDataset, x_host: np.ndarray) -> list[int]:
    """Recover which dataset images a batch holds (each image is distinct)."""
    flat = ds.images.reshape(len(ds), -1)
    keys = np.rint(x_host.reshape(x_host.shape[0], -1) * 255).astype(np.uint8)
    return [int(np.flatnonzero((flat == k).all(axis=1))[0]) for k in keys]


def epoch(loader: DataLoader, backend) -> list[int]:
    return [i for x, _ in loader for i in index_of(loader.dataset, backend.to_numpy(x))]


def test_batches_dtype_namespace_and_values(backend):
    ds = toy()
    loader = DataLoader(ds, batch_size=4)
    batches = list(loader)
    assert len(loader) == 3 and [b[0].shape[0] for b in batches] == [4, 4, 2]
    for k, (x, y) in enumerate(batches):
        assert backends.namespace_name(x) == backend.name == backends.namespace_name(y)
        assert x.dtype == backend.xp.float32 and y.dtype == backend.xp.int64
        expected = ds.images[4 * k : 4 * k + 4].astype(np.float32) / np.float32(255)
        np.testing.assert_array_equal(backend.to_numpy(x), expected)
        np.testing.assert_array_equal(backend.to_numpy(y), ds.labels[4 * k : 4 * k + 4])
        host = backend.to_numpy(x)
        assert host.min() >= 0.0 and host.max() <= 1.0


def test_drop_last_and_len():
    ds = toy(10)
    assert len(DataLoader(ds, 4, drop_last=True)) == 2
    assert [x.shape[0] for x, _ in DataLoader(ds, 4, drop_last=True)] == [4, 4]
    assert len(DataLoader(ds, 5)) == 2 and len(DataLoader(ds, 11)) == 1
    assert (
        len(DataLoader(ds, 11, drop_last=True)) == 0
        and list(DataLoader(ds, 11, drop_last=True)) == []
    )


def test_backend_is_the_one_active_at_iteration_time():
    with backends.use("numpy"):
        loader = DataLoader(toy(), batch_size=5)
    with backends.use("array_api_strict"):
        x, y = next(iter(loader))
    assert backends.namespace_name(x) == "array_api_strict" == backends.namespace_name(y)


def test_labels_are_copies_not_views():
    ds = toy()
    _, y = next(iter(DataLoader(ds, 4)))
    y[0] = 99
    assert ds.labels[0] == 0


def test_shuffle_is_reproducible_and_changes_each_epoch(backend):
    ds = toy(10)
    state = np.random.get_state()
    a, b = DataLoader(ds, 3, shuffle=True, seed=7), DataLoader(ds, 3, shuffle=True, seed=7)
    epochs_a = [epoch(a, backend) for _ in range(3)]
    epochs_b = [epoch(b, backend) for _ in range(3)]
    assert epochs_a == epochs_b
    assert all(sorted(e) == list(range(10)) for e in epochs_a)
    assert epochs_a[0] != epochs_a[1] != epochs_a[2]
    assert epochs_a[0] != list(range(10))
    assert epoch(DataLoader(ds, 3, shuffle=True, seed=8), backend) != epochs_a[0]
    assert a.epoch == 3
    after = np.random.get_state()
    assert state[0] == after[0] and np.array_equal(state[1], after[1])  # global RNG untouched


def test_seed_none_follows_manual_seed(monkeypatch):
    monkeypatch.setattr(_random, "_default", _random.default_generator())  # restored afterwards
    numpy = backends.get("numpy")
    backends.manual_seed(3)
    first = epoch(DataLoader(toy(), 4, shuffle=True), numpy)
    backends.manual_seed(3)
    assert epoch(DataLoader(toy(), 4, shuffle=True), numpy) == first


def batches_as_host(loader, backend, limit=None):
    out = []
    for x, y in loader:
        out.append((backend.to_numpy(x), backend.to_numpy(y)))
        if limit is not None and len(out) == limit:
            break
    return out


def assert_same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_state_dict_at_epoch_boundary_resumes_exactly(backend):
    ds = toy(11)
    a = DataLoader(ds, 3, shuffle=True, seed=1, transform=RandomHorizontalFlip(rng=5))
    for _ in range(2):
        batches_as_host(a, backend)
    state = json.loads(json.dumps(a.state_dict()))  # plain, serialisable values
    assert state["epoch"] == 2 and state["position"] == 0
    expected = batches_as_host(a, backend) + batches_as_host(a, backend)
    b = DataLoader(ds, 3, shuffle=True, seed=99, transform=RandomHorizontalFlip(rng=6))
    b.load_state_dict(state)
    assert_same(batches_as_host(b, backend) + batches_as_host(b, backend), expected)
    assert b.epoch == a.epoch == 4


def test_state_dict_mid_epoch_resumes_with_the_next_batch(backend):
    ds = toy(10)
    a = DataLoader(ds, 3, shuffle=True, seed=2)
    batches_as_host(a, backend)
    iterator = iter(a)
    next(iterator), next(iterator)
    state = a.state_dict()
    assert state["epoch"] == 1 and state["position"] == 2
    expected = [(backend.to_numpy(x), backend.to_numpy(y)) for x, y in iterator]
    expected += batches_as_host(a, backend)
    b = DataLoader(ds, 3, shuffle=True, seed=3)
    b.load_state_dict(state)
    assert b.state_dict()["position"] == 2  # saving again before resuming keeps the spot
    resumed = batches_as_host(b, backend)
    assert len(resumed) == 2 and b.epoch == 2
    assert_same(resumed + batches_as_host(b, backend), expected)


def test_last_batch_handed_out_counts_as_epoch_boundary():
    a = DataLoader(toy(6), 3, shuffle=True, seed=4)
    iterator = iter(a)
    next(iterator), next(iterator)
    state = a.state_dict()
    assert state["epoch"] == 1 and state["position"] == 0


def test_abandoned_epoch_then_new_iteration_starts_a_new_epoch():
    numpy = backends.get("numpy")
    a, b = DataLoader(toy(9), 3, shuffle=True, seed=5), DataLoader(toy(9), 3, shuffle=True, seed=5)
    batches_as_host(a, numpy, limit=1)
    full_b = [batches_as_host(b, numpy) for _ in range(2)]
    assert_same(batches_as_host(a, numpy), full_b[1])
    assert a.epoch == 2


def test_load_state_dict_rejects_another_configuration():
    state = DataLoader(toy(10), 3, shuffle=True, seed=0).state_dict()
    with pytest.raises(
        ValueError, match=r"saved for .* = \(10, 3, True, False\).*\(10, 4, True, False\)"
    ):
        DataLoader(toy(10), 4, shuffle=True).load_state_dict(state)


def test_device_resident_path_matches_per_batch_transfers(backend, monkeypatch):
    ds = toy(10)
    plain = DataLoader(ds, 4, shuffle=True, seed=6)
    resident = DataLoader(ds, 4, shuffle=True, seed=6)
    monkeypatch.setattr(resident, "_use_resident", lambda b: True)
    for _ in range(2):
        assert_same(batches_as_host(resident, backend), batches_as_host(plain, backend))
    assert resident._resident is not None and resident._resident[0] == backend.name
    x, y = next(iter(resident))
    assert backends.namespace_name(x) == backend.name and y.dtype == backend.xp.int64
    sequential = DataLoader(ds, 4)
    monkeypatch.setattr(sequential, "_use_resident", lambda b: True)
    assert_same(batches_as_host(sequential, backend), batches_as_host(DataLoader(ds, 4), backend))


def test_resident_path_is_only_chosen_for_cupy():
    loader = DataLoader(toy(), 4)
    assert loader._use_resident(backends.get("numpy")) is False
    assert loader._use_resident(backends.get("array_api_strict")) is False


def test_float_images_pass_through_as_float32(backend):
    images = np.linspace(-2, 2, 2 * 1 * 2 * 2).reshape(2, 1, 2, 2)
    x, _ = next(iter(DataLoader(ArrayDataset(images, np.array([0, 1]), ["a", "b"]), 2)))
    assert x.dtype == backend.xp.float32
    np.testing.assert_allclose(backend.to_numpy(x), images.astype(np.float32))


def test_transform_runs_on_the_backend_batch(backend):
    seen = []

    def record(x):
        seen.append(backends.namespace_name(x))
        return x * 2.0

    x, _ = next(iter(DataLoader(toy(4), 4, transform=record)))
    assert seen == [backend.name]
    np.testing.assert_allclose(backend.to_numpy(x), toy(4).images / 255.0 * 2, rtol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        DataLoader(toy(), 0)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        DataLoader(toy(), 2.5)

    class Bad:
        images = np.zeros((3, 28, 28), np.uint8)
        labels = np.zeros(3, np.int64)

    with pytest.raises(ValueError, match=r"\(N, C, H, W\).*\(3, 28, 28\)"):
        DataLoader(Bad(), 2)
