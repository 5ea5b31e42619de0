"""Data parallelism on the engines clusters already run: MPI (mpi4py), and NCCL between GPUs.

Launch N copies of a script with ``mpiexec -n N python script.py``; each copy is a
*rank*. Under a plain ``python`` the world is one rank, and nothing here imports
mpi4py until :func:`init` finds that it runs under an MPI launcher.

    import xcnn.distributed as dist
    dist.init()
    dist.rank(), dist.world_size(), dist.is_main()
"""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = [
    "all_reduce",
    "barrier",
    "broadcast_object",
    "init",
    "is_initialized",
    "is_main",
    "rank",
    "world_size",
]

# Variables the common MPI launchers set in every process they start.
_LAUNCHER_VARIABLES = (
    "PMI_RANK",  # MPICH (Hydra), Intel MPI
    "PMIX_RANK",  # Open MPI 5, PMIx launchers
    "OMPI_COMM_WORLD_RANK",  # Open MPI
    "MPI_LOCALRANKID",
)

_comm: Any = None  # the MPI communicator, once init() found a launcher
_initialized = False


def launched_by_mpi() -> bool:
    """Whether this process was started by an MPI launcher (``mpiexec``, ``srun --mpi``)."""
    return any(name in os.environ for name in _LAUNCHER_VARIABLES)


def init() -> None:
    """Join the MPI world when started by ``mpiexec``; otherwise a world of one.

    Safe to call more than once. Raises ``RuntimeError`` when started by an MPI
    launcher but mpi4py is not installed (``pip install 'xcnn[mpi]'``).
    """
    global _comm, _initialized
    if _initialized:
        return
    if launched_by_mpi():
        try:
            from mpi4py import MPI
        except ImportError as error:
            raise RuntimeError(
                "xcnn.distributed: this process was started by an MPI launcher, but mpi4py "
                "is not installed; install it with pip install 'xcnn[mpi]' (mpi4py and an "
                "MPI such as the mpich wheel)"
            ) from error
        _comm = MPI.COMM_WORLD
    _initialized = True


def is_initialized() -> bool:
    return _initialized


def _world() -> Any:
    if not _initialized:
        init()
    return _comm


def rank() -> int:
    """This process's rank, 0 to ``world_size() - 1`` (0 without MPI)."""
    comm = _world()
    return 0 if comm is None else comm.Get_rank()


def world_size() -> int:
    """How many ranks take part (1 without MPI)."""
    comm = _world()
    return 1 if comm is None else comm.Get_size()


def is_main() -> bool:
    """Whether this is rank 0, the rank that prints, plots and writes checkpoints."""
    return rank() == 0


def barrier() -> None:
    """Wait until every rank has reached this point."""
    comm = _world()
    if comm is not None:
        comm.Barrier()


def all_reduce(array: Any, op: str = "sum") -> Any:
    """Sum (``op="sum"``) or average (``op="mean"``) a host NumPy array over all ranks, in place.

    Returns the array. With one rank it is returned unchanged.
    """
    if op not in ("sum", "mean"):
        raise ValueError(f"all_reduce: op must be 'sum' or 'mean', got {op!r}")
    comm = _world()
    if comm is None:
        return array
    from mpi4py import MPI

    comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)
    if op == "mean":
        array /= comm.Get_size()
    return array


def broadcast_object(value: Any, root: int = 0) -> Any:
    """Rank ``root``'s ``value`` on every rank: anything JSON can hold.

    Sent as JSON text, not pickled, so a rank never unpickles what another sent.
    """
    comm = _world()
    if comm is None:
        return value
    import numpy as np

    payload = json.dumps(value).encode() if comm.Get_rank() == root else b""
    size = np.array([len(payload)], dtype=np.int64)
    comm.Bcast(size, root=root)
    buffer = np.frombuffer(payload, dtype=np.uint8).copy() if payload else None
    if buffer is None:
        buffer = np.empty(int(size[0]), dtype=np.uint8)
    comm.Bcast(buffer, root=root)
    return json.loads(buffer.tobytes().decode())
