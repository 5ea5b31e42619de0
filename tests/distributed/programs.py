"""Programs the distributed tests launch with ``mpiexec -n N python programs.py NAME DIR ...``.

Each writes what the test checks into DIR (one file per rank) or stops the way
the test expects; run with a plain ``python`` it is a world of one.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

import xcnn
import xcnn.distributed as dist
from xcnn import nn, optim
from xcnn.models import lenet5

PER_RANK = 32  # images per rank and step


def batches(steps: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``steps`` global batches of ``size`` images, labelled by their brightest quarter."""
    rng = np.random.default_rng(1234)
    x = rng.standard_normal((steps, size, 1, 28, 28), dtype=np.float32)
    quarters = x.reshape(steps, size, 1, 2, 14, 2, 14).mean(axis=(2, 4, 6)).reshape(steps, size, 4)
    return x, quarters.argmax(axis=-1).astype(np.int64)


def train(model, x, y, api: str, ddp_rank: int | None = None) -> list[float]:
    """SGD with momentum over the batches; in DDP, rank ``ddp_rank`` takes its slice of each."""
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for step in range(x.shape[0]):
        xs, ys = x[step], y[step]
        if ddp_rank is not None:
            xs = xs[ddp_rank * PER_RANK : (ddp_rank + 1) * PER_RANK]
            ys = ys[ddp_rank * PER_RANK : (ddp_rank + 1) * PER_RANK]
        opt.zero_grad()
        if api == "graph":
            loss = loss_fn(model(xcnn.Tensor(xs)), xcnn.Tensor(ys))
            loss.backward()
            value = float(loss.item())
        else:
            value = float(loss_fn(model(xs), ys))
            model.backward(loss_fn.backward())
        opt.step()
        losses.append(value)
    return losses


def equivalence(out: Path, api: str, steps: str, dtype: str = "float32") -> None:
    """N ranks x 32 images against one process x 32N images, same global batches."""
    me, world = dist.rank(), dist.world_size()
    x, y = batches(int(steps), PER_RANK * world)
    x = x.astype(dtype)
    # Each rank starts from other weights: the wrap must broadcast rank 0's.
    model = lenet5(rng=np.random.default_rng(100 + me), dtype=dtype)
    model = dist.DistributedDataParallel(model)
    start = time.perf_counter()
    losses = np.array(train(model, x, y, api, ddp_rank=me))
    seconds = time.perf_counter() - start
    dist.all_reduce(losses, op="mean")  # the global batch's loss: equal local batches
    state = dist.unwrap(model).state_dict()
    np.savez(out / f"rank{me}.npz", losses=losses, seconds=seconds, **state)
    if me == 0:
        reference = lenet5(rng=np.random.default_rng(100), dtype=dtype)
        losses = np.array(train(reference, x, y, api))
        np.savez(out / "single.npz", losses=losses, **reference.state_dict())


