"""Folders of image files as datasets, and datasets written out as such folders.

:class:`ImageFolder` reads torchvision's layout, one sub-folder per class::

    root/cat/001.png
    root/cat/nested/002.jpg
    root/dog/003.bmp

Classes are the sorted folder names (label ``i`` is ``classes[i]``); inside a
class, files are taken in sorted order, sub-folders included. Every image is
decoded once with Pillow into the uint8 ``(N, C, H, W)`` array the other
datasets hold, so :class:`~xcnn.data.DataLoader` and :func:`xcnn.fit` take it
unchanged. :func:`export_images` writes any such dataset back as class folders
of PNGs. Pillow is an optional dependency: ``pip install 'xcnn[images]'``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xcnn.data.datasets import ArrayDataset

__all__ = ["IMAGE_EXTENSIONS", "ImageFolder", "export_images", "read_images"]

#: File name endings read as images (compared case-insensitively); other files are skipped.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")

# Pillow modes that hold one grey channel (an alpha channel, if any, is dropped).
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def _pillow() -> Any:
    """``PIL.Image``, imported on first use so that Pillow stays optional."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(
            "reading and writing image files needs Pillow: pip install 'xcnn[images]' "
            "(or pip install pillow)"
        ) from None
    return Image


def _pair(size: int | tuple[int, int] | None, who: str) -> tuple[int, int] | None:
    if size is None:
        return None
    pair = (size, size) if isinstance(size, (int, np.integer)) else size
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in pair
        )
    ):
        raise ValueError(
            f"{who}: size must be a positive int or a pair (height, width), got {size!r}"
        )
    return int(pair[0]), int(pair[1])


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _find_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` in sorted order, hidden files and folders skipped."""
    found = []
    for top, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if _visible(d)]  # pruned in place: os.walk skips them
        found.extend(
            Path(top) / name
            for name in names
            if _visible(name) and name.lower().endswith(IMAGE_EXTENSIONS)
        )
    # torchvision's order: folders by path string, then file names within each.
    return sorted(found, key=lambda path: (str(path.parent), path.name))


class ImageFolder(ArrayDataset):
    """Images in class sub-folders (torchvision's ``ImageFolder`` layout), loaded once.

    Parameters
    ----------
    root : str or path-like
        Folder holding one sub-folder per class. PNG, JPEG and BMP files
        (extensions in any case) are read, sub-folders included; other files
        and hidden files or folders (names starting with ``.``) are skipped.
    transform : callable, optional
        A batch transform, e.g. ``transforms.Normalize(...)``. Like every xcnn
        dataset, ImageFolder holds the raw uint8 images and applies nothing:
        transforms run on float batches in :class:`~xcnn.data.DataLoader`, so
        it is kept as ``.transform`` for ``DataLoader(ds, 64, transform=ds.transform)``.
    size : int or (int, int), optional
        Resize every image to ``(size, size)`` or ``(height, width)``
        (bilinear). Without it all images must already share one size.
    grayscale : bool, optional
        ``True``: one grey channel (colour images converted with Pillow's
        ITU-R 601-2 luma); ``False``: three RGB channels (grey, palette and
        RGBA images converted, alpha dropped). ``None`` infers: one channel
        when every image is stored grey (Pillow modes ``1``, ``L``, ``LA``,
        16-bit ``I;16``, whose high byte is kept), else three; palette images
        count as colour.

    Attributes
    ----------
    images : numpy.ndarray
        uint8, ``(N, C, H, W)`` with ``C`` 1 or 3.
    labels : numpy.ndarray
        int64, ``(N,)``: the index in ``classes`` of each image's folder.
    classes : list of str
        Sorted class folder names.
    class_to_idx : dict of str to int
        ``{name: label}``.
    samples : list of (str, int)
        ``(path, label)`` of every image, in the order of ``images``.
    root : pathlib.Path

    Raises
    ------
    FileNotFoundError
        ``root`` is not a folder.
    ValueError
        No class folders, a class folder without images, an unreadable or
        corrupt image, or images of different sizes without ``size``; the
        message names the folder or file.
    ImportError
        Pillow is not installed.

    Examples
    --------
    >>> import tempfile
    >>> from xcnn.data import ArrayDataset, FashionMNISTSample, ImageFolder, export_images
    >>> sample = FashionMNISTSample(train=False)
    >>> folder = tempfile.mkdtemp()
    >>> export_images(ArrayDataset(sample.images[:20], sample.labels[:20], sample.classes), folder)
    20
    >>> ds = ImageFolder(folder)
    >>> ds.images.shape, ds.images.dtype.name, ds.classes == sorted(ds.classes)
    ((20, 1, 28, 28), 'uint8', True)
    """

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Callable[[Any], Any] | None = None,
        size: int | tuple[int, int] | None = None,
        grayscale: bool | None = None,
    ):
        root = Path(root).expanduser()
        target = _pair(size, "ImageFolder")
        if not root.is_dir():
            raise FileNotFoundError(f"ImageFolder: {str(root)!r} does not exist or is not a folder")
        classes = sorted(d.name for d in root.iterdir() if d.is_dir() and _visible(d.name))
        if not classes:
            raise ValueError(
                f"ImageFolder: no class folders in {str(root)!r}; expected one sub-folder per "
                "class, e.g. root/cat/1.png and root/dog/2.png"
            )
        samples: list[tuple[Path, int]] = []
        for label, name in enumerate(classes):
            files = _find_images(root / name)
            if not files:
                raise ValueError(
                    f"ImageFolder: class folder {str(root / name)!r} holds no images "
                    f"({', '.join(IMAGE_EXTENSIONS)}); add some or remove the folder"
                )
            samples.extend((path, label) for path in files)

        images = _read_images([path for path, _ in samples], target, grayscale, "ImageFolder")
        labels = np.array([label for _, label in samples], dtype=np.int64)
        super().__init__(images, labels, classes, name="ImageFolder")
        self.root = root
        self.class_to_idx = {name: i for i, name in enumerate(classes)}
        self.samples = [(str(path), label) for path, label in samples]
        self.transform = transform

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, from {str(self.root)!r})"


def read_images(
    paths: Sequence[str | os.PathLike],
    size: int | tuple[int, int] | None = None,
    grayscale: bool | None = None,
) -> np.ndarray:
    """Decode image files into one uint8 ``(N, C, H, W)`` array, exactly as :class:`ImageFolder`.

    The same conversion, so a model sees the same pixels from a file it is
    given on its own as from the same file inside an ImageFolder.

    Parameters
    ----------
    paths : sequence of str or path-like
        PNG, JPEG, BMP or any other format Pillow reads.
    size, grayscale
        As for :class:`ImageFolder`: resize to ``size`` (bilinear), and take one grey
        channel (``True``), three RGB channels (``False``) or infer it (``None``).

    Returns
    -------
    numpy.ndarray
        uint8, ``(len(paths), C, H, W)``.

    Raises
    ------
    FileNotFoundError
        A path does not exist (the message names it).
    ValueError
        An unreadable or corrupt image, or images of different sizes without ``size``.
    ImportError
        Pillow is not installed.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from xcnn.data import ArrayDataset, FashionMNISTSample, export_images, read_images
    >>> sample = FashionMNISTSample(train=False)
    >>> folder = Path(tempfile.mkdtemp())
    >>> export_images(ArrayDataset(sample.images[:3], sample.labels[:3], sample.classes), folder)
    3
    >>> read_images(sorted(folder.glob("*/*.png")), size=32).shape
    (3, 1, 32, 32)
    """
    paths = [Path(path) for path in paths]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"read_images: {str(path)!r} does not exist or is not a file")
    return _read_images(paths, _pair(size, "read_images"), grayscale, "read_images")


def _read_images(
    paths: list[Path], target: tuple[int, int] | None, grayscale: bool | None, who: str
) -> np.ndarray:
    """The decoding behind :class:`ImageFolder` and :func:`read_images`; ``who`` starts errors."""
    Image = _pillow()
    # First pass reads headers only: the channel count and output size are
    # known before any pixel is decoded, so the array is allocated once.
    modes, sizes = [], []
    for path in paths:
        with _open(Image, path, who) as im:
            modes.append(im.mode)
            sizes.append(im.size)
    if target is None:
        first = sizes[0]
        for path, (w, h) in zip(paths, sizes, strict=True):
            if (w, h) != first:
                raise ValueError(
                    f"{who}: images differ in size: {str(paths[0])!r} is "
                    f"{first[1]}x{first[0]} (HxW) but {str(path)!r} is {h}x{w}; pass "
                    "size=(height, width) to resize them all"
                )
        target = (first[1], first[0])
    if grayscale is None:
        grayscale = all(mode in _GREY_MODES for mode in modes)
    mode, channels = ("L", 1) if grayscale else ("RGB", 3)

    images = np.empty((len(paths), channels, *target), dtype=np.uint8)
    for i, path in enumerate(paths):
        with _open(Image, path, who) as im:
            try:
                if im.mode.startswith("I"):
                    # 16-bit PNGs: Pillow's convert clips at 255; keep the high byte instead.
                    high = np.clip(np.asarray(im, dtype=np.int64) >> 8, 0, 255)
                    im = Image.fromarray(high.astype(np.uint8))
                im = im.convert(mode) if im.mode != mode else im
                if im.size != (target[1], target[0]):
                    im = im.resize((target[1], target[0]), Image.Resampling.BILINEAR)
                pixels = np.asarray(im, dtype=np.uint8)
            except (OSError, ValueError, SyntaxError) as error:
                raise ValueError(f"{who}: cannot decode {str(path)!r}: {error}") from None
        images[i] = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
    return images


def _open(Image: Any, path: Path, who: str) -> Any:
    """``Image.open(path)``, with any failure turned into a ValueError naming the file."""
    try:
        return Image.open(path)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        # UnidentifiedImageError is an OSError; a bomb is a too-large image, not a corrupt one.
        raise ValueError(f"{who}: cannot read image {str(path)!r}: {error}") from None


def _folder_names(dataset: Any, labels: np.ndarray) -> dict[int, str]:
    """Folder per label: the class name made safe for a path, else the zero-padded number."""
    present = sorted({int(v) for v in np.unique(labels)})
    classes = getattr(dataset, "classes", None)
    if classes is None:
        width = len(str(max(present, default=0)))
        return {label: f"{label:0{width}d}" for label in present}
    names = {}
    for label in present:
        name = str(classes[label]).replace("/", "_").replace("\\", "_").strip()
        if not name or name.startswith("."):  # ImageFolder skips hidden folders
            name = f"_{name}"
        names[label] = name
    if len(set(names.values())) != len(names):
        raise ValueError(
            f"export_images: class names {[classes[i] for i in present]} do not give distinct "
            "folder names once '/' and '\\' are replaced by '_'; rename the classes"
        )
    return names


def export_images(dataset: Any, folder: str | os.PathLike, *, overwrite: bool = False) -> int:
    """Write a dataset as class folders of PNGs, ``folder/<class>/<index:05d>.png``.

    Reading the result back with :class:`ImageFolder` gives the same pixels
    and class names (images then come grouped by class, in folder-name order;
    within a class, in dataset order).

    Parameters
    ----------
    dataset : ArrayDataset
        Anything with uint8 ``images`` ``(N, C, H, W)`` (``C`` 1 or 3) and
        integer ``labels`` ``(N,)``. Folders are named after ``dataset.classes``
        when it has them (``/`` and ``\\`` replaced by ``_``), else after the
        label numbers, zero-padded so that they sort in label order. Classes
        without images get no folder.
    folder : str or path-like
        Created if missing.
    overwrite : bool
        Write into ``folder`` even if it is not empty (files of the same name
        are replaced, others left as they are). By default a non-empty folder
        is refused.

    Returns
    -------
    int
        The number of images written.

    Raises
    ------
    FileExistsError
        ``folder`` is not empty and ``overwrite`` is false.
    ValueError
        The images are not uint8 ``(N, C, H, W)`` with 1 or 3 channels.
    ImportError
        Pillow is not installed.

    Notes
    -----
    Each file is written under a hidden temporary name in its class folder and
    renamed into place, so an interrupted export leaves no truncated PNG
    (ImageFolder skips hidden files).

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from xcnn.data import ArrayDataset, export_images
    >>> ds = ArrayDataset(np.zeros((3, 1, 4, 4), np.uint8), np.array([0, 1, 0]), ["a", "b"])
    >>> folder = tempfile.mkdtemp()
    >>> export_images(ds, folder)
    3
    >>> sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*.png"))
    ['a/00000.png', 'a/00002.png', 'b/00001.png']
    """
    images, labels = np.asarray(dataset.images), np.asarray(dataset.labels)
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[1] not in (1, 3):
        raise ValueError(
            "export_images: expected uint8 images of shape (N, C, H, W) with C 1 or 3, "
            f"got {images.dtype} of shape {images.shape}"
        )
    if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"export_images: expected {images.shape[0]} integer labels, got {labels.dtype} "
            f"of shape {labels.shape}"
        )
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"export_images: {str(folder)!r} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise FileExistsError(
            f"export_images: {str(folder)!r} is not empty; choose an empty folder or pass "
            "overwrite=True"
        )
    Image = _pillow()
    names = _folder_names(dataset, labels)
    for name in names.values():
        (folder / name).mkdir(parents=True, exist_ok=True)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        dest = folder / names[int(label)] / f"{index:05d}.png"
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as file:
                Image.fromarray(np.ascontiguousarray(pixels)).save(file, format="PNG")
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return int(images.shape[0])
