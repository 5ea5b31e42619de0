"""Tensors for the autograd tests, built on the namespace under test (the ``xp`` fixture)."""

from __future__ import annotations

import pytest

import xcnn


@pytest.fixture
def make(xp, rng):
    """``make(shape, dtype="float64", requires_grad=True, low=-2, high=2)``: a leaf Tensor.

    Values are uniform in ``[low, high)`` from the test's seeded generator, built with
    ``xp.asarray`` so they live on the namespace under test.
    """

    def build(
        shape: tuple[int, ...],
        dtype: str = "float64",
        requires_grad: bool = True,
        low: float = -2.0,
        high: float = 2.0,
    ) -> xcnn.Tensor:
        host = rng.uniform(low, high, size=shape).astype(dtype)
        return xcnn.Tensor(xp.asarray(host), requires_grad=requires_grad)

    return build
