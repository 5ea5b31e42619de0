"""Batch transforms on every namespace, checked against NumPy written from the definitions."""

from __future__ import annotations

import numpy as np
import pytest

from xcnn import backends
from xcnn.backends import Generator
from xcnn.data.transforms import Compose, Normalize, RandomCrop, RandomHorizontalFlip


def batch(backend, rng, shape=(5, 2, 6, 7)):
    host = rng.random(shape, dtype=np.float32)
    return host, backend.asarray(host)


def test_normalize_math(backend, rng):
    host, x = batch(backend, rng)
    mean, std = [0.25, 0.5], [0.5, 2.0]
    out = Normalize(mean, std)(x)
    assert backends.namespace_name(out) == backend.name and out.dtype == backend.xp.float32
    expected = (host - np.array(mean, np.float32)[None, :, None, None]) / np.array(std, np.float32)[
        None, :, None, None
    ]
    np.testing.assert_allclose(backend.to_numpy(out), expected, rtol=1e-6)
    single = Normalize(0.5, 0.25)(x)
    np.testing.assert_allclose(backend.to_numpy(single), (host - 0.5) / 0.25, rtol=1e-6)


def test_normalize_keeps_float64(backend, rng):
    x = backend.asarray(rng.random((2, 1, 3, 3)))
    assert Normalize([0.1], [0.2])(x).dtype == backend.xp.float64


def test_normalize_errors(backend, rng):
    _, x = batch(backend, rng)
    with pytest.raises(ValueError, match=r"3 channels, got shape \(5, 2, 6, 7\)"):
        Normalize([0.1, 0.2, 0.3], [1.0, 1.0, 1.0])(x)
    with pytest.raises(ValueError, match="std must be positive"):
        Normalize([0.1], [0.0])
    with pytest.raises(ValueError, match="2 means and 1 stds"):
        Normalize([0.1, 0.2], [1.0])


def test_flip_p1_is_an_exact_mirror_and_p0_the_identity(backend, rng):
    host, x = batch(backend, rng)
    np.testing.assert_array_equal(
        backend.to_numpy(RandomHorizontalFlip(p=1.0, rng=0)(x)), host[..., ::-1]
    )
    np.testing.assert_array_equal(backend.to_numpy(RandomHorizontalFlip(p=0.0, rng=0)(x)), host)


def test_flip_follows_its_generator(backend, rng):
    host, x = batch(backend, rng, shape=(64, 1, 3, 4))
    out = backend.to_numpy(RandomHorizontalFlip(p=0.5, rng=11)(x))
    flips = np.random.default_rng(11).random(64) < 0.5
    assert 10 < flips.sum() < 54
    np.testing.assert_array_equal(out[flips], host[flips][..., ::-1])
    np.testing.assert_array_equal(out[~flips], host[~flips])


def crop_offsets(seed: int, n: int, room_h: int, room_w: int):
    g = np.random.default_rng(seed)
    return g.integers(0, room_h + 1, size=n), g.integers(0, room_w + 1, size=n)


def test_crop_without_padding_returns_windows_of_the_original(backend, rng):
    host, x = batch(backend, rng)  # (5, 2, 6, 7)
    out = backend.to_numpy(RandomCrop((4, 5), rng=3)(x))
    assert out.shape == (5, 2, 4, 5)
    oy, ox = crop_offsets(3, 5, 2, 2)
    for n in range(5):
        np.testing.assert_array_equal(out[n], host[n, :, oy[n] : oy[n] + 4, ox[n] : ox[n] + 5])
        # Independently of the offsets: the crop is some window of image n.
        windows = [host[n, :, i : i + 4, j : j + 5] for i in range(3) for j in range(3)]
        assert any(np.array_equal(out[n], w) for w in windows)


def test_crop_with_padding_windows_the_zero_padded_image(backend, rng):
    host, x = batch(backend, rng, shape=(16, 3, 5, 5))
    out = backend.to_numpy(RandomCrop(5, padding=2, rng=4)(x))
    padded = np.pad(host, ((0, 0), (0, 0), (2, 2), (2, 2)))
    oy, ox = crop_offsets(4, 16, 4, 4)
    for n in range(16):
        np.testing.assert_array_equal(out[n], padded[n, :, oy[n] : oy[n] + 5, ox[n] : ox[n] + 5])
    assert (oy != 2).any()  # some crops really are shifted into the padding
    full = backend.to_numpy(RandomCrop(9, padding=2, rng=0)(x))
    np.testing.assert_array_equal(full, padded)


def test_crop_errors(backend, rng):
    _, x = batch(backend, rng)
    with pytest.raises(ValueError, match=r"8x8 crop does not fit .*padded to 6x7"):
        RandomCrop(8)(x)
    with pytest.raises(ValueError, match=r"shape \(N, C, H, W\), got shape \(6, 7\)"):
        RandomCrop(1)(x[0, 0, ...])
    with pytest.raises(ValueError, match="padding must be >= 0"):
        RandomCrop(2, padding=-1)


def test_compose_order_and_resumable_state(backend, rng):
    host, x = batch(backend, rng, shape=(8, 2, 6, 6))

    def make(seed):
        return Compose(
            [
                RandomCrop(6, padding=1, rng=seed),
                RandomHorizontalFlip(rng=Generator(seed + 1)),
                Normalize([0.5, 0.5], [0.5, 0.5]),
            ]
        )

    a = make(1)
    a(x)
    state = a.state_dict()
    assert set(state) == {"0", "1"}
    expected = backend.to_numpy(a(x))
    b = make(50)
    b.load_state_dict(state)
    np.testing.assert_array_equal(backend.to_numpy(b(x)), expected)
    # Normalize ran last: undoing it gives values of the padded batch (zeros or inputs).
    undone = expected * 0.5 + 0.5
    candidates = np.append(host, 0.0)
    assert (np.abs(undone.reshape(-1, 1) - candidates[None, :]).min(axis=1) < 1e-6).all()


def test_same_seed_same_augmentation_on_every_backend(backend, rng):
    host = rng.random((6, 1, 5, 5), dtype=np.float32)

    def make():
        return Compose([RandomCrop(5, padding=1, rng=9), RandomHorizontalFlip(rng=10)])

    reference = make()(host)  # plain NumPy input
    np.testing.assert_array_equal(backend.to_numpy(make()(backend.asarray(host))), reference)
