"""Shared fixtures: every layer test runs once per array namespace.

The ``backend`` / ``xp`` fixtures are parametrized over NumPy,
array_api_strict (which proves the generic code uses only the standard) and
CuPy (marked ``gpu``, SKIPPED with the probe's reason where no GPU answers).

Which namespaces run:

* ``XCNN_TEST_NAMESPACES=numpy,cupy`` (comma-separated) picks them explicitly;
* else ``XCNN_BACKEND=cupy`` runs only CuPy, ``XCNN_BACKEND=numpy`` the two
  CPU namespaces;
* else all three.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from xcnn import backends
from xcnn.data import write_idx

ALL_NAMESPACES = ("numpy", "array_api_strict", "cupy")


def _selected_namespaces() -> tuple[str, ...]:
    explicit = os.environ.get("XCNN_TEST_NAMESPACES", "").strip()
    if explicit:
        names = tuple(n.strip().lower() for n in explicit.split(",") if n.strip())
        unknown = [n for n in names if n not in ALL_NAMESPACES]
        if unknown:
            raise pytest.UsageError(
                f"XCNN_TEST_NAMESPACES has unknown names {unknown}; choose from {ALL_NAMESPACES}"
            )
        return names
    env = os.environ.get("XCNN_BACKEND", "").strip().lower()
    if env == "cupy":
        return ("cupy",)
    if env == "numpy":
        return ("numpy", "array_api_strict")
    return ALL_NAMESPACES


def _params() -> list:
    params = []
    for name in _selected_namespaces():
        if name == "cupy":
            usable, reason = backends._probe_cupy()
            marks = [pytest.mark.gpu, pytest.mark.skipif(not usable, reason=reason)]
            params.append(pytest.param(name, marks=marks, id=name))
        else:
            params.append(pytest.param(name, id=name))
    return params


@pytest.fixture(params=_params())
def backend(request):
    """The Backend under test, active (via ``backends.use``) for the whole test."""
    with backends.use(request.param) as b:
        yield b


@pytest.fixture
def xp(backend):
    """The array namespace under test."""
    return backend.xp


@pytest.fixture
def rng():
    """A fresh seeded host generator, so each test is reproducible on its own."""
    return np.random.default_rng(1234)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (CuPy backend)")
    config.addinivalue_line("markers", "torch: compares against PyTorch as the oracle")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_terminal_summary(terminalreporter):
    """One line per skip reason, so GPU skips are visible without listing each test."""
    skipped = terminalreporter.stats.get("skipped", [])
    reasons: dict[str, int] = {}
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    if reasons:
        terminalreporter.section("skipped tests, by reason")
        for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
            terminalreporter.write_line(f"{count:5d} skipped: {reason}")


def _write_blob_mnist(
    folder: Path, sizes: dict[str, int], *, noise: int, brightness: int, suffix: str = ""
) -> Path:
    """An MNIST-format dataset in ``folder`` whose classes are easy to tell apart.

    ``sizes`` maps each split ("train", "t10k") to its image count. Each image is
    uniform noise below ``noise`` plus a bright bar (``brightness``) whose height
    depends on the label, so a model learns it and its weights move every step.
    ``suffix`` is added to the file names (".gz" writes them compressed).
    """
    rng = np.random.default_rng(0)
    for split, n in sizes.items():
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        images = rng.integers(0, noise, size=(n, 28, 28), dtype=np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 * label : 2 * label + 8, 4:20] += brightness
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", labels)
    return folder


@pytest.fixture(scope="session")
def write_blob_mnist():
    """The writer of a small, learnable MNIST-format dataset (see ``_write_blob_mnist``)."""
    return _write_blob_mnist
