"""Image classification datasets held in host memory: MNIST, Fashion-MNIST, CIFAR-10.

Every dataset is an :class:`ArrayDataset`: ``images`` uint8 ``(N, C, H, W)``
and ``labels`` int64 ``(N,)`` as NumPy arrays, plus class names. Data moves to
the active backend only in :class:`xcnn.data.DataLoader`, one batch (or, on a
GPU, the whole set) at a time.

Where files are looked for, for ``root`` (default ``$XCNN_DATA``, else
``~/.cache/xcnn``):

1. ``root`` itself and ``root/<name>`` (``mnist``, ``fashion-mnist``,
   ``cifar10``), with the standard file names, gzip-compressed or not. Such a
   directory (e.g. Debian's ``/usr/share/datasets/fashion-mnist``) is used as
   is: its files are validated by parsing, not by checksum, because
   redistributors recompress them.
2. Otherwise, with ``download=True``, the files are fetched from
   :data:`xcnn.data.sources.MIRRORS` into ``root/<name>``, checked against the
   published size and MD5, and written atomically. A CIFAR-10 archive already
   in ``root/cifar10`` (e.g. copied there by hand) is checked against the
   published size and MD5 too before it is extracted.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xcnn.data import cifar, sources
from xcnn.data.download import DatasetNotAvailable, Resource, download_file, md5sum
from xcnn.data.idx import read_idx

__all__ = [
    "CIFAR10",
    "MNIST",
    "ArrayDataset",
    "FashionMNIST",
    "default_root",
]


def default_root() -> Path:
    """``$XCNN_DATA`` if set, else ``~/.cache/xcnn`` (read at each call)."""
    env = os.environ.get("XCNN_DATA", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "xcnn"


def _resolve_root(root: str | os.PathLike | None) -> Path:
    return default_root() if root is None else Path(root).expanduser()


class ArrayDataset:
    """Images and integer class labels in host memory.

    Parameters
    ----------
    images : numpy.ndarray
        ``uint8`` (or floating), shape ``(N, C, H, W)``.
    labels : numpy.ndarray
        Integer class indices, shape ``(N,)``; stored as ``int64``.
    classes : sequence of str
        Class names; ``labels`` must lie in ``[0, len(classes))``.
    name : str
        Shown in ``repr`` and error messages.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn.data import ArrayDataset
    >>> ds = ArrayDataset(np.zeros((4, 1, 2, 2), np.uint8), np.array([0, 1, 1, 0]), ["a", "b"])
    >>> len(ds), ds.num_classes, ds[1][1]
    (4, 2, 1)
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        classes: Sequence[str],
        name: str = "ArrayDataset",
    ):
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim != 4:
            raise ValueError(
                f"{name}: expected images of shape (N, C, H, W), got shape {images.shape}"
            )
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"{name}: expected integer labels of shape (N,), got {labels.dtype} "
                f"of shape {labels.shape}"
            )
        if labels.shape[0] != images.shape[0]:
            raise ValueError(f"{name}: {images.shape[0]} images but {labels.shape[0]} labels")
        _check_label_range(labels, len(classes), name)
        self.images = images
        self.labels = labels.astype(np.int64, copy=False)
        self.classes = list(classes)
        self.name = name

    @property
    def num_classes(self) -> int:
        """Number of classes, ``len(self.classes)``."""
        return len(self.classes)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        """``(image (C, H, W), label)`` of one example."""
        return self.images[index], int(self.labels[index])

    def __repr__(self) -> str:
        return (
            f"{self.name}({len(self)} images of shape {tuple(self.images.shape[1:])}, "
            f"{self.num_classes} classes)"
        )


def _check_label_range(labels: np.ndarray, num_classes: int, source: str) -> None:
    if labels.size == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise ValueError(
            f"{source}: labels must lie in [0, {num_classes}), got {bad} "
            f"at index {int(np.flatnonzero(labels == bad)[0])}"
        )


def _describe_files(name: str, resources: Sequence[Resource], target: Path) -> str:
    lines = [
        f"Put these files (gzip-compressed or not) in {target}, or pass root=DIR "
        "(or set XCNN_DATA=DIR) for a directory that holds them:"
    ]
    for resource in resources:
        size = f", {resource.size} bytes" if resource.size is not None else ""
        lines.append(f"  {resource.filename}  (md5 {resource.md5}{size})")
        lines.extend(f"    {base}{resource.filename}" for base in sources.MIRRORS[name])
    return "\n".join(lines)


