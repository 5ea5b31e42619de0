"""Augmentation beyond crop/flip: affine warps, colour jitter, MixUp and CutMix.

Oracles: torch's ``grid_sample`` on torchvision's sampling grid (written out
here from torchvision's source), ``scipy.ndimage.affine_transform``, exact
``np.rot90`` and shifts, torchvision's colour formulas written in torch, and
for the mixing transforms the pixels themselves (what was pasted or blended
tells the label weights).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from xcnn import backends
from xcnn.data import transforms
from xcnn.data.transforms import (
    ColorJitter,
    Compose,
    CutMix,
    MixUp,
    RandomAffine,
    RandomRotation,
    affine,
    rotate,
)


def images(rng, shape, dtype=np.float32):
    if dtype == np.uint8:
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    return rng.random(shape).astype(dtype)


# -- affine / rotate: the functional form ---------------------------------------------------


def torchvision_affine(img, angle, translate, scale):
    """torchvision's tensor ``F.affine`` (shear 0, fill None, bilinear), from its source."""
    import torch

    n, _, h, w = img.shape
    rot = math.radians(angle)
    # _get_inverse_affine_matrix(center=[0, 0], angle, translate, scale, shear=[0, 0])
    a, b, cc, d = math.cos(rot), -math.sin(rot), math.sin(rot), math.cos(rot)
    matrix = [v / scale for v in (d, -b, 0.0, -cc, a, 0.0)]
    matrix[2] += matrix[0] * -translate[0] + matrix[1] * -translate[1]
    matrix[5] += matrix[3] * -translate[0] + matrix[4] * -translate[1]
    theta = torch.tensor(matrix, dtype=img.dtype).reshape(1, 2, 3)
    # _gen_affine_grid
    base = torch.empty(1, h, w, 3, dtype=img.dtype)
    base[..., 0] = torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, w, dtype=img.dtype)
    base[..., 1] = torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, h, dtype=img.dtype)[:, None]
    base[..., 2] = 1.0
    scaled = theta.transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h], dtype=img.dtype)
    grid = base.view(1, h * w, 3).bmm(scaled).view(1, h, w, 2).expand(n, h, w, 2)
    return torch.nn.functional.grid_sample(
        img, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_affine_matches_torchvision_grid_sample(backend, rng, dtype):
    import torch

    tolerance = 2e-6 if dtype == np.float32 else 1e-12
    for _ in range(25 if backend.name == "numpy" else 6):
        h, w = (int(v) for v in rng.integers(2, 13, size=2))
        host = images(rng, (3, 2, h, w), dtype)
        angle = rng.uniform(-180, 180, size=3)
        shift = rng.uniform(-4, 4, size=(3, 2))
        scale = rng.uniform(0.4, 2.5, size=3)
        out = affine(backend.asarray(host), angle, shift, scale)
        assert backends.namespace_name(out) == backend.name and out.shape == host.shape
        got = backend.to_numpy(out)
        assert got.dtype == dtype
        for n in range(3):
            expected = torchvision_affine(
                torch.from_numpy(host[n : n + 1]), angle[n], shift[n], scale[n]
            ).numpy()
            np.testing.assert_allclose(got[n : n + 1], expected, atol=tolerance, rtol=0)


def scipy_affine(image, angle, translate, scale, fill):
    """One ``(H, W)`` image through scipy.ndimage.affine_transform, in (row, column) order."""
    ndimage = pytest.importorskip("scipy.ndimage", reason="scipy (the test extra) is not installed")
    h, w = image.shape
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    shift = np.array([translate[1], translate[0]])  # (ty, tx)
    a = math.radians(angle)
    # Output -> input: undo the shift, rotate back (counter-clockwise on screen), unzoom.
    back = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) / scale
    offset = centre - back @ (centre + shift)
    return ndimage.affine_transform(
        image, back, offset=offset, order=1, mode="grid-constant", cval=fill
    )


