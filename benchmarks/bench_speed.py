"""xcnn vs PyTorch, side by side in one process: training step, inference, a full epoch.

Both frameworks get the same model (weights copied through ``state_dict``), the
same batches, and alternate round by round after a warm-up, so machine noise
hits both alike. Each figure is the median of ``--rounds`` rounds. Peak memory
is measured in child processes (one per framework) running the same loop.

``--graph`` adds xcnn's graph API to every round, a third function next to the
layer-wise step and PyTorch's: ``loss = crit(model(Tensor(x)), Tensor(y));
loss.backward()`` for training, ``model(Tensor(x))`` under ``xcnn.no_grad()`` for
inference, on the same model and batch.

    python benchmarks/bench_speed.py                       # NumPy vs torch CPU
    python benchmarks/bench_speed.py --graph               # ... and xcnn's graph API
    XCNN_BACKEND=cupy python benchmarks/bench_speed.py     # CuPy vs torch CUDA

Writes a markdown table to docs/benchmarks.md (``--out``) with date, machine and
versions, between the markers ``<!-- results:numpy -->`` (``results:numpy-graph``
with ``--graph``) and ``<!-- end -->``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import xcnn
from xcnn import backends, models, nn, optim
from xcnn.testing import to_torch

ROOT = Path(__file__).resolve().parent.parent

# One image's (C, H, W) for each model: MNIST-sized for LeNet-5, CIFAR-sized for resnet20.
INPUT_SHAPES = {"lenet5": (1, 28, 28), "simple_cnn": (1, 28, 28), "resnet20": (3, 32, 32)}


class Pair:
    """One model in both frameworks, on the same device class, with the same weights."""

    def __init__(self, name: str, batch: int, backend: backends.Backend, device: str):
        builder = {
            "lenet5": models.lenet5,
            "simple_cnn": models.simple_cnn,
            "resnet20": models.resnet20,
        }[name]
        self.backend, self.device = backend, device
        self.model = builder(rng=0)
        self.model.to(backend)  # built on the default backend, which may be another
        self.torch_model = to_torch(self.model).to(device)
        self.loss_fn = nn.CrossEntropyLoss()
        self.torch_loss = torch.nn.CrossEntropyLoss()
        self.opt = optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.torch_opt = torch.optim.SGD(self.torch_model.parameters(), lr=0.01, momentum=0.9)
        rng = np.random.default_rng(1)
        host_x = rng.random((batch, *INPUT_SHAPES[name]), dtype=np.float32)
        host_y = rng.integers(0, 10, batch)
        self.x, self.y = backend.asarray(host_x), backend.asarray(host_y, dtype="int64")
        self.tx = torch.from_numpy(host_x).to(device)
        self.ty = torch.from_numpy(host_y).to(device)
        self.gx, self.gy = xcnn.Tensor(self.x), xcnn.Tensor(self.y)

    def xcnn_train_step(self) -> None:
        self.opt.zero_grad()
        self.loss_fn(self.model(self.x), self.y)
        self.model.backward(self.loss_fn.backward())
        self.opt.step()

    def graph_train_step(self) -> None:
        self.opt.zero_grad()
        self.loss_fn(self.model(self.gx), self.gy).backward()
        self.opt.step()

    def torch_train_step(self) -> None:
        self.torch_opt.zero_grad()
        self.torch_loss(self.torch_model(self.tx), self.ty).backward()
        self.torch_opt.step()

    def xcnn_infer(self) -> None:
        self.model(self.x)

    def graph_infer(self) -> None:
        with xcnn.no_grad():
            self.model(self.gx)

    def torch_infer(self) -> None:
        with torch.inference_mode():
            self.torch_model(self.tx)


def _sync(backend: backends.Backend, device: str) -> None:
    backend.synchronize()
    if device == "cuda":
        torch.cuda.synchronize()


def time_pair(
    fns, backend, device, rounds: int, min_seconds: float = 1.0, pause: float = 0.5
) -> list[float]:
    """Median seconds per call of each fn, alternating fns within every round."""
    for fn in fns:  # warm-up: allocator pools, kernel compilation, caches
        for _ in range(3):
            fn()
    _sync(backend, device)
    reps = []
    for fn in fns:  # enough repetitions per round to last about min_seconds
        t0 = time.perf_counter()
        fn()
        _sync(backend, device)
        reps.append(max(1, int(min_seconds / max(time.perf_counter() - t0, 1e-6))))
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            # Let the other framework's worker threads (OpenBLAS, OpenMP) stop spinning
            # before timing: on 2 cores they otherwise steal time from this one.
            time.sleep(pause)
            t0 = time.perf_counter()
            for _ in range(reps[i]):
                fn()
            _sync(backend, device)
            samples[i].append((time.perf_counter() - t0) / reps[i])
    return [statistics.median(s) for s in samples]


def bench_steps(
    backend, device, rounds: int, only: list[str] | None = None, graph: bool = False
) -> list[dict]:
    rows = []
    configs = [
        ("lenet5", "train", 32),
        ("lenet5", "train", 128),
        ("lenet5", "train", 512),
        ("simple_cnn", "train", 128),
        ("resnet20", "train", 128),
        ("lenet5", "inference", 1000),
        ("simple_cnn", "inference", 1000),
        ("resnet20", "inference", 128),
    ]
    if backend.name == "cupy":
        configs.insert(3, ("lenet5", "train", 1024))
    if only:
        configs = [c for c in configs if any(_selects(pattern, c) for pattern in only)]
    for name, kind, batch in configs:
        pair = Pair(name, batch, backend, device)
        if kind == "train":
            fns = [pair.xcnn_train_step, pair.torch_train_step, pair.graph_train_step]
        else:
            pair.model.eval()
            pair.torch_model.eval()
            fns = [pair.xcnn_infer, pair.torch_infer, pair.graph_infer]
        times = time_pair(fns if graph else fns[:2], backend, device, rounds)
        rows.append(_row(f"{name} {kind}", batch, *(batch / t for t in times)))
        print(_format(rows[-1]), flush=True)
    return rows


def _selects(pattern: str, config: tuple[str, str, int]) -> bool:
    """Whether ``--only`` pattern ``MODEL[:KIND[:BATCH]]`` names ``config``."""
    given = pattern.split(":")
    return given == [str(field) for field in config][: len(given)]


def bench_epoch(backend, device, data_dir: Path | None, rounds: int) -> list[dict]:
    """One Fashion-MNIST training epoch of LeNet-5 at batch 128, data loading included."""
    train_set = xcnn.data.load_dataset("fashion-mnist", root=data_dir, train=True)
    n = len(train_set)

    def run_xcnn() -> None:
        model = models.lenet5(rng=0)
        loader = xcnn.data.DataLoader(train_set, 128, shuffle=True, seed=0)
        xcnn.fit(
            model,
            nn.CrossEntropyLoss(),
            optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
            loader,
            1,
            progress=False,
        )
        backend.synchronize()

    images = torch.from_numpy(train_set.images)
    labels = torch.from_numpy(train_set.labels)

    def run_torch() -> None:
        model = to_torch(models.lenet5(rng=0)).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss()
        order = torch.from_numpy(np.random.default_rng(0).permutation(n))
        for start in range(0, n, 128):
            idx = order[start : start + 128]
            x = images[idx].to(device).float().div_(255)
            y = labels[idx].to(device)
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
        if device == "cuda":
            torch.cuda.synchronize()

    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for i, fn in enumerate((run_xcnn, run_torch)):
            t0 = time.perf_counter()
            fn()
            samples[i].append(time.perf_counter() - t0)
    t_xcnn, t_torch = statistics.median(samples[0]), statistics.median(samples[1])
    row = _row(f"lenet5 epoch ({train_set.name}, incl. loading)", 128, n / t_xcnn, n / t_torch)
    print(_format(row), flush=True)
    return [row]


def peak_memory(framework: str, backend_name: str, steps: int = 30) -> tuple[float, float]:
    """``(peak, growth)`` in MiB of a LeNet-5 batch-128 training loop, in a fresh process.

    On the CPU: the process's peak RSS, and that peak minus the RSS once both models
    and the batch exist (what the training loop itself adds: activations, gradients,
    optimizer state). On CuPy/CUDA: the framework's peak pool size, twice.
    """
    code = f"""