class TwoHeads(nn.Module):
    """``a`` is used on every rank, ``b`` on rank 1 only, ``c`` never."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(np.full(3, 1.0, np.float32))
        self.b = nn.Parameter(np.full(3, 2.0, np.float32))
        self.c = nn.Parameter(np.full(3, 3.0, np.float32))

    def forward(self, x):
        y = x * self.a
        return y * self.b if dist.rank() == 1 else y


def unused(out: Path) -> None:
    """Gradients where a parameter has none on some ranks, or on all."""
    model = dist.DistributedDataParallel(TwoHeads())
    x = xcnn.tensor(np.arange(3, dtype=np.float32) + dist.rank())
    model(x).sum().backward()
    grads = {n: None if p.grad is None else p.grad.tolist() for n, p in model.named_parameters()}
    (out / f"rank{dist.rank()}.json").write_text(json.dumps(grads))


def buffers(out: Path) -> None:
    """Batch norm's running statistics: rank 0's after the wrap and before each training step."""
    me = dist.rank()
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(64, 2))
    model[1].running_mean[...] = me + 1.0  # differs on every rank
    wrapped = dist.DistributedDataParallel(model)
    after_wrap = model[1].running_mean.tolist()
    if me == 1:
        model[1].running_mean[...] = 50.0  # drifts again: the training forward resets it
    x = np.random.default_rng(me).standard_normal((8, 1, 6, 6)).astype(np.float32)
    wrapped(xcnn.Tensor(x)).sum().backward()  # rank 0's statistics, updated by the local batch
    after_step = model[1].running_mean.tolist()
    report = {"after_wrap": after_wrap, "after_step": after_step}
    (out / f"rank{me}.json").write_text(json.dumps(report))


def mismatch(out: Path, kind: str) -> None:
    """Rank 1 builds another model (``shapes``) or passes another learning rate (``hyper``)."""
    me = dist.rank()
    classes = 10 if kind != "shapes" or me == 0 else 12
    lr = 0.1 if kind != "hyper" or me == 0 else 0.05
    model = lenet5(num_classes=classes, rng=np.random.default_rng(0))
    hyper = {"lr": lr, "batch_size": 32, "epochs": 1, "seed": 0, "model": "lenet5"}
    dist.DistributedDataParallel(model, hyperparameters=hyper)
    (out / f"passed{me}").write_text("the wrap did not raise")


def kill(out: Path, victim: str, after: str) -> None:
    """Train until rank ``victim`` SIGKILLs itself after ``after`` steps; nobody may finish."""
    me = dist.rank()
    x, y = batches(1, PER_RANK * dist.world_size())
    model = dist.DistributedDataParallel(lenet5(rng=np.random.default_rng(0)))
    opt = optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    xs = xcnn.Tensor(x[0, me * PER_RANK : (me + 1) * PER_RANK])
    ys = xcnn.Tensor(y[0, me * PER_RANK : (me + 1) * PER_RANK])
    (out / f"pid{me}").write_text(str(os.getpid()))
    for step in range(100_000):
        if me == int(victim) and step == int(after):
            (out / "killed_at").write_text(repr(time.time()))
            os.kill(os.getpid(), signal.SIGKILL)
        opt.zero_grad()
        loss_fn(model(xs), ys).backward()
        opt.step()
    (out / f"finished{me}").write_text("trained to the end")


def hang(out: Path) -> None:
    """Rank 1 stops answering (alive, asleep); rank 0 waits in a collective."""
    if dist.rank() == 1:
        time.sleep(120)
    dist.all_reduce(np.ones(4))
    (out / f"finished{dist.rank()}").write_text("the collective returned")


def error(out: Path) -> None:
    """Rank 1 raises while rank 0 waits in a collective: the job must stop, not hang."""
    if dist.rank() == 1:
        raise ValueError("rank 1 fails on purpose")
    dist.barrier()
    (out / f"finished{dist.rank()}").write_text("the barrier returned")


def checkpoint(out: Path) -> None:
    """save_checkpoint from every rank: rank 0 writes; all see the whole file on return."""
    model = dist.DistributedDataParallel(lenet5(rng=np.random.default_rng(dist.rank())))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    path = dist.save_checkpoint(out / "run.ckpt", model, opt, epoch=1, note="x")
    restored = lenet5(rng=np.random.default_rng(7))
    meta = dist.load_checkpoint(path, restored)
    same = all(
        np.array_equal(a, restored.state_dict()[k]) for k, a in model.module.state_dict().items()
    )
    files = sorted(f for f in os.listdir(out) if not f.endswith(".json"))  # not the reports
    report = {"epoch": meta["epoch"], "same": same, "files": files}
    (out / f"rank{dist.rank()}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    name, folder, *arguments = sys.argv[1:]
    dist.init()
    {
        "equivalence": equivalence,
        "mismatch": mismatch,
        "unused": unused,
        "buffers": buffers,
        "kill": kill,
        "hang": hang,
        "error": error,
        "checkpoint": checkpoint,
    }[name](Path(folder), *arguments)
