"""ImageFolder and export_images on generated PNG/JPEG/BMP folders."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest

from xcnn.data import (
    ArrayDataset,
    DataLoader,
    FashionMNISTSample,
    ImageFolder,
    export_images,
    read_images,
)

Image = pytest.importorskip("PIL.Image")


def save(path: Path, pixels: np.ndarray, mode: str | None = None, fmt: str | None = None) -> Path:
    """Write ``pixels`` ((H, W) grey or (H, W, C)) as an image file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))
    if mode is not None:
        image = image.convert(mode)
    image.save(path, format=fmt)
    return path


def rgb_dataset(n: int = 12, seed: int = 0) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 3, 5, 7), dtype=np.uint8)
    labels = rng.integers(0, 3, size=n)
    return ArrayDataset(images, labels, ["red", "green", "blue"], name="rgb")


def original_index(path: str) -> int:
    return int(Path(path).stem)


def test_classes_are_sorted_folder_names_and_files_sorted_within(tmp_path):
    rng = np.random.default_rng(1)
    pixels = {}
    for cls, names in {"dog": ["b.png", "a.PNG"], "Cat": ["z.jpg"], "ant": ["c.BMP"]}.items():
        for name in names:
            fmt = {".png": "PNG", ".jpg": "JPEG", ".bmp": "BMP"}[Path(name).suffix.lower()]
            pixels[(cls, name)] = rng.integers(0, 256, size=(6, 4), dtype=np.uint8)
            save(tmp_path / cls / name, pixels[(cls, name)], fmt=fmt)
    ds = ImageFolder(tmp_path)
    # Python's sort, as torchvision: capitals first.
    assert ds.classes == ["Cat", "ant", "dog"]
    assert ds.class_to_idx == {"Cat": 0, "ant": 1, "dog": 2}
    assert [Path(p).name for p, _ in ds.samples] == ["z.jpg", "c.BMP", "a.PNG", "b.png"]
    assert ds.labels.tolist() == [0, 1, 2, 2] and ds.labels.dtype == np.int64
    assert ds.images.dtype == np.uint8 and ds.images.shape == (4, 1, 6, 4)
    # Lossless formats come back exactly; JPEG within its compression error.
    np.testing.assert_array_equal(ds.images[1, 0], pixels[("ant", "c.BMP")])
    np.testing.assert_array_equal(ds.images[2, 0], pixels[("dog", "a.PNG")])
    np.testing.assert_array_equal(ds.images[3, 0], pixels[("dog", "b.png")])
    assert np.abs(ds.images[0, 0].astype(int) - pixels[("Cat", "z.jpg")]).mean() < 40
    assert ds.num_classes == 3 and len(ds) == 4 and "ImageFolder(4 images" in repr(ds)


def test_non_image_and_hidden_files_are_skipped_nested_folders_read(tmp_path):
    save(tmp_path / "a" / "1.png", np.zeros((3, 3)))
    save(tmp_path / "a" / "deep" / "2.png", np.ones((3, 3)))
    save(tmp_path / "a" / ".hidden.png", np.zeros((3, 3)))
    save(tmp_path / "a" / ".cache" / "3.png", np.zeros((3, 3)))
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "a" / "Thumbs.db").write_bytes(b"\0" * 10)
    save(tmp_path / "b" / "1.png", np.zeros((3, 3)))
    save(tmp_path / ".git" / "x.png", np.zeros((3, 3)))  # a hidden folder is no class
    (tmp_path / "README").write_text("top-level files are no class")
    ds = ImageFolder(tmp_path)
    assert ds.classes == ["a", "b"]
    assert [Path(p).relative_to(tmp_path).as_posix() for p, _ in ds.samples] == [
        "a/1.png",
        "a/deep/2.png",
        "b/1.png",
    ]


