"""The graph's own cost per operation, next to PyTorch autograd's.

1. **A chain of tiny ops.** ``y = y * 1.0001 + 0.0001`` repeated, then ``y.sum()``, on
   a few float32 elements, so the arithmetic costs next to nothing and what is left
   is each framework's per-call cost. Timed on plain arrays of the backend (the
   floor: no wrapper, no graph; for the backward, the chain's gradient written by
   hand), in xcnn (``Tensor``) and in PyTorch, each without recording
   (``no_grad``), recording (forward only: the graph is built, then dropped) and
   forward + ``backward()``. Reported in microseconds per op; the overhead is each
   figure minus the floor's.
2. **A LeNet-5 training step at batch 1**, where per-call costs dominate: xcnn's
   graph API, its layer-wise API and PyTorch, per step and per graph node.

Every function of a table is timed in the same alternating rounds after a warm-up
(``bench_speed.time_pair``); each figure is the median over ``--rounds`` rounds.

    python benchmarks/graph_overhead.py              # prints the tables
    python benchmarks/graph_overhead.py --out docs/benchmarks.md

``--out`` rewrites the section between ``<!-- results:graph-overhead -->`` and
``<!-- end -->`` in that file (appended where the marker is absent).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np
import torch

import xcnn
from xcnn import backends, models, nn, optim
from xcnn.autograd import Context
from xcnn.testing import to_torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speed import (
    cpu_counters,
    machine_description,
    steal_note,
    time_pair,
    versions,
    write_section,
)

MUL, ADD = 1.0001, 0.0001


class Chain:
    """``pairs`` times ``y = y * MUL + ADD``, then ``y.sum()``: ``2 * pairs + 1`` ops."""

    def __init__(self, pairs: int, size: int, backend: backends.Backend, device: str):
        self.pairs = pairs
        self.ops = 2 * pairs + 1
        host = np.linspace(0.5, 1.5, size, dtype=np.float32)
        self.x = backend.asarray(host)
        self.xp = backends.array_namespace(self.x)
        self.tensor = xcnn.tensor(self.x, requires_grad=True)
        self.torch_tensor = torch.from_numpy(host).to(device).requires_grad_(True)

    def _forward(self, y):
        for _ in range(self.pairs):
            y = y * MUL + ADD
        return y.sum()

    def array_forward(self) -> None:
        self._forward(self.x)

    def array_backward(self) -> None:
        # The floor of forward + backward: the same forward on arrays, and the chain's
        # gradient by hand (sum: ones; mul: grad * MUL; add: grad as it is).
        self._forward(self.x)
        grad = self.xp.ones_like(self.x)
        for _ in range(self.pairs):
            grad = grad * MUL

    def xcnn_no_grad(self) -> None:
        with xcnn.no_grad():
            self._forward(self.tensor)

    def xcnn_forward(self) -> None:
        self._forward(self.tensor)

    def xcnn_backward(self) -> None:
        self.tensor.grad = None
        self._forward(self.tensor).backward()

    def torch_no_grad(self) -> None:
        with torch.no_grad():
            self._forward(self.torch_tensor)

    def torch_forward(self) -> None:
        self._forward(self.torch_tensor)

    def torch_backward(self) -> None:
        self.torch_tensor.grad = None
        self._forward(self.torch_tensor).backward()


class LeNetStep:
    """One LeNet-5 training step (forward, loss, backward, SGD) in each API, batch ``batch``."""

    def __init__(self, batch: int, backend: backends.Backend, device: str):
        self.model = models.lenet5(rng=0)
        self.torch_model = to_torch(self.model).to(device)
        self.crit = nn.CrossEntropyLoss()
        self.torch_crit = torch.nn.CrossEntropyLoss()
        self.opt = optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.torch_opt = torch.optim.SGD(self.torch_model.parameters(), lr=0.01, momentum=0.9)
        rng = np.random.default_rng(1)
        host_x = rng.random((batch, 1, 28, 28), dtype=np.float32)
        host_y = rng.integers(0, 10, batch)
        self.x, self.y = backend.asarray(host_x), backend.asarray(host_y, dtype="int64")
        self.gx, self.gy = xcnn.Tensor(self.x), xcnn.Tensor(self.y)
        self.tx = torch.from_numpy(host_x).to(device)
        self.ty = torch.from_numpy(host_y).to(device)

    def graph(self) -> None:
        self.opt.zero_grad()
        self.crit(self.model(self.gx), self.gy).backward()
        self.opt.step()

    def layerwise(self) -> None:
        self.opt.zero_grad()
        self.crit(self.model(self.x), self.y)
        self.model.backward(self.crit.backward())
        self.opt.step()

    def pytorch(self) -> None:
        self.torch_opt.zero_grad()
        self.torch_crit(self.torch_model(self.tx), self.ty).backward()
        self.torch_opt.step()

    def nodes(self) -> tuple[int, int]:
        """Graph nodes of one step's loss: ``(xcnn, PyTorch)``; PyTorch's AccumulateGrad
        nodes are left out, since xcnn's leaves are edges, not nodes."""
        root = self.crit(self.model(self.gx), self.gy).grad_fn
        seen, stack = {root}, [root]
        while stack:
            for edge in stack.pop().next_edges:
                if edge is not None and isinstance(edge[0], Context) and edge[0] not in seen:
                    seen.add(edge[0])
                    stack.append(edge[0])
        xcnn_nodes = len(seen)
        root = self.torch_crit(self.torch_model(self.tx), self.ty).grad_fn
        seen, stack = {root}, [root]
        while stack:
            for fn, _ in stack.pop().next_functions:
                if fn is not None and fn not in seen:
                    seen.add(fn)
                    stack.append(fn)
        torch_nodes = sum(type(fn).__name__ != "AccumulateGrad" for fn in seen)
        return xcnn_nodes, torch_nodes


