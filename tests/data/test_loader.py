"""DataLoader: batching, device conversion, owned shuffling, exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xcnn import backends
from xcnn.backends import _random
from xcnn.data import ArrayDataset, DataLoader
from xcnn.data.transforms import Compose, MixUp, Normalize, RandomHorizontalFlip


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


def test_batch_transform_runs_last_on_images_and_labels_and_resumes(backend):
    ds = toy(11, channels=3, size=4)

    def make(seed):
        return DataLoader(
            ds,
            4,
            shuffle=True,
            seed=seed,
            transform=Compose([RandomHorizontalFlip(rng=seed), Normalize(0.5, 0.5)]),
            batch_transform=MixUp(alpha=1.0, num_classes=3, rng=seed + 1),
        )

    a = make(1)
    x, y = next(iter(a))
    assert x.dtype == backend.xp.float32 and y.dtype == backend.xp.float32 and y.shape == (4, 3)
    assert backends.namespace_name(y) == backend.name
    # MixUp saw the normalised batch: lam blends of values in [-1, 1], labels summing to one.
    assert float(backend.xp.min(x)) >= -1.0 and float(backend.xp.max(x)) <= 1.0
    np.testing.assert_allclose(backend.to_numpy(backend.xp.sum(y, axis=1)), 1.0, rtol=1e-6)
    batches_as_host(a, backend)
    state = json.loads(json.dumps(a.state_dict()))
    assert set(state["batch_transform"]) == {"generator"} and set(state["transform"]) == {"0"}
    expected = batches_as_host(a, backend)
    b = make(40)
    b.load_state_dict(state)
    assert_same(batches_as_host(b, backend), expected)
    # Without the batch transform's state the labels would differ: the equality is no accident.
    c = make(40)
    state.pop("batch_transform")
    c.load_state_dict(state)
    assert not np.array_equal(batches_as_host(c, backend)[0][1], expected[0][1])


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


# -- sharding (DistributedSampler semantics), proved without MPI --------------------------


def shard_epochs(ds, replicas, epochs, backend, **kwargs):
    """Each rank's batches (as index lists) for ``epochs`` epochs: ``[rank][epoch][batch]``."""
    loaders = [DataLoader(ds, num_replicas=replicas, rank=r, **kwargs) for r in range(replicas)]
    return [
        [[index_of(ds, backend.to_numpy(x)) for x, _ in loader] for _ in range(epochs)]
        for loader in loaders
    ]


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize(("n", "replicas"), [(10, 2), (11, 3), (12, 4), (3, 4), (1, 3)])
def test_shards_follow_torch_distributed_sampler(n, replicas, drop_last, shuffle):
    from torch.utils.data import DistributedSampler

    numpy = backends.get("numpy")
    ds = toy(n)
    single = DataLoader(ds, n, shuffle=shuffle, seed=3)
    order = [i for x, _ in single for i in index_of(ds, numpy.to_numpy(x))]  # epoch 0's order
    for rank in range(replicas):
        sampler = DistributedSampler(
            order, num_replicas=replicas, rank=rank, shuffle=False, drop_last=drop_last
        )
        expected = [order[i] for i in sampler]
        loader = DataLoader(
            ds, 2, shuffle=shuffle, seed=3, drop_last=drop_last, num_replicas=replicas, rank=rank
        )
        got = [i for x, _ in loader for i in index_of(ds, numpy.to_numpy(x))]
        full = len(expected) - len(expected) % 2 if drop_last else len(expected)
        assert got == expected[:full], (rank, got, expected)
        assert len(loader) == (len(expected) // 2 if drop_last else -(-len(expected) // 2))


@pytest.mark.parametrize("drop_last", [False, True])
def test_n_ranks_at_batch_b_see_one_process_batches_at_n_times_b(backend, drop_last):
    ds, replicas, b = toy(46), 3, 4  # 46 = 3 * 15 + 1: one padded (or dropped) sample
    kwargs = {"shuffle": True, "seed": 11, "drop_last": drop_last}
    ranks = shard_epochs(ds, replicas, 3, backend, batch_size=b, **kwargs)
    one = DataLoader(ds, replicas * b, **kwargs)
    for e in range(3):
        single = [index_of(ds, backend.to_numpy(x)) for x, _ in one]
        assert all(len(ranks[r][e]) == len(single) for r in range(replicas))
        for k, batch in enumerate(single):
            together = sorted(i for r in range(replicas) for i in ranks[r][e][k])
            if k < len(single) - 1 or drop_last:
                assert together == sorted(batch)
            else:  # the last global batch also holds the padding: the epoch's first samples
                padding = [single[0][0], single[0][1]]
                assert together == sorted(batch + padding)
        # Shards of one epoch are disjoint apart from the padding, and cover it.
        seen = [i for r in range(replicas) for batch in ranks[r][e] for i in batch]
        # drop_last cuts the sample left over by the split, then each rank's partial batch.
        assert len(seen) == (36 if drop_last else 48)
        assert len(set(seen)) == (36 if drop_last else 46)
    assert ranks[0][0] != ranks[0][1]  # a new permutation every epoch


def test_uneven_shards_see_every_sample_once():
    numpy = backends.get("numpy")
    ds = toy(11)
    loaders = [DataLoader(ds, 2, num_replicas=3, rank=r, even_shards=False) for r in range(3)]
    assert [len(loader) for loader in loaders] == [2, 2, 2]
    seen = [[i for x, _ in loader for i in index_of(ds, numpy.to_numpy(x))] for loader in loaders]
    assert seen == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    dropped = DataLoader(ds, 2, drop_last=True, num_replicas=3, rank=2, even_shards=False)
    assert len(dropped) == 1 and [y.shape[0] for _, y in dropped] == [2]


def test_world_of_one_shard_equals_the_unsharded_loader(backend):
    ds = toy(10)
    plain = DataLoader(ds, 3, shuffle=True, seed=5)
    sharded = DataLoader(ds, 3, shuffle=True, seed=5, num_replicas=1, rank=0)
    for _ in range(2):
        assert_same(batches_as_host(sharded, backend), batches_as_host(plain, backend))


def test_resident_path_shards_like_per_batch_transfers(backend, monkeypatch):
    ds = toy(11)
    for shuffle in (True, False):
        plain = DataLoader(ds, 2, shuffle=shuffle, seed=6, num_replicas=2, rank=1)
        resident = DataLoader(ds, 2, shuffle=shuffle, seed=6, num_replicas=2, rank=1)
        monkeypatch.setattr(resident, "_use_resident", lambda b: True)
        for _ in range(2):
            assert_same(batches_as_host(resident, backend), batches_as_host(plain, backend))


def test_any_rank_resumes_mid_epoch_from_rank_0s_state(backend):
    ds = toy(13)

    def shard(rank, seed=8, flip=4):
        return DataLoader(
            ds, 2, shuffle=True, seed=seed, transform=RandomHorizontalFlip(rng=flip),
            num_replicas=2, rank=rank,
        )  # fmt: skip

    rank0, rank1 = shard(0), shard(1)
    running = []
    for loader in (rank0, rank1):
        batches_as_host(loader, backend)
        iterator = iter(loader)
        next(iterator), next(iterator)  # a checkpoint during epoch 2
        running.append(iterator)
    state = json.loads(json.dumps(rank0.state_dict()))
    assert state == rank1.state_dict()  # every rank holds the same state
    assert state["position"] == 2 and state["num_replicas"] == 2
    expected = [(backend.to_numpy(x), backend.to_numpy(y)) for x, y in running[1]]
    expected += batches_as_host(rank1, backend)
    resumed = shard(1, seed=0, flip=0)
    resumed.load_state_dict(state)
    assert_same(batches_as_host(resumed, backend) + batches_as_host(resumed, backend), expected)


def test_epoch_boundary_state_resumes_on_another_number_of_ranks(backend):
    ds = toy(12)
    one = DataLoader(ds, 2, shuffle=True, seed=9)
    batches_as_host(one, backend)
    state = one.state_dict()
    assert "num_replicas" not in state  # an epoch boundary does not depend on the world
    order = [i for x, _ in batches_as_host(one, backend) for i in index_of(ds, x)]
    for r in range(2):
        shard = DataLoader(ds, 2, shuffle=True, seed=0, num_replicas=2, rank=r)
        shard.load_state_dict(state)
        seen = [i for x, _ in batches_as_host(shard, backend) for i in index_of(ds, x)]
        assert seen == order[r::2]


def test_mid_epoch_state_on_another_number_of_ranks_is_refused():
    numpy = backends.get("numpy")
    a = DataLoader(toy(12), 2, shuffle=True, seed=1, num_replicas=2, rank=0)
    batches_as_host(a, numpy, limit=1)
    state = a.state_dict()
    b = DataLoader(toy(12), 2, shuffle=True, seed=1)
    b.load_state_dict(state)
    with pytest.raises(ValueError, match=r"saved at batch 1 .* \(2, True\); this loader has \(1"):
        next(iter(b))
    assert b.state_dict()["position"] == 1  # the refused state is kept
    c = DataLoader(toy(12), 2, shuffle=True, seed=1, num_replicas=2, rank=1)
    c.load_state_dict(state)
    assert len(batches_as_host(c, numpy)) == 2


def test_the_distributed_world_is_read_at_iteration(monkeypatch):
    import xcnn.distributed as dist

    numpy = backends.get("numpy")
    ds = toy(10)
    loader = DataLoader(ds, 2, shuffle=True, seed=123)  # made before the world is joined
    rank0 = DataLoader(ds, 2, shuffle=True, seed=5, num_replicas=2, rank=0)
    rank1 = DataLoader(ds, 2, shuffle=True, seed=5, num_replicas=2, rank=1)
    assert len(loader) == 5
    shared = []

    def broadcast(value, root=0):
        shared.append(value)
        return json.loads(json.dumps({"seed": 5, "rng": rank0._rng.bit_generator.state}))

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "world_size", lambda: 2)
    monkeypatch.setattr(dist, "rank", lambda: 1)
    monkeypatch.setattr(dist, "broadcast_object", broadcast)
    assert len(loader) == 3
    for _ in range(2):  # rank 0's stream is taken once, at the first iteration
        assert_same(batches_as_host(loader, numpy), batches_as_host(rank1, numpy))
    assert len(shared) == 1 and loader.seed == 5
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    assert len(loader) == 5


def test_bad_shard_arguments():
    with pytest.raises(ValueError, match="give num_replicas and rank together"):
        DataLoader(toy(), 2, num_replicas=2)
    with pytest.raises(
        ValueError, match=r"0 <= rank < num_replicas, got num_replicas=2 and rank=2"
    ):
        DataLoader(toy(), 2, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="num_replicas >= 1"):
        DataLoader(toy(), 2, num_replicas=0, rank=0)
    with pytest.raises(TypeError, match="rank must be an int"):
        DataLoader(toy(), 2, num_replicas=2, rank=1.0)