def test_grayscale_inferred_and_forced(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    grey = np.full((4, 4), 77, np.uint8)
    save(tmp_path / "grey" / "g.png", grey)
    only_grey = ImageFolder(tmp_path)
    assert only_grey.images.shape == (1, 1, 4, 4)

    save(tmp_path / "colour" / "c.png", rgb)
    save(tmp_path / "colour" / "rgba.png", np.dstack([rgb, np.full((4, 4), 9)]))
    save(tmp_path / "colour" / "pal.png", rgb, mode="P")
    mixed = ImageFolder(tmp_path)  # any colour image -> RGB for all
    assert mixed.images.shape == (4, 3, 4, 4)
    by_name = {Path(p).name: i for i, (p, _) in enumerate(mixed.samples)}
    np.testing.assert_array_equal(mixed.images[by_name["c.png"]], rgb.transpose(2, 0, 1))
    np.testing.assert_array_equal(mixed.images[by_name["rgba.png"]], rgb.transpose(2, 0, 1))
    palette = np.asarray(Image.open(tmp_path / "colour" / "pal.png").convert("RGB"))
    np.testing.assert_array_equal(mixed.images[by_name["pal.png"]], palette.transpose(2, 0, 1))
    assert (mixed.images[by_name["g.png"]] == 77).all()  # grey replicated on R, G, B

    forced_grey = ImageFolder(tmp_path, grayscale=True)
    assert forced_grey.images.shape == (4, 1, 4, 4)
    luma = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(forced_grey.images[by_name["c.png"], 0], luma)


def test_sixteen_bit_png_keeps_its_high_byte(tmp_path):
    deep = (np.arange(16, dtype=np.uint16) * 4000).reshape(4, 4)
    Image.fromarray(deep).save(tmp_path / "x16.png")
    (tmp_path / "a").mkdir()
    (tmp_path / "x16.png").rename(tmp_path / "a" / "x16.png")
    ds = ImageFolder(tmp_path)
    assert ds.images.shape == (1, 1, 4, 4)
    np.testing.assert_array_equal(ds.images[0, 0], deep >> 8)


def test_forced_rgb_on_grey_images(tmp_path):
    save(tmp_path / "a" / "g.png", np.full((2, 3), 200, np.uint8))
    ds = ImageFolder(tmp_path, grayscale=False)
    assert ds.images.shape == (1, 3, 2, 3) and (ds.images == 200).all()


def test_size_resizes_bilinear_and_different_sizes_need_it(tmp_path):
    big = np.random.default_rng(3).integers(0, 256, size=(20, 10), dtype=np.uint8)
    save(tmp_path / "a" / "big.png", big)
    save(tmp_path / "b" / "small.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(
        ValueError, match=r"differ in size.*big\.png.*20x10.*small\.png.*8x8.*size="
    ):
        ImageFolder(tmp_path)
    ds = ImageFolder(tmp_path, size=(6, 4))
    assert ds.images.shape == (2, 1, 6, 4)
    expected = np.asarray(Image.fromarray(big).resize((4, 6), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(ds.images[0, 0], expected)
    assert ImageFolder(tmp_path, size=5).images.shape == (2, 1, 5, 5)
    for bad in (0, (3,), (2, -1), 2.5, True):
        with pytest.raises(ValueError, match="size must be a positive int or a pair"):
            ImageFolder(tmp_path, size=bad)


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist or is not a folder"):
        ImageFolder(tmp_path / "missing")
    (tmp_path / "flat.png").write_bytes(b"")
    with pytest.raises(ValueError, match="no class folders"):
        ImageFolder(tmp_path)
    save(tmp_path / "full" / "1.png", np.zeros((2, 2)))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"class folder .*empty' holds no images"):
        ImageFolder(tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_image_is_named(tmp_path, damage):
    save(tmp_path / "a" / "good.png", np.zeros((16, 16), np.uint8))
    bad = tmp_path / "a" / "bad.png"
    if damage == "garbage":
        bad.write_bytes(b"this is not a png")
    else:
        noisy = np.random.default_rng(4).integers(0, 256, size=(16, 16), dtype=np.uint8)
        save(bad, noisy)
        bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(ValueError, match=r"cannot (read|decode).*bad\.png"):
        ImageFolder(tmp_path)


def test_read_images_decodes_files_as_image_folder_does(tmp_path):
    rng = np.random.default_rng(5)
    save(tmp_path / "a" / "grey16.png", rng.integers(0, 65536, (9, 7)).astype(np.uint16))
    save(tmp_path / "a" / "rgba.png", rng.integers(0, 256, (12, 10, 4)), mode="RGBA")
    save(tmp_path / "b" / "rgb.jpg", rng.integers(0, 256, (9, 7, 3)), fmt="JPEG")
    folder_grey = ImageFolder(tmp_path, size=(8, 6), grayscale=True)
    paths = [path for path, _ in folder_grey.samples]
    np.testing.assert_array_equal(
        read_images(paths, size=(8, 6), grayscale=True), folder_grey.images
    )
    folder_rgb = ImageFolder(tmp_path, size=5)
    np.testing.assert_array_equal(read_images(paths, size=5), folder_rgb.images)
    assert folder_rgb.images.shape == (3, 3, 5, 5)
    with pytest.raises(ValueError, match=r"read_images: images differ in size"):
        read_images(paths)
    with pytest.raises(FileNotFoundError, match=r"read_images: '.*missing\.png' does not exist"):
        read_images([paths[0], tmp_path / "missing.png"])
    (tmp_path / "bad.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=r"read_images: cannot read image '.*bad\.png'"):
        read_images([tmp_path / "bad.png"])


def test_transform_is_kept_for_the_loader_and_loader_and_fit_take_the_dataset(tmp_path):
    export_images(rgb_dataset(), tmp_path / "set")

    def transform(x):
        return x * 2

    ds = ImageFolder(tmp_path / "set", transform=transform)
    assert ds.transform is transform
    raw = np.asarray(ds.images[:4], dtype=np.float32) / 255
    x, y = next(iter(DataLoader(ds, 4, transform=ds.transform)))
    np.testing.assert_allclose(np.asarray(x), raw * 2, rtol=1e-6)
    assert str(x.dtype) == "float32" and str(y.dtype) == "int64"


def check_round_trip(original: ArrayDataset, folder: Path) -> ImageFolder:
    assert export_images(original, folder) == len(original)
    back = ImageFolder(folder)
    assert back.images.dtype == np.uint8 and back.images.shape == original.images.shape
    order = np.array([original_index(p) for p, _ in back.samples])
    assert sorted(order.tolist()) == list(range(len(original)))
    np.testing.assert_array_equal(back.images, original.images[order])
    names = [back.classes[label] for label in back.labels]
    assert names == [original.classes[label].replace("/", "_") for label in original.labels[order]]
    return back


def test_round_trip_fashion_mnist_sample(tmp_path):
    sample = FashionMNISTSample(train=False)
    first = ArrayDataset(sample.images[:50], sample.labels[:50], sample.classes, "first 50")
    back = check_round_trip(first, tmp_path / "fashion")
    assert "T-shirt_top" in back.classes or 0 not in first.labels  # '/' made path-safe
    # Within a class the dataset order is kept.
    for label in range(back.num_classes):
        indices = [original_index(p) for p, lab in back.samples if lab == label]
        assert indices == sorted(indices)


def test_round_trip_rgb(tmp_path):
    back = check_round_trip(rgb_dataset(), tmp_path / "rgb")
    assert back.images.shape[1] == 3


def test_export_without_classes_uses_zero_padded_label_numbers(tmp_path):
    class Bare:
        images = np.arange(12 * 4, dtype=np.uint8).reshape(12, 1, 2, 2)
        labels = np.arange(12)

    assert export_images(Bare(), tmp_path / "out") == 12
    back = ImageFolder(tmp_path / "out")
    assert back.classes == [f"{i:02d}" for i in range(12)]  # sort in label order
    np.testing.assert_array_equal(back.labels, Bare.labels)
    np.testing.assert_array_equal(back.images, Bare.images)


def test_export_refuses_non_empty_folder_unless_overwrite(tmp_path):
    ds = rgb_dataset(4)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"not empty.*overwrite=True"):
        export_images(ds, out)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert export_images(ds, out, overwrite=True) == 4
    assert (out / "keep.txt").read_text() == "mine"
    assert len(list(out.rglob("*.png"))) == 4
    assert not [p for p in out.rglob(".*")]  # no temporary files left behind
    with pytest.raises(FileExistsError, match="is not a folder"):
        export_images(ds, out / "keep.txt")


def test_export_failure_leaves_no_partial_file(tmp_path, monkeypatch):
    ds = rgb_dataset(3)
    calls = []

    def failing_save(self, fp, *args, **kwargs):
        calls.append(fp)
        fp.write(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        export_images(ds, tmp_path / "out")
    assert calls and not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def test_export_rejects_what_png_cannot_hold(tmp_path):
    floats = ArrayDataset(np.zeros((2, 1, 3, 3), np.float32), np.array([0, 1]), ["a", "b"])
    with pytest.raises(ValueError, match="expected uint8 images"):
        export_images(floats, tmp_path / "a")
    two = ArrayDataset(np.zeros((2, 2, 3, 3), np.uint8), np.array([0, 1]), ["a", "b"])
    with pytest.raises(ValueError, match="C 1 or 3"):
        export_images(two, tmp_path / "b")
    clash = ArrayDataset(np.zeros((2, 1, 3, 3), np.uint8), np.array([0, 1]), ["a/b", "a_b"])
    with pytest.raises(ValueError, match="distinct folder names"):
        export_images(clash, tmp_path / "c")


def test_without_pillow_the_error_says_how_to_install(tmp_path, monkeypatch):
    save(tmp_path / "a" / "1.png", np.zeros((2, 2)))
    real_import = builtins.__import__

    def no_pil(name, *args, **kwargs):
        if name == "PIL" or name.startswith("PIL."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pil)
    with pytest.raises(ImportError, match=r"pip install 'xcnn\[images\]'"):
        ImageFolder(tmp_path)
    with pytest.raises(ImportError, match=r"pip install 'xcnn\[images\]'"):
        export_images(rgb_dataset(2), tmp_path / "out")
