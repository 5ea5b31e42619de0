"""Data parallelism on the engines clusters already run: MPI (mpi4py), and NCCL between GPUs.

Launch N copies of a script with ``mpiexec -n N python script.py``; each copy is a
*rank*. Under a plain ``python`` the world is one rank, and nothing here imports
mpi4py until :func:`init` finds that it runs under an MPI launcher.

    import xcnn.distributed as dist
    dist.init()
    dist.rank(), dist.world_size(), dist.is_main()
    model = dist.DistributedDataParallel(model, hyperparameters={"lr": 0.1})
    ...                                   # train as usual: gradients are averaged
    dist.save_checkpoint("run.ckpt", model, optimizer, epoch=1)   # rank 0 writes

* :mod:`~xcnn.distributed.world`: joining, ranks, the collectives (each with a time
  limit, ``XCNN_DIST_TIMEOUT``), :func:`check_same`.
* :mod:`~xcnn.distributed.ddp`: :class:`DistributedDataParallel`, :func:`average_gradients`.
* :mod:`~xcnn.distributed.faults`: what happens when a rank fails.
* :mod:`~xcnn.distributed.checkpoint`: :func:`save_checkpoint`, :func:`load_checkpoint`.

``docs/distributed.md`` explains how it works and how to launch it.
"""

from __future__ import annotations

from xcnn.distributed.checkpoint import load_checkpoint, save_checkpoint, unwrap
from xcnn.distributed.ddp import DistributedDataParallel, average_gradients
from xcnn.distributed.world import (
    DistributedError,
    RankMismatchError,
    all_reduce,
    barrier,
    broadcast_object,
    check_same,
    init,
    is_initialized,
    is_main,
    launched_by_mpi,
    local_rank,
    local_world_size,
    peers,
    rank,
    world_size,
)

__all__ = [
    "DistributedDataParallel",
    "DistributedError",
    "RankMismatchError",
    "all_reduce",
    "average_gradients",
    "barrier",
    "broadcast_object",
    "check_same",
    "init",
    "is_initialized",
    "is_main",
    "launched_by_mpi",
    "load_checkpoint",
    "local_rank",
    "local_world_size",
    "peers",
    "rank",
    "save_checkpoint",
    "unwrap",
    "world_size",
]
