"""What the GIL costs a training step: the same work as two threads or two processes.

Each worker trains its own LeNet-5 on its own batch with one thread (xcnn's and
BLAS's), as each of xcnn's two threads does for its half of a batch-128 step.
Run alone, as two processes side by side, and as two threads of one process side
by side, the median step time of each worker is printed. Processes do not share
a GIL, threads do; the difference is what two threads lose to it.

    python benchmarks/threads_vs_processes.py            # batch 64 per worker
    python benchmarks/threads_vs_processes.py --batch 32 --steps 400

NumPy backend only; prints, writes nothing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

import xcnn
from xcnn import models, nn, optim


def timed_steps(batch: int, steps: int) -> float:
    """Median seconds of a LeNet-5 training step on random data, after a warm-up."""
    rng = np.random.default_rng(1)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    model = models.lenet5(rng=0)
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        opt.zero_grad()
        loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        opt.step()

    for _ in range(20):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def one_thread() -> None:
    """xcnn and BLAS on the calling thread only, as inside one of xcnn's own spans."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    xcnn.set_num_threads(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64, help="images per worker a step")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per worker")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    one_thread()
    if args.worker:
        print(timed_steps(args.batch, args.steps))
        return

    alone = timed_steps(args.batch, args.steps)
    command = [
        sys.executable,
        __file__,
        "--worker",
        f"--batch={args.batch}",
        f"--steps={args.steps}",
    ]
    children = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    processes = [float(child.communicate()[0]) for child in children]
    if any(child.returncode for child in children):
        sys.exit("threads_vs_processes: a worker process failed; its error is printed above")

    threads_result: list[float] = []
    workers = [
        threading.Thread(target=lambda: threads_result.append(timed_steps(args.batch, args.steps)))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    def ms(seconds: list[float]) -> str:
        return ", ".join(f"{s * 1e3:.1f} ms" for s in seconds)

    print(f"LeNet-5 training step, batch {args.batch} per worker, median of {args.steps} steps")
    print(f"  one worker alone:                         {ms([alone])}")
    print(f"  two processes side by side:               {ms(processes)}")
    print(f"  two threads of one process side by side:  {ms(threads_result)}")


if __name__ == "__main__":
    main()
