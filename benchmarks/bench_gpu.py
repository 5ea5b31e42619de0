"""xcnn on CuPy vs PyTorch CUDA (eager), training steps side by side on one GPU.

Workloads: LeNet-5 training at batch 128 and 1024 (1x28x28) and ResNet-20 training at
batch 128 (3x32x32), each in xcnn's layer-wise API, its graph API and PyTorch, with
the same weights (copied through ``state_dict``) and the same batch. Every function
is warmed up (CuPy compiles its kernels on first use), then timed in alternating
rounds with the device synchronised before and after each timed block (CuPy's
stream and ``torch.cuda.synchronize``); each figure is the median over ``--rounds``.

    python benchmarks/bench_gpu.py --out docs/benchmarks.md       # on a GPU machine
    python benchmarks/bench_gpu.py --backend numpy --device cpu   # a dry run on CPU

``--out`` rewrites the section between ``<!-- results:gpu -->`` and ``<!-- end -->``
(``benchmarks/gpu_check.sh`` calls it so). The model and step code are
``bench_speed.py``'s (``Pair``, ``time_pair``), so both benchmarks time the same steps.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import torch

from xcnn import backends

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speed import Pair, machine_description, time_pair, versions, write_section

MARKER = "results:gpu"
#: (model, batch) of every workload, all training steps.
WORKLOADS = (("lenet5", 128), ("lenet5", 1024), ("resnet20", 128))


def run(backend: backends.Backend, device: str, rounds: int, min_seconds: float) -> list[dict]:
    """Images per second of each workload: layer-wise, graph and PyTorch."""
    rows = []
    for name, batch in WORKLOADS:
        pair = Pair(name, batch, backend, device)
        fns = [pair.xcnn_train_step, pair.graph_train_step, pair.torch_train_step]
        # No pause between functions: a GPU has no spinning BLAS threads to wait out.
        layer, graph, ref = time_pair(
            fns, backend, device, rounds, min_seconds=min_seconds, pause=0.0
        )
        row = {"what": f"{name} training", "batch": batch}
        row.update(xcnn=batch / layer, graph=batch / graph, torch=batch / ref)
        rows.append(row)
        print(
            f"{row['what']:<18} batch {batch:>5}: layer-wise {row['xcnn']:>9.0f} img/s  "
            f"graph {row['graph']:>9.0f} img/s  torch {row['torch']:>9.0f} img/s  "
            f"ratio {row['xcnn'] / row['torch']:.2f}x / {row['graph'] / row['torch']:.2f}x",
            flush=True,
        )
        del pair
        backend.synchronize()
    return rows


def markdown(rows: list[dict], backend: backends.Backend, device: str, rounds: int) -> str:
    """The section written to docs/benchmarks.md."""
    lines = [
        f"### {backend.name} vs PyTorch {device.upper()} eager, training "
        f"({datetime.date.today().isoformat()})",
        "",
        f"Device: {machine_description(backend, device)}. Versions: {versions(backend)}. "
        f"Median of {rounds} alternating rounds after warm-up, the device synchronised "
        "around each timed block; command: `bash benchmarks/gpu_check.sh` "
        "(`python benchmarks/bench_gpu.py`).",
        "",
        "| workload | batch | xcnn layer-wise img/s | xcnn graph img/s | PyTorch img/s "
        "| layer-wise / PyTorch | graph / PyTorch |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['what']} | {r['batch']} | {r['xcnn']:.0f} | {r['graph']:.0f} | "
            f"{r['torch']:.0f} | {r['xcnn'] / r['torch']:.2f}x | {r['graph'] / r['torch']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="cupy", choices=["cupy", "numpy"])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--min-seconds", type=float, default=0.5, help="length of each function's timed block"
    )
    parser.add_argument("--out", type=Path, default=None, help="markdown file to update")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu.py: PyTorch sees no CUDA device; pass --device cpu", file=sys.stderr)
        return 2
    backend = backends.get(args.backend)
    start = time.perf_counter()
    rows = run(backend, args.device, args.rounds, args.min_seconds)
    print(f"bench_gpu.py: {time.perf_counter() - start:.0f} s", flush=True)
    if args.out is not None:
        write_section(args.out, MARKER, markdown(rows, backend, args.device, args.rounds))
        print(f"bench_gpu.py: wrote the table to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