import sys, json
sys.path.insert(0, {str(ROOT / "benchmarks")!r})
from xcnn import backends
import bench_speed as b
backend = backends.use({backend_name!r}).backend
device = "cuda" if backend.name == "cupy" else "cpu"
pair = b.Pair("lenet5", 128, backend, device)
step = pair.xcnn_train_step if {framework!r} == "xcnn" else pair.torch_train_step
def status(key):  # VmHWM, unlike ru_maxrss, is not inherited from the forking parent
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key)) / 1024
before = status("VmRSS")
peak = 0
for _ in range({steps}):
    step()
    if backend.name == "cupy" and {framework!r} == "xcnn":
        import cupy
        peak = max(peak, cupy.get_default_memory_pool().total_bytes())
if backend.name == "cupy":
    import torch
    value = (peak if {framework!r} == "xcnn" else torch.cuda.max_memory_reserved()) / 2**20
    print(json.dumps([value, value]))
else:
    top = status("VmHWM")
    print(json.dumps([top, top - before]))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ
    )
    peak, growth = json.loads(out.stdout.strip().splitlines()[-1])
    return float(peak), float(growth)


def _row(
    what: str, batch: int, xcnn_ips: float, torch_ips: float, graph_ips: float | None = None
) -> dict:
    """One workload's images per second; ``xcnn`` is the layer-wise API, ``graph`` the
    graph API (present only when timed)."""
    row = {"what": what, "batch": batch, "xcnn": xcnn_ips, "torch": torch_ips}
    if graph_ips is not None:
        row["graph"] = graph_ips
    return row