@pytest.mark.parametrize("dtype", [np.float64, np.uint8])
def test_affine_matches_scipy_with_a_fill(backend, rng, dtype):
    for _ in range(12 if backend.name == "numpy" else 4):
        h, w = (int(v) for v in rng.integers(3, 11, size=2))
        host = images(rng, (2, 1, h, w), dtype)
        angle, scale = rng.uniform(-90, 90, size=2), rng.uniform(0.5, 2.0, size=2)
        shift = rng.uniform(-3, 3, size=(2, 2))
        fill = 200.0 if dtype == np.uint8 else -0.75
        got = backend.to_numpy(affine(backend.asarray(host), angle, shift, scale, fill=fill))
        assert got.dtype == dtype
        for n in range(2):
            expected = scipy_affine(
                host[n, 0].astype(np.float64), angle[n], shift[n], scale[n], fill
            )
            if dtype == np.uint8:
                # Rounding the same value may differ by one where it sits at .5.
                assert np.abs(got[n, 0].astype(int) - np.round(expected)).max() <= 1
                assert np.mean(got[n, 0] == np.round(expected)) > 0.99
            else:
                np.testing.assert_allclose(got[n, 0], expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
@pytest.mark.parametrize("quarter_turns", [1, 2, 3])
def test_quarter_turns_are_exact_rot90(backend, rng, dtype, quarter_turns):
    # A square image turns onto itself: every pixel is an exact copy.
    square = images(rng, (3, 2, 6, 6), dtype)
    got = backend.to_numpy(rotate(backend.asarray(square), 90 * quarter_turns))
    np.testing.assert_array_equal(got, np.rot90(square, quarter_turns, axes=(2, 3)))
    got = backend.to_numpy(affine(backend.asarray(square), 90 * quarter_turns))
    np.testing.assert_array_equal(got, np.rot90(square, -quarter_turns, axes=(2, 3)))
    # A 5x7 image: its central 5x5 square turns onto itself about the same centre.
    wide = images(rng, (2, 1, 5, 7), dtype)
    got = backend.to_numpy(rotate(backend.asarray(wide), 90 * quarter_turns))
    np.testing.assert_array_equal(
        got[..., 1:6], np.rot90(wide[..., 1:6], quarter_turns, axes=(2, 3))
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_identity_parameters_return_the_input_exactly(backend, rng, dtype):
    host = images(rng, (4, 3, 5, 6), dtype)
    x = backend.asarray(host)
    for out in (
        affine(x, 0.0),
        affine(x, [0.0] * 4, [(0, 0)] * 4, [1.0] * 4, fill=0.5),
        rotate(x, 0.0),
        rotate(x, 360.0),
        RandomRotation(0, rng=0)(x),
        RandomAffine(0, translate=(0, 0), scale=(1, 1), rng=0)(x),
    ):
        assert out.dtype == x.dtype
        np.testing.assert_array_equal(backend.to_numpy(out), host)


def test_whole_pixel_translations_are_exact_shifts(backend, rng):
    host = images(rng, (1, 2, 5, 6))
    fill = (0.25, -1.0)
    got = backend.to_numpy(affine(backend.asarray(host), 0.0, (2, -1), fill=fill))
    expected = np.empty_like(host)
    expected[:, 0], expected[:, 1] = fill
    expected[:, :, 0:4, 2:6] = host[:, :, 1:5, 0:4]  # right by 2, up by 1
    np.testing.assert_array_equal(got, expected)


def test_far_shifts_and_extreme_zooms(backend, rng):
    host = images(rng, (2, 1, 4, 4), np.float64)
    x = backend.asarray(host)
    # Shifted far beyond the image: nothing but fill, whatever the distance.
    np.testing.assert_array_equal(
        backend.to_numpy(affine(x, 0.0, (1e9, 0.0), fill=3.0)), np.full(host.shape, 3.0)
    )
    # Zoomed out a billion times: the image shrinks to nothing, all fill.
    np.testing.assert_array_equal(
        backend.to_numpy(affine(x, 30.0, scale=1e-9, fill=2.0)), np.full(host.shape, 2.0)
    )
    # Zoomed in a billion times: every pixel reads the centre, between the middle four.
    huge = backend.to_numpy(affine(x, 0.0, scale=1e9))
    centre = host[:, :, 1:3, 1:3].mean(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(huge, np.broadcast_to(centre, host.shape), atol=1e-6)


# -- RandomRotation / RandomAffine ----------------------------------------------------------


def recording(monkeypatch):
    """Record the per-image parameters that the random transforms pass to ``_affine``."""
    calls = []
    original = transforms._affine

    def spy(x, angle, translate, scale, fill, who):
        calls.append(
            {
                "angle": np.array(angle, dtype=np.float64),
                "translate": np.broadcast_to(np.asarray(translate, np.float64), (x.shape[0], 2)),
                "scale": np.broadcast_to(np.asarray(scale, np.float64), (x.shape[0],)),
                "fill": fill,
            }
        )
        return original(x, angle, translate, scale, fill, who)

    monkeypatch.setattr(transforms, "_affine", spy)
    return calls


def test_random_parameters_stay_in_their_ranges(backend, rng, monkeypatch):
    calls = recording(monkeypatch)
    x = backend.asarray(images(rng, (400, 1, 10, 20)))
    RandomRotation((10, 30), fill=0.5, rng=1)(x)
    RandomRotation(45, rng=2)(x)
    RandomAffine(20, translate=(0.1, 0.3), scale=(0.8, 1.2), rng=3)(x)
    RandomAffine((-5, -4), rng=4)(x)
    rotation, symmetric, full, narrow = calls
    # RandomRotation turns counter-clockwise: affine gets the negated angle.
    assert -30 <= rotation["angle"].min() < -29 and -11 < rotation["angle"].max() <= -10
    assert rotation["fill"] == (0.5,)
    assert -45 <= symmetric["angle"].min() < -40 and 40 < symmetric["angle"].max() <= 45
    assert -20 <= full["angle"].min() < -18 and 18 < full["angle"].max() <= 20
    tx, ty = full["translate"][:, 0], full["translate"][:, 1]
    # Whole pixels, up to 0.1 * W = 2 across and 0.3 * H = 3 down, every value drawn.
    np.testing.assert_array_equal(tx, np.round(tx))
    assert set(tx.tolist()) == {-2, -1, 0, 1, 2} and set(ty.tolist()) == {-3, -2, -1, 0, 1, 2, 3}
    assert 0.8 <= full["scale"].min() < 0.82 and 1.18 < full["scale"].max() <= 1.2
    assert ((narrow["angle"] >= -5) & (narrow["angle"] <= -4)).all()
    assert (narrow["translate"] == 0).all() and (narrow["scale"] == 1).all()


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: RandomRotation(30, rng=seed),
        lambda seed: RandomAffine(15, translate=(0.2, 0.2), scale=(0.9, 1.1), rng=seed),
        lambda seed: ColorJitter(0.4, 0.4, 0.4, rng=seed),
    ],
)
def test_same_seed_same_batch_other_seed_other_batch(backend, rng, make):
    host = images(rng, (6, 3, 8, 8))
    x = backend.asarray(host)
    first = backend.to_numpy(make(5)(x))
    np.testing.assert_array_equal(backend.to_numpy(make(5)(x)), first)
    assert not np.array_equal(backend.to_numpy(make(6)(x)), first)
    # One seed, the same augmentation on every backend: the host NumPy run is the reference.
    np.testing.assert_array_equal(first, make(5)(host))
    # The generator moves on: a second batch differs from the first.
    transform = make(5)
    transform(x)
    assert not np.array_equal(backend.to_numpy(transform(x)), first)


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: RandomRotation(30, rng=seed),
        lambda seed: RandomAffine(15, translate=(0.2, 0.2), scale=(0.9, 1.1), rng=seed),
        lambda seed: ColorJitter(0.4, 0.4, 0.4, rng=seed),
        lambda seed: MixUp(alpha=0.4, num_classes=5, rng=seed),
        lambda seed: CutMix(alpha=1.0, num_classes=5, rng=seed),
    ],
)
def test_state_dict_resumes_the_stream(backend, rng, make):
    x = backend.asarray(images(rng, (6, 3, 8, 8)))
    y = backend.asarray(np.arange(6, dtype=np.int64) % 5)

    def call(transform):
        out = transform(x, y) if isinstance(transform, (MixUp, CutMix)) else (transform(x),)
        return [backend.to_numpy(o) for o in out]

    a = make(1)
    call(a)
    state = a.state_dict()
    expected = call(a)
    b = make(99)
    b.load_state_dict(state)
    for got, want in zip(call(b), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_geometry_errors(backend, rng):
    x = backend.asarray(images(rng, (2, 3, 4, 4)))
    with pytest.raises(ValueError, match=r"RandomRotation: degrees must be >= 0 .* got -5"):
        RandomRotation(-5)
    with pytest.raises(ValueError, match=r"degrees must be a number >= 0 or a pair"):
        RandomAffine((10, -10))
    with pytest.raises(ValueError, match=r"scale must be a pair \(lo, hi\) with 0 < lo"):
        RandomAffine(0, scale=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"translate must be a pair of fractions in \[0, 1\]"):
        RandomAffine(0, translate=(0.5, 1.5))
    with pytest.raises(ValueError, match=r"affine: scale must be > 0, got -1\.0"):
        affine(x, 0.0, scale=-1.0)
    with pytest.raises(ValueError, match=r"angle must be one value .* \(shape \(2,\)\)"):
        affine(x, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="angle must be finite"):
        rotate(x, math.nan)
    with pytest.raises(ValueError, match="fill has 2 values for a batch of 3 channels"):
        RandomRotation(10, fill=(0, 1))(x)
    with pytest.raises(ValueError, match="fill must be a number or one number per channel"):
        RandomRotation(10, fill="white")
    with pytest.raises(TypeError, match=r"expected uint8 or floating images, got dtype .*int32"):
        rotate(backend.asarray(np.zeros((1, 1, 2, 2), np.int32)), 10)
    with pytest.raises(ValueError, match=r"shape \(N, C, H, W\), got shape \(4, 4\)"):
        RandomAffine(10)(x[0, 0, ...])


# -- ColorJitter ----------------------------------------------------------------------------


def torchvision_jitter(img, order, factors):
    """torchvision's tensor adjust_* functions (from its source), applied in ``order``."""
    import torch

    def blend(a, b, ratio):
        bound = 1.0 if a.is_floating_point() else 255.0
        return (ratio * a + (1.0 - ratio) * b).clamp(0, bound).to(a.dtype)

    def grey(a):
        r, g, b = a.unbind(dim=-3)
        return (0.2989 * r + 0.587 * g + 0.114 * b).to(a.dtype).unsqueeze(dim=-3)

    def brightness(a, f):
        return blend(a, torch.zeros_like(a), f)

    def contrast(a, f):
        dtype = a.dtype if a.is_floating_point() else torch.float32
        source = grey(a) if a.shape[-3] == 3 else a
        return blend(a, torch.mean(source.to(dtype), dim=(-3, -2, -1), keepdim=True), f)

    def saturation(a, f):
        return a if a.shape[-3] == 1 else blend(a, grey(a), f)

    adjust = {"brightness": brightness, "contrast": contrast, "saturation": saturation}
    for name in order:
        img = adjust[name](img, factors[name])
    return img


def jitter_draws(seed, n, ranges):
    """The orders and factors ColorJitter draws: a permutation per image, then the factors."""
    host = np.random.default_rng(seed)
    names = list(ranges)
    order = np.argsort(host.random((n, len(names))), axis=1)
    factors = {name: host.uniform(*ranges[name], size=n) for name in names}
    return [[names[k] for k in row] for row in order], factors


@pytest.mark.torch
@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_color_jitter_matches_torchvision_formulas(backend, rng, channels, dtype):
    import torch

    n = 12
    host = images(rng, (n, channels, 5, 6), dtype)
    jitter = ColorJitter(brightness=0.5, contrast=(0.2, 1.8), saturation=0.9, rng=17)
    assert jitter.ranges == {
        "brightness": (0.5, 1.5),
        "contrast": (0.2, 1.8),
        "saturation": (0.09999999999999998, 1.9),
    }
    got = backend.to_numpy(jitter(backend.asarray(host)))
    assert got.dtype == dtype and got.shape == host.shape
    orders, factors = jitter_draws(17, n, jitter.ranges)
    assert len({tuple(o) for o in orders}) > 2  # the orders really vary
    for i in range(n):
        expected = torchvision_jitter(
            torch.from_numpy(host[i]), orders[i], {k: float(v[i]) for k, v in factors.items()}
        ).numpy()
        if dtype == np.uint8:
            # float32 sums may land either side of an integer before truncation.
            assert np.abs(got[i].astype(int) - expected).max() <= 1
            assert np.mean(got[i] == expected) > 0.99
        else:
            np.testing.assert_allclose(got[i], expected, atol=1e-6, rtol=0)


def test_color_jitter_factors_stay_in_their_ranges(backend):
    n = 500
    # A two-valued image: the factor of each image can be read back from its pixels.
    host = np.empty((n, 1, 2, 2), np.float32)
    host[..., 0, :], host[..., 1, :] = 0.2, 0.4
    x = backend.asarray(host)
    bright = backend.to_numpy(ColorJitter(brightness=0.3, rng=0)(x))
    f = bright[:, 0, 0, 0] / 0.2
    np.testing.assert_allclose(bright[:, 0, 1, 0] / 0.4, f, rtol=1e-5)
    assert 0.7 - 1e-6 <= f.min() < 0.72 and 1.28 < f.max() <= 1.3 + 1e-6
    contrast = backend.to_numpy(ColorJitter(contrast=(0.0, 0.5), rng=1)(x))
    f = (contrast[:, 0, 1, 0] - contrast[:, 0, 0, 0]) / 0.2  # the spread shrinks by f about 0.3
    np.testing.assert_allclose(contrast.mean(axis=(1, 2, 3)), 0.3, rtol=1e-5)
    assert -1e-6 <= f.min() < 0.02 and 0.48 < f.max() <= 0.5 + 1e-6
    # Saturation: each channel of a colour moves away from (f > 1) or towards its grey.
    colour = np.array([0.5, 0.3, 0.2])
    pixels = np.broadcast_to(colour[None, :, None, None], (n, 3, 1, 1)).astype(np.float32)
    sat = backend.to_numpy(ColorJitter(saturation=0.5, rng=2)(backend.asarray(pixels)))[..., 0, 0]
    grey = 0.2989 * 0.5 + 0.587 * 0.3 + 0.114 * 0.2
    f = (sat[:, 0] - grey) / (colour[0] - grey)
    np.testing.assert_allclose(sat, f[:, None] * colour + (1 - f[:, None]) * grey, atol=1e-6)
    assert 0.5 - 1e-5 <= f.min() < 0.52 and 1.48 < f.max() <= 1.5 + 1e-5


def test_color_jitter_zero_is_the_identity_and_greyscale_saturation_a_no_op(backend, rng):
    host = images(rng, (4, 3, 3, 3))
    np.testing.assert_array_equal(backend.to_numpy(ColorJitter(rng=0)(backend.asarray(host))), host)
    grey = images(rng, (4, 1, 3, 3))
    out = ColorJitter(saturation=0.9, rng=0)(backend.asarray(grey))
    np.testing.assert_array_equal(backend.to_numpy(out), grey)


def test_color_jitter_errors(backend, rng):
    with pytest.raises(ValueError, match=r"ColorJitter: brightness must be >= 0 .* got -0\.1"):
        ColorJitter(brightness=-0.1)
    with pytest.raises(ValueError, match=r"contrast factors must be >= 0, got \(-1, 2\)"):
        ColorJitter(contrast=(-1, 2))
    with pytest.raises(ValueError, match=r"need 1 or 3 \(RGB\) channels, got shape \(2, 2, 3, 3\)"):
        ColorJitter(saturation=0.5)(backend.asarray(images(rng, (2, 2, 3, 3))))
    # Brightness alone works on any number of channels.
    assert ColorJitter(brightness=0.5)(backend.asarray(images(rng, (2, 2, 3, 3)))).shape[1] == 2


# -- MixUp / CutMix -------------------------------------------------------------------------


def distinct_neighbour_labels(n, k):
    """Labels where image n and image n - 1 (rolled) always differ, so both weights show."""
    assert k > 1 and (n - 1) % k  # the last label is not the first one
    return np.arange(n, dtype=np.int64) % k


def test_mixup_blends_images_and_labels_alike(backend, rng):
    n, k = 7, 4
    host = images(rng, (n, 3, 5, 5))
    labels = distinct_neighbour_labels(n, k)
    x, y = backend.asarray(host), backend.asarray(labels)
    out, soft = MixUp(alpha=0.5, num_classes=k, rng=3)(x, y)
    out, soft = backend.to_numpy(out), backend.to_numpy(soft)
    assert out.dtype == np.float32 and soft.dtype == np.float32 and soft.shape == (n, k)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-6)
    lam = soft[np.arange(n), labels]
    np.testing.assert_allclose(lam, lam[0], rtol=1e-6)  # one lambda per batch
    np.testing.assert_allclose(soft[np.arange(n), np.roll(labels, 1)], 1 - lam[0], rtol=1e-6)
    assert soft[soft > 0].size == 2 * n
    # The same lambda in the pixels: image n blends with image n - 1.
    np.testing.assert_allclose(out, lam[0] * host + (1 - lam[0]) * np.roll(host, 1, axis=0), 1e-6)
    # And it is the generator's Beta(alpha, alpha) draw.
    np.testing.assert_allclose(lam[0], np.random.default_rng(3).beta(0.5, 0.5), rtol=1e-6)


