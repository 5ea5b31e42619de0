"""Helpers for the optimizer tests: run xcnn and torch.optim side by side."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from xcnn import backends
from xcnn.nn import Parameter

SHAPES = ((3, 4), (5,), (2, 1, 3))


def tolerances(dtype: str) -> dict[str, float]:
    """Same formulas, different rounding order: ulp-level differences only."""
    return {"rtol": 1e-5, "atol": 1e-6} if dtype == "float32" else {"rtol": 1e-10, "atol": 1e-12}


@pytest.fixture
def make_problem() -> Callable:
    """``make_problem(dtype, steps, seed)`` -> (initial weights, gradient per step), host arrays."""

    def make(dtype: str = "float32", steps: int = 6, seed: int = 0, shapes=SHAPES):
        rng = np.random.default_rng(seed)
        weights = [rng.standard_normal(s).astype(dtype) for s in shapes]
        # Gradients of varied scale, so the adaptive terms of Adam matter.
        grads = [
            [(rng.standard_normal(s) * 10.0 ** rng.integers(-2, 2)).astype(dtype) for s in shapes]
            for _ in range(steps)
        ]
        return weights, grads

    return make


@pytest.fixture
def side_by_side(make_problem) -> Callable:
    """Run an xcnn optimizer and a torch.optim one from the same weights and gradients.

    ``side_by_side(backend, make_ours, make_torch, dtype)`` steps both, compares the
    weights after every step and returns ``(params, opt, torch_params, torch_opt)``.
    """
    import torch

    def run(backend, make_ours, make_torch, dtype="float32", steps=6, seed=0):
        weights, grads = make_problem(dtype, steps, seed)
        params = [Parameter(backend.asarray(w.copy())) for w in weights]
        tparams = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in weights]
        opt, topt = make_ours(params), make_torch(tparams)
        for t, step_grads in enumerate(grads):
            for p, tp, g in zip(params, tparams, step_grads, strict=True):
                p.grad = backend.asarray(g)
                tp.grad = torch.from_numpy(g.copy())
            opt.step()
            topt.step()
            for i, (p, tp) in enumerate(zip(params, tparams, strict=True)):
                assert backends.namespace_name(p.data) == backend.name
                assert backend.to_numpy(p.data).dtype == weights[i].dtype
                np.testing.assert_allclose(
                    backend.to_numpy(p.data),
                    tp.detach().numpy(),
                    **tolerances(dtype),
                    err_msg=f"parameter {i} after step {t + 1}",
                )
        return params, opt, tparams, topt

    return run