def _format(row: dict) -> str:
    line = (
        f"{row['what']:<45} batch {row['batch']:>5}: xcnn {row['xcnn']:>9.0f} img/s   "
        f"torch {row['torch']:>9.0f} img/s   ratio {row['xcnn'] / row['torch']:.2f}x"
    )
    if "graph" in row:
        line += (
            f"   graph {row['graph']:>9.0f} img/s   graph / layer-wise "
            f"{row['graph'] / row['xcnn']:.2f}x   graph / torch {row['graph'] / row['torch']:.2f}x"
        )
    return line


def machine_description(backend, device) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (CUDA)"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, threads: torch {torch.get_num_threads()}, "
        f"xcnn {xcnn.get_num_threads()}"
    )


def cpu_counters() -> tuple[float, float] | None:
    """``(stolen, others)``: CPU seconds so far that the hypervisor gave to other guests,
    and that other processes of this machine used (Linux ``/proc/stat``).

    On a shared virtual machine, time stolen during a run slows both frameworks but
    not alike (xcnn's threads hand the GIL to each other, so a descheduled thread
    can stall both), and so does a test suite running beside the benchmark, which is
    why each run reports both.
    """
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 8:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    own = sum(os.times()[:4])  # this process and the children it waited for
    return steal / tick, (user + nice + system + irq + softirq) / tick - own


def steal_note(before: tuple[float, float] | None, start: float) -> str:
    """The CPU time stolen and used by other processes since ``before`` (read at
    ``start``), as a sentence."""
    after = cpu_counters()
    if before is None or after is None:
        return ""
    stolen, others = (a - b for a, b in zip(after, before, strict=True))
    cores = (time.perf_counter() - start) * (os.cpu_count() or 1)
    return (
        f"CPU time stolen by the hypervisor during the run: {stolen:.0f} s, "
        f"{stolen / cores:.0%} of all cores' time; used by other processes: "
        f"{max(others, 0.0):.0f} s, {max(others, 0.0) / cores:.0%}."
    )


def versions(backend) -> str:
    text = f"xcnn {xcnn.__version__}, NumPy {np.__version__}, PyTorch {torch.__version__}"
    if backend.name == "cupy":
        import cupy

        text += f", CuPy {cupy.__version__}"
    return text