def bench_chain(backend, device, rounds: int, pairs: int, size: int) -> dict[str, float]:
    """Microseconds per op of each way of running the chain."""
    chain = Chain(pairs, size, backend, device)
    fns = {
        "array_forward": chain.array_forward,
        "array_backward": chain.array_backward,
        "xcnn_no_grad": chain.xcnn_no_grad,
        "xcnn_forward": chain.xcnn_forward,
        "xcnn_backward": chain.xcnn_backward,
        "torch_no_grad": chain.torch_no_grad,
        "torch_forward": chain.torch_forward,
        "torch_backward": chain.torch_backward,
    }
    times = time_pair(list(fns.values()), backend, device, rounds, min_seconds=0.3, pause=0.1)
    return {name: t * 1e6 / chain.ops for name, t in zip(fns, times, strict=True)}


def bench_lenet(backend, device, rounds: int, batch: int) -> dict[str, float]:
    """Milliseconds per LeNet-5 training step in each API, and the graph's node counts."""
    step = LeNetStep(batch, backend, device)
    times = time_pair([step.graph, step.layerwise, step.pytorch], backend, device, rounds, 0.5)
    xcnn_nodes, torch_nodes = step.nodes()
    graph, layerwise, torch_ms = (t * 1e3 for t in times)
    return {
        "graph": graph,
        "layerwise": layerwise,
        "torch": torch_ms,
        "xcnn_nodes": xcnn_nodes,
        "torch_nodes": torch_nodes,
    }


def chain_table(us: dict[str, float], ops: int, size: int) -> list[str]:
    def row(what: str, floor: float, x: float, t: float) -> str:
        return f"| {what} | {floor:.2f} | {x:.2f} | {t:.2f} | {x - floor:.2f} | {t - floor:.2f} |"

    return [
        f"Chain of {ops} ops on {size} float32 elements, microseconds per op "
        '("arrays": the same chain on plain arrays, the gradient written by hand):',
        "",
        "| | arrays (no graph) | xcnn | PyTorch | xcnn - arrays | PyTorch - arrays |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        row(
            "forward, not recording (`no_grad`)",
            us["array_forward"],
            us["xcnn_no_grad"],
            us["torch_no_grad"],
        ),
        row(
            "forward, recording the graph",
            us["array_forward"],
            us["xcnn_forward"],
            us["torch_forward"],
        ),
        row(
            "forward + backward",
            us["array_backward"],
            us["xcnn_backward"],
            us["torch_backward"],
        ),
        "",
        "Each framework against itself, microseconds per op:",
        "",
        "| | xcnn | PyTorch |",
        "| --- | ---: | ---: |",
        f"| recording a node (recording - not recording) | "
        f"{us['xcnn_forward'] - us['xcnn_no_grad']:.2f} | "
        f"{us['torch_forward'] - us['torch_no_grad']:.2f} |",
        f"| backward through a node (forward + backward - recording) | "
        f"{us['xcnn_backward'] - us['xcnn_forward']:.2f} | "
        f"{us['torch_backward'] - us['torch_forward']:.2f} |",
    ]


