"""xcnn's convolution and batch-norm ops against PyTorch's, one thread each, per layer shape.

Every ResNet-20 convolution shape (CIFAR-10, batch 128) and LeNet-5's second
convolution (batch 32/128/512), in float32: forward, and backward (input and weight
gradients, as a training step needs them; the first layers need no input gradient).
Then batch norm + ReLU in training (forward and backward) at ResNet-20's three widths.

Figures are CPU seconds (``time.process_time``), the median of ``--rounds`` rounds in
which xcnn's and PyTorch's calls alternate: on a machine that other processes share,
CPU time moves less than wall time. Both frameworks run on one thread (BLAS
included), so the figures compare kernels, not thread scaling.

    python benchmarks/bench_ops.py                 # every shape
    python benchmarks/bench_ops.py --only s3 bn    # rows whose name starts with these
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

import xcnn
from xcnn import ops

# name: (batch, in channels, size, out channels, kernel, stride, padding, needs input grad)
CONVS = {
    "stem 3->16 3x3": (128, 3, 32, 16, 3, 1, 1, False),
    "s1 16->16 3x3": (128, 16, 32, 16, 3, 1, 1, True),
    "s2a 16->32 3x3/2": (128, 16, 32, 32, 3, 2, 1, True),
    "s2sc 16->32 1x1/2": (128, 16, 32, 32, 1, 2, 0, True),
    "s2 32->32 3x3": (128, 32, 16, 32, 3, 1, 1, True),
    "s3a 32->64 3x3/2": (128, 32, 16, 64, 3, 2, 1, True),
    "s3sc 32->64 1x1/2": (128, 32, 16, 64, 1, 2, 0, True),
    "s3 64->64 3x3": (128, 64, 8, 64, 3, 1, 1, True),
    "lenet conv2 b32": (32, 6, 14, 16, 5, 1, 0, True),
    "lenet conv2 b128": (128, 6, 14, 16, 5, 1, 0, True),
    "lenet conv2 b512": (512, 6, 14, 16, 5, 1, 0, True),
}
NORMS = {
    "bn+relu 16x32x32": (128, 16, 32),
    "bn+relu 32x16x16": (128, 32, 16),
    "bn+relu 64x8x8": (128, 64, 8),
}


def cpu_medians(fns: list[Callable[[], object]], rounds: int) -> list[float]:
    """Median CPU seconds per call of each fn, the fns alternating within each round."""
    for fn in fns:
        fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, times in zip(fns, samples, strict=True):
            start = time.process_time()
            fn()
            times.append(time.process_time() - start)
    return [statistics.median(times) for times in samples]


def conv_row(name: str, rng: np.random.Generator, rounds: int) -> list[float]:
    n, c, size, o, k, stride, padding, input_grad = CONVS[name]
    x = rng.standard_normal((n, c, size, size), dtype=np.float32)
    w = rng.standard_normal((o, c, k, k), dtype=np.float32) * 0.1
    y = ops.conv2d(x, w, None, stride, padding)
    gy = rng.standard_normal(y.shape, dtype=np.float32)
    tx, tw, tgy = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(gy)
    mask = [input_grad, True, False]

    def torch_forward() -> None:
        with torch.no_grad():
            torch.nn.functional.conv2d(tx, tw, None, stride, padding)

    def torch_backward() -> None:
        torch.ops.aten.convolution_backward(
            tgy, tx, tw, None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1, mask
        )

    return cpu_medians(
        [
            lambda: ops.conv2d(x, w, None, stride, padding),
            torch_forward,
            lambda: ops.conv2d_backward(
                gy, x, w, stride, padding, input_grad=input_grad, bias=False
            ),
            torch_backward,
        ],
        rounds,
    )


def norm_row(name: str, rng: np.random.Generator, rounds: int) -> list[float]:
    n, c, size = NORMS[name]
    x = rng.standard_normal((n, c, size, size), dtype=np.float32) + 0.5
    gy = rng.standard_normal(x.shape, dtype=np.float32)
    gamma = rng.random(c, dtype=np.float32) + 0.5
    beta = rng.standard_normal(c, dtype=np.float32)
    tx = torch.from_numpy(x).requires_grad_()
    tgamma, tbeta = (
        torch.from_numpy(gamma).requires_grad_(),
        torch.from_numpy(beta).requires_grad_(),
    )
    tgy = torch.from_numpy(gy)
    state: dict[str, object] = {}

    def xcnn_forward() -> None:
        z, state["cache"] = ops.batch_norm_train(x, gamma, beta)
        state["y"] = ops.relu(z)

    def xcnn_backward() -> None:
        gz = ops.relu_backward(gy, state["y"])
        ops.batch_norm_backward(gz, state["cache"], gamma)

    def torch_forward() -> None:
        state["ty"] = torch.relu(
            torch.nn.functional.batch_norm(tx, None, None, tgamma, tbeta, True)
        )

    def torch_backward() -> None:
        state["ty"].backward(tgy)

    return cpu_medians([xcnn_forward, torch_forward, xcnn_backward, torch_backward], rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--only", nargs="+", metavar="PREFIX", help="rows starting with these")
    args = parser.parse_args()
    xcnn.set_num_threads(1)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(
        "| op (float32, 1 thread) | xcnn fwd ms | torch fwd ms | fwd xcnn/torch | xcnn bwd ms "
        "| torch bwd ms | fwd+bwd xcnn/torch |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = [(name, conv_row) for name in CONVS] + [(name, norm_row) for name in NORMS]
    for name, measure in rows:
        if args.only and not any(name.startswith(prefix) for prefix in args.only):
            continue
        xf, tf, xb, tb = (1e3 * t for t in measure(name, rng, args.rounds))
        # "x / torch" as a speed ratio: above 1 means xcnn is faster.
        print(
            f"| {name} | {xf:.2f} | {tf:.2f} | {tf / xf:.2f}x | {xb:.2f} | {tb:.2f} | "
            f"{(tf + tb) / (xf + xb):.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
