"""A small real dataset shipped inside the package, so examples and tests run offline.

``xcnn/data/_sample/`` holds 7,000 Fashion-MNIST images in the standard IDX
layout, all drawn from the official 10,000-image *test* set: a 6,000-image
"train" split (600 per class) and a disjoint 1,000-image "test" split (100 per
class). ``xcnn/data/_make_sample.py`` rebuilds it; the MIT license of
Fashion-MNIST (Copyright (c) 2017 Zalando SE) is in ``_sample/LICENSE``.
Accuracy on it is not comparable with results on the full dataset.
"""

from __future__ import annotations

from pathlib import Path

from xcnn.data.datasets import FashionMNIST

__all__ = ["SAMPLE_DIR", "FashionMNISTSample"]

SAMPLE_DIR = Path(__file__).resolve().parent / "_sample"


class FashionMNISTSample(FashionMNIST):
    """The embedded Fashion-MNIST sample: 6,000 train / 1,000 test 28x28 grey images.

    Parameters
    ----------
    train : bool
        The 6,000-image split (600 per class) or the disjoint 1,000-image split
        (100 per class). Both come from the official Fashion-MNIST test set.

    Attributes
    ----------
    images : numpy.ndarray
        uint8, ``(N, 1, 28, 28)``.
    labels : numpy.ndarray
        int64, ``(N,)``.
    classes : list of str
        The ten Fashion-MNIST class names.

    Examples
    --------
    >>> from xcnn.data import FashionMNISTSample
    >>> ds = FashionMNISTSample(train=False)
    >>> len(ds), ds.images.shape[1:], ds.num_classes
    (1000, (1, 28, 28), 10)
    """

    title = "Fashion-MNIST sample"

    def __init__(self, train: bool = True):
        super().__init__(root=SAMPLE_DIR, train=train, download=False)
