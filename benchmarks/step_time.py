"""xcnn's own LeNet-5 training step time, without PyTorch in the process.

    python benchmarks/step_time.py BATCH {layer|graph} [THREADS]

Prints the median over 7 blocks of 30 steps (after 30 warm-up steps), in wall-clock
time and in this process's CPU time (``time.process_time``, all its threads: on a
machine that others share, the steadier of the two at one thread, with
``OPENBLAS_NUM_THREADS=1``), and the page faults a step. Run it alternately against
two checkouts (``PYTHONPATH=<worktree>``) to compare them: separate processes, so each
gets a fresh allocator and thread pool.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time

import numpy as np

import xcnn
from xcnn import nn, optim


def main() -> None:
    batch, mode = int(sys.argv[1]), sys.argv[2]
    if mode not in ("layer", "graph"):
        raise SystemExit(f"step_time.py: mode must be 'layer' or 'graph', got {mode!r}")
    xcnn.manual_seed(0)
    model = xcnn.models.lenet5()
    crit = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(1)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    if mode == "graph":
        tx, ty = xcnn.Tensor(x), xcnn.Tensor(y)

        def step() -> None:
            opt.zero_grad()
            crit(model(tx), ty).backward()
            opt.step()
    else:

        def step() -> None:
            opt.zero_grad()
            crit(model(x), y)
            model.backward(crit.backward())
            opt.step()

    if len(sys.argv) > 3:
        xcnn.set_num_threads(int(sys.argv[3]))
    for _ in range(30):
        step()
    times, cpu_times = [], []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(7):
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(30):
            step()
        times.append((time.perf_counter() - start) / 30 * 1e3)
        cpu_times.append((time.process_time() - cpu_start) / 30 * 1e3)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(
        f"{mode:6s} b{batch}: {statistics.median(times):.2f} ms/step, "
        f"{statistics.median(cpu_times):.2f} ms CPU/step, {faults / 210:.0f} faults/step"
    )


if __name__ == "__main__":
    main()
