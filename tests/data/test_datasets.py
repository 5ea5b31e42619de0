"""MNIST / Fashion-MNIST from directories on disk, validation, and ArrayDataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xcnn.data import MNIST, ArrayDataset, FashionMNIST, default_root, md5sum, read_idx, sources
from xcnn.data.idx import write_idx

REAL = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.parametrize(
    ("where", "compress", "dotted"),
    [(".", True, False), ("fashion-mnist", True, False), (".", False, False), (".", False, True)],
    ids=["root-gz", "subfolder-gz", "root-raw", "dotted-raw"],
)
def test_fashion_mnist_from_a_directory_as_is(
    tmp_path, make_idx_dataset, server, monkeypatch, where, compress, dotted
):
    monkeypatch.setitem(sources.MIRRORS, "fashion-mnist", [server.url])
    made = make_idx_dataset(tmp_path / where, compress=compress, dotted=dotted)
    for train, split in ((True, "train"), (False, "test")):
        ds = FashionMNIST(root=tmp_path, train=train)
        images, labels = made[split]
        assert ds.images.dtype == np.uint8 and ds.images.shape == (len(labels), 1, 28, 28)
        assert ds.labels.dtype == np.int64 and ds.labels.shape == (len(labels),)
        np.testing.assert_array_equal(ds.images[:, 0], images)
        np.testing.assert_array_equal(ds.labels, labels)
        assert len(ds) == len(labels) and ds.num_classes == 10
        assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    assert server.requests == []  # a directory with the files is used as is


def test_local_files_are_validated_by_parsing_not_by_checksum(tmp_path, make_idx_dataset):
    make_idx_dataset(tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    assert md5sum(path) != sources.RESOURCES["mnist"]["train-labels"].md5
    assert len(MNIST(root=tmp_path, download=False)) == 12


def test_count_mismatch_names_both_files(tmp_path, make_idx_dataset):
    make_idx_dataset(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(11, np.uint8))
    with pytest.raises(
        ValueError, match=r"train-labels-idx1-ubyte\.gz' holds 11 labels.*12 images"
    ):
        MNIST(root=tmp_path, download=False)


def test_label_out_of_range_names_the_file(tmp_path, make_idx_dataset):
    make_idx_dataset(tmp_path)
    labels = np.zeros(5, np.uint8)
    labels[3] = 10
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    with pytest.raises(
        ValueError, match=r"t10k-labels-idx1-ubyte\.gz.*\[0, 10\), got 10 at index 3"
    ):
        FashionMNIST(root=tmp_path, train=False, download=False)


@pytest.mark.parametrize(
    ("array", "what"),
    [
        (np.zeros((3, 27, 28), np.uint8), r"images .*train-images.*\(N, 28, 28\).*\(3, 27, 28\)"),
        (np.zeros((3, 28, 28), np.float32), r"images .*train-images.*float32"),
    ],
)
def test_wrong_image_files_are_rejected(tmp_path, make_idx_dataset, array, what):
    make_idx_dataset(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", array)
    with pytest.raises(ValueError, match=what):
        MNIST(root=tmp_path, download=False)


def test_malformed_file_error_propagates_with_its_name(tmp_path, make_idx_dataset):
    make_idx_dataset(tmp_path, compress=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.*truncated"):
        MNIST(root=tmp_path, train=False, download=False)


def test_root_none_reads_xcnn_data_and_the_default(tmp_path, make_idx_dataset, monkeypatch):
    make_idx_dataset(tmp_path / "env" / "mnist")
    monkeypatch.setenv("XCNN_DATA", str(tmp_path / "env"))
    assert default_root() == tmp_path / "env"
    assert len(MNIST(train=False, download=False)) == 5
    monkeypatch.delenv("XCNN_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_root() == tmp_path / "home" / ".cache" / "xcnn"


def test_array_dataset_validates_and_indexes():
    images = np.arange(2 * 1 * 2 * 2, dtype=np.uint8).reshape(2, 1, 2, 2)
    ds = ArrayDataset(images, np.array([1, 0], dtype=np.int32), ["a", "b"], name="toy")
    assert ds.labels.dtype == np.int64 and ds[1][1] == 0
    np.testing.assert_array_equal(ds[1][0], images[1])
    assert "toy(2 images of shape (1, 2, 2), 2 classes)" == repr(ds)
    with pytest.raises(ValueError, match=r"toy: expected images of shape \(N, C, H, W\)"):
        ArrayDataset(images[0], np.array([1]), ["a", "b"], name="toy")
    with pytest.raises(ValueError, match="toy: 2 images but 3 labels"):
        ArrayDataset(images, np.array([0, 1, 1]), ["a", "b"], name="toy")
    with pytest.raises(ValueError, match=r"toy: labels must lie in \[0, 2\), got -1"):
        ArrayDataset(images, np.array([0, -1]), ["a", "b"], name="toy")
    with pytest.raises(ValueError, match="integer labels"):
        ArrayDataset(images, np.array([0.0, 1.0]), ["a", "b"], name="toy")


@pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} not installed (apt dataset-fashion-mnist)")
def test_real_debian_fashion_mnist_directory():
    labels = read_idx(REAL / "train-labels-idx1-ubyte.gz")
    assert labels.shape == (60000,) and labels.dtype == np.uint8
    assert np.bincount(labels).tolist() == [6000] * 10
    test = FashionMNIST(root=REAL, train=False, download=False)
    assert test.images.shape == (10000, 1, 28, 28) and test.labels.shape == (10000,)
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert 0 < test.images.mean() < 255