def lenet_table(r: dict[str, float], batch: int) -> list[str]:
    def per_node(ms: float, nodes: float) -> str:
        return f"{ms * 1e3 / nodes:.0f}"

    return [
        f"LeNet-5 training step (forward, loss, backward, SGD) at batch {batch}, "
        "where per-call costs dominate:",
        "",
        "| | xcnn graph API | xcnn layer-wise API | PyTorch |",
        "| --- | ---: | ---: | ---: |",
        f"| ms per step | {r['graph']:.3f} | {r['layerwise']:.3f} | {r['torch']:.3f} |",
        f"| graph nodes per step | {r['xcnn_nodes']} | {r['xcnn_nodes']} | {r['torch_nodes']} |",
        f"| step time per node, us | {per_node(r['graph'], r['xcnn_nodes'])} | "
        f"{per_node(r['layerwise'], r['xcnn_nodes'])} | "
        f"{per_node(r['torch'], r['torch_nodes'])} |",
        f"| time / PyTorch's | {r['graph'] / r['torch']:.2f}x | {r['layerwise'] / r['torch']:.2f}x "
        "| 1.00x |",
        "",
        "A node is one recorded Function call (PyTorch: one grad_fn, AccumulateGrad left "
        "out); the step time per node includes the arithmetic, which at batch 1 is small "
        "but not nothing.",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--ops", type=int, default=100, help="elementwise ops in the chain (then one sum)"
    )
    parser.add_argument("--size", type=int, default=8, help="elements of the chain's tensor")
    parser.add_argument("--batch", type=int, default=1, help="LeNet-5 batch size")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads of each framework (default 1: the cost measured is per call)",
    )
    parser.add_argument("--out", type=Path, default=None, help="e.g. docs/benchmarks.md")
    args = parser.parse_args()

    backend = backends.current()
    device = "cuda" if backend.name == "cupy" else "cpu"
    torch.set_num_threads(args.threads)
    xcnn.set_num_threads(args.threads)
    machine = machine_description(backend, device)
    print(f"xcnn on {backend.name} vs torch on {device}; {machine}")
    start, counters = time.perf_counter(), cpu_counters()
    pairs = max(1, args.ops // 2)
    chain = bench_chain(backend, device, args.rounds, pairs, args.size)
    lines = chain_table(chain, 2 * pairs + 1, args.size)
    print("\n".join(lines), flush=True)
    lenet = bench_lenet(backend, device, args.rounds, args.batch)
    more = lenet_table(lenet, args.batch)
    print("\n" + "\n".join(more))
    note = steal_note(counters, start)
    print(note)
    if args.out is not None:
        command = "python benchmarks/graph_overhead.py" + "".join(
            f" --{name} {value}"
            for name, value, default in (
                ("rounds", args.rounds, 7),
                ("ops", args.ops, 100),
                ("size", args.size, 8),
                ("batch", args.batch, 1),
                ("threads", args.threads, 1),
            )
            if value != default
        )
        section = [
            f"### The graph's own cost per op, {backend.name} vs PyTorch {device.upper()} "
            f"({datetime.date.today().isoformat()})",
            "",
            f"Machine: {machine}. Versions: {versions(backend)}. Median of {args.rounds} "
            f"alternating rounds after warm-up; command: `{command}`"
            + (" with `XCNN_BACKEND=cupy`" if backend.name == "cupy" else "")
            + ".",
            "",
            *lines,
            "",
            *more,
        ]
        if note:
            section += ["", note]
        write_section(args.out, "results:graph-overhead", "\n".join(section) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