def test_mixup_on_uint8_and_float64_and_on_soft_labels(backend, rng):
    host = images(rng, (5, 1, 4, 4), np.uint8)
    labels = np.array([0, 1, 2, 0, 1])
    out, soft = MixUp(alpha=1.0, num_classes=3, rng=0)(
        backend.asarray(host), backend.asarray(labels)
    )
    out, soft = backend.to_numpy(out), backend.to_numpy(soft)
    lam = float(soft[0, 0])
    assert out.dtype == np.uint8 and soft.dtype == np.float32
    expected = lam * host.astype(np.float32) + (1 - lam) * np.roll(host, 1, axis=0)
    assert np.abs(out.astype(np.float32) - expected).max() <= 0.5 + 1e-4
    # Class probabilities in (from a first mix) stay probabilities; float64 stays float64.
    x64 = backend.asarray(images(rng, (5, 1, 4, 4), np.float64))
    soft64 = soft.astype(np.float64) / soft.astype(np.float64).sum(axis=1, keepdims=True)
    out2, soft2 = MixUp(alpha=1.0, rng=1)(x64, backend.asarray(soft64))
    assert out2.dtype == backend.xp.float64 and soft2.dtype == backend.xp.float64
    np.testing.assert_allclose(backend.to_numpy(soft2).sum(axis=1), 1.0, rtol=1e-12)