def write_markdown(
    path: Path, rows, memory, backend, device, rounds: int, steal: str = "", command: str = ""
) -> None:
    graph = any("graph" in r for r in rows)
    command = command or "python benchmarks/bench_speed.py"
    lines = [
        f"### {backend.name} vs PyTorch {device.upper()}"
        + (", layer-wise and graph API" if graph else "")
        + f" ({datetime.date.today().isoformat()})",
        "",
        f"Machine: {machine_description(backend, device)}. Versions: {versions(backend)}. "
        f"Median of {rounds} alternating rounds after warm-up; "
        f"command: `{command}`"
        + (" with `XCNN_BACKEND=cupy`" if backend.name == "cupy" else "")
        + ".",
        "",
    ]
    if graph:
        lines += [
            '"xcnn" is the layer-wise API (`crit(model(x), y)`, '
            '`model.backward(crit.backward())`), "graph" the graph API '
            "(`crit(model(Tensor(x)), Tensor(y)).backward()`; inference under "
            "`xcnn.no_grad()`).",
            "",
            "| workload | batch | xcnn img/s | PyTorch img/s | xcnn / PyTorch | graph img/s "
            "| graph / layer-wise | graph / PyTorch |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
    else:
        lines += [
            "| workload | batch | xcnn img/s | PyTorch img/s | xcnn / PyTorch |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
    for r in rows:
        line = (
            f"| {r['what']} | {r['batch']} | {r['xcnn']:.0f} | {r['torch']:.0f} | "
            f"{r['xcnn'] / r['torch']:.2f}x |"
        )
        if graph and "graph" in r:
            line += (
                f" {r['graph']:.0f} | {r['graph'] / r['xcnn']:.2f}x | "
                f"{r['graph'] / r['torch']:.2f}x |"
            )
        elif graph:
            line += " - | - | - |"
        lines.append(line)
    if graph and not all("graph" in r for r in rows):
        lines += ["", "The epoch runs `xcnn.fit`, which trains on the graph API itself."]
    if memory:
        (x_peak, x_loop), (t_peak, t_loop) = memory
        what = "peak memory pool" if backend.name == "cupy" else "peak RSS"
        lines += [
            "",
            f"LeNet-5 batch-128 training loop, {what} of the whole process (both libraries "
            f"imported in each): xcnn {x_peak:.0f} MiB, PyTorch {t_peak:.0f} MiB "
            f"(ratio {x_peak / t_peak:.2f}x); added by the loop itself over the set-up "
            f"process: xcnn {x_loop:.0f} MiB, PyTorch {t_loop:.0f} MiB.",
        ]
    if steal:
        lines += ["", steal]
    marker = f"results:{backend.name}" + ("-graph" if graph else "")
    write_section(path, marker, "\n".join(lines) + "\n")


def write_section(path: Path, marker: str, section: str) -> None:
    """Put ``section`` between ``<!-- marker -->`` and the next ``<!-- end -->`` in
    ``path``, replacing what was there; appended at the end where the marker is absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = path.read_text() if path.exists() else "# Benchmarks\n\n"
    opening = f"<!-- {marker} -->"
    head, found, rest = previous.partition(opening)
    if found:
        tail = rest.partition("<!-- end -->")[2]
    else:
        head, tail = head.rstrip("\n") + "\n\n", "\n"
    new = f"{head}{opening}\n{section}<!-- end -->{tail}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(new)
    tmp.replace(path)


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run's table (without ``--out``)."""
    words = ["python", "benchmarks/bench_speed.py"]
    if args.graph:
        words.append("--graph")
    if args.rounds != 5:
        words.append(f"--rounds {args.rounds}")
    if args.threads != os.cpu_count():
        words.append(f"--threads {args.threads}")
    if args.skip_epoch:
        words.append("--skip-epoch")
    if args.skip_memory:
        words.append("--skip-memory")
    return " ".join(words)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="CPU threads of each framework"
    )
    parser.add_argument(
        "--graph",
        action="store_true",
        help="also time xcnn's graph API (loss.backward()) in every round, and add its "
        "columns to the table",
    )
    parser.add_argument("--skip-epoch", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="MODEL[:KIND[:BATCH]]",
        help="time only these steps, e.g. resnet20, resnet20:train or lenet5:train:128 "
        "(implies --skip-epoch "
        "--skip-memory, and docs/benchmarks.md is left unchanged)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()

    backend = backends.current()
    device = "cuda" if backend.name == "cupy" else "cpu"
    torch.set_num_threads(args.threads)
    xcnn.set_num_threads(args.threads)
    print(f"xcnn on {backend.name} vs torch on {device}; {machine_description(backend, device)}")
    start, counters = time.perf_counter(), cpu_counters()
    rows = bench_steps(backend, device, args.rounds, args.only, args.graph)
    if args.only:
        print(steal_note(counters, start))
        return 0
    if not args.skip_epoch:
        rows += bench_epoch(backend, device, args.data_dir, max(3, args.rounds // 2))
    memory = None
    if not args.skip_memory:
        memory = (peak_memory("xcnn", backend.name), peak_memory("torch", backend.name))
        print(
            "LeNet-5 b128 training, peak / added by the loop (MiB): "
            f"xcnn {memory[0][0]:.0f} / {memory[0][1]:.0f}, "
            f"torch {memory[1][0]:.0f} / {memory[1][1]:.0f}"
        )
    note = steal_note(counters, start)
    print(note)
    write_markdown(args.out, rows, memory, backend, device, args.rounds, note, _command(args))
    print(f"wrote {args.out}")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
