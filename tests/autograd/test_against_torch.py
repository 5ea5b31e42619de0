"""PyTorch's autograd as the oracle: random expression graphs, same values, same gradients.

Hypothesis draws a few leaf tensors of broadcast-compatible shapes and a random program
of Tensor operations over them (reusing earlier results and leaves, so tensors fan out),
then runs the same program with xcnn and with torch, backpropagates the same random
gradient from the last result, and compares the result and every leaf's gradient at
float64 (tight) and float32 (looser).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

import xcnn
from xcnn import backends

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.torch

LEAF_SHAPES = [(2, 3), (3,), (2, 1), (1, 3), (), (4, 2, 3)]

# Elementwise operations, written once for both libraries; the inner clamp/abs keep
# exp, log, sqrt, pow and division away from overflow and from their poles.
UNARY = {
    "neg": lambda a: -a,
    "abs": lambda a: a.abs(),
    "exp": lambda a: a.clamp(-4.0, 4.0).exp(),
    "log": lambda a: (a.abs() + 0.5).log(),
    "sqrt": lambda a: (a * a + 0.25).sqrt(),
    "square": lambda a: a**2,
    "pow-float": lambda a: (a.abs() + 0.5) ** 1.5,
    "rpow": lambda a: 2.0 ** a.clamp(-3.0, 3.0),
    "clamp": lambda a: a.clamp(-1.0, 1.0),
    "affine": lambda a: 0.5 * a - 1.0,
    "reciprocal": lambda a: 1.0 / (a * a + 0.5),
}
SHAPE = {
    "reshape": lambda a: a.reshape(*reversed(tuple(a.shape))),
    "flatten": lambda a: a.flatten(),
    "flatten-start": lambda a: a.flatten(1) if a.ndim >= 2 else a.flatten(),
    "transpose": lambda a: a.transpose(0, -1),
    "permute": lambda a: a.permute(*reversed(range(a.ndim))),
    "T": lambda a: a.T,
}
BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (b * b + 0.5),
    "pow": lambda a, b: (a.abs() + 0.5) ** b.clamp(-2.0, 2.0),
}


def _broadcasts(s: tuple[int, ...], t: tuple[int, ...]) -> bool:
    try:
        np.broadcast_shapes(s, t)
    except ValueError:
        return False
    return True


def _draw_step(data, shapes: list[tuple[int, ...]]) -> tuple:
    """One step of the program: (kind, argument indices, parameters)."""
    kinds = ["unary", "binary", "reduce", "shape", "index", "matmul", "join"]
    kind = data.draw(st.sampled_from(kinds))
    i = data.draw(st.integers(0, len(shapes) - 1))
    shape = shapes[i]
    if kind == "unary":
        return ("unary", (i,), data.draw(st.sampled_from(sorted(UNARY))))
    if kind == "binary":
        partners = [j for j, s in enumerate(shapes) if _broadcasts(shape, s)]
        j = data.draw(st.sampled_from(partners))  # may be i itself: the same tensor twice
        return ("binary", (i, j), data.draw(st.sampled_from(sorted(BINARY))))
    if kind == "reduce" or not shape:
        op = data.draw(st.sampled_from(["sum", "mean", "max"]))
        dim = None if not shape else data.draw(st.none() | st.integers(-len(shape), len(shape) - 1))
        return ("reduce", (i,), (op, dim, data.draw(st.booleans())))
    if kind == "shape":
        ops = ["reshape", "flatten", "flatten-start"]
        if len(shape) >= 2:
            ops += ["transpose", "permute", "T" if len(shape) == 2 else "permute"]
        return ("shape", (i,), data.draw(st.sampled_from(ops)))
    if kind == "index":
        keys = [(0,), (-1,), (Ellipsis, None)]
        if shape[0] >= 2:
            keys.append((slice(1, None),))
        if len(shape) >= 2:
            keys += [(slice(None), None, 0), (Ellipsis, 0), (0, slice(None, None, 2))]
        return ("index", (i,), data.draw(st.sampled_from(keys)))
    same = [j for j, s in enumerate(shapes) if s == shape]
    if kind == "matmul":
        return ("matmul", (i, data.draw(st.sampled_from(same))), None)
    count = data.draw(st.integers(2, 3))
    parts = tuple(data.draw(st.sampled_from(same)) for _ in range(count))
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    return ("join", (i, *parts), (data.draw(st.sampled_from(["cat", "stack"])), dim))


def _run(program, leaves, lib):
    """Apply ``program`` to ``leaves`` with Tensor methods; ``lib`` gives cat and stack."""
    values = list(leaves)
    for kind, args, params in program:
        a = values[args[0]]
        if kind == "unary":
            out = UNARY[params](a)
        elif kind == "binary":
            out = BINARY[params](a, values[args[1]])
        elif kind == "reduce":
            op, dim, keepdim = params
            if dim is None:
                out = getattr(a, op)()
            elif op == "max":
                out = a.max(dim=dim, keepdim=keepdim).values
            else:
                out = getattr(a, op)(dim=dim, keepdim=keepdim)
        elif kind == "shape":
            out = SHAPE[params](a)
        elif kind == "index":
            out = a[params]
        elif kind == "matmul":
            b = values[args[1]]
            out = a @ b if a.ndim == 1 else a @ b.transpose(-1, -2)
        else:
            op, dim = params
            out = getattr(lib, op)([values[j] for j in args[1:]], dim=dim)
        values.append(out)
    return values[-1]


def _check(program, host_leaves, seed_grad, xp, dtype, rtol):
    t_leaves = [
        torch.tensor(v.astype(dtype), requires_grad=True, dtype=getattr(torch, dtype))
        for v in host_leaves
    ]
    expected = _run(program, t_leaves, torch)
    expected.backward(torch.tensor(seed_grad.astype(dtype)).reshape(expected.shape))

    x_leaves = [xcnn.Tensor(xp.asarray(v.astype(dtype)), requires_grad=True) for v in host_leaves]
    out = _run(program, x_leaves, xcnn)
    out.backward(xp.asarray(seed_grad.astype(dtype).reshape(out.shape)))

    def close(actual, wanted, what):
        wanted = wanted.detach().numpy()
        actual = backends.to_host(actual)
        assert actual.dtype == wanted.dtype, what
        assert actual.shape == wanted.shape, what
        scale = max(1.0, float(np.max(np.abs(wanted), initial=0.0)))
        np.testing.assert_allclose(actual, wanted, rtol=rtol, atol=rtol * scale, err_msg=what)

    close(out.data, expected, f"{dtype} value")
    for k, (x, t) in enumerate(zip(x_leaves, t_leaves, strict=True)):
        if t.grad is None:
            assert x.grad is None, f"{dtype} leaf {k}: torch gives no gradient"
        else:
            close(x.grad, t.grad, f"{dtype} gradient of leaf {k}")


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)
@given(data=st.data())
def test_random_graphs_match_torch(xp, data):
    shapes = data.draw(st.lists(st.sampled_from(LEAF_SHAPES), min_size=1, max_size=4))
    program = []
    current = list(shapes)
    for _ in range(data.draw(st.integers(1, 8))):
        step = _draw_step(data, current)
        program.append(step)
        # Shapes follow from running the step on zeros (cheap, and never out of sync).
        probes = [torch.zeros(s) for s in current]
        current.append(tuple(_run([step], probes, torch).shape))
    note(f"leaves {shapes}\nprogram {program}")

    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    host_leaves = [np.asarray(rng.standard_normal(s)) for s in shapes]
    seed_grad = rng.standard_normal(math.prod(current[-1]))

    with torch.no_grad():
        reference = _run(program, [torch.tensor(v) for v in host_leaves], torch)
    assume(bool(torch.isfinite(reference).all()) and float(reference.abs().max()) < 1e6)

    _check(program, host_leaves, seed_grad, xp, "float64", rtol=1e-9)
    _check(program, host_leaves, seed_grad, xp, "float32", rtol=2e-4)