def pasted_box(out, host):
    """The rectangle where ``out`` differs from ``host``: (y1, y2, x1, x2), or None."""
    changed = (out != host).any(axis=(0, 1))
    if not changed.any():
        return None
    rows, cols = np.nonzero(changed.any(axis=1))[0], np.nonzero(changed.any(axis=0))[0]
    box = (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1)
    assert changed.sum() == (box[1] - box[0]) * (box[3] - box[2])  # a full rectangle
    return box


def test_cutmix_pastes_one_box_and_labels_weigh_its_area(backend, rng):
    n, k, h, w = 6, 4, 8, 10
    labels = distinct_neighbour_labels(n, k)
    seen_boxes = set()
    for seed in range(20 if backend.name == "numpy" else 6):
        host = images(rng, (n, 2, h, w))
        out, soft = CutMix(alpha=1.0, num_classes=k, rng=seed)(
            backend.asarray(host), backend.asarray(labels)
        )
        out, soft = backend.to_numpy(out), backend.to_numpy(soft)
        assert out.dtype == np.float32 and soft.shape == (n, k)
        np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-6)
        box = pasted_box(out, host)
        area = 0 if box is None else (box[1] - box[0]) * (box[3] - box[2])
        kept = 1 - area / (h * w)
        np.testing.assert_allclose(soft[np.arange(n), labels], kept, rtol=1e-6)
        np.testing.assert_allclose(soft[np.arange(n), np.roll(labels, 1)], 1 - kept, atol=1e-6)
        if box is not None:
            y1, y2, x1, x2 = box
            seen_boxes.add(box)
            rolled = np.roll(host, 1, axis=0)
            np.testing.assert_array_equal(out[:, :, y1:y2, x1:x2], rolled[:, :, y1:y2, x1:x2])
            # torchvision's box: half-sides int(r W), int(r H) about a centre, r = sqrt(1-lam)/2.
            lam = np.random.default_rng(seed).beta(1.0, 1.0)
            r = 0.5 * math.sqrt(1 - lam)
            assert x2 - x1 <= 2 * int(r * w) and y2 - y1 <= 2 * int(r * h)
    assert len(seen_boxes) > 3


