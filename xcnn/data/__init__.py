"""Datasets, file readers, the DataLoader and batch transforms.

>>> from xcnn import data
>>> train = data.load_dataset("sample", train=True)        # offline, ships with xcnn
>>> loader = data.DataLoader(train, batch_size=64, shuffle=True, seed=0)
>>> x, y = next(iter(loader))
>>> x.shape, str(x.dtype), str(y.dtype)
((64, 1, 28, 28), 'float32', 'int64')

Readers: :func:`read_idx` (MNIST-style IDX, raw or ``.gz``),
:func:`read_cifar10_batch` (CIFAR-10 binary). Datasets: :class:`MNIST`,
:class:`FashionMNIST`, :class:`CIFAR10`, the embedded
:class:`FashionMNISTSample`, :class:`ImageFolder` (class folders of image
files; :func:`export_images` writes them), and :func:`load_dataset` by name.
"""

from xcnn.data import sources, transforms
from xcnn.data.catalog import DATASETS, SampleFallbackWarning, load_dataset
from xcnn.data.cifar import extract_cifar10, read_cifar10_batch
from xcnn.data.datasets import CIFAR10, MNIST, ArrayDataset, FashionMNIST, default_root
from xcnn.data.download import DatasetNotAvailable, Resource, download_file, md5sum
from xcnn.data.folder import ImageFolder, export_images, read_images
from xcnn.data.idx import read_idx, write_idx
from xcnn.data.loader import DataLoader
from xcnn.data.sample import FashionMNISTSample

__all__ = [
    "CIFAR10",
    "DATASETS",
    "MNIST",
    "ArrayDataset",
    "DataLoader",
    "DatasetNotAvailable",
    "FashionMNIST",
    "FashionMNISTSample",
    "ImageFolder",
    "Resource",
    "SampleFallbackWarning",
    "default_root",
    "download_file",
    "export_images",
    "extract_cifar10",
    "load_dataset",
    "md5sum",
    "read_cifar10_batch",
    "read_idx",
    "read_images",
    "sources",
    "transforms",
    "write_idx",
]
