"""Build the embedded Fashion-MNIST sample in ``xcnn/data/_sample/``.

Usage::

    python -m xcnn.data._make_sample [--source /usr/share/datasets/fashion-mnist]

Takes the official 10,000-image Fashion-MNIST *test* set (1,000 images per
class), and with a fixed seed picks, per class, 600 images for the sample's
"train" split and 100 other images for its "test" split. Each split keeps the
images in their original order. Files are gzip-compressed IDX with a zero
timestamp, so the output is byte-for-byte reproducible from the same source.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from xcnn.data.idx import read_idx, write_idx

SEED = 20170828  # the Fashion-MNIST release date
TRAIN_PER_CLASS = 600
TEST_PER_CLASS = 100
OUT = Path(__file__).resolve().parent / "_sample"


def stratified_split(labels: np.ndarray, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint index sets with TRAIN_PER_CLASS / TEST_PER_CLASS images of every class."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(int(labels.max()) + 1):
        members = rng.permutation(np.flatnonzero(labels == c))
        if members.size < TRAIN_PER_CLASS + TEST_PER_CLASS:
            raise ValueError(f"class {c} has only {members.size} images")
        train.append(members[:TRAIN_PER_CLASS])
        test.append(members[TRAIN_PER_CLASS : TRAIN_PER_CLASS + TEST_PER_CLASS])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="/usr/share/datasets/fashion-mnist", type=Path)
    parser.add_argument("--out", default=OUT, type=Path)
    args = parser.parse_args(argv)
    images = read_idx(args.source / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(args.source / "t10k-labels-idx1-ubyte.gz")
    if images.shape != (10000, 28, 28) or labels.shape != (10000,):
        raise SystemExit(f"expected the 10,000-image test set, got {images.shape}")
    train, test = stratified_split(labels)
    for split, index in (("train", train), ("t10k", test)):
        write_idx(args.out / f"{split}-images-idx3-ubyte.gz", images[index])
        write_idx(args.out / f"{split}-labels-idx1-ubyte.gz", labels[index])
    print(f"wrote {train.size} train + {test.size} test images to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