def test_cutmix_keeps_uint8(backend, rng):
    host = images(rng, (4, 3, 6, 6), np.uint8)
    out, soft = CutMix(alpha=2.0, num_classes=2, rng=4)(
        backend.asarray(host), backend.asarray(np.array([0, 1, 0, 1]))
    )
    out = backend.to_numpy(out)
    assert out.dtype == np.uint8 and soft.dtype == backend.xp.float32
    box = pasted_box(out, host)
    assert box is not None
    y1, y2, x1, x2 = box
    np.testing.assert_array_equal(out[..., y1:y2, x1:x2], np.roll(host, 1, 0)[..., y1:y2, x1:x2])


def test_mixing_errors(backend, rng):
    x = backend.asarray(images(rng, (4, 1, 3, 3)))
    y = backend.asarray(np.array([0, 1, 2, 1]))
    for kind in (MixUp, CutMix):
        name = kind.__name__
        with pytest.raises(ValueError, match=f"{name}: alpha must be a finite number > 0, got 0"):
            kind(alpha=0, num_classes=3)
        with pytest.raises(ValueError, match="alpha must be a finite number > 0, got nan"):
            kind(alpha=math.nan, num_classes=3)
        with pytest.raises(ValueError, match="num_classes must be an int >= 1, got 0"):
            kind(num_classes=0)
        with pytest.raises(ValueError, match="num_classes must be an int >= 1, got True"):
            kind(num_classes=True)
        with pytest.raises(ValueError, match="integer labels need num_classes=K"):
            kind()(x, y)
        with pytest.raises(ValueError, match=r"must lie in \[0, 2\), got values from 0 to 2"):
            kind(num_classes=2)(x, y)
        with pytest.raises(ValueError, match="got 4 images and 3 labels"):
            kind(num_classes=3)(x, y[:3])
        with pytest.raises(ValueError, match=r"labels of shape \(4, 3\) for 5 classes"):
            kind(num_classes=5)(x, backend.xp.ones((4, 3), dtype=backend.xp.float32) / 3)
        with pytest.raises(ValueError, match=r"class indices \(N,\) or class probabilities"):
            kind(num_classes=3)(x, backend.xp.ones((4,), dtype=backend.xp.float32))


