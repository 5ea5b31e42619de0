"""Data-parallel training throughput: xcnn on MPI against PyTorch's DDP on gloo, 2 processes.

For LeNet-5 and resnet20, at the same global batch G, each configuration runs in
fresh processes on random data:

* one process, one thread, batch G/2 (what one rank does alone);
* one process, two threads, batch G (the same machine without MPI);
* two ranks of one thread each, batch G/2 per rank: xcnn under ``mpiexec -n 2``
  with ``xcnn.distributed.DistributedDataParallel``; PyTorch with
  ``torch.nn.parallel.DistributedDataParallel`` on the ``gloo`` backend
  (``init_method="file://..."``, two processes on this host).

A training step is zero_grad, forward, cross-entropy, backward, SGD-momentum step
(xcnn on its graph API). Throughput is G (or G/2 for the one-rank run) images per
median step time. Scaling efficiency is the two-rank throughput over twice the
one-rank throughput. Communication per step is the median synchronised step minus
the median step inside ``no_sync()`` (gradients not averaged), the two alternating
round by round in the same processes: the time the gradient Allreduce adds,
waiting for the other rank included.

    python benchmarks/bench_distributed.py                  # both models, writes docs
    python benchmarks/bench_distributed.py --models lenet5 --rounds 3 --out /dev/null

Needs mpi4py with an ``mpiexec`` (``pip install 'xcnn[mpi]'``) and PyTorch. Writes
a markdown section to docs/benchmarks.md (``--out``), between the markers
``<!-- results:distributed -->`` and ``<!-- end -->``, with date and machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve()

#: name -> (input shape, global batch, steps per timed round)
MODELS = {
    "lenet5": ((1, 28, 28), 128, 30),
    "resnet20": ((3, 32, 32), 64, 4),
}
WARMUP_STEPS = {"lenet5": 20, "resnet20": 3}


# -- workers: one configuration, run in its own processes ---------------------------------


def _data(name: str, batch: int, rank: int) -> tuple[np.ndarray, np.ndarray]:
    shape = MODELS[name][0]
    rng = np.random.default_rng(100 + rank)
    return rng.random((batch, *shape), dtype=np.float32), rng.integers(0, 10, batch)


def _build_xcnn(name: str):
    from xcnn import models

    if name == "resnet20":
        return models.resnet20(rng=0, in_channels=3)
    return models.lenet5(rng=0)


def _time_rounds(step, steps: int, rounds: int, no_sync=None) -> dict:
    """Median seconds per step over ``rounds`` rounds, synchronised and (if given) not."""
    synced, unsynced = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synced.append((time.perf_counter() - start) / steps)
        if no_sync is not None:
            with no_sync():
                start = time.perf_counter()
                for _ in range(steps):
                    step()
                unsynced.append((time.perf_counter() - start) / steps)
    result = {"step": statistics.median(synced)}
    if unsynced:
        result["no_sync"] = statistics.median(unsynced)
    return result


def xcnn_worker(name: str, batch: int, rounds: int) -> dict:
    """Time xcnn's step on this process (a rank of mpiexec, or alone)."""
    import xcnn
    from xcnn import Tensor, nn, optim

    distributed = os.environ.get("BENCH_DISTRIBUTED") == "1"
    rank = 0
    model = _build_xcnn(name)
    if distributed:
        import xcnn.distributed as dist

        dist.init()
        rank = dist.rank()
        model = dist.DistributedDataParallel(model)
    x, y = _data(name, batch, rank)
    x, y = Tensor(x), Tensor(y)
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    for _ in range(WARMUP_STEPS[name]):
        step()
    steps = MODELS[name][2]
    result = _time_rounds(step, steps, rounds, model.no_sync if distributed else None)
    result["threads"] = xcnn.get_num_threads()
    return result if rank == 0 else {}


