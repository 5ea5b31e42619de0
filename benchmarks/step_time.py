"""xcnn's own training step (or inference) time, without PyTorch in the process.

    python benchmarks/step_time.py BATCH {layer|graph|eval} [THREADS]
        [--model lenet5|resnet20] [--phases]

``layer`` and ``graph`` time a training step (SGD with momentum) in the layer-wise and
the graph API, ``eval`` a forward pass after ``model.eval()``. Prints the median over 7
blocks of steps (after a warm-up), in wall-clock time and in this process's CPU time
(``time.process_time``, all its threads: on a machine that others share, the steadier
of the two at one thread, with ``OPENBLAS_NUM_THREADS=1``), and the page faults a step.
``--phases`` also splits a training step into zero_grad, forward, loss, backward and
optimizer step (CPU time, summed over every timed step).

Run it alternately against two checkouts (``PYTHONPATH=<worktree>``) to compare them:
separate processes, so each gets a fresh allocator and thread pool.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np

import xcnn
from xcnn import nn, optim

SHAPES = {"lenet5": (1, 28, 28), "resnet20": (3, 32, 32)}
PHASES = ("zero_grad", "forward", "loss", "backward", "step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("batch", type=int)
    parser.add_argument("mode", choices=["layer", "graph", "eval"])
    parser.add_argument("threads", type=int, nargs="?", default=None)
    parser.add_argument("--model", choices=sorted(SHAPES), default="lenet5")
    parser.add_argument("--phases", action="store_true", help="split the training step")
    args = parser.parse_args()
    batch, mode = args.batch, args.mode
    xcnn.manual_seed(0)
    model = getattr(xcnn.models, args.model)()
    crit = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(1)
    x = rng.random((batch, *SHAPES[args.model]), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    phases = dict.fromkeys(PHASES, 0.0)
    clock = time.process_time
    tx, ty = xcnn.Tensor(x), xcnn.Tensor(y)

    def forward_loss() -> tuple[float, float, float]:
        t0 = clock()
        out = model(tx if mode == "graph" else x)
        t1 = clock()
        if mode == "graph":
            loss = crit(out, ty)
            t2 = clock()
            loss.backward()
        else:
            crit(out, y)
            grad = crit.backward()
            t2 = clock()
            model.backward(grad)
        return t0, t1, t2

    def step() -> None:
        if mode == "eval":
            model(x)
            return
        if not args.phases:
            opt.zero_grad()
            if mode == "graph":
                crit(model(tx), ty).backward()
            else:
                crit(model(x), y)
                model.backward(crit.backward())
            opt.step()
            return
        start = clock()
        opt.zero_grad()
        t0, t1, t2 = forward_loss()
        t3 = clock()
        opt.step()
        t4 = clock()
        for name, a, b in zip(PHASES, (start, t0, t1, t2, t3), (t0, t1, t2, t3, t4), strict=True):
            phases[name] += b - a

    if mode == "eval":
        model.eval()
    if args.threads is not None:
        xcnn.set_num_threads(args.threads)
    per_block = 30 if args.model == "lenet5" else 3
    for _ in range(per_block):
        step()
    phases = dict.fromkeys(PHASES, 0.0)
    times, cpu_times = [], []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(7):
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(per_block):
            step()
        times.append((time.perf_counter() - start) / per_block * 1e3)
        cpu_times.append((time.process_time() - cpu_start) / per_block * 1e3)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(
        f"{args.model} {mode:5s} b{batch}: {statistics.median(times):.2f} ms/step, "
        f"{statistics.median(cpu_times):.2f} ms CPU/step, {faults / (7 * per_block):.0f} "
        "faults/step"
    )
    if args.phases and mode != "eval":
        steps = 7 * per_block
        print("  " + ", ".join(f"{k} {v / steps * 1e6:.0f} us" for k, v in phases.items()))


if __name__ == "__main__":
    main()
