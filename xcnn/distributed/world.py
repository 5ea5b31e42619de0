"""The world of ranks: joining it, who is who, and the collectives the rest is built on.

Every collective here waits for its MPI request by polling ``Test()`` instead of
blocking inside MPI, so a wait has a time limit (``XCNN_DIST_TIMEOUT``, default
300 seconds) and notices a rank on this host that is gone: either raises a
:class:`DistributedError` naming the operation and the rank, where a blocking call
would hang. Python also keeps control, so Ctrl-C works while a rank waits.

Values that ranks exchange as objects travel as JSON text, never pickled: a rank
never unpickles what another sent.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Mapping
from typing import Any

__all__ = [
    "DistributedError",
    "RankMismatchError",
    "all_reduce",
    "barrier",
    "broadcast_object",
    "check_same",
    "init",
    "is_initialized",
    "is_main",
    "launched_by_mpi",
    "local_rank",
    "local_world_size",
    "peers",
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

DEFAULT_TIMEOUT = 300.0
# How often a waiting rank checks that the other ranks on its host still run.
_PEER_CHECK_SECONDS = 1.0

_comm: Any = None  # the MPI communicator, once init() found a launcher
_initialized = False
_peers: list[tuple[str, int]] = []  # (host, pid) of every rank, index = rank
_timeout: float | None = DEFAULT_TIMEOUT


class DistributedError(RuntimeError):
    """A distributed run cannot go on: a rank was lost, a wait timed out, ranks disagree.

    ``every_rank`` is true when every rank raises the same error at the same point
    (a mismatch found by comparing what all ranks sent), so each can report it
    before the job stops.
    """

    every_rank = False


class RankMismatchError(DistributedError, ValueError):
    """Ranks started with different models or hyper-parameters; raised on every rank."""

    every_rank = True


def launched_by_mpi() -> bool:
    """Whether this process was started by an MPI launcher (``mpiexec``, ``srun --mpi``)."""
    return any(name in os.environ for name in _LAUNCHER_VARIABLES)


def init() -> None:
    """Join the MPI world when started by ``mpiexec``; otherwise a world of one.

    Safe to call more than once. With more than one rank it also

    * exchanges every rank's host name and process id (see :mod:`xcnn.distributed.faults`:
      rank 0 prints them on one line of stderr, and a watcher process per host names a
      rank that is lost);
    * makes an exception that escapes on any rank stop the whole job
      (``MPI_Abort``) instead of leaving the other ranks waiting forever;
    * gives each rank its share of the host's CPUs (xcnn's and BLAS's threads), unless
      ``XCNN_NUM_THREADS`` (xcnn) or ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` /
      ``MKL_NUM_THREADS`` (BLAS) say otherwise;
    * on the CuPy backend, selects GPU ``local_rank() % device count``.

    Raises ``RuntimeError`` when started by an MPI launcher but mpi4py is not
    installed (``pip install 'xcnn[mpi]'``), and ``ValueError`` for a malformed
    ``XCNN_DIST_TIMEOUT``.
    """
    global _comm, _initialized, _peers, _timeout
    if _initialized:
        return
    _timeout = _read_timeout()
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
    if _comm is None or _comm.Get_size() == 1:
        _peers = [(socket.gethostname(), os.getpid())]
        return
    _peers = [(str(h), int(p)) for h, p in _allgather_json([socket.gethostname(), os.getpid()])]
    from xcnn.distributed import faults

    faults.install(_comm, _peers)
    # No rank leaves init (and may fail) before every watcher runs.
    wait(_comm.Ibarrier(), "init")
    _share_cpus(local_world_size())
    _select_gpu(local_rank())


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


def local_rank() -> int:
    """This rank's index among the ranks on its host (0 without MPI); picks its GPU."""
    _world()
    host = _peers[rank()][0] if len(_peers) > 1 else None
    if host is None:
        return 0
    return [h for h, _ in _peers[: rank()]].count(host)


def local_world_size() -> int:
    """How many ranks run on this host (1 without MPI)."""
    _world()
    if len(_peers) <= 1:
        return 1
    host = _peers[rank()][0]
    return sum(1 for h, _ in _peers if h == host)


def peers() -> list[tuple[str, int]]:
    """``(host, pid)`` of every rank, in rank order."""
    _world()
    return list(_peers)


def barrier(*, timeout: float | None = None) -> None:
    """Wait until every rank has reached this point.

    ``timeout`` (seconds) replaces ``XCNN_DIST_TIMEOUT`` for this wait, e.g. while
    rank 0 alone downloads a dataset.
    """
    comm = _world()
    if comm is not None and comm.Get_size() > 1:
        wait(comm.Ibarrier(), "barrier", timeout=timeout)


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

    wait(comm.Iallreduce(MPI.IN_PLACE, array, op=MPI.SUM), "all_reduce")
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
    wait(comm.Ibcast(size, root=root), "broadcast_object")
    buffer = np.frombuffer(payload, dtype=np.uint8).copy() if payload else None
    if buffer is None:
        buffer = np.empty(int(size[0]), dtype=np.uint8)
    wait(comm.Ibcast(buffer, root=root), "broadcast_object")
    return json.loads(buffer.tobytes().decode())


def _allgather_json(value: Any) -> list[Any]:
    """Every rank's ``value`` (anything JSON can hold), in rank order, on every rank."""
    comm = _world()
    if comm is None or comm.Get_size() == 1:
        return [value]
    import numpy as np

    payload = np.frombuffer(json.dumps(value).encode(), dtype=np.uint8).copy()
    sizes = np.empty(comm.Get_size(), dtype=np.int64)
    wait(comm.Iallgather(np.array([payload.size], dtype=np.int64), sizes), "allgather")
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    gathered = np.empty(int(sizes.sum()), dtype=np.uint8)
    from mpi4py import MPI

    counts = (sizes.tolist(), offsets.tolist())
    wait(comm.Iallgatherv([payload, MPI.BYTE], [gathered, counts, MPI.BYTE]), "allgather")
    text = gathered.tobytes()
    return [
        json.loads(text[start : start + size].decode())
        for start, size in zip(offsets.tolist(), sizes.tolist(), strict=True)
    ]


def check_same(values: Mapping[str, Any], *, what: str = "hyper-parameters") -> None:
    """Raise on every rank unless every rank passed equal ``values``.

    Call it with what must agree across ranks, e.g. ``check_same({"lr": 0.1,
    "batch_size": 32, "epochs": 5, "seed": 0, "model": "lenet5"})``. Values are
    compared as JSON text (anything else by ``repr``). With one rank it returns at once.

    Raises
    ------
    RankMismatchError
        On every rank, naming each key that differs and its value on each rank, e.g.
        ``hyper-parameters differ across ranks: lr is 0.1 on rank 0 but 0.05 on rank 1``.
    """
    comm = _world()
    if comm is None or comm.Get_size() == 1:
        return
    mine = {str(k): json.dumps(v, sort_keys=True, default=repr) for k, v in values.items()}
    message = _values_difference(_allgather_json(mine), what)
    if message is not None:
        raise RankMismatchError(message)


def _values_difference(tables: list[dict[str, str]], what: str) -> str | None:
    """The sentence naming every key whose JSON value differs between ranks, or None."""
    keys = list(tables[0])
    for table in tables[1:]:
        keys += [k for k in table if k not in keys]
    parts = []
    for key in keys:
        by_value: dict[str, list[int]] = {}
        for r, table in enumerate(tables):
            by_value.setdefault(table.get(key, "(not given)"), []).append(r)
        if len(by_value) > 1:
            parts.append(f"{key} is " + " but ".join(_on_ranks(v, r) for v, r in by_value.items()))
    if not parts:
        return None
    return f"xcnn.distributed: {what} differ across ranks: " + "; ".join(parts)


def _on_ranks(value: str, ranks: list[int]) -> str:
    if len(ranks) == 1:
        return f"{value} on rank {ranks[0]}"
    return f"{value} on ranks {', '.join(map(str, ranks))}"


def wait(request: Any, what: str, *, timeout: float | None = None) -> None:
    """Wait for an MPI request, within ``timeout`` (default ``XCNN_DIST_TIMEOUT``) seconds.

    Raises :class:`DistributedError` naming ``what`` when a rank on this host is
    gone, or when the time runs out (a rank hangs, or the ranks called different
    collectives). The job cannot go on after either: an uncaught error stops it.
    """
    if request.Test():
        return
    limit = _timeout if timeout is None else timeout
    start = time.monotonic()
    next_check = start + _PEER_CHECK_SECONDS
    spins = 0
    while not request.Test():
        spins += 1
        if spins > 2000:
            # After a short spin, give the CPU away: with more ranks than cores the
            # rank being waited for needs it.
            time.sleep(0 if spins < 20000 else 0.0005)
        if spins % 64:
            continue
        now = time.monotonic()
        if now >= next_check:
            next_check = now + _PEER_CHECK_SECONDS
            _check_peers(what)
        if limit is not None and now - start > limit:
            raise DistributedError(
                f"xcnn.distributed: rank {_comm.Get_rank()} waited {limit:g} s in {what} "
                "without an answer from the other ranks (XCNN_DIST_TIMEOUT); a rank hangs, "
                "or the ranks did not call the same collective operations; stopping"
            )


def _check_peers(what: str) -> None:
    """Raise if a rank on this host is gone (checked by process id)."""
    me = _comm.Get_rank()
    host = _peers[me][0]
    for r, (h, pid) in enumerate(_peers):
        if r == me or h != host:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            raise DistributedError(
                f"xcnn.distributed: rank {r} (pid {pid} on {h}) was lost while rank {me} "
                f"waited in {what}; stopping"
            ) from None
        except PermissionError:  # alive, owned by another user
            pass


def _read_timeout() -> float | None:
    text = os.environ.get("XCNN_DIST_TIMEOUT", "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    if text.lower() in ("0", "none", "inf", "infinite"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(
            f"XCNN_DIST_TIMEOUT must be a number of seconds > 0 (or 0/none for no limit), "
            f"got {text!r}"
        )
    return value


def _share_cpus(ranks_here: int) -> None:
    """Split this host's CPUs between its ranks, where the user set no thread count."""
    if ranks_here <= 1:
        return
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    share = max(1, cpus // ranks_here)
    if not os.environ.get("XCNN_NUM_THREADS", "").strip():
        from xcnn.ops._threads import set_num_threads

        set_num_threads(share)
    blas_variables = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    if not any(os.environ.get(name, "").strip() for name in blas_variables):
        from threadpoolctl import threadpool_limits

        threadpool_limits(share, user_api="blas")


def _select_gpu(index: int) -> None:
    """On the CuPy backend, give each rank on a host its own GPU."""
    from xcnn import backends

    name = backends._override.get() or os.environ.get("XCNN_BACKEND", "").strip().lower()
    if name != "cupy":
        return
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # backends.get("cupy") reports a missing GPU clearly
        print(f"xcnn.distributed: no GPU selected ({error})", file=sys.stderr)
        return
    if count:
        cupy.cuda.Device(index % count).use()