def torch_worker(name: str, batch: int, rounds: int, rank: int, world: int, init: str) -> dict:
    """Time PyTorch's step on this process (alone, or a rank of a gloo DDP group)."""
    import torch

    from xcnn.testing import to_torch

    torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
    model = to_torch(_build_xcnn(name))
    if world > 1:
        import torch.distributed as tdist

        tdist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
        model = torch.nn.parallel.DistributedDataParallel(model)
    host_x, host_y = _data(name, batch, rank)
    x, y = torch.from_numpy(host_x), torch.from_numpy(host_y)
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    for _ in range(WARMUP_STEPS[name]):
        step()
    steps = MODELS[name][2]
    result = _time_rounds(step, steps, rounds, model.no_sync if world > 1 else None)
    result["threads"] = torch.get_num_threads()
    if world > 1:
        import torch.distributed as tdist

        tdist.barrier()
        tdist.destroy_process_group()
    return result if rank == 0 else {}


# -- the driver -----------------------------------------------------------------------


def _env(threads: int, distributed: bool = False) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("XCNN_BACKEND", None)
    # xcnn's, BLAS's and PyTorch's threads; xcnn.distributed.init() keeps what these say.
    for variable in ("XCNN_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[variable] = str(threads)
    env["MKL_NUM_THREADS"] = env["BENCH_THREADS"] = str(threads)
    env["BENCH_DISTRIBUTED"] = "1" if distributed else "0"
    return env


def _last_json(text: str) -> dict:
    lines = [line for line in text.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"bench_distributed: a worker printed no result:\n{text}")
    return json.loads(lines[-1])


def _run(command: list[str], env: dict, timeout: float = 900) -> dict:
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(
            f"bench_distributed: {' '.join(command)} failed ({out.returncode}):\n"
            f"{out.stdout}\n{out.stderr}"
        )
    return _last_json(out.stdout)


def mpiexec() -> str:
    local = Path(sys.executable).with_name("mpiexec")
    found = str(local) if local.exists() else shutil.which("mpiexec")
    if found is None:
        raise SystemExit("bench_distributed: no mpiexec found; pip install 'xcnn[mpi]'")
    return found


def run_config(framework: str, name: str, ranks: int, threads: int, rounds: int) -> dict:
    """One configuration in fresh processes; rank 0's timings."""
    global_batch = MODELS[name][1]
    batch = global_batch // 2 if ranks == 2 or threads == 1 else global_batch
    worker = [sys.executable, str(HERE), "--worker", framework, "--models", name]
    worker += ["--batch", str(batch), "--rounds", str(rounds)]
    if framework == "xcnn":
        command = [mpiexec(), "-n", "2", *worker] if ranks == 2 else worker
        result = _run(command, _env(threads, distributed=ranks == 2))
    elif ranks == 1:
        result = _run(worker, _env(threads))
    else:
        with tempfile.TemporaryDirectory() as folder:
            init = f"file://{folder}/rendezvous"
            env = _env(threads)
            procs = [
                subprocess.Popen(
                    [*worker, "--rank", str(r), "--world", "2", "--init", init],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=env,
                )
                for r in range(2)
            ]
            outputs = [p.communicate(timeout=900) for p in procs]
            for p, (stdout, stderr) in zip(procs, outputs, strict=True):
                if p.returncode != 0:
                    raise RuntimeError(f"bench_distributed: a torch rank failed:\n{stdout}{stderr}")
            result = _last_json(outputs[0][0])
    images = batch * ranks
    result.update(framework=framework, model=name, ranks=ranks, batch=batch)
    result["images_per_second"] = images / result["step"]
    if "no_sync" in result:
        result["comm_ms"] = 1000 * (result["step"] - result["no_sync"])
    return result


CONFIGS = [(1, 1), (1, 2), (2, 1)]  # (ranks, threads per rank)


def bench(names: list[str], rounds: int, repeats: int) -> list[dict]:
    """Every configuration ``repeats`` times, frameworks alternating; medians of the repeats."""
    rows = []
    for name in names:
        runs: dict[tuple, list[dict]] = {}
        for _ in range(repeats):
            for ranks, threads in CONFIGS:
                for framework in ("xcnn", "torch"):
                    result = run_config(framework, name, ranks, threads, rounds)
                    runs.setdefault((framework, ranks, threads), []).append(result)
                    print(_describe(result), flush=True)
        for (_framework, _ranks, threads), results in runs.items():
            row = dict(results[0])
            for key in ("step", "no_sync", "images_per_second", "comm_ms"):
                if key in row:
                    row[key] = statistics.median(r[key] for r in results)
            row["threads"] = threads
            rows.append(row)
    return rows


def _describe(r: dict) -> str:
    text = (
        f"{r['model']:9} {r['framework']:6} {r['ranks']} x {r.get('threads')} thread(s), "
        f"batch {r['batch']}: {r['images_per_second']:8.0f} img/s"
    )
    if "comm_ms" in r:
        text += f", communication {r['comm_ms']:.2f} ms/step"
    return text


def _row(rows: list[dict], framework: str, model: str, ranks: int, threads: int) -> dict:
    key = (framework, model, ranks, threads)
    return next(r for r in rows if (r["framework"], r["model"], r["ranks"], r["threads"]) == key)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def versions() -> str:
    import mpi4py
    import torch

    import xcnn

    try:
        from importlib.metadata import version

        mpich = f", MPICH wheel {version('mpich')}"
    except Exception:
        mpich = ""
    return (
        f"xcnn {xcnn.__version__}, NumPy {np.__version__}, PyTorch {torch.__version__}, "
        f"mpi4py {mpi4py.__version__}{mpich}"
    )


def markdown(rows: list[dict], names: list[str], rounds: int, repeats: int, note: str) -> str:
    lines = [
        f"### Two processes: xcnn on MPI vs PyTorch DDP on gloo ({datetime.date.today()})",
        "",
        f"Machine: {machine()}. Versions: {versions()}. Median of {rounds} rounds per run, "
        f"median of {repeats} run(s) per configuration, frameworks alternating; command: "
        f"`python benchmarks/bench_distributed.py --rounds {rounds} --repeats {repeats}`.",
        "",
        "| model | global batch | configuration | xcnn img/s | PyTorch img/s | xcnn / PyTorch "
        "| xcnn comm. ms/step | PyTorch comm. ms/step |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    labels = {
        (1, 1): "1 process, 1 thread, batch G/2",
        (1, 2): "1 process, 2 threads",
        (2, 1): "2 ranks x 1 thread, batch G/2 each",
    }
    summary = []
    for name in names:
        for ranks, threads in CONFIGS:
            x, t = (_row(rows, f, name, ranks, threads) for f in ("xcnn", "torch"))
            comm = [f"{r['comm_ms']:.2f}" if "comm_ms" in r else "-" for r in (x, t)]
            lines.append(
                f"| {name} | {MODELS[name][1]} | {labels[ranks, threads]} | "
                f"{x['images_per_second']:.0f} | {t['images_per_second']:.0f} | "
                f"{x['images_per_second'] / t['images_per_second']:.2f}x | {comm[0]} | {comm[1]} |"
            )
        eff = []
        for framework in ("xcnn", "torch"):
            one = _row(rows, framework, name, 1, 1)["images_per_second"]
            two = _row(rows, framework, name, 2, 1)["images_per_second"]
            threads = _row(rows, framework, name, 1, 2)["images_per_second"]
            eff.append((two / (2 * one), two / threads))
        summary.append(
            f"{name}: scaling efficiency (2-rank img/s / 2 x 1-rank img/s) xcnn "
            f"{eff[0][0]:.0%}, PyTorch {eff[1][0]:.0%}; 2 ranks against 1 process with 2 "
            f"threads: xcnn {eff[0][1]:.2f}x, PyTorch {eff[1][1]:.2f}x."
        )
    lines += ["", *summary]
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet5,resnet20", help="comma-separated")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per run")
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--worker", choices=("xcnn", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--init", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {sorted(MODELS)}")
    if args.worker == "xcnn":
        result = xcnn_worker(names[0], args.batch, args.rounds)
        if result:
            print(json.dumps(result), flush=True)
        return 0
    if args.worker == "torch":
        result = torch_worker(names[0], args.batch, args.rounds, args.rank, args.world, args.init)
        if result:
            print(json.dumps(result), flush=True)
        return 0

    sys.path.insert(0, str(HERE.parent))
    from bench_speed import cpu_counters, steal_note, write_section

    before, start = cpu_counters(), time.perf_counter()
    rows = bench(names, args.rounds, args.repeats)
    section = markdown(rows, names, args.rounds, args.repeats, steal_note(before, start))
    print()
    print(section)
    if str(args.out) != os.devnull:
        write_section(args.out, "results:distributed", section)
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