def _fetch_all(
    title: str, name: str, keys: Sequence[str], target: Path, download: bool, split: str
) -> None:
    """Download the resources ``keys`` of dataset ``name`` into ``target``."""
    resources = [sources.RESOURCES[name][key] for key in keys]
    if not download:
        raise DatasetNotAvailable(
            f"{title} ({split} split) was not found and download=False.\n"
            + _describe_files(name, resources, target)
        )
    for resource in resources:
        dest = target / resource.filename
        if dest.is_file():
            continue
        urls = [base + resource.filename for base in sources.MIRRORS[name]]
        try:
            download_file(urls, dest, resource)
        except DatasetNotAvailable as error:
            raise DatasetNotAvailable(
                f"{title} ({split} split) could not be downloaded from any mirror.\n{error}\n"
                + _describe_files(name, resources, target)
            ) from error
        except OSError as error:
            raise DatasetNotAvailable(
                f"{title} ({split} split): cannot write {dest} ({error}).\n"
                + _describe_files(name, resources, target)
            ) from error


def _verify_archive(title: str, archive: Path, resource: Resource) -> None:
    """Raise unless ``archive`` has the published size and MD5 of ``resource``."""
    size = archive.stat().st_size
    if resource.size is not None and size != resource.size:
        found = f"{size} bytes, expected {resource.size}"
    else:
        digest = md5sum(archive)
        if digest == resource.md5:
            return
        found = f"md5 {digest}, expected {resource.md5}"
    raise ValueError(
        f"{title} archive {str(archive)!r} does not match the published file ({found}): "
        "it is corrupt or incomplete. Delete it to download it again."
    )


class _IDXDataset(ArrayDataset):
    """MNIST-layout datasets: four IDX files, 28x28 grey images, 10 classes."""

    key: str = ""
    title: str = ""
    class_names: tuple[str, ...] = ()

    def __init__(
        self, root: str | os.PathLike | None = None, train: bool = True, download: bool = True
    ):
        root = _resolve_root(root)
        split = "train" if train else "test"
        keys = (f"{split}-images", f"{split}-labels")
        found = self._find(root, keys)
        if found is None:
            _fetch_all(self.title, self.key, keys, root / self.key, download, split)
            found = self._find(root / self.key, keys)
        images_path, labels_path = found
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise ValueError(
                f"{self.title} images {str(images_path)!r}: expected uint8 of shape "
                f"(N, 28, 28), got {images.dtype} of shape {images.shape}"
            )
        if labels.ndim != 1 or labels.dtype != np.uint8:
            raise ValueError(
                f"{self.title} labels {str(labels_path)!r}: expected uint8 of shape (N,), "
                f"got {labels.dtype} of shape {labels.shape}"
            )
        if labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"{self.title}: {str(labels_path)!r} holds {labels.shape[0]} labels but "
                f"{str(images_path)!r} holds {images.shape[0]} images"
            )
        _check_label_range(
            labels, len(self.class_names), f"{self.title} labels {str(labels_path)!r}"
        )
        super().__init__(images[:, None, :, :], labels, self.class_names, self.title)
        self.train = train
        self.root = images_path.parent

    def _find(self, root: Path, keys: Sequence[str]) -> tuple[Path, Path] | None:
        """The first of ``root``, ``root/<key>`` that holds both files, in any accepted name."""
        for folder in (root, root / self.key):
            paths = [_find_idx(folder, sources.RESOURCES[self.key][k].filename) for k in keys]
            if all(p is not None for p in paths):
                return paths[0], paths[1]
        return None

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"{super().__repr__()[:-1]}, {split} split from {str(self.root)!r})"


def _find_idx(folder: Path, filename: str) -> Path | None:
    """``train-images-idx3-ubyte.gz``, its uncompressed name, or the ``.idx3`` spelling."""
    stem = filename.removesuffix(".gz")
    dotted = stem.replace("-idx", ".idx")
    for candidate in (filename, stem, dotted, dotted + ".gz"):
        path = folder / candidate
        if path.is_file():
            return path
    return None