# -- end to end: fit on soft targets, and resume ---------------------------------------------


def sample_setup(seed: int, n: int = 512):
    """LeNet-5 on the first ``n`` images of the bundled sample, with every new augmentation."""
    import xcnn
    from xcnn import data, models, nn, optim

    xcnn.manual_seed(seed)
    full = data.FashionMNISTSample(train=True)
    subset = data.ArrayDataset(full.images[:n], full.labels[:n], full.classes, name="subset")
    loader = data.DataLoader(
        subset,
        64,
        shuffle=True,
        seed=seed,
        transform=Compose(
            [
                RandomAffine(10, translate=(0.1, 0.1), scale=(0.9, 1.1), rng=seed + 1),
                ColorJitter(brightness=0.2, contrast=0.2, rng=seed + 2),
            ]
        ),
        batch_transform=MixUp(alpha=0.4, num_classes=subset.num_classes, rng=seed + 3),
    )
    model = models.lenet5(subset.num_classes, 1, rng=seed, input_size=28)
    return model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=2e-3), loader


@pytest.mark.slow
def test_fit_trains_on_mixup_soft_targets():
    import xcnn

    model, loss_fn, opt, loader = sample_setup(0)
    _, y = next(iter(loader))
    assert y.shape == (64, 10) and y.dtype == np.float32
    hist = xcnn.fit(model, loss_fn, opt, loader, 4, progress=False)
    assert hist.train_loss[-1] < hist.train_loss[0] - 0.3, hist.train_loss
    # Accuracy against the argmax of the mixed targets, well above chance (0.1).
    assert all(a is not None for a in hist.train_accuracy)
    assert hist.train_accuracy[-1] > 0.25, hist.train_accuracy


