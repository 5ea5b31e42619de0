"""The embedded Fashion-MNIST sample and load_dataset's offline fallback."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from xcnn.data import (
    DatasetNotAvailable,
    FashionMNIST,
    FashionMNISTSample,
    SampleFallbackWarning,
    _make_sample,
    load_dataset,
    read_idx,
    sources,
)
from xcnn.data.sample import SAMPLE_DIR

REAL = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.parametrize(("train", "per_class"), [(True, 600), (False, 100)])
def test_sample_is_stratified_and_shaped(train, per_class):
    ds = FashionMNISTSample(train=train)
    assert ds.images.shape == (10 * per_class, 1, 28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64
    assert np.bincount(ds.labels, minlength=10).tolist() == [per_class] * 10
    assert ds.classes == list(FashionMNIST.class_names) and ds.num_classes == 10
    assert ds.images.std() > 10  # real pictures, not blanks


def test_sample_ships_license_readme_and_stays_small():
    files = {p.name: p for p in SAMPLE_DIR.iterdir()}
    assert "Zalando SE" in files["LICENSE"].read_text()
    assert "MIT License" in files["LICENSE"].read_text()
    assert "_make_sample" in files["README"].read_text()
    assert sum(p.stat().st_size for p in files.values()) < 4_000_000


@pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} not installed (apt dataset-fashion-mnist)")
def test_sample_is_the_documented_disjoint_subset_of_the_official_test_set():
    labels = read_idx(REAL / "t10k-labels-idx1-ubyte.gz")
    images = read_idx(REAL / "t10k-images-idx3-ubyte.gz")
    train_index, test_index = _make_sample.stratified_split(labels)
    assert np.intersect1d(train_index, test_index).size == 0
    for train, index in ((True, train_index), (False, test_index)):
        ds = FashionMNISTSample(train=train)
        np.testing.assert_array_equal(ds.images[:, 0], images[index])
        np.testing.assert_array_equal(ds.labels, labels[index])


def test_load_dataset_by_name(tmp_path, make_idx_dataset):
    assert len(load_dataset("sample", train=False)) == 1000
    make_idx_dataset(tmp_path / "mnist")
    ds = load_dataset("MNIST", root=tmp_path, train=False)
    assert len(ds) == 5 and ds.name == "MNIST"
    with pytest.raises(ValueError, match=r"unknown dataset 'imagenet'.*'mnist'.*'sample'"):
        load_dataset("imagenet")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10"])
def test_offline_falls_back_to_the_sample_with_one_warning(tmp_path, dead_url, monkeypatch, name):
    monkeypatch.setitem(sources.MIRRORS, name, [dead_url])
    with pytest.warns(SampleFallbackWarning) as record:
        ds = load_dataset(name, root=tmp_path, train=False)
    assert len(record) == 1
    message = str(record[0].message)
    assert "\n" not in message and "embedded Fashion-MNIST sample" in message
    assert f"full {name} dataset" in message
    assert isinstance(ds, FashionMNISTSample) and len(ds) == 1000


def test_fallback_can_be_refused_and_does_not_hide_corrupt_files(
    tmp_path, dead_url, monkeypatch, make_idx_dataset
):
    monkeypatch.setitem(sources.MIRRORS, "mnist", [dead_url])
    with pytest.raises(DatasetNotAvailable):
        load_dataset("mnist", root=tmp_path, fallback_to_sample=False)
    with pytest.warns(SampleFallbackWarning):
        load_dataset("mnist", root=tmp_path, download=False)
    make_idx_dataset(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x00\x00\x08")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="t10k-labels"):
            load_dataset("mnist", root=tmp_path, train=False)