class MNIST(_IDXDataset):
    """The MNIST handwritten digits: 60,000 train / 10,000 test 28x28 grey images.

    Parameters
    ----------
    root : str or path-like, optional
        Directory holding (or to receive) the IDX files; default ``$XCNN_DATA``
        or ``~/.cache/xcnn``. Files are looked for in ``root`` and
        ``root/mnist``; downloads go to ``root/mnist``.
    train : bool
        The training split (60,000) or the test split (10,000).
    download : bool
        Fetch missing files from :data:`xcnn.data.sources.MIRRORS`.

    Attributes
    ----------
    images : numpy.ndarray
        uint8, ``(N, 1, 28, 28)``.
    labels : numpy.ndarray
        int64, ``(N,)``.
    classes : list of str
        ``["0", ..., "9"]``.

    Raises
    ------
    DatasetNotAvailable
        The files are missing and cannot be downloaded.
    ValueError
        A file is malformed; the message names it.
    """

    key = "mnist"
    title = "MNIST"
    class_names = tuple(str(d) for d in range(10))


class FashionMNIST(_IDXDataset):
    """Zalando's Fashion-MNIST: 60,000 train / 10,000 test 28x28 grey article images.

    Same parameters and attributes as :class:`MNIST`; files are looked for in
    ``root`` and ``root/fashion-mnist``. ``FashionMNIST(root="/usr/share/datasets/fashion-mnist")``
    reads Debian's ``dataset-fashion-mnist`` package as is.
    """

    key = "fashion-mnist"
    title = "Fashion-MNIST"
    class_names = (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )


class CIFAR10(ArrayDataset):
    """CIFAR-10 (binary version): 50,000 train / 10,000 test 32x32 colour images.

    Parameters
    ----------
    root : str or path-like, optional
        Default ``$XCNN_DATA`` or ``~/.cache/xcnn``. The ``.bin`` batches are
        looked for in ``root``, ``root/cifar-10-batches-bin``, ``root/cifar10``
        and ``root/cifar10/cifar-10-batches-bin``; a download is extracted
        (safely: only the six batches, as regular files) into the last.
    train : bool
        ``data_batch_1.bin`` ... ``data_batch_5.bin``, or ``test_batch.bin``.
    download : bool
        Fetch ``cifar-10-binary.tar.gz`` when the batches are missing.

    Attributes
    ----------
    images : numpy.ndarray
        uint8, ``(N, 3, 32, 32)``.
    labels : numpy.ndarray
        int64, ``(N,)``.
    classes : list of str
        ``["airplane", "automobile", ..., "truck"]``.

    Raises
    ------
    DatasetNotAvailable
        The batches are missing and cannot be downloaded.
    ValueError
        ``root/cifar10/cifar-10-binary.tar.gz`` is on disk but does not have
        the published size and MD5 (it is kept; delete it to download again),
        the archive is corrupt, or a batch is malformed; the message names
        the file.
    """

    key = "cifar10"
    title = "CIFAR-10"
    class_names = (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    )

    def __init__(
        self, root: str | os.PathLike | None = None, train: bool = True, download: bool = True
    ):
        root = _resolve_root(root)
        split = "train" if train else "test"
        names = cifar.CIFAR10_TRAIN_FILES if train else cifar.CIFAR10_TEST_FILES
        folder = self._find(root, names)
        if folder is None:
            target = root / self.key
            resource = sources.RESOURCES[self.key]["archive"]
            archive = target / resource.filename
            on_disk = archive.is_file()
            _fetch_all(self.title, self.key, ["archive"], target, download, split)
            if on_disk:  # a download is verified as it arrives; a found file is not yet
                _verify_archive(self.title, archive, resource)
            cifar.extract_cifar10(
                archive, target / cifar.CIFAR10_DIRNAME, cifar.CIFAR10_RECORDS_PER_FILE
            )
            # The batches now hold everything the archive had that we read.
            archive.unlink()
            folder = target / cifar.CIFAR10_DIRNAME
        parts = [cifar.read_cifar10_batch(folder / name) for name in names]
        images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        super().__init__(images, labels, self.class_names, self.title)
        self.train = train
        self.root = folder

    def _find(self, root: Path, names: Sequence[str]) -> Path | None:
        sub = cifar.CIFAR10_DIRNAME
        for folder in (root, root / sub, root / self.key, root / self.key / sub):
            if all((folder / name).is_file() for name in names):
                return folder
        return None

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"{super().__repr__()[:-1]}, {split} split from {str(self.root)!r})"
