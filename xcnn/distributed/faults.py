"""What a distributed run does when a rank fails: stop every rank, and say which one.

What happens without xcnn's help (measured with MPICH 5's ``mpiexec``, Hydra):

* A rank killed with SIGKILL: Hydra SIGKILLs the process group of every other
  rank at once and prints ``BAD TERMINATION ... PID <pid> RUNNING AT <host> ...
  EXIT CODE: 9``. It names a process id, never a rank, and not always the lost
  rank's (in one run of four it named a survivor); the survivors cannot say
  anything: SIGKILL runs no handler.
* An exception on one rank: that rank exits with status 1 and Hydra does
  nothing, so the other ranks wait in their next collective operation forever.

So :func:`install`, called by ``init()`` when there is more than one rank, does three things:

1. Rank 0 prints every rank's host and process id on one line of stderr
   (``xcnn.distributed: 2 ranks: rank 0 = pid 812 on node1, rank 1 = pid 813 on
   node1``), so a launcher's message that names a process id names a rank too.
2. An exception that escapes on any rank is printed, headed ``xcnn.distributed:
   rank 1 stopped on this error:``, then stops the job with ``MPI_Abort``. An error
   that every rank raises at once (a mismatch found at wrap time, see
   ``DistributedError.every_rank``) first lets every rank print it.
3. The lowest rank on each host starts a watcher, a small process outside the
   launcher's process group (``_watch.py``), that learns the instant a rank on its
   host ends. A rank that ends without finishing (no exit marker: killed, crashed,
   out of memory) is named on stderr: ``xcnn.distributed: rank 1 (pid 813 on node1)
   was lost ...``. Each rank writes its marker at a normal exit (``atexit``) and
   before aborting on an error, so finished and failing ranks are not reported.
   Hydra forwards the watcher's line (it keeps reading a rank's stderr until every
   process holding it has closed it); the watcher exits as soon as the last rank on
   its host has ended. ``XCNN_DIST_WATCH=0`` turns it off.

A rank that hangs without dying is caught by the time limit on every wait (see
:func:`xcnn.distributed.world.wait`).
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

__all__ = ["install"]

# How long a rank that raised an every-rank error waits for the others to print theirs.
_REPORT_SECONDS = 10.0
# How long a failing rank lets the launcher forward its report before MPI_Abort.
_FORWARD_SECONDS = 0.2

_state: dict[str, Any] = {}


def install(comm: Any, peers: list[tuple[str, int]]) -> None:
    """Print the rank table (rank 0), install the abort-on-exception hook, start the watcher."""
    me = comm.Get_rank()
    host = peers[me][0]
    local = [(r, pid) for r, (h, pid) in enumerate(peers) if h == host]
    markers = Path(tempfile.gettempdir()) / f"xcnn-distributed-{os.getuid()}-{local[0][1]}"
    watching = os.environ.get("XCNN_DIST_WATCH", "1").strip() != "0"
    _state.update(comm=comm, rank=me, markers=markers, marked=not watching)
    if me == 0:
        table = ", ".join(f"rank {r} = pid {pid} on {h}" for r, (h, pid) in enumerate(peers))
        print(f"xcnn.distributed: {len(peers)} ranks: {table}", file=sys.stderr, flush=True)
    previous = sys.excepthook
    _state["previous_hook"] = previous
    sys.excepthook = _abort_on_exception
    atexit.register(_mark, "ok")
    if not watching or local[0][0] != me:
        return
    markers.mkdir(parents=True, exist_ok=True)
    arguments = {"host": host, "world": len(peers), "markers": str(markers), "ranks": local}
    subprocess.Popen(
        [sys.executable, "-I", str(Path(__file__).with_name("_watch.py")), json.dumps(arguments)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # outside the process group the launcher kills
    )


def _mark(status: str) -> None:
    """Tell this host's watcher how this rank ends: ``ok`` or ``error`` (first call wins;
    none without a watcher)."""
    if _state.get("marked", True):
        return
    _state["marked"] = True
    try:
        _state["markers"].mkdir(parents=True, exist_ok=True)
        (_state["markers"] / str(_state["rank"])).write_text(status)
    except OSError:
        pass


def _abort_on_exception(kind: type, value: BaseException, tb: Any) -> None:
    """``sys.excepthook`` under MPI: print the error, then stop every rank."""
    previous = _state["previous_hook"]
    for stream in (sys.stdout, sys.stderr):  # MPI_Abort ends the process without flushing
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    if previous is sys.__excepthook__:
        text = "".join(traceback.format_exception(kind, value, tb))
        header = f"xcnn.distributed: rank {_state['rank']} stopped on this error:\n"
        # One write: the ranks' reports share a pipe and must not interleave line by line.
        os.write(2, (header + text).encode(errors="replace"))
    else:
        previous(kind, value, tb)
        sys.stderr.flush()
    _mark("error")
    comm = _state["comm"]
    if getattr(value, "every_rank", False):
        from xcnn.distributed.world import wait

        try:
            # Every rank raised this same error: once all have printed it, end normally.
            wait(comm.Ibarrier(), "reporting an error", timeout=_REPORT_SECONDS)
            return
        except Exception:
            pass
    # The launcher forwards the report from a pipe in its own event loop; an abort that
    # reaches it first can end the job before the report is forwarded (seen once on a
    # busy machine, the job then ended without saying which rank failed).
    time.sleep(_FORWARD_SECONDS)
    comm.Abort(1)
