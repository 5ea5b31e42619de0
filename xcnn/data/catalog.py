"""Datasets by name, with the embedded sample as the offline fallback (for the CLI)."""

from __future__ import annotations

import os
import warnings

from xcnn.data.datasets import CIFAR10, MNIST, ArrayDataset, FashionMNIST
from xcnn.data.download import DatasetNotAvailable
from xcnn.data.sample import FashionMNISTSample

__all__ = ["DATASETS", "SampleFallbackWarning", "load_dataset"]

DATASETS = {
    "mnist": MNIST,
    "fashion-mnist": FashionMNIST,
    "cifar10": CIFAR10,
    "sample": FashionMNISTSample,
}


class SampleFallbackWarning(UserWarning):
    """Emitted by :func:`load_dataset` when it returns the embedded sample instead."""


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    train: bool = True,
    download: bool = True,
    fallback_to_sample: bool = True,
) -> ArrayDataset:
    """Load a dataset by name, falling back to the embedded sample when it cannot be had.

    Parameters
    ----------
    name : str
        ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"`` or ``"sample"`` (the
        embedded Fashion-MNIST subset, :class:`FashionMNISTSample`).
    root, train, download
        As for :class:`MNIST`.
    fallback_to_sample : bool
        When the dataset is neither on disk nor downloadable
        (:class:`DatasetNotAvailable`), return the sample instead and emit a
        one-line :class:`SampleFallbackWarning` saying so and how to get the
        full dataset. Note the sample is 1x28x28: a model built for CIFAR-10
        must take its input shape from the returned dataset.

    Returns
    -------
    ArrayDataset
        ``images`` uint8 ``(N, C, H, W)``, ``labels`` int64 ``(N,)``.

    Raises
    ------
    ValueError
        ``name`` is unknown, or a file on disk is malformed (never hidden by the fallback).
    DatasetNotAvailable
        The dataset cannot be had and ``fallback_to_sample`` is false.
    """
    key = str(name).strip().lower()
    if key not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; choose one of {', '.join(repr(k) for k in DATASETS)}"
        )
    if key == "sample":
        return FashionMNISTSample(train=train)
    try:
        return DATASETS[key](root=root, train=train, download=download)
    except DatasetNotAvailable as error:
        if not fallback_to_sample:
            raise
        first_line = str(error).splitlines()[0]
        warnings.warn(
            f"{first_line} Using the embedded Fashion-MNIST sample (6,000 train / 1,000 test "
            f"images) instead; for the full {key} dataset, run once with network access or "
            "pass root=DIR (--data-dir DIR) holding its files.",
            SampleFallbackWarning,
            stacklevel=2,
        )
        return FashionMNISTSample(train=train)