@pytest.mark.slow
def test_fit_resumed_with_augmentation_equals_an_uninterrupted_run(tmp_path):
    import xcnn

    def run(path, epochs, seed):
        model, loss_fn, opt, loader = sample_setup(seed, n=192)
        hist = xcnn.fit(
            model, loss_fn, opt, loader, epochs, checkpoint=path, resume=True, progress=False
        )
        return model.state_dict(), hist

    whole, whole_hist = run(tmp_path / "whole.safetensors", 2, seed=0)
    run(tmp_path / "split.safetensors", 1, seed=0)
    # Other seeds everywhere: the augmentation streams must come from the checkpoint.
    resumed, resumed_hist = run(tmp_path / "split.safetensors", 2, seed=5)
    other, _ = run(tmp_path / "other.safetensors", 2, seed=5)
    assert sorted(whole) == sorted(resumed)
    for key in whole:
        np.testing.assert_array_equal(resumed[key], whole[key], err_msg=key)
    assert resumed_hist.train_loss == whole_hist.train_loss
    assert any(not np.array_equal(other[key], whole[key]) for key in whole)


def test_evaluate_scores_soft_targets_by_their_argmax(backend, rng):
    import xcnn
    from xcnn import nn

    model = nn.Sequential(nn.Linear(4, 3, rng=0))
    x = rng.standard_normal((40, 4)).astype(np.float32)
    soft = rng.dirichlet(np.ones(3), size=40).astype(np.float32)
    batches = [(backend.asarray(x[i : i + 10]), backend.asarray(soft[i : i + 10])) for i in (0, 10)]
    batches += [(backend.asarray(x[20:]), backend.asarray(soft[20:]))]
    result = xcnn.evaluate(model, batches, nn.CrossEntropyLoss())
    logits = backend.to_numpy(model(backend.asarray(x))).astype(np.float64)
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    accuracy = np.mean(logits.argmax(axis=1) == soft.argmax(axis=1))
    assert 0 < accuracy < 1 and result["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert result["loss"] == pytest.approx(-(soft * log_p).sum(axis=1).mean(), rel=1e-5)
