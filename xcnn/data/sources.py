"""Where each dataset comes from: mirrors (base URLs) and the published file checksums.

Both tables are read at download time, so a user behind a proxy (or a test
serving files from a loopback server) can point a dataset elsewhere::

    xcnn.data.sources.MIRRORS["mnist"] = ["http://intranet/mnist/"]

Checksums are the MD5s published with each dataset (the Fashion-MNIST README,
the CIFAR-10 page, and torchvision's ``mnist.py`` for the MNIST mirrors).
"""

from __future__ import annotations

from xcnn.data.download import Resource

__all__ = ["MIRRORS", "RESOURCES"]

MIRRORS: dict[str, list[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    "cifar10": ["https://www.cs.toronto.edu/~kriz/"],
}

RESOURCES: dict[str, dict[str, Resource]] = {
    "mnist": {
        "train-images": Resource(
            "train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", 9912422
        ),
        "train-labels": Resource(
            "train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", 28881
        ),
        "test-images": Resource(
            "t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", 1648877
        ),
        "test-labels": Resource(
            "t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", 4542
        ),
    },
    "fashion-mnist": {
        "train-images": Resource(
            "train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", 26421880
        ),
        "train-labels": Resource(
            "train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", 29515
        ),
        "test-images": Resource(
            "t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", 4422102
        ),
        "test-labels": Resource(
            "t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", 5148
        ),
    },
    "cifar10": {
        "archive": Resource(
            "cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530", 170052171
        ),
    },
}
